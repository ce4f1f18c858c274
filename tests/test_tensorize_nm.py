"""The tensorize_nm pass (passes/tensorize_nm.py) without a GPU: golden printed IR,
the interpreter's numbers before and after (bit for bit: the tiles add the same
products in the same order, the guarded-out slots adding zeros), where it applies
and where it does not, the knobs that steer it, the verifier's check of the
sparse k loop and the renderer's mma.sp tiles (compiled by nvcc, for sparse tensor
cores and for the shuffle fallback)."""
from __future__ import annotations

from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.errors import CompileError
from spc.formats.format import nm as nm_format
from spc.formats.tensor import Tensor
from spc.ir.interp import run_kernel
from spc.ir.lower import lower
from spc.ir.nodes import BinOp, DType, For, Let, LoopKind, Var
from spc.ir.traverse import rewrite, walk
from spc.ir.verify import verify
from spc.passes.simplify import simplify
from spc.passes.tensorize import tensorized
from spc.passes.tensorize_nm import tensorize_nm
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


def _interpret(kernel, t, B, dtype: str) -> np.ndarray:
    """C = A @ B by the interpreter, A an spc tensor (nm(2,4), or condensed in
    test_tensorize_chunks; output zeroed as the runtime does), as float64."""
    m, kdim = t.shape
    args = {"A_vals": t.vals, "B_vals": np.ascontiguousarray(B.astype(NP[dtype])).ravel(),
            "size_i": m, "size_k": kdim, "size_j": B.shape[1]}
    for lvl, arrays in enumerate(t.arrays):
        for name, arr in arrays.items():
            args[f"A{lvl}_{name}"] = arr
    out = {p.name: p.value.dtype for p in kernel.params}["C_vals"].np
    args["C_vals"] = np.zeros(m * B.shape[1], dtype=out)
    run_kernel(kernel, args)
    return args["C_vals"].astype(NP[dtype]).astype(np.float64).reshape(m, B.shape[1])


def _case(m, k, n, density, seed, dtype):
    """(A as an nm(2,4) tensor, A dense as float64, B): A random, pruned to 2:4;
    low densities leave groups with no nonzero (stored as explicit zeros)."""
    rng = np.random.default_rng(seed)
    dense = rng.uniform(-1, 1, (m, k)) * (rng.random((m, k)) < density)
    if m > 20:
        dense[16:32] = 0                       # an empty tile of rows
    W = spc.prune.nm(sp.csr_matrix(dense.astype(np.float32)), 2, 4)
    t = spc.tensor(W, "nm(2,4)", dtype=NP[dtype])
    B = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    return t, W.toarray().astype(NP[dtype]).astype(np.float64), B


