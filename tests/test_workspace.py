"""Row workspaces in the IR (spc/ir/workspace.py): the sorts the gather emits,
the lowering that routes a sparse output through a workspace, the reference
interpreter on that IR (before and after the CPU passes, races checked), the
chunks map_parallel gives each thread, and what stays refused.
"""
from __future__ import annotations

from itertools import count

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.interp import run_kernel
from spc.ir.lower import uses_workspace
from spc.ir.nodes import (Alloc, Block, Buffer, DType, For, Kernel, Let, LoopKind, Param, ParamRole,
                          Store, Var, i64)
from spc.ir.printer import format_expr, format_kernel
from spc.ir.traverse import walk
from spc.ir.verify import verify
from spc.ir.workspace import insertion_sort, merge_sort
from spc.passes.pipeline import cpu_pipeline
from spc.passes.map_parallel import map_parallel
from spc.runtime.pack_rows import pack_rows
from spc.schedule import Schedule

from matrices import MATRICES, from_mask, random_mask, rng_for
from test_interp import interpret, lower_expr

I64 = DType.I64
SPGEMM = "C[i,j] = A[i,k]*B[k,j]"
CSR3 = {"A": "csr", "B": "csr", "C": "csr"}


# ---------------------------------------------------------------- the sorts


def _sort_kernel(sort) -> Kernel:
    """A kernel sorting xs[0, n) with ``sort``; xs has 2n entries, and the sorted
    entries end at xs[off, off + n), off stored in out[0]."""
    xs, n, out = Buffer("xs", DType.I32), Var("n", I64), Buffer("out", I64)
    names = count()
    fresh = lambda stem: Var(f"{stem}{next(names)}", I64)      # noqa: E731
    off = Var("off", I64)
    body = sort(xs, n, n, off, fresh) if sort is merge_sort else sort(xs, n, fresh)
    body = Block((Let(off, i64(0)), body, Store(out, i64(0), off)))
    params = (Param(xs, ParamRole.OUTPUT), Param(out, ParamRole.OUTPUT), Param(n, ParamRole.SIZE))
    return verify(Kernel("sort", params, body))


def _runs(rng, n: int, runs: int) -> np.ndarray:
    """n distinct values as ``runs`` ascending runs (a gathered Gustavson row)."""
    values = rng.permutation(5 * n)[:n]
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(runs, n) - 1, replace=False)) \
        if n > 1 and runs > 1 else []
    return np.concatenate([np.sort(part) for part in np.split(values, cuts)]) if n else values


@pytest.mark.parametrize("sort", [insertion_sort, merge_sort], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n, runs", [(0, 1), (1, 1), (2, 2), (3, 3), (16, 1), (17, 17),
                                     (64, 5), (101, 101), (40, 2), (33, 32)])
def test_ir_sorts_sort(sort, n, runs):
    rng = rng_for(f"sort-{n}-{runs}")
    xs = _runs(rng, n, runs).astype(np.int32)
    buf = np.concatenate([xs, np.full(n, -7, np.int32)])
    out = np.zeros(1, np.int64)
    run_kernel(_sort_kernel(sort), {"xs": buf, "out": out, "n": n})
    off = int(out[0])
    assert off in (0, n)
    assert np.array_equal(buf[off:off + n], np.sort(xs))


# ---------------------------------------------------------------- lowering


def test_spgemm_lowers_to_assemble_and_compute_with_a_workspace():
    lowered = lower_expr(SPGEMM, CSR3)
    program = lowered.program
    assert program.index_order == ("i", "k", "j") and program.drops_zeros
    assemble, compute = program.kernels
    for kernel in (assemble, compute):
        workspaces = [n for n in walk(kernel.body) if isinstance(n, Alloc) and n.is_workspace]
        assert workspaces and all(format_expr(a.size) in ("size_j", "size_j * 2")
                                  for a in workspaces)
        assert "workspace C1_ws_mark: i8[size_j]" in format_kernel(kernel)
        assert kernel.workspaces == tuple(a.buf.name for a in workspaces)
    assert "C_vals" not in {p.name for p in assemble.params}      # counting reads no values
    assert "C1_ws_vals" in compute.workspaces


@pytest.mark.parametrize("expr, formats, order, expected", [
    (SPGEMM, CSR3, ("i", "k", "j"), True),
    (SPGEMM, CSR3, ("i", "j", "k"), False),       # appends in storage order (no workspace)
    ("C[i,j] = A[i,j] + B[i,j]", CSR3, ("i", "j"), False),
    (SPGEMM, {"A": "csr", "B": "csr"}, ("i", "k", "j"), False),      # dense output
])
def test_uses_workspace(expr, formats, order, expected):
    lowered = lower_expr(expr, formats)
    assert uses_workspace(lowered.assign, lowered.formats, order) == expected


def test_strict_orders_are_still_preferred():
    """An output that can be appended in storage order is (no workspace): csr x csc
    keeps its inner-product order."""
    lowered = lower_expr(SPGEMM, {"A": "csr", "B": "csc", "C": "csr"})
    assert lowered.program.index_order == ("i", "j", "k")
    assert not lowered.program.drops_zeros


# ---------------------------------------------------------------- the interpreter


def _operands(case_id: str):
    case = next(c for c in MATRICES if c.id == case_id)
    a = case.build(np.float64)
    rng = rng_for(f"{case_id}-ws-B")
    b = from_mask(random_mask(rng, (a.shape[1], 19), 0.25), rng, np.float64)
    return a, b


SMALL = ["square_40x40", "rows0_0x9", "cols0_9x0", "nnz0_12x15", "empty_rows_30x25",
         "dense_row_40x50", "one_1x1"]


