"""The tensorize_chunks pass (passes/tensorize_chunks.py) without a GPU: the
chunk split, golden printed IR, the interpreter's numbers before and after
(bit for bit: the tiles add the same products in the same order, padding slots
adding zeros; tf32: the products of the rounded inputs), where it applies and
where it does not, and nvcc of the rendered tiles (gathered B rows)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats.tensor import Tensor
from spc.ir.interp import to_tf32
from spc.ir.nodes import DType
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes.tensorize import tensorized, uses_tf32
from spc.passes.tensorize_chunks import tensorize_chunks, whole_chunks
from spc.passes.widen_outputs import widen_outputs
from test_ir_golden import assert_golden
from test_tensorize_nm import NP, _interpret, _lowered   # the same lowering, interpreter run

CUDA = dict(target="cuda", arch="sm_90")


def _case(m, k, n, density, seed, dtype, fmt):
    """(A as a condensed tensor, A dense as float64 of the stored type, B): A
    random; with enough rows, an empty window and a dense row."""
    rng = np.random.default_rng(seed)
    dense = rng.uniform(-1, 1, (m, k)) * (rng.random((m, k)) < density)
    if m > 32:
        dense[16:32] = 0                        # an empty window
        dense[33] = rng.uniform(-1, 1, k)        # a dense row
    A = sp.csr_matrix(dense.astype(np.float32))
    t = spc.tensor(A, fmt, dtype=NP[dtype])
    B = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    return t, A.toarray().astype(NP[dtype]).astype(np.float64), B


# rows, k and columns no multiple of the tile's (16, K, 8); an empty window, a dense
# row, no nonzero, empty dimensions, a dense matrix, whole tiles (the regular path)
SHAPES = [(37, 45, 19, 0.3), (16, 32, 8, 1.0), (40, 70, 1, 0.1), (20, 21, 5, 0.0),
          (17, 5, 9, 0.8), (48, 64, 16, 0.05), (32, 64, 24, 0.2), (0, 16, 8, 0.5),
          (16, 0, 8, 0.5), (16, 16, 0, 0.5), (18, 1, 3, 1.0)]


def test_whole_chunks_splits_only_loops_over_whole_chunks():
    before, _ = _lowered("condensed(16,16)", "float16")
    split = verify(whole_chunks(before), "whole_chunks")
    text = format_kernel(split)
    assert "for A1_p2_chunk in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]):" in text
    assert "for A1_p2_in in [0, 16):" in text
    assert "let A1_p2: i64 = A1_p2_chunk * 16 + A1_p2_in" in text
    for fmt in ("csr", "bsr(16,16)", "ell", "nm(2,4)"):
        other, _ = _lowered(fmt, "float16")
        assert format_kernel(whole_chunks(other)) == format_kernel(other)


@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
def test_whole_chunks_keeps_the_interpreters_bits(shape):
    before, _ = _lowered("condensed(16,16)", "float16")
    m, k, n, density = shape
    t, _, B = _case(m, k, n, density, seed=m + n, dtype="float16", fmt="condensed(16,16)")
    before = widen_outputs(before)
    np.testing.assert_array_equal(_interpret(whole_chunks(before), t, B, "float16"),
                                  _interpret(before, t, B, "float16"))


CASES = [(shape, 8) for shape in SHAPES] + [(SHAPES[0], 32), (SHAPES[6], 64)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape, tile_cols", CASES, ids=str)
def test_the_pass_keeps_the_interpreters_bits(shape, tile_cols, dtype):
    """The tiles add the same products in the same order as the scalar loops."""
    before, _ = _lowered("condensed(16,16)", dtype)
    after = verify(tensorize_chunks(before, tile_cols=tile_cols), "tensorize_chunks")
    assert tensorized(after) == tile_cols
    m, k, n, density = shape
    t, _, B = _case(m, k, n, density, seed=m + 7 * n, dtype=dtype, fmt="condensed(16,16)")
    want = _interpret(widen_outputs(before), t, B, dtype)
    np.testing.assert_array_equal(_interpret(after, t, B, dtype), want)


def test_padding_reads_no_b_row_and_gives_zero():
    """A padding slot (crd = -1) selects zero for B, never ``B[-1 * N + j]``: with
    an infinite B everywhere the kept columns do not name, the result is finite."""
    before, _ = _lowered("condensed(16,16)", "float16")
    after = tensorize_chunks(before, tile_cols=8)
    A = sp.csr_matrix(np.eye(16, 20, dtype=np.float32))      # window columns 0..15: full
    A = sp.vstack([A, sp.csr_matrix(([1.0], ([0], [19])), shape=(1, 20))]).tocsr()
    t = spc.tensor(A, "condensed(16,16)", dtype=np.float16)
    assert (t.arrays[1]["crd"] < 0).sum() == 15               # the second window's padding
    B = np.full((20, 8), np.inf, dtype=np.float32)
    B[:16] = 1.0
    B[19] = 2.0
    got = _interpret(after, t, B, "float16")
    assert np.isfinite(got).all() and got[16].tolist() == [2.0] * 8


@pytest.mark.parametrize("fmt", ["condensed(16,8)", "condensed(16,16)"])
def test_tf32_tiles_compute_the_product_of_rounded_inputs(fmt):
    before, _ = _lowered(fmt, "float32", tf32=True)
    after = verify(tensorize_chunks(before, tile_cols=16, tf32=True), "tensorize_chunks")
    assert tensorized(after) == 16 and uses_tf32(after)
    assert tensorize_chunks(before, tile_cols=16) is before      # float32 needs tf32=True
    for m, k, n, density in SHAPES[:5]:
        t, _, B = _case(m, k, n, density, seed=m + 3 * n, dtype="float32", fmt=fmt)
        rounded = Tensor(t.shape, t.format, t.arrays, to_tf32(t.vals))
        want = _interpret(widen_outputs(before), rounded, to_tf32(B), "float32")
        np.testing.assert_array_equal(_interpret(after, t, B, "float32"), want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_cuda_pipeline_matches_float64(dtype):
    """The whole CUDA pipeline's IR (tiles, mapping, outputs), interpreted with its
    race check, against float64 of the same 16-bit inputs."""
    _, ck = _lowered("condensed(16,16)", dtype)
    (kernel,) = ck._variant(DType.I32).kernels
    assert kernel.gpu is not None and tensorized(kernel) == 64
    assert ck.schedule.tensor_cores is True
    for m, k, n, density in [(37, 45, 19, 0.3), (48, 40, 70, 0.1), (20, 21, 5, 0.0)]:
        t, A, B = _case(m, k, n, density, seed=2 * m + n, dtype=dtype, fmt="condensed(16,16)")
        got = _interpret(kernel, t, B, dtype)
        ref = A @ B.astype(NP[dtype]).astype(np.float64)
        tol = 2e-3 if dtype == "float16" else 1e-2
        assert np.abs(got - ref).max(initial=0) <= tol * np.abs(ref).max(initial=1e-30)


def test_golden_ir():
    _, ck = _lowered("condensed(16,16)", "float16")
    assert_golden("tensorize_spmm_condensed1616_f16", ck.ir)


@pytest.mark.parametrize("fmt, dtype, kernel, kw", [
    ("condensed(16,8)", "float16", "spmm", {}),     # k 8: not the instruction's 16
    ("condensed(8,16)", "float16", "spmm", {}),     # windows of 8 rows: not its 16
    ("condensed(16,16)", "float32", "spmm", {}),    # float32 needs tf32=True
    ("condensed(16,16)", "float64", "spmm", {}),
    ("condensed(16,16)", "float16", "spmv", {}),    # no dense columns to tile
])
def test_where_the_pass_does_not_apply(fmt, dtype, kernel, kw):
    before, ck = _lowered(fmt, dtype, kernel, **kw)
    assert tensorize_chunks(before) is before
    assert not any(tensorized(k) for k in ck._variant(DType.I32).kernels)
    assert ck.schedule.tensor_cores is False
    with pytest.raises(spc.ScheduleError, match="condensed"):
        spc.compile(kernel, fmt=fmt, dtype=dtype, tensor_cores=True, **CUDA, **kw)


def test_the_pass_leaves_a_mapped_kernel_alone():
    before, _ = _lowered("condensed(16,16)", "float16")
    once = tensorize_chunks(before)
    assert tensorize_chunks(once) is once
    assert tensorize_chunks(before, tile_cols=12) is before


def test_the_schedule_reports_and_steers_the_tiles():
    k = spc.compile("spmm", fmt="condensed(16,16)", dtype="bfloat16", tile_cols=32, **CUDA)
    assert k.schedule.tensor_cores is True and k.schedule.tile_cols == 32
    assert "@mma_k" in k.ir and "spc_mma_16816<true>" in k.source
    t = spc.compile("spmm", fmt="condensed(16,8)", tf32=True, **CUDA)
    assert t.schedule.tf32 is True and "spc_mma_1688_tf32" in t.source
    off = spc.compile("spmm", fmt="condensed(16,16)", dtype="float16", tensor_cores=False,
                      **CUDA)
    assert off.schedule.tensor_cores is False and "mma" not in off.ir


def test_nvcc_compiles_the_tiles():
    """sm_90: float16, bfloat16 and tf32 tiles, in one batch; sm_75 (the shuffle
    fallback) once, float16."""
    from cuda_env import NVCC, nvcc, nvcc_many
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    sources = [spc.compile("spmm", fmt="condensed(16,16)", dtype=dt, tile_cols=32,
                           **CUDA).source for dt in ("float16", "bfloat16")]
    sources.append(spc.compile("spmm", fmt="condensed(16,8)", tf32=True, **CUDA).source)
    for (code, log), source in zip(nvcc_many(sources), sources):
        assert code == 0, f"nvcc failed:\n{log}\n--- source ---\n{source}"
    code, log = nvcc(sources[0], arch="sm_75")
    assert code == 0, log

