"""The storage checks made from the IR (``formats/storage_check``,
``runtime/device_check``): the interpreter gives the host validator's verdict
on well-formed, unsorted, duplicated and malformed storage, before and after
the CUDA pipeline; the kernels render and compile with nvcc; on a GPU,
``DeviceOperands.problems`` gives the same verdicts (marked ``cuda``)."""
from __future__ import annotations

import numpy as np
import pytest

from spc.codegen.cuda import CUDATarget
from spc.errors import InputError
from spc.formats.format import resolve_format
from spc.formats.storage_check import compressed_check, singleton_check
from spc.formats.tensor import Tensor
from spc.ir.interp import run_kernel
from spc.ir.nodes import DType
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.runtime.device_check import NOT_CHECKED, check_plan, verdict
from spc.schedule import Schedule

# (name, format, shape, level arrays, number of values)
CSR = resolve_format("csr", 2)
COO = resolve_format("coo", 2)
DCSR = resolve_format("dcsr", 2)
BSR = resolve_format("bsr(2,2)", 2)


def csr(pos, crd, shape=(3, 4)):
    return CSR, shape, [{}, {"pos": pos, "crd": crd}], len(crd)


def coo(row, col, shape=(3, 4)):
    return COO, shape, [{"pos": [0, len(row)], "crd": row}, {"crd": col}], len(row)


CASES = {
    "csr ok": csr([0, 2, 2, 4], [0, 3, 1, 2]),
    "csr empty": csr([0, 0, 0, 0], []),
    "csr 0 rows": csr([0], [], shape=(0, 4)),
    "csr unsorted": csr([0, 2, 2, 4], [3, 0, 1, 2]),
    "csr duplicate": csr([0, 2, 2, 4], [1, 1, 1, 2]),
    "csr column out of range": csr([0, 2, 2, 4], [0, 4, 1, 2]),
    "csr negative column": csr([0, 2, 2, 4], [0, -1, 1, 2]),
    "csr pointers decrease": csr([0, 3, 2, 4], [0, 1, 2, 3]),
    "csr pointers start at 1": csr([1, 2, 2, 4], [0, 3, 1, 2]),
    "csr pointers end short": csr([0, 2, 2, 3], [0, 3, 1, 2]),
    "csr pointers past the end": csr([0, 2, 2, 9], [0, 3, 1, 2]),
    "csr negative pointer": csr([0, -5, 2, 4], [0, 3, 1, 2]),
    "csr huge pointer": csr([0, 2, 2**40, 4], [0, 3, 1, 2]),
    "csr pointer array too short": csr([0, 2, 4], [0, 3, 1, 2]),
    "coo ok": coo([0, 0, 2, 2], [0, 3, 1, 2]),
    "coo rows unsorted": coo([0, 2, 0, 2], [0, 1, 3, 2]),
    "coo columns unsorted": coo([0, 0, 2, 2], [3, 0, 1, 2]),
    "coo duplicate": coo([0, 0, 2, 2], [3, 3, 1, 2]),
    "coo row out of range": coo([0, 0, 3, 2], [0, 3, 1, 2]),
    "coo column out of range": coo([0, 0, 2, 2], [0, 4, 1, 2]),
    "dcsr ok": (DCSR, (5, 4), [{"pos": [0, 2], "crd": [1, 3]},
                               {"pos": [0, 2, 3], "crd": [0, 2, 1]}], 3),
    "dcsr rows unsorted": (DCSR, (5, 4), [{"pos": [0, 2], "crd": [3, 1]},
                                         {"pos": [0, 2, 3], "crd": [0, 2, 1]}], 3),
    "dcsr column out of range": (DCSR, (5, 4), [{"pos": [0, 2], "crd": [1, 3]},
                                                {"pos": [0, 2, 3], "crd": [0, 5, 1]}], 3),
    "bsr ok": (BSR, (4, 4), [{}, {"pos": [0, 1, 2], "crd": [0, 1]}, {}, {}], 8),
    "bsr wrong value count": (BSR, (4, 4), [{}, {"pos": [0, 1, 2], "crd": [0, 1]}, {}, {}], 7),
    "bsr block column out of range": (BSR, (4, 4), [{}, {"pos": [0, 1, 2], "crd": [0, 2]},
                                                    {}, {}], 8),
}


