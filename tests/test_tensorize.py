"""The tensorize pass (passes/tensorize.py) without a GPU: golden printed IR, the
interpreter's numbers before and after (bit for bit), where it applies and where
it does not, the schedule knobs that steer it, the verifier and the renderer's
mma tiles (compiled by nvcc, for tensor cores and for the shuffle fallback)."""
from __future__ import annotations

from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.errors import CompileError
from spc.ir.interp import run_kernel, to_tf32
from spc.ir.lower import lower
from spc.ir.nodes import DType, For, LoopKind
from spc.ir.printer import format_kernel
from spc.ir.traverse import rewrite, walk
from spc.ir.verify import verify
from spc.passes.simplify import simplify
from spc.passes.tensorize import tensorize, tensorized
from spc.passes.widen_outputs import widen_outputs
from test_ir_golden import assert_golden

CUDA = dict(target="cuda", arch="sm_90")
NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}


def _lowered(fmt: str, dtype: str, kernel: str = "spmm", **kw):
    """(the simplified lowered kernel, the compiled CUDA kernel) of ``kernel``."""
    ck = spc.compile(kernel, fmt=fmt, dtype=dtype, **CUDA, **kw)
    prog = lower(ck.expression, ck.formats, name=ck.name, order=None, value_dtype=ck.dtype,
                 index_dtype=DType.I32, separate=ck.separate, sum_dtype=ck.accumulate)
    (k,) = prog.kernels
    return simplify(k), ck


def _args(ck, A, B, dtype: str) -> dict:
    t = spc.tensor(A, ck.formats["A"], dtype=NP[dtype])
    args = {"A_vals": t.vals, "B_vals": np.ascontiguousarray(B.astype(NP[dtype])).ravel(),
            "size_i": A.shape[0], "size_k": A.shape[1], "size_j": B.shape[1]}
    for lvl, arrays in enumerate(t.arrays):
        for name, arr in arrays.items():
            args[f"A{lvl}_{name}"] = arr.astype(np.int32)
    return args


def _interpret(kernel, ck, A, B, dtype: str) -> np.ndarray:
    """C = A @ B by the interpreter (output zeroed as the runtime does), as float64."""
    args = _args(ck, A, B, dtype)
    out = {p.name: p.value.dtype for p in kernel.params}["C_vals"].np
    args["C_vals"] = np.zeros(A.shape[0] * B.shape[1], dtype=out)
    run_kernel(kernel, args)
    return args["C_vals"].astype(NP[dtype]).astype(np.float64).reshape(A.shape[0], B.shape[1])