@pytest.mark.parametrize("case_id", SMALL)
def test_interpreter_gives_scipys_product(case_id):
    a, b = _operands(case_id)
    lowered = lower_expr(SPGEMM, CSR3)
    np.testing.assert_allclose(interpret(lowered, {"A": a, "B": b}), (a @ b).toarray(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case_id", SMALL)
def test_cpu_passes_keep_the_numbers(case_id):
    """After the CPU pipeline (chunks of rows in parallel, each with its own
    workspaces) the interpreter, checking races, gives the lowered IR's numbers."""
    a, b = _operands(case_id)
    lowered = lower_expr(SPGEMM, CSR3)
    after = []
    for kernel in lowered.program.kernels:
        for p in cpu_pipeline(Schedule()):
            kernel = verify(p(kernel), p.__name__)
        after.append(kernel)
    assert all(any(isinstance(n, For) and n.kind is LoopKind.PARALLEL for n in walk(k.body))
               for k in after)
    before = interpret(lowered, {"A": a, "B": b})
    np.testing.assert_array_equal(interpret(lowered, {"A": a, "B": b}, kernels=tuple(after)),
                                  before)


def test_map_parallel_gives_each_chunk_its_workspaces():
    lowered = lower_expr(SPGEMM, CSR3)
    chunked = verify(map_parallel(lowered.program.compute), "map_parallel")
    (loop,) = chunked.body.body
    assert loop.kind is LoopKind.PARALLEL and chunked.workspaces == ()
    allocs = [s for s in loop.body.body if isinstance(s, Alloc)]
    assert [a.buf.name for a in allocs] == list(lowered.program.compute.workspaces)


def test_map_parallel_leaves_unclaimed_workspaces_serial():
    """Without the lowerer's claim that rows leave the workspace zeroed, the rows stay serial."""
    from dataclasses import replace
    lowered = lower_expr(SPGEMM, CSR3)
    unclaimed = replace(lowered.program.compute, workspaces=())
    assert map_parallel(unclaimed) is unclaimed


# ---------------------------------------------------------------- packing dropped entries


def test_pack_rows_keeps_each_rows_first_entries():
    pos = np.array([0, 2, 2, 5], np.int32)
    crd = np.array([0, 3, 1, 2, -1], np.int32)
    vals = np.array([1.0, 2.0, 3.0, 4.0, 9.0])
    kept = np.array([2, 0, 2], np.int32)
    p, c, v = pack_rows(pos, kept, crd, vals)
    assert p.tolist() == [0, 2, 2, 4] and c.tolist() == [0, 3, 1, 2]
    assert v.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("seed", range(4))
def test_pack_rows_matches_a_loop_over_rows(seed):
    """Empty rows first, last and between, rows keeping none, some or all of
    their slots (the GPU's hash tables leave most slots unkept)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 5, 30) * rng.integers(0, 2, 30)
    lengths[0] = lengths[-1] = 0
    pos = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    kept = (rng.random(30) * (lengths + 1)).astype(np.int32)
    crd = rng.integers(0, 100, pos[-1]).astype(np.int32)
    vals = rng.random(pos[-1])
    take = [q for r in range(30) for q in range(pos[r], pos[r] + kept[r])]
    want_crd, want_vals = crd[take].tolist(), vals[take].tolist()
    p, c, v = pack_rows(pos, kept, crd, vals)          # in place on the host
    assert p.tolist() == [0, *np.cumsum(kept).tolist()]
    assert c.tolist() == want_crd and v.tolist() == want_vals


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_pack_rows_on_the_host_moves_entries_down_in_place(dtype):
    """Rows before the first that dropped an entry stay where they are; the
    result is the leading part of the arrays given (16-bit values move as bits)."""
    pos = np.array([0, 2, 3, 6, 8], np.int32)
    crd = np.array([0, 1, 2, 0, 1, 2, 5, 6], np.int32)
    vals = np.arange(1, 9).astype(dtype)
    kept = np.array([2, 1, 1, 2], np.int32)
    p, c, v = pack_rows(pos, kept, crd, vals)
    assert p.tolist() == [0, 2, 3, 4, 6]
    assert c.tolist() == [0, 1, 2, 0, 5, 6] and v.tolist() == [1, 2, 3, 4, 7, 8]
    assert np.shares_memory(c, crd) and np.shares_memory(v, vals)


def test_pack_rows_copies_nothing_when_all_are_kept():
    pos, crd, vals = np.array([0, 1]), np.array([0]), np.array([1.0])
    assert all(x is y for x, y in zip(pack_rows(pos, np.array([1]), crd, vals),
                                      (pos, crd, vals)))


# ---------------------------------------------------------------- conflicting orders


@pytest.mark.parametrize("expr, formats", [
    # the output's row index must come first, but B stores j before i: B is read
    # through a copy in csc (tests/test_operand_copies.py has the rest)
    pytest.param("C[i,j] = A[i,j]*B[j,i]", CSR3, id="transposed-operand"),
])
def test_conflicting_orders_read_a_copy(expr, formats):
    a = MATRICES[0].build(np.float64)
    k = spc.compile(expr, formats=formats)
    assert [c.format.name for c in k.copies] == ["csc"]
    out = k(A=a, B=a)
    assert sp.issparse(out) and out.format == "csr"
    np.testing.assert_allclose(out.toarray(), a.multiply(a.T).toarray(), rtol=1e-12)


def test_explicit_order_that_no_workspace_serves_names_the_orders_that_work():
    with pytest.raises(spc.UnsupportedError,
                       match=r"must start with \('i', 'j'\), or with \('i',\)"):
        spc.compile(SPGEMM, formats={"C": "csr"}, schedule=Schedule(order=("k", "i", "j")))