def _tensor(case, index=np.int32) -> Tensor:
    fmt, shape, levels, nvals = CASES[case]
    arrays = [{k: np.asarray(v, dtype=index) for k, v in lv.items()} for lv in levels]
    return Tensor(shape, fmt, arrays, np.ones(nvals), validate=False)


def _host_verdict(t: Tensor) -> str | None:
    """The host validator's verdict: None, "order" (only unsorted/duplicate
    entries: a canonicalized copy validates), or "structure"."""
    try:
        t.validate()
        return None
    except InputError as err:
        if "unsorted" in str(err) or "duplicate" in str(err):
            return "order"
        return "structure"


def _interpreted(t: Tensor, mapped: bool) -> str | None:
    plan = check_plan(t)
    if isinstance(plan, str) or plan is NOT_CHECKED:
        return plan
    status = np.zeros(2, dtype=np.int32)
    for kernel, buffers, sizes in plan:
        if mapped:
            for pass_ in CUDATarget().pipeline(Schedule()):
                kernel = verify(pass_(kernel))
        run_kernel(kernel, {**buffers, **sizes, "status": status})
    return verdict(status)


@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("mapped", [False, True], ids=["ir", "cuda-mapped"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_interpreted_check_agrees_with_the_host_validator(case, mapped, index):
    if index is np.int32 and "huge" in case:
        pytest.skip("the value does not fit an int32 array")
    t = _tensor(case, index)
    assert _interpreted(t, mapped) == _host_verdict(t)


def test_levels_without_a_device_check_are_left_to_the_host():
    t = Tensor((3, 4), resolve_format("ell", 2),
               [{}, {"crd": np.zeros(3, np.int32)}], np.ones(3), validate=False)
    assert check_plan(t) is NOT_CHECKED


def test_mixed_index_types_are_left_to_the_host():
    t = _tensor("csr ok")
    t.arrays[1]["crd"] = t.arrays[1]["crd"].astype(np.int64)
    assert check_plan(t) is NOT_CHECKED


def test_dense_levels_need_no_launch():
    plan = check_plan(_tensor("bsr ok"))
    assert [k.name for k, _, _ in plan] == ["spc_check_compressed_i32_ordered_unique"]


def test_check_kernel_golden():
    text = format_kernel(compressed_check(DType.I32, ordered=True, unique=True))
    assert "for p in [a, b):" in text and "status[1] += 1" in text
    mapped = compressed_check(DType.I32, ordered=True, unique=True)
    for pass_ in CUDATarget().pipeline(Schedule()):
        mapped = verify(pass_(mapped))
    printed = format_kernel(mapped)
    assert "@gpu_warp" in printed and "atomic+=" in printed


KERNELS = {
    "compressed i32": compressed_check(DType.I32, ordered=True, unique=True),
    "compressed i64 nonunique": compressed_check(DType.I64, ordered=True, unique=False),
    "singleton i32 after parent": singleton_check(DType.I32, after_parent=True, unique=True),
    "singleton i64": singleton_check(DType.I64, after_parent=False, unique=True),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_check_kernels_compile_with_nvcc(name):
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    target = CUDATarget(arch="sm_90")
    kernel = KERNELS[name]
    for pass_ in target.pipeline(Schedule()):
        kernel = verify(pass_(kernel))
    code, log = nvcc(target.render(kernel))
    assert code == 0, log


@pytest.mark.cuda
@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_device_problems_agree_with_the_host_validator(case, index):
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    from spc.runtime.device import DeviceOperands
    if index is np.int32 and "huge" in case:
        pytest.skip("the value does not fit an int32 array")
    host = _tensor(case, index)
    device = Tensor(host.shape, host.format,
                    [{k: cp.asarray(v) for k, v in lv.items()} for lv in host.arrays],
                    cp.asarray(host.vals), validate=False)
    assert DeviceOperands().problems(device) == _host_verdict(host)