# rows, k and columns no multiple of the tile's (16, 32, 8); k not a multiple of 4
# (a last group with a padding slot); an empty row tile, no nonzero, empty
# dimensions; and whole tiles (the regular path): (m, k, n, density)
SHAPES = [(37, 45, 19, 0.6), (16, 32, 8, 1.0), (40, 70, 1, 0.3), (20, 21, 5, 0.0),
          (17, 5, 9, 0.8), (33, 64, 16, 0.5), (32, 64, 24, 0.2), (0, 16, 8, 0.5),
          (16, 0, 8, 0.5), (16, 16, 0, 0.5), (18, 1, 3, 1.0)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("rows, tile_cols, step", [(16, 8, 16), (32, 32, 32)], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_the_pass_keeps_the_interpreters_bits(shape, rows, tile_cols, step, dtype):
    """The tiles add the same products in the same order as the scalar loops."""
    before, _ = _lowered("nm(2,4)", dtype)
    after = verify(tensorize_nm(before, tile_cols=tile_cols, rows=rows, step=step),
                   "tensorize_nm")
    assert tensorized(after) == tile_cols
    assert {n.hi.value for n in walk(after.body)
            if isinstance(n, For) and n.kind is LoopKind.MMA_M} == {rows}
    m, k, n, density = shape
    t, _, B = _case(m, k, n, density, seed=m + 7 * n, dtype=dtype)
    want = _interpret(widen_outputs(before), t, B, dtype)
    np.testing.assert_array_equal(_interpret(after, t, B, dtype), want)


def test_padding_slots_and_a_hand_made_tensor_keep_the_bits():
    """Offsets set by hand: groups with one stored entry and a padding slot (-1),
    a wholly padded group, entries at every pair of places."""
    before, _ = _lowered("nm(2,4)", "float16")
    after = tensorize_nm(before, tile_cols=8)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (0, -1), (3, -1), (-1, -1)]
    m, kdim = 18, 4 * len(pairs)
    off = np.array([pairs[(r + g) % len(pairs)] for r in range(m) for g in range(len(pairs))],
                   dtype=np.int8).reshape(-1)
    vals = np.where(off >= 0, np.arange(1, off.size + 1) % 7 - 3.0, 0.0).astype(np.float16)
    t = Tensor((m, kdim), nm_format(2, 4), [{}, {"off": off}], vals)     # validated
    B = np.random.default_rng(3).uniform(-1, 1, (kdim, 11)).astype(np.float32)
    want = _interpret(widen_outputs(before), t, B, "float16")
    np.testing.assert_array_equal(_interpret(after, t, B, "float16"), want)
    dense = np.zeros((m, kdim))
    for p, o in enumerate(off):
        if o >= 0:
            row, g = divmod(p // 2, len(pairs))
            dense[row, 4 * g + o] = float(vals[p])
    ref = dense @ B.astype(np.float16).astype(np.float64)
    assert np.abs(want - ref).max() <= 2e-3 * np.abs(ref).max()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_cuda_pipeline_matches_float64(dtype):
    """The whole CUDA pipeline's IR (tiles, mapping, outputs), interpreted with its
    race check, against float64 of the same 16-bit inputs."""
    _, ck = _lowered("nm(2,4)", dtype)
    (kernel,) = ck._variant(DType.I32).kernels
    assert kernel.gpu is not None and tensorized(kernel) == 64
    for m, k, n, density in [(37, 45, 19, 0.6), (33, 64, 70, 0.5), (20, 21, 5, 0.0)]:
        t, A, B = _case(m, k, n, density, seed=2 * m + n, dtype=dtype)
        got = _interpret(kernel, t, B, dtype)
        ref = A @ B.astype(NP[dtype]).astype(np.float64)
        tol = 2e-3 if dtype == "float16" else 1e-2
        assert np.abs(got - ref).max(initial=0) <= tol * np.abs(ref).max(initial=1e-30)


def test_golden_ir():
    _, ck = _lowered("nm(2,4)", "float16")
    assert_golden("tensorize_spmm_nm24_f16", ck.ir)


@pytest.mark.parametrize("fmt, dtype, kernel, kw", [
    ("nm(2,4)", "float32", "spmm", {}),        # sparse tf32 is 1:2, not 2:4
    ("nm(2,4)", "float64", "spmm", {}),
    ("nm(1,4)", "float16", "spmm", {}),        # other N:M patterns
    ("nm(2,8)", "float16", "spmm", {}),
    ("nm(4,8)", "float16", "spmm", {}),
    ("ell", "float16", "spmm", {}),
    ("nm(2,4)", "float16", "spmv", {}),        # no dense columns to tile
    ("nm(2,4)", "float16", "spmm", {"accumulate": "float64"}),
])
def test_where_the_pass_does_not_apply(fmt, dtype, kernel, kw):
    before, ck = _lowered(fmt, dtype, kernel, **kw)
    assert tensorize_nm(before) is before
    assert not any(tensorized(k) for k in ck._variant(DType.I32).kernels)
    assert ck.schedule.tensor_cores is False
    with pytest.raises(spc.ScheduleError, match="tensor_cores"):
        spc.compile(kernel, fmt=fmt, dtype=dtype, tensor_cores=True, **CUDA, **kw)


def test_the_pass_leaves_a_mapped_kernel_alone_and_refuses_odd_tiles():
    before, _ = _lowered("nm(2,4)", "float16")
    once = tensorize_nm(before)
    assert tensorize_nm(once) is once
    assert tensorize_nm(before, rows=24) is before          # not whole instructions
    assert tensorize_nm(before, step=24) is before
    assert tensorize_nm(before, tile_cols=12) is before


def test_a_sum_of_terms_adds_its_tile_to_the_output():
    before, _ = _lowered("nm(2,4)", "float16")
    after = tensorize_nm(replace(before, adds_to_output=True))
    writes = [n for n in walk(after.body) if hasattr(n, "accumulate") and n.buf.name == "C_vals"]
    assert writes and all(w.accumulate for w in writes)


def test_the_schedule_reports_and_steers_sparse_tensor_cores():
    k = spc.compile("spmm", fmt="nm(2,4)", dtype="float16", **CUDA)
    assert k.schedule.tensor_cores is True and k.schedule.tile_cols == 64
    assert "@mma_sparse_k" in k.ir and "spc_mma_sp_16832<false>" in k.source
    k = spc.compile("spmm", fmt="nm(2,4)", dtype="bfloat16", tile_cols=128, **CUDA)
    assert k.schedule.tile_cols == 128 and "spc_mma_sp_16832<true>" in k.source
    off = spc.compile("spmm", fmt="nm(2,4)", dtype="float16", tensor_cores=False, **CUDA)
    assert off.schedule.tensor_cores is False and "mma" not in off.ir
    k = spc.compile("spmm", fmt="nm(2,4)", tensor_cores=True, tile_cols=32, **CUDA)
    assert k.specialize("float16").schedule.tile_cols == 32      # dtype=None
    assert k.specialize("float32").schedule.tensor_cores is False


def test_the_schedule_space_offers_the_tiles_and_the_scalar_loops():
    from spc.schedule_space import schedule_space
    space = schedule_space("spmm", fmt="nm(2,4)", target="cuda", dtype="float16",
                           arch="sm_90")
    assert any(s.tensor_cores is False for s in space)
    assert {s.tile_cols for s in space if s.tensor_cores is not False} >= {16, 32, 128}


def _sparse_k(kernel):
    return [n for n in walk(kernel.body) if isinstance(n, For)
            and n.kind is LoopKind.MMA_SPARSE_K]


def test_the_verifier_checks_the_sparse_k_loop():
    before, _ = _lowered("nm(2,4)", "float16")
    after = tensorize_nm(before)
    verify(after)
    loop = _sparse_k(after)[0]
    let = loop.body.body[0]
    assert isinstance(let, Let)
    # a k that is not the slot's group plus its place
    bad = replace(let, value=BinOp("+", Var(loop.var.name, DType.I64), let.value.rhs))
    body = rewrite(after.body, lambda x: bad if x is let else x)
    with pytest.raises(CompileError, match="mma_sparse_k"):
        verify(replace(after, body=body))
    odd = rewrite(after.body, lambda x: replace(x, hi=type(x.hi)(8, x.hi.dtype))
                  if isinstance(x, For) and x.kind is LoopKind.MMA_SPARSE_K else x)
    with pytest.raises(CompileError, match="multiple of 16"):
        verify(replace(after, body=odd))


def test_two_instructions_per_step_render_two_mma_sp_steps():
    """A step of 32 slots (``step=32``) is two instructions' k per tile: the
    renderer's loop over them runs twice."""
    from spc.codegen.cuda_c import render_body
    from spc.passes.pipeline import cuda_pipeline
    from spc.schedule import Schedule
    before, _ = _lowered("nm(2,4)", "float16")
    k = tensorize_nm(before, tile_cols=16, step=32)
    for p in cuda_pipeline(Schedule(tensor_cores=False)):     # the passes after it
        k = verify(p(k), p.__name__)
    body = render_body(k)
    assert body.count("spc_mma_sp_16832<false>") == 2 and "< 2; ++spc_ki" in body


def test_nvcc_compiles_taller_tiles_and_longer_steps():
    """Tiles of 64 rows (four instructions per B fragment) stepping 32 slots."""
    from cuda_env import NVCC, nvcc
    from spc.passes.pipeline import cuda_pipeline
    from spc.schedule import Schedule
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    before, ck = _lowered("nm(2,4)", "bfloat16")
    k = tensorize_nm(before, tile_cols=16, rows=64, step=32)
    for p in cuda_pipeline(Schedule(tensor_cores=False)):
        k = verify(p(k), p.__name__)
    src = ck.target.render(k)
    assert "spc_a" in src and "[4][4]" in src            # four instructions' A fragments
    code, log = nvcc(src, arch="sm_90")
    assert code == 0, log


@pytest.mark.parametrize("arch, dtype", [("sm_90", "float16"), ("sm_90", "bfloat16"),
                                         ("sm_75", "float16")])
def test_nvcc_compiles_the_sparse_tiles_and_the_fallback(arch, dtype):
    """sm_80 and later run mma.sp; sm_75 the same products through shuffles (one
    type there: each sm_75 build takes ~47 s of CI's 15 minutes, and the two
    types' fallbacks differ only in the conversions the sm_90 builds compile)."""
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    src = spc.compile("spmm", fmt="nm(2,4)", dtype=dtype, tile_cols=32, **CUDA).source
    assert "spc_mma_sp_16832" in src
    code, log = nvcc(src, arch=arch)
    assert code == 0, log


def test_the_rendered_metadata_follows_the_documented_layout():
    """Each 2-bit place in a lane's metadata register: row g's slots 8 (t & 1) + q at
    bits 2q, row g + 8's at 16 + 2q (mma.sp m16n8k32, sparsity selector 0; see
    ``_Body.mma_sparse_product``), read from the source: a change of layout fails
    here before it reaches a GPU."""
    import re
    src = spc.compile("spmm", fmt="nm(2,4)", dtype="float16", tile_cols=8, **CUDA).source
    assert "spc_mma_sp_16832<false>(acc" in src
    terms = re.findall(r"\(\(unsigned\)\((.*?)\) & 3u\) << (\d+)", src)
    assert len(terms) == 2 * 16          # regular and residual tiles, 16 places each
    for text, shift in terms:
        row = re.search(r"spc_g\d+ \+ (\d+)\)\) \*", text)
        slot = re.search(r"8 \* \(spc_t\d+ & 1\) \+ (\d+)\)", text)
        assert row and slot, text
        assert int(shift) == 16 * (int(row.group(1)) == 8) + 2 * int(slot.group(1)), text
