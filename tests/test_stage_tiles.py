"""stage_tiles: a tensor-core tile's operands copied into the warp's shared memory by
16-byte moves (``passes/stage_tiles.py``, ``ir/moves.py``), without a GPU.

Golden printed IR; the interpreter's numbers bit for bit with and without the
copies, over block shapes, 16-bit types and tf32, whole and edge tiles; where
the pass does not apply; the shared-memory budget; the schedule knob; the
verifier's check of a loop's moves; the renderer printing the moves and
ldmatrix exactly where the IR stages a tile.  The GPU runs are in
``test_cuda_stage_tiles.py``; nvcc compiles staged tiles in ``test_tensorize.py``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cuda_c import render_body
from spc.errors import CompileError
from spc.ir.interp import run_kernel
from spc.ir.moves import copy_loop, moves_of
from spc.ir.nodes import (Alloc, BinOp, Buffer, Const, DType, For, Load, LoopKind, Select,
                          Store, Var)
from spc.ir.printer import format_kernel
from spc.ir.traverse import rewrite, walk
from spc.ir.verify import verify
from spc.passes.stage_tiles import SHARED_BYTES, stage_tiles, staged
from spc.passes.map_gpu import WARPS_PER_BLOCK
from test_ir_golden import assert_golden
from test_tensorize import NP, _args
from test_tensorize_nm import _case as _nm_case, _interpret as _nm_interpret

CUDA = dict(target="cuda", arch="sm_90")
I64 = DType.I64


def _kernel(fmt="bsr(16,16)", dtype="float16", kernel="spmm", **kw):
    (k,) = spc.compile(kernel, fmt=fmt, dtype=dtype, **CUDA, **kw)._variant(DType.I32).kernels
    return k


def _copies(kernel):
    return [n for n in walk(kernel.body) if isinstance(n, For) and n.moves is not None]


def _shared_bytes(kernel) -> int:
    return sum(WARPS_PER_BLOCK * a.size * a.buf.dtype.nbytes for a in walk(kernel.body)
               if isinstance(a, Alloc) and a.shared)


def test_golden_ir():
    """The pass on the scheduled kernel without it: the B tile (16 x 64) copied,
    rows padded by 8 elements, the product reading the copy; A's 16 x 16 block
    (256 consecutive elements) read in place; the edge tile's guarded loads
    untouched."""
    unstaged = _kernel(stage_tiles=False)
    assert _copies(unstaged) == []
    after = verify(stage_tiles(unstaged), "stage_tiles")
    assert_golden("stage_tiles_spmm_bsr1616_f16", format_kernel(after))
    assert [(c.moves.width, c.moves.cols, int(c.hi.value)) for c in _copies(after)] == \
        [(8, 64, 1024)]
    assert stage_tiles(after) == after                 # nothing left to stage


def test_large_consecutive_blocks_are_staged_after_the_rest():
    """bsr(32,32) at 32 columns: B's tile (rows apart) first, then A's block
    (1,024 consecutive elements: ``CONSECUTIVE_MIN``)."""
    k = _kernel("bsr(32,32)", tile_cols=32)
    assert [(c.moves.cols, int(c.hi.value)) for c in _copies(k)] == [(32, 1024), (32, 1024)]
    assert [c.body.body[2].value.buf.name for c in _copies(k)] == ["B_vals", "A_vals"]


def _interpret(kernel, ck, A, B, dtype):
    args = _args(ck, A, B, dtype)
    out = {p.name: p.value.dtype for p in kernel.params}["C_vals"].np
    args["C_vals"] = np.zeros(A.shape[0] * B.shape[1], dtype=out)
    run_kernel(kernel, args)
    return args["C_vals"]


# whole tiles beside edge tiles (12 columns: one tile of 8 and an edge), rows and k
# not multiples of a block, one column, nnz = 0 (the interpreter is slow: tiles are few)
SHAPES = [(32, 48, 12, 0.5), (20, 33, 1, 0.3), (32, 32, 8, 0.0)]


@pytest.mark.parametrize("fmt, dtype, kw", [
    ("bsr(16,16)", "float16", {}),
    ("bsr(16,32)", "bfloat16", {}),
    ("bsr(32,16)", "float32", {"tf32": True}),
    ("bsr(32,32)", "float16", {}),
])
def test_the_interpreter_gives_the_same_bits(fmt, dtype, kw):
    """The copies move the values the product read before: the same products in
    the same order, bit for bit, where tiles are whole and at the edges."""
    ck = {st: spc.compile("spmm", fmt=fmt, dtype=dtype, tile_cols=8, stage_tiles=st, **CUDA,
                          **kw) for st in (True, False)}
    (after,) = ck[True]._variant(DType.I32).kernels
    (before,) = ck[False]._variant(DType.I32).kernels
    assert _copies(after) and not _copies(before)
    for m, k, n, density in SHAPES:
        A = sp.random(m, k, density=density, format="csr", random_state=m, dtype=np.float32)
        B = np.random.default_rng(n).uniform(-1, 1, (k, n)).astype(np.float32)
        got = _interpret(after, ck[True], A, B, dtype)
        want = _interpret(before, ck[False], A, B, dtype)
        assert got.tobytes() == want.tobytes(), (m, k, n)
        ref = A.toarray().astype(NP[dtype]).astype(np.float64) @ \
            B.astype(NP[dtype]).astype(np.float64)
        tol = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 2e-3}[dtype]
        err = np.abs(got.astype(np.float64).reshape(m, n) - ref).max(initial=0)
        assert err <= tol * np.abs(ref).max(initial=1e-30)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_two_four_tiles_stage_b_and_keep_the_bits(dtype):
    """nm(2,4) on sparse tensor cores: B's 32 rows of the step (the ``let k`` the
    metadata picks from) copied; A's stored values, guarded, read in place."""
    ck = {st: spc.compile("spmm", fmt="nm(2,4)", dtype=dtype, tile_cols=8, stage_tiles=st,
                          **CUDA) for st in (True, False)}
    (after,) = ck[True]._variant(DType.I32).kernels
    (before,) = ck[False]._variant(DType.I32).kernels
    assert [(c.moves.cols, int(c.hi.value)) for c in _copies(after)] == [(8, 256)]
    assert "spc_ldmatrix<4, true>(" in render_body(after)
    for m, k, n, density in [(33, 64, 12, 0.5), (20, 21, 5, 0.3)]:
        t, A, B = _nm_case(m, k, n, density, seed=m, dtype=dtype)
        got, want = (_nm_interpret(kern, t, B, dtype) for kern in (after, before))
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("kernel, fmt, dtype, kw", [
    ("spmm", "csr", "float16", {}),                    # no tensor-core tile
    ("spmm", "bsr(16,16)", "float32", {}),             # float32 without tf32: scalar loops
    ("sddmm", "csr", "float32", {}),
    ("spmm", "bsr(16,16)", "float16", {"tensor_cores": False}),
    ("spmm", "nm(2,4)", "float16", {"tile_cols": 128}),   # B's tile would not fit
])
def test_where_the_pass_does_not_apply(kernel, fmt, dtype, kw):
    k = _kernel(fmt, dtype, kernel, **kw)
    assert not staged(k) and stage_tiles(k) is k


