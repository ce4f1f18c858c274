"""bitmap_workspaces (spc/passes/bitmap_workspaces.py): a row workspace's
coordinates kept as bits too, the row gathered by walking them; and the two
IR pieces it needs, ``<<`` and ``ctz``."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cuda_c import render_expr
from spc.ir.interp import run_kernel
from spc.ir.nodes import (BinOp, Block, Buffer, Call, DType, Kernel, Let, Param, ParamRole,
                          Store, Var, dtype_of, i64)
from spc.ir.printer import format_expr, format_kernel
from spc.ir.traverse import walk
from spc.errors import CompileError
from spc.ir.verify import verify
from spc.passes.bitmap_workspaces import WORD_SCAN_RATIO, bitmap_workspaces

from matrices import from_mask, random_mask, rng_for
from test_interp import interpret, lower_expr
from test_ir_golden import assert_golden

I64 = DType.I64
SPGEMM = "C[i,j] = A[i,k]*B[k,j]"
CSR3 = {"A": "csr", "B": "csr", "C": "csr"}


def _bits_kernel(expr) -> Kernel:
    """A kernel storing the i64 ``expr`` of ``x`` into out[0]."""
    out, x = Buffer("out", I64), Var("x", I64)
    return verify(Kernel("bits", (Param(out, ParamRole.OUTPUT), Param(x, ParamRole.SIZE)),
                         Block((Store(out, i64(0), expr),))))


@pytest.mark.parametrize("x", [1, 2, 12, 2**31, 2**32 + 2**20, 2**62, -2**63, 0])
def test_ctz_is_the_lowest_set_bits_place_and_64_for_zero(x):
    out = np.zeros(1, np.int64)
    run_kernel(_bits_kernel(Call("ctz", Var("x", I64))), {"out": out, "x": np.int64(x)})
    want = 64 if x == 0 else (x & -x).bit_length() - 1
    assert out[0] == want


def test_compiled_ctz_and_shift_agree_with_the_interpreter():
    """The CPU target's cttz and shl give the interpreter's numbers (a SpGEMM
    whose rows are gathered by the word scan checks the same on real rows)."""
    from spc.codegen.cpu import CPUTarget
    x = Var("x", I64)
    expr = BinOp("+", Call("ctz", x), BinOp("<<", i64(3), BinOp("&", x, i64(31))))
    kernel = _bits_kernel(expr)
    target = CPUTarget()
    loaded = target.load(target.build(target.render(kernel), kernel), kernel)
    for value in (1, 6, 40, 2**33):
        want, got = np.zeros(1, np.int64), np.zeros(1, np.int64)
        run_kernel(kernel, {"out": want, "x": np.int64(value)})
        loaded([got], [value])
        assert got[0] == want[0]


def test_shift_wraps_to_64_bits_in_the_interpreter():
    out = np.zeros(1, np.int64)
    run_kernel(_bits_kernel(BinOp("<<", i64(3), i64(62))), {"out": out, "x": np.int64(0)})
    assert out[0] == -2**62                  # 3 << 62 on 64 bits: 2**63 + 2**62, signed


def test_bit_operations_take_integers_and_ctz_an_i64():
    f = Var("f", DType.F64)
    n = Var("n", DType.I32)
    for bad in (BinOp("<<", f, i64(1)), Call("ctz", f), Call("ctz", n)):
        with pytest.raises(CompileError, match="integers|i64"):
            verify(Kernel("bad", (Param(f, ParamRole.SIZE), Param(n, ParamRole.SIZE)),
                          Block((Let(Var("y", dtype_of(bad)), bad),))))


def test_printer_and_cuda_spell_the_bit_operations():
    j, x = Var("j", I64), Var("x", I64)
    bit = BinOp("<<", i64(1), BinOp("&", j, i64(31)))
    assert format_expr(bit) == "1 << (j & 31)"
    assert format_expr(Call("ctz", x)) == "ctz(x)"
    assert render_expr(bit) == "(1 << (j & 31))"
    assert "__ffsll" in render_expr(Call("ctz", x))


# ---------------------------------------------------------------- the pass


def _compute():
    return lower_expr(SPGEMM, CSR3).program.compute


def test_golden_ir_of_the_compute_kernel():
    assert_golden("bitmap_workspaces_spgemm", format_kernel(bitmap_workspaces(_compute())))


def test_kernels_without_a_gather_are_left_alone():
    lowered = lower_expr(SPGEMM, CSR3)
    assemble = lowered.program.kernels[0]
    assert assemble.name.endswith("_assemble")
    assert bitmap_workspaces(assemble) is assemble
    spmv = lower_expr("spmv", fmt="csr").program.compute
    assert bitmap_workspaces(spmv) is spmv


def test_the_bitmap_is_a_workspace_of_words_and_the_sort_stays_for_sparse_rows():
    after = bitmap_workspaces(_compute())
    names = after.workspaces
    assert len(names) == 5 and names[1].endswith("_bits") and names[2].endswith("_words")
    text = format_kernel(after)
    assert f"<= C_ws_n0 * {WORD_SCAN_RATIO}" in text and "ctz(" in text
    assert "srt_" in text                              # the sort for rows sparser than that
    assert not any(isinstance(n, Store) and n.buf.name == names[1] and n.accumulate
                   for n in walk(after.body))


def _wide(rng, rows: int, cols: int, per_row: list[int]) -> sp.csr_matrix:
    """A csr matrix whose row r has per_row[r % len] entries at random columns."""
    mask = np.zeros((rows, cols), bool)
    for r in range(rows):
        n = min(cols, per_row[r % len(per_row)])
        mask[r, rng.choice(cols, size=n, replace=False)] = True
    return from_mask(mask, rng, np.float64)


@pytest.mark.parametrize("case", ["square", "wide_sparse_rows", "wide_mixed", "empty", "one"])
def test_interpreter_gives_the_same_numbers_before_and_after(case):
    """Rows of every density: the bitmap scan (denser rows), the insertion and
    merge sorts (rows of fewer than 1/WORD_SCAN_RATIO coordinates per word of
    the bitmap's second level), a product of no entries, a 1x1."""
    rng = rng_for(f"bitmap-{case}")
    if case == "square":
        a = from_mask(random_mask(rng, (40, 40), 0.2), rng, np.float64)
        b = from_mask(random_mask(rng, (40, 37), 0.2), rng, np.float64)
    elif case == "wide_sparse_rows":          # 300,000 columns: 293 second-level words;
        a = _wide(rng, 12, 30, [1, 5, 12])    # rows of 1-60 entries: insertion sorts (<= 16),
        b = _wide(rng, 30, 300_000, [1, 4, 7])  # merge sorts (<= 36), scans
        counts = np.diff((a @ b).tocsr().indptr)
        assert counts.min() <= 16 and any(16 < c <= 36 for c in counts) and counts.max() > 36
    elif case == "wide_mixed":                # some rows sorted, some scanned
        a = _wide(rng, 16, 40, [1, 25, 3, 40])
        b = _wide(rng, 40, 700, [2, 30, 5])
    elif case == "empty":
        a, b = sp.csr_matrix((5, 6)), sp.csr_matrix((6, 9))
    else:
        a, b = sp.csr_matrix(np.array([[2.0]])), sp.csr_matrix(np.array([[3.0]]))
    lowered = lower_expr(SPGEMM, CSR3)
    kernels = tuple(verify(bitmap_workspaces(k)) for k in lowered.program.kernels)
    before = interpret(lowered, {"A": a, "B": b})
    after = interpret(lowered, {"A": a, "B": b}, kernels=kernels)
    np.testing.assert_array_equal(after, before)
    np.testing.assert_allclose(after, (a @ b).toarray(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_spgemm_is_sorted_and_equals_scipy(threads):
    rng = rng_for("bitmap-compiled")
    a = _wide(rng, 300, 200, [1, 3, 60, 8])
    b = _wide(rng, 200, 5000, [2, 40, 9, 300])
    k = spc.compile(SPGEMM, formats=CSR3, threads=threads)
    c = k(a, b)
    assert c.has_sorted_indices
    assert all(np.all(np.diff(c.indices[c.indptr[r]:c.indptr[r + 1]]) > 0) for r in range(300))
    np.testing.assert_allclose(c.toarray(), (a @ b).toarray(), rtol=1e-12, atol=1e-12)
    again = k(a, b)                          # the workspaces left zeroed by every row
    np.testing.assert_array_equal(again.toarray(), c.toarray())