def _case(m, k, n, density, seed):
    A = sp.random(m, k, density=density, format="csr", random_state=seed, dtype=np.float32)
    if m > 20:
        A = sp.csr_matrix(A.multiply((np.arange(m) // 16 != 1)[:, None]))  # an empty block row
    B = np.random.default_rng(seed).uniform(-1, 1, (k, n)).astype(np.float32)
    return A, B


# sizes no multiple of a block or a tile, an empty block row, nnz = 0, one column,
# and empty dimensions (the interpreter is slow: the tiles are few)
SHAPES = [(37, 20, 19, 0.3), (16, 16, 8, 1.0), (40, 33, 1, 0.2), (20, 20, 5, 0.0),
          (0, 16, 8, 0.1), (16, 0, 8, 0.1), (16, 16, 0, 0.5)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fmt", ["bsr(16,16)", "bsr(16,32)", "bsr(32,16)", "bsr(32,32)"])
@pytest.mark.parametrize("tile_cols", [8, 64])
def test_the_pass_keeps_the_interpreters_bits(fmt, dtype, tile_cols):
    """The tiles add the same products in the same order as the scalar loops."""
    before, ck = _lowered(fmt, dtype)
    after = verify(tensorize(before, tile_cols=tile_cols), "tensorize")
    assert tensorized(after) == tile_cols
    for m, k, n, density in SHAPES:
        A, B = _case(m, k, n, density, seed=m + n)
        want = _interpret(widen_outputs(before), ck, A, B, dtype)
        got = _interpret(after, ck, A, B, dtype)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fmt", ["bsr(16,16)", "bsr(32,32)"])
def test_the_cuda_pipeline_matches_float64(fmt, dtype):
    """The whole CUDA pipeline's IR (tiles, mapping, outputs), interpreted with its
    race check, against float64 of the same 16-bit inputs."""
    _, ck = _lowered(fmt, dtype)
    (kernel,) = ck._variant(DType.I32).kernels
    assert kernel.gpu is not None and tensorized(kernel) == 64
    for m, k, n, density in SHAPES:
        A, B = _case(m, k, n, density, seed=2 * m + n)
        got = _interpret(kernel, ck, A, B, dtype)
        ref = A.toarray().astype(NP[dtype]).astype(np.float64) @ \
            B.astype(NP[dtype]).astype(np.float64)
        tol = 2e-3 if dtype == "float16" else 1e-2
        assert got.shape == ref.shape
        assert np.abs(got - ref).max(initial=0) <= tol * np.abs(ref).max(initial=1e-30)


def test_golden_ir():
    _, ck = _lowered("bsr(16,16)", "float16")
    assert_golden("tensorize_spmm_bsr1616_f16", ck.ir)


@pytest.mark.parametrize("fmt, dtype, kernel, kw", [
    ("bsr(16,16)", "float32", "spmm", {}),          # no 16-bit instruction for float32
    ("bsr(16,16)", "float64", "spmm", {}),
    ("bsr(8,8)", "float16", "spmm", {}),            # blocks smaller than the instruction
    ("bsr(16,8)", "float16", "spmm", {}),
    ("bsr(4,4)", "float16", "spmm", {}),
    ("csr", "float16", "spmm", {}),                 # not blocked
    ("bsr(16,16)", "float16", "spmv", {}),          # no dense columns to tile
    ("bsr(8,8)", "float16", "sddmm", {}),
    ("bsr(16,16)", "float16", "spmm", {"accumulate": "float64"}),
])
def test_where_the_pass_does_not_apply(fmt, dtype, kernel, kw):
    before, ck = _lowered(fmt, dtype, kernel, **kw)
    assert tensorize(before) is before
    assert not any(tensorized(k) for k in ck._variant(DType.I32).kernels)
    assert ck.schedule.tensor_cores is False
    with pytest.raises(spc.ScheduleError, match="tensor_cores"):
        spc.compile(kernel, fmt=fmt, dtype=dtype, tensor_cores=True, **CUDA, **kw)


def test_the_pass_leaves_a_mapped_kernel_alone():
    before, _ = _lowered("bsr(16,16)", "float16")
    once = tensorize(before)
    assert tensorize(once) is once


def test_a_sum_of_terms_adds_its_tile_to_the_output():
    """A later term of a sum (``adds_to_output``) adds its tile to what the output holds."""
    before, _ = _lowered("bsr(16,16)", "float16")
    after = tensorize(replace(before, adds_to_output=True))
    writes = [n for n in walk(after.body) if hasattr(n, "buf") and n.buf.name == "C_vals"
              and hasattr(n, "accumulate")]
    assert writes and all(w.accumulate for w in writes)
    plain = tensorize(before)
    assert not any(n.accumulate for n in walk(plain.body)
                   if hasattr(n, "accumulate") and n.buf.name == "C_vals")


def test_the_schedule_reports_and_steers_tensor_cores():
    k = spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", **CUDA)
    assert k.schedule.tensor_cores is True and k.schedule.tile_cols == 64
    k = spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", tile_cols=128, **CUDA)
    assert k.schedule.tile_cols == 128 and "mma" in k.ir
    off = spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", tensor_cores=False, **CUDA)
    assert off.schedule.tensor_cores is False and "mma" not in off.ir
    # asking for rows split or reordered, or one warp, keeps the scalar loops
    for knobs in (dict(split_rows=False, reorder_rows="none"), dict(parallel=False)):
        k = spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", **knobs, **CUDA)
        assert k.schedule.tensor_cores is (knobs.get("parallel", True))


@pytest.mark.parametrize("knobs, match", [
    (dict(tensor_cores=True, split_rows=True), "split_rows or reorder_rows"),
    (dict(tensor_cores=True, reorder_rows="length"), "split_rows or reorder_rows"),
    (dict(tensor_cores=True, parallel=False), "one warp"),
    (dict(tensor_cores="yes"), "True or False"),
])
def test_knobs_that_do_not_combine_are_refused(knobs, match):
    with pytest.raises(spc.ScheduleError, match=match):
        spc.Schedule(**knobs)


def test_tile_widths_outside_the_instructions_are_refused():
    with pytest.raises(spc.ScheduleError, match="8 to 256"):
        spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", tile_cols=512, **CUDA)
    with pytest.raises(spc.ScheduleError, match="8 to 256"):
        spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", tile_cols=4, **CUDA)
    with pytest.raises(spc.ScheduleError, match="tensor-core tile"):
        spc.compile("spmm", fmt="csr", dtype="float16", tile_cols=64, **CUDA)
    with pytest.raises(spc.ScheduleError, match="tensor_cores"):
        spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", tensor_cores=True)   # the CPU


def test_dtype_none_steers_its_16_bit_specializations():
    """With dtype=None the tensor-core knobs apply to float16/bfloat16 calls; float32
    calls compute with scalar loops.  A format with no tile is refused at compile."""
    k = spc.compile("spmm", fmt="bsr(16,16)", tensor_cores=True, tile_cols=32, **CUDA)
    assert k.specialize("float32").schedule.tensor_cores is False
    assert k.specialize("float16").schedule.tile_cols == 32
    assert k.specialize("bfloat16").schedule.tensor_cores is True
    with pytest.raises(spc.ScheduleError, match="tensor_cores"):
        spc.compile("spmm", fmt="bsr(8,8)", tensor_cores=True, **CUDA)
    with pytest.raises(spc.ScheduleError, match="tile_cols"):
        spc.compile("spmm", fmt="bsr(16,16)", dtype="float32", tile_cols=32, **CUDA)


def _tile_loops(kernel):
    return [n for n in walk(kernel.body) if isinstance(n, For) and n.kind is LoopKind.MMA_N]


def test_the_verifier_checks_tile_shapes():
    before, _ = _lowered("bsr(16,16)", "float16")
    after = tensorize(before)
    verify(after)
    n_loop = _tile_loops(after)[0]
    loose = rewrite(after.body, lambda x: replace(x, kind=LoopKind.SERIAL) if x is n_loop else x)
    with pytest.raises(CompileError, match="mma"):
        verify(replace(after, body=loose))
    odd = rewrite(after.body, lambda x: replace(x, hi=type(x.hi)(12, x.hi.dtype))
                  if isinstance(x, For) and x.kind is LoopKind.MMA_N else x)
    with pytest.raises(CompileError, match="multiple of 8"):
        verify(replace(after, body=odd))


def test_the_renderer_prints_mma_instructions_from_the_ir():
    k = spc.compile("spmm", fmt="bsr(32,16)", dtype="bfloat16", tile_cols=16, **CUDA)
    src = k.source
    assert "spc_mma_16816<true>" in src and "float acc[16]" in src
    same = spc.compile("spmm", fmt="bsr(32,16)", dtype="bfloat16", tile_cols=16, **CUDA)
    assert same.source == src        # the same printed IR renders the same source
    f16 = spc.compile("spmm", fmt="bsr(32,16)", dtype="float16", tile_cols=16, **CUDA)
    assert "spc_mma_16816<false>" in f16.source


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_nvcc_compiles_the_tiles_for_tensor_cores_and_the_fallback(arch, dtype):
    """sm_80 and later run mma.sync; sm_75 the same sums through shuffles."""
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    src = spc.compile("spmm", fmt="bsr(32,32)", dtype=dtype, tile_cols=32,
                      **CUDA).source
    code, log = nvcc(src, arch=arch)
    assert code == 0, log


# ---------------------------------------------------------------------- tf32


def test_tf32_rounds_to_nearest_with_ties_away_from_zero():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -10)                 # tf32's spacing at 1
    assert to_tf32(one + ulp / 4) == one
    assert to_tf32(one + ulp / 2) == one + ulp   # a tie: away from zero
    assert to_tf32(-(one + ulp / 2)) == -(one + ulp)
    assert to_tf32(one + ulp * 0.75) == one + ulp
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 3.0], dtype=np.float32)
    got = to_tf32(x)
    assert np.isinf(got[:2]).all() and np.isnan(got[2]) and (got[3:] == x[3:]).all()
    assert np.signbit(got[4])
    r = to_tf32(np.random.default_rng(0).standard_normal(1000).astype(np.float32))
    assert not (r.view(np.uint32) & 0x1FFF).any()                    # 10 mantissa bits


@pytest.mark.parametrize("fmt", ["bsr(16,16)", "bsr(16,8)", "bsr(32,24)"])
def test_tf32_tiles_compute_the_product_of_rounded_inputs(fmt):
    """The tf32 kernel on float32 inputs gives the bits of the scalar loops on the
    inputs rounded to tf32 (the same sums, in the same order)."""
    before, ck = _lowered(fmt, "float32", tf32=True)
    after = verify(tensorize(before, tile_cols=16, tf32=True), "tensorize")
    assert tensorized(after) == 16 and "tf32(" in format_kernel(after)
    assert tensorize(before, tile_cols=16) is before        # float32 needs tf32=True
    for m, k, n, density in SHAPES:
        A, B = _case(m, k, n, density, seed=m + 3 * n)
        rounded = sp.csr_matrix((to_tf32(A.data), A.indices, A.indptr), shape=A.shape)
        want = _interpret(widen_outputs(before), ck, rounded, to_tf32(B), "float32")
        np.testing.assert_array_equal(_interpret(after, ck, A, B, "float32"), want)


def test_the_tf32_knob():
    k = spc.compile("spmm", fmt="bsr(16,16)", tf32=True, **CUDA)
    assert k.schedule.tf32 is True and k.schedule.tensor_cores is True
    assert "tf32(" in k.ir and "spc_mma_1688_tf32" in k.source
    assert k.specialize("float16").schedule.tf32 is False           # 16-bit: no tf32
    assert spc.compile("spmm", fmt="bsr(16,16)", **CUDA).schedule.tf32 is False   # opt-in
    with pytest.raises(spc.ScheduleError, match="tf32"):
        spc.compile("spmm", fmt="bsr(16,16)", tf32=True)            # the CPU
    with pytest.raises(spc.ScheduleError, match="tf32"):
        spc.compile("spmm", fmt="bsr(16,16)", tf32=True, tensor_cores=False, **CUDA)
    with pytest.raises(spc.ScheduleError, match="tf32"):
        spc.compile("spmm", fmt="bsr(16,16)", tf32=True, dtype="float16", **CUDA)
    with pytest.raises(spc.ScheduleError, match="tf32"):
        spc.compile("spmm", fmt="csr", tf32=True, **CUDA)


@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_nvcc_compiles_tf32_tiles(arch):
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    src = spc.compile("spmm", fmt="bsr(32,16)", tf32=True, tile_cols=32, **CUDA).source
    code, log = nvcc(src, arch=arch)
    assert code == 0, log


# ---------------------------------------------------------------------- SDDMM


def _interpret_sddmm(kernel, ck, A, X, Y, dtype: str) -> np.ndarray:
    """S = A * (X @ Y.T) on A's blocks, by the interpreter: the stored values, float64."""
    t = spc.tensor(A, ck.formats["A"], dtype=NP[dtype])
    args = {"A_vals": t.vals, "size_i": A.shape[0], "size_j": A.shape[1],
            "size_k": X.shape[1]}
    for name, arr in (("X", X), ("Y", Y)):
        args[f"{name}_vals"] = np.ascontiguousarray(arr.astype(NP[dtype])).ravel()
    for lvl, arrays in enumerate(t.arrays):
        for name, arr in arrays.items():
            args[f"A{lvl}_{name}"] = arr.astype(np.int32)
    out = {p.name: p.value.dtype for p in kernel.params}["S_vals"].np
    args["S_vals"] = np.zeros(t.vals.size, dtype=out)
    run_kernel(kernel, args)
    return args["S_vals"].astype(NP[dtype]).astype(np.float64)


SDDMM_SHAPES = [(37, 20, 19, 0.3), (16, 16, 16, 1.0), (40, 33, 1, 0.3), (20, 20, 5, 0.0),
                (0, 16, 8, 0.1), (16, 0, 8, 0.1), (16, 16, 0, 0.5)]    # (m, n, K, density)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("fmt", ["bsr(16,16)", "bsr(16,8)", "bsr(8,16)", "bsr(32,16)"])
def test_sampled_tiles_keep_the_interpreters_bits(fmt, dtype):
    """SDDMM on a blocked mask: each block's tile sums the same products in the
    same order (float32: of the inputs rounded to tf32)."""
    tf32 = dtype == "float32"
    before, ck = _lowered(fmt, dtype, "sddmm", **({"tf32": True} if tf32 else {}))
    after = verify(tensorize(before, tf32=tf32), "tensorize")
    assert tensorized(after) and after.gpu is not None
    for m, n, k, density in SDDMM_SHAPES:
        A, _ = _case(m, n, 1, density, seed=m + k)
        rng = np.random.default_rng(k)
        X, Y = (rng.uniform(-1, 1, (r, k)).astype(np.float32) for r in (m, n))
        Xr, Yr = (to_tf32(a) for a in (X, Y)) if tf32 else (X, Y)
        want = _interpret_sddmm(widen_outputs(before), ck, A, Xr, Yr, dtype)
        np.testing.assert_array_equal(_interpret_sddmm(after, ck, A, X, Y, dtype), want)


def test_sampled_tiles_are_the_blocks():
    k = spc.compile("sddmm", fmt="bsr(32,16)", dtype="float16", **CUDA)
    assert k.schedule.tensor_cores is True and k.schedule.tile_cols == 16
    assert spc.compile("sddmm", fmt="bsr(32,16)", dtype="float16", tile_cols=16,
                       **CUDA).ir == k.ir
    with pytest.raises(spc.ScheduleError, match="blocks"):
        spc.compile("sddmm", fmt="bsr(32,16)", dtype="float16", tile_cols=64, **CUDA)
    assert_golden("tensorize_sddmm_bsr1616_f16",
                  spc.compile("sddmm", fmt="bsr(16,16)", dtype="float16", **CUDA).ir)