def test_tiles_fit_the_shared_memory_budget():
    """bsr(32,32) with 64 columns: the B tile (32 x 72 x 2 bytes a warp) fits, the A
    block beside it would not; 256 columns: only the A block fits."""
    k = _kernel("bsr(32,32)")
    assert [c.moves.cols for c in _copies(k)] == [64]
    assert _shared_bytes(k) <= SHARED_BYTES
    wide = _kernel("bsr(32,32)", tile_cols=256)
    assert [c.moves.cols for c in _copies(wide)] == [32]
    assert _shared_bytes(wide) <= SHARED_BYTES


def test_the_schedule_knob():
    k = spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", **CUDA)
    assert k.schedule.stage_tiles is True
    off = spc.compile("spmm", fmt="bsr(16,16)", dtype="float16", stage_tiles=False, **CUDA)
    assert off.schedule.stage_tiles is False
    with pytest.raises(spc.ScheduleError, match="stage_tiles"):
        spc.compile("spmm", fmt="csr", dtype="float16", stage_tiles=True, **CUDA).ir
    with pytest.raises(spc.ScheduleError, match="stage_tiles"):
        spc.Schedule(stage_tiles=True, tensor_cores=False)
    with pytest.raises(spc.ScheduleError, match="stage_tiles"):
        spc.compile("spmm", fmt="csr", stage_tiles=True, target="cpu").ir


def test_moves_of_accepts_copies_only():
    e, tile, src = Var("e", I64), Buffer("T", DType.F16), Buffer("B", DType.F16)
    loop = copy_loop(e, 4, 16, tile, 24, src, Var("base", I64), Var("size_j", I64))
    assert moves_of(loop, 8, 16)
    assert not moves_of(loop, 4, 16)                              # 8 bytes, not 16
    assert not moves_of(loop, 8, 8)                               # rows of 8, not 16
    assert not moves_of(replace(loop, kind=LoopKind.SERIAL), 8, 16)
    doubled = rewrite(loop, lambda n: replace(n, index=BinOp("+", n.index, Var("e_col", I64)))
                      if isinstance(n, Store) else n)
    assert not moves_of(doubled, 8, 16)                           # col at stride 2
    wide_src = copy_loop(e, 4, 16, tile, 24, Buffer("B", DType.F32), Const(0, I64),
                         Const(16, I64))
    assert not moves_of(wide_src, 4, 16)                          # f32 into an f16 tile


