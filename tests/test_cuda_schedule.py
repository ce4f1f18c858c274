"""Every schedule of spc.schedule_space on the GPU gives scipy's numbers (issue 9).
Marked ``cuda``; skipped without CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from matrices import assert_allclose
from test_schedule import _operands

pytestmark = pytest.mark.cuda

from cuda_env import cupy_or_skip_module  # noqa: E402

cupy = cupy_or_skip_module()


def _matrix():
    """70 x 50: empty rows, one dense row, a long row, the rest short."""
    A = sp.random(70, 50, density=0.06, format="lil", random_state=5)
    A[3, :] = 0
    A[10, :] = np.arange(1, 51)
    A[11, :40] = 1.5
    return A.tocsr()


def _cases(kernel, A, rng):
    return _operands(kernel, A, rng, width=40, rank=24)


def _host(x):
    if type(x).__module__.startswith("torch"):
        x = x.to_dense() if x.layout != __import__("torch").strided else x
        x = x.cpu().numpy()
    if hasattr(x, "get"):
        x = x.get()
    if isinstance(x, spc.Tensor):
        from spc.runtime.device import DeviceOperands
        x = DeviceOperands.get().to_host(x).to_numpy()
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


@pytest.mark.parametrize("fmt", ["csr", "bsr(2,2)", "ell"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_every_schedule_of_the_space_gives_scipys_numbers(kernel, fmt):
    A = _matrix()
    ops, want = _cases(kernel, A, np.random.default_rng(1))
    space = spc.schedule_space(kernel, fmt=fmt, target="cuda", dtype="float64")
    assert space
    for s in space:
        got = spc.compile(kernel, fmt=fmt, target="cuda", dtype="float64", schedule=s)(*ops)
        assert_allclose(_host(got), want, np.float64)


@pytest.mark.parametrize("family", ["torch", "cupyx", "scipy"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_a_prepared_operand_with_reordered_rows_on_the_gpu(kernel, family):
    A = _matrix()
    ops, want = _cases(kernel, A, np.random.default_rng(2))
    if family == "torch":
        torch = pytest.importorskip("torch")
        src = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices),
                                      torch.tensor(A.data), A.shape).cuda()
        dense = [torch.tensor(x, device="cuda") for x in ops[1:]]
    elif family == "cupyx":
        import cupyx.scipy.sparse as csp
        src, dense = csp.csr_matrix(A), [cupy.asarray(x) for x in ops[1:]]
    else:
        src, dense = A, list(ops[1:])
    k = spc.compile(kernel, fmt="csr", target="cuda", dtype="float64", reorder_rows="length")
    p = k.prepare(src)
    assert p.inspect_seconds > 0
    for validate in (True, False):
        assert_allclose(_host(k(p, *dense, validate=validate)), want, np.float64)


@pytest.mark.parametrize("max_nnz", [1, 7, 32, True])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_split_rows_on_the_gpu(kernel, max_nnz):
    """Pieces of at most ``max_nnz`` nonzeros: the long and dense rows shared by
    warps whose partial sums add atomically; each launch knob's variants."""
    A = _matrix()
    ops, want = _cases(kernel, A, np.random.default_rng(3))
    base = spc.Schedule(split_rows=max_nnz)
    knobs = [dict(), dict(wide=True), dict(wide=False)] if kernel == "spmm" else \
        [dict(), dict(group=8, flat=True), dict(group=32, flat=False, split=2)] \
        if kernel == "sddmm" else [dict()]
    for kw in knobs:
        k = spc.compile(kernel, fmt="csr", target="cuda", dtype="float64",
                        schedule=base.replace(**kw))
        p = k.prepare(A)
        for validate in (True, False):
            assert_allclose(_host(k(p, *ops[1:], validate=validate)), want, np.float64)
        assert_allclose(_host(k(*ops)), want, np.float64)


@pytest.mark.parametrize("shape, nnz", [((0, 9), 0), ((6, 0), 0), ((7, 5), 0), ((1, 300), 300)])
def test_split_rows_on_the_gpu_at_the_edges(shape, nnz):
    A = sp.random(*shape, density=nnz / max(1, shape[0] * shape[1]), format="csr",
                  random_state=0)
    B = np.random.default_rng(0).standard_normal((shape[1], 33))
    k = spc.compile("spmm", fmt="csr", target="cuda", dtype="float64", split_rows=16)
    assert_allclose(_host(k(A, B)), A @ B, np.float64)


@pytest.mark.parametrize("kernel", ["spmm", "sddmm"])
def test_the_schedule_reports_the_launch_a_call_took(kernel):
    A = _matrix()
    ops, want = _cases(kernel, A, np.random.default_rng(4))
    k = spc.compile(kernel, fmt="csr", target="cuda", dtype="float64")
    assert (k.schedule.wide, k.schedule.group) == (None, None)
    assert_allclose(_host(k(*ops)), want, np.float64)
    s = k.schedule
    if kernel == "spmm":
        assert s.wide in (True, False)
    else:
        assert s.group in spc.schedule.GROUPS and (s.flat or s.split >= 1)
    assert_allclose(_host(spc.compile(kernel, fmt="csr", target="cuda", dtype="float64",
                                      schedule=s)(*ops)), want, np.float64)