def test_the_verifier_checks_moves():
    k = _kernel()
    bad = rewrite(k.body, lambda n: replace(n, moves=replace(n.moves, width=4))
                  if isinstance(n, For) and n.moves is not None else n)
    with pytest.raises(CompileError, match="moves"):
        verify(replace(k, body=bad), "test")
    adding = rewrite(k.body, lambda n: replace(n, accumulate=True)
                     if isinstance(n, Store) and n.buf.name.endswith("_tile") else n)
    with pytest.raises(CompileError, match="moves"):
        verify(replace(k, body=adding), "test")        # a tile added into is no copy


def test_the_renderer_prints_moves_and_ldmatrix_where_the_ir_stages():
    src = render_body(_kernel())
    assert src.count("*reinterpret_cast<uint4*>") == 1 and "spc_aligned16(B_vals_tile" in src
    assert "spc_ldmatrix<2, true>(" in src and "spc_ldmatrix<4, " not in src
    both = render_body(_kernel("bsr(32,32)", tile_cols=32))
    assert both.count("*reinterpret_cast<uint4*>") == 2 and "spc_ldmatrix<4, false>(" in both
    plain = render_body(_kernel(stage_tiles=False))
    assert "uint4" not in plain and "spc_ldmatrix" not in plain
    tf32 = render_body(_kernel("bsr(16,16)", "float32", tf32=True))
    assert "uint4" in tf32 and "spc_ldmatrix" not in tf32       # tf32 fragments: scalar


# ---------------------------------------------------------------------------
# Gathered rows: condensed SpMM's B rows named by the chunk's column ids
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, dtype, kw", [("condensed(16,16)", "float16", {}),
                                            ("condensed(16,16)", "bfloat16", {}),
                                            ("condensed(16,8)", "float32", {"tf32": True})])
def test_gathered_rows_are_staged_and_keep_the_bits(fmt, dtype, kw):
    """The whole tile's B rows, ``B[crd[chunk * K + r] * size_j + ...]``, copied
    row by row through the column ids, a padding row (crd = -1) as zeros without
    reading B; the edge tile's guarded loads untouched; the interpreter's bits
    unchanged (whole and edge tiles, padding, an empty window)."""
    from test_tensorize_chunks import _case, _interpret
    ck = {st: spc.compile("spmm", fmt=fmt, dtype=dtype, tile_cols=16, stage_tiles=st,
                          **CUDA, **kw) for st in (True, False)}
    (after,) = ck[True]._variant(DType.I32).kernels
    (before,) = ck[False]._variant(DType.I32).kernels
    k = int(fmt.split(",")[1][:-1])
    assert [(c.moves.cols, int(c.hi.value)) for c in _copies(after)] == [(16, 16 * k)]
    text = format_kernel(after)
    assert "select(0 <= A1_crd[A1_p2_chunk * " in text.split("moves(")[1].split("\n")[3]
    for m, kdim, n, density in [(48, 40, 32, 0.2), (37, 45, 19, 0.3), (16, 16, 16, 1.0)]:
        t, _, B = _case(m, kdim, n, density, seed=m, dtype=dtype, fmt=fmt)
        got, want = (_interpret(kern, t, B, dtype) for kern in (after, before))
        assert got.tobytes() == want.tobytes()


def test_moves_of_accepts_gathered_and_kept_rows():
    e, tile, src = Var("e", I64), Buffer("T", DType.F16), Buffer("B", DType.F16)
    crd, row = Buffer("crd", DType.I32), Var("e_row", I64)
    gather = Load(crd, BinOp("+", Var("q", I64), row))
    keep = BinOp("<=", Const(0, I64), gather)
    loop = copy_loop(e, 16, 16, tile, 24, src, Var("base", I64), Var("size_j", I64),
                     src_row=gather, keep=keep)
    assert moves_of(loop, 8, 16) and isinstance(loop.body.body[2].value, Select)
    by_col = BinOp("<", Var("e_col", I64), Const(3, I64))     # a condition per element
    bad = copy_loop(e, 16, 16, tile, 24, src, Var("base", I64), Var("size_j", I64),
                    src_row=gather, keep=by_col)
    assert not moves_of(bad, 8, 16)


def test_the_renderer_moves_gathered_rows_with_an_alignment_test_for_any_row():
    """The vector path's alignment test takes the gathered row as 0 and 1 (the
    start is affine in it), and a row not kept stores zeros."""
    src = render_body(_kernel("condensed(16,16)"))
    assert "spc_aligned16(B_vals + ((((j_tile * 64) + (1 * size_j)) + 0)))" in src
    assert "make_uint4(0u, 0u, 0u, 0u)" in src and "spc_ldmatrix<2, true>(" in src
