"""The tile pass (issue 9 part 4): panels of an index as a schedule knob.

Golden IR; the interpreter giving the same numbers before and after the pass
(and after the whole CPU pipeline, whose parallel loops it checks for races);
compiled results against numpy / scipy on the edge matrices, over formats and
panel sizes that do not divide the index (a remainder panel); refusals.
"""
from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.nodes import Block, For, LoopKind
from spc.ir.printer import format_kernel
from spc.ir.traverse import walk
from spc.ir.verify import verify
from spc.passes import simplify
from spc.passes.pipeline import cpu_pipeline
from spc.passes.tile import tile, tiles

from matrices import MATRICES, dense_operand
from test_interp import KERNELS as INTERP_KERNELS, MATRICES as INTERP_MATRICES
from test_interp import interpret, lower_expr
from test_ir_golden import AVX2, assert_golden

N = 37          # columns of SpMM's dense operand: no panel size below divides it
K = 11          # SDDMM's reduction length


def _run_pipeline(kernel, passes):
    for p in passes:
        kernel = verify(p(kernel), p.__name__)
    return kernel


def _spmm_case(A):
    B = dense_operand("B", (A.shape[1], N))
    return {"A": A, "B": B}, A @ B


def _sddmm_case(A):
    X, Y = dense_operand("X", (A.shape[0], K)), dense_operand("Y", (A.shape[1], K))
    return {"A": A, "X": X, "Y": Y}, A.multiply(X @ Y.T).toarray()


def _spmv_case(A):
    x = dense_operand("x", A.shape[1])
    return {"A": A, "x": x}, A @ x


CASES = {"spmm": _spmm_case, "sddmm": _sddmm_case, "spmv": _spmv_case}

# (kernel, format of A, tiles): every place a panel loop lands
TILED = [
    pytest.param("spmm", "csr", {"j": 4}, id="spmm-csr-j4"),       # N panels above the rows
    pytest.param("spmm", "csr", {"i": 3}, id="spmm-csr-i3"),       # row panels
    pytest.param("spmm", "csr", {"i": 5, "j": 8}, id="spmm-csr-i5-j8"),
    pytest.param("spmm", "coo", {"j": 5}, id="spmm-coo-j5"),       # inside the row merge
    pytest.param("spmm", "csc", {"j": 6}, id="spmm-csc-j6"),
    pytest.param("spmm", "bsr(2,3)", {"j": 7}, id="spmm-bsr23-j7"),
    pytest.param("spmm", "dense", {"k": 3}, id="spmm-dense-k3"),   # a reduction, in place
    pytest.param("spmm", "dense", {"j": 16}, id="spmm-dense-j16"),
    pytest.param("sddmm", "csr", {"k": 4}, id="sddmm-csr-k4"),     # inside each entry's sum
    pytest.param("spmv", "csr", {"i": 4}, id="spmv-csr-i4"),
    pytest.param("spmv", "dense", {"j": 3}, id="spmv-dense-j3"),   # a reduction, in place
]

EDGE = [c for c in MATRICES if c.id in (
    "tall_60x17", "wide_13x70", "rows0_0x9", "cols0_9x0", "one_1x1", "nnz0_12x15",
    "empty_rows_30x25", "dense_row_40x50", "power_law_200x150")]


def _lowered(kernel, fmt):
    formats = {"A": fmt} if fmt != "dense" else {"A": "dense"}
    if kernel == "sddmm":
        formats["S"] = fmt if fmt != "dense" else "dense"
    return lower_expr(kernel, formats)


# ---------------------------------------------------------------------- golden IR


def test_the_pass_puts_n_panels_above_the_rows_golden():
    """The pass alone on SpMM over csr (after simplify): the golden pair."""
    lowered = _lowered("spmm", "csr")
    (before,) = lowered.program.kernels
    after = verify(tile(simplify(before), sizes=(("j", 64),)))
    assert_golden("passes_spmm_csr.3_tile_j64", format_kernel(after))


@pytest.mark.parametrize("kernel, knob, name", [
    ("spmm", {"j": 64}, "tile_spmm_csr_j64"),
    ("sddmm", {"k": 16}, "tile_sddmm_csr_k16"),
])
def test_the_scheduled_ir_matches_golden(kernel, knob, name):
    k = spc.compile(kernel, fmt="csr", features=AVX2, schedule=spc.Schedule(tile=knob))
    assert_golden(name, k.ir)


def test_threads_take_chunks_of_rows_each_walking_every_panel():
    k = spc.compile("spmm", fmt="csr", tile={"j": 64})
    lines = k.ir.splitlines()
    assert lines[5].startswith("  for i_chunk in [0, ") and lines[5].endswith("@parallel:")
    assert "    for j_tile in [0, (size_j + 63) / 64):" in lines
    assert "      for i in [i_chunk_lo, i_chunk_hi):" in lines
    assert k.schedule.tile == (("j", 64),) and k.schedule.tile_cols == 64


def test_row_panels_are_the_independent_loop_threads_take():
    k = spc.compile("spmm", fmt="csr", tile={"i": 16})
    (kernel,) = k.lowered_kernels()
    assert kernel.outer_independent == "i_tile"
    (par,) = [n for n in walk(kernel.body) if isinstance(n, For) and n.kind is LoopKind.PARALLEL]
    assert par.var.name == "i_tile"


def test_a_reduction_stays_inside_the_sum_it_splits():
    k = spc.compile("sddmm", fmt="csr", tile={"k": 16}, parallel=False)
    lines = [s.strip() for s in k.ir.splitlines()]
    acc, panels, store = (lines.index("let acc: f32 = 0.0f"),
                          lines.index("for k_tile in [0, (size_k + 15) / 16):"),
                          lines.index("S_vals[A1_p3] = A_vals[A1_p3] * acc"))
    assert acc < panels < store


# ---------------------------------------------------------------------- interpreter


INTERPRETED = [c for c in EDGE if c.id in (          # small: the interpreter is slow
    "wide_13x70", "rows0_0x9", "cols0_9x0", "nnz0_12x15", "empty_rows_30x25")]


@pytest.mark.parametrize("case", INTERPRETED, ids=str)
@pytest.mark.parametrize("kernel, fmt, knob", TILED)
def test_the_interpreter_gives_the_same_numbers_before_and_after(kernel, fmt, knob, case):
    """The pass alone: bit for bit (each entry sums its terms in the same order);
    the whole CPU pipeline with tiles (parallel loops race-checked): scipy's."""
    A = case.build()
    operands, want = CASES[kernel](A)
    lowered = _lowered(kernel, fmt)
    (before,) = lowered.program.kernels
    sizes = spc.Schedule(tile=knob).tile
    after = verify(tile(simplify(before), sizes=sizes))
    assert tiles(after) == dict(sizes)
    np.testing.assert_array_equal(interpret(lowered, operands, kernels=(after,)),
                                  interpret(lowered, operands))
    scheduled = _run_pipeline(before, cpu_pipeline(spc.Schedule(tile=knob)))
    got = interpret(lowered, operands, kernels=(scheduled,))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- compiled numbers


def _dense(x):
    if isinstance(x, spc.Tensor):
        x = x.to_scipy()
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@functools.lru_cache(maxsize=None)
def _compiled(kernel, fmt, knob):
    return spc.compile(kernel, fmt=fmt, dtype="float64", tile=dict(knob))


@pytest.mark.parametrize("case", EDGE, ids=str)
@pytest.mark.parametrize("kernel, fmt, knob", TILED)
def test_compiled_results_match_scipy(kernel, fmt, knob, case):
    A = case.build()
    operands, want = CASES[kernel](A)
    k = _compiled(kernel, fmt, tuple(knob.items()))
    np.testing.assert_allclose(_dense(k(*operands.values())), _dense(want),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [1, 3, 36, 37, 64, 1000])
@pytest.mark.parametrize("parallel", [True, False])
def test_panel_sizes_that_do_not_divide_n(size, parallel):
    A = next(c for c in MATRICES if c.id == "power_law_200x150").build(np.float32)
    B = dense_operand("B", (A.shape[1], 300), np.float32)
    k = spc.compile("spmm", fmt="csr", tile={"j": size}, parallel=parallel)
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-4, atol=1e-4)


def test_unsorted_duplicate_entries_sum_as_scipy_does():
    A = sp.csr_matrix((np.array([1.0, 2.0, 4.0, 8.0, 16.0]), np.array([2, 0, 2, 1, 1]),
                       np.array([0, 0, 4, 5])), shape=(3, 3))
    B = dense_operand("B", (3, 10))
    k = spc.compile("spmm", fmt="csr", dtype="float64", tile={"j": 3, "i": 2})
    np.testing.assert_allclose(k(A, B), A.toarray() @ B, rtol=1e-12)


@pytest.mark.parametrize("knob", [dict(reorder_rows="length"), dict(reorder_rows="similarity"),
                                  dict(split_rows=4, deterministic=False),
                                  dict(tile_cols=4), dict(threads=1)])
def test_n_panels_combine_with_the_other_row_knobs(knob):
    A = next(c for c in MATRICES if c.id == "power_law_200x150").build()
    B = dense_operand("B", (A.shape[1], N))
    k = spc.compile("spmm", fmt="csr", dtype="float64", tile={"j": 8}, **knob)
    assert "j_tile" in k.ir
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-12)
    np.testing.assert_allclose(k(k.prepare(A), B), A @ B, rtol=1e-12)


def test_an_epilogue_sees_the_whole_sum():
    """relu(sum + b) over a tiled output index: the epilogue runs after the row's
    panels are summed, so it sees the full sum."""
    A = next(c for c in MATRICES if c.id == "dense_row_40x50").build()
    B, b = dense_operand("B", (A.shape[1], N)), dense_operand("b", N)
    k = spc.compile("C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])", formats={"A": "csr"},
                    dtype="float64", tile={"j": 5})
    np.testing.assert_allclose(k(A=A, B=B, b=b), np.maximum(A @ B + b, 0), rtol=1e-12)


def test_a_dense_output_each_panel_overwrites_is_right_in_any_memory():
    """Dense SpMM stores each entry once: the panels together must store them all
    (the runtime skips zeroing such an output)."""
    A = dense_operand("A", (9, 13))
    B = dense_operand("B", (13, N))
    k = spc.compile("spmm", fmt="dense", dtype="float64", tile={"j": 10, "k": 4})
    out = np.full((9, N), np.nan)
    np.testing.assert_allclose(k(A, B, out=out), A @ B, rtol=1e-12)


def test_index_names_are_the_users():
    k = spc.compile("C[row_i, col_j] = A[row_i, k] * B[k, col_j]", formats={"A": "csr"},
                    tile={"col_j": 8})
    assert k.schedule.tile == (("col_j", 8),)
    A = next(c for c in MATRICES if c.id == "tall_60x17").build(np.float32)
    B = dense_operand("B", (17, 20), np.float32)
    np.testing.assert_allclose(k(A=A, B=B), A @ B, rtol=1e-4, atol=1e-5)


def test_the_schedule_space_offers_n_panels():
    space = spc.schedule_space("spmm", fmt="csr")
    tiled = [s for s in space if s.tile]
    assert {dict(s.tile)["j"] for s in tiled} == {64, 128, 256}
    assert all(spc.compile("spmm", fmt="csr", schedule=s).schedule.tile == s.tile
               for s in tiled[:3])


def test_the_schedule_space_tries_panels_in_spcs_loop_order_only():
    """Tried in every loop order, panels doubled the space of a 4-index kernel
    (1,254 -> 4,494 schedules, 137 -> 273 s: fuzz seed 1104's schedule picks timed out)."""
    space = spc.schedule_space("spmm", fmt="csr")
    default = spc.compile("spmm", fmt="csr").schedule.order
    assert {s.order for s in space if s.tile} == {default}


def test_the_schedule_space_offers_no_panels_where_none_apply():
    assert not [s for s in spc.schedule_space("spmv", fmt="coo") if s.tile]


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize("value, message", [
    ({"j": 0}, "the panel size of index 'j' must be a positive int, not 0"),
    ({"j": -8}, "must be a positive int, not -8"),
    ({"j": True}, "must be a positive int, not True"),
    ({"j": 2.5}, "must be a positive int, not 2.5"),
    ("j", "must map index names to panel sizes"),
    (64, "must map index names to panel sizes"),
    ({3: 4}, "must map index names to panel sizes"),
    ([("j", 4), ("j", 8)], "names an index more than once"),
])
def test_an_illegal_knob_is_refused_when_the_schedule_is_made(value, message):
    with pytest.raises(spc.ScheduleError, match=message) as err:
        spc.Schedule(tile=value)
    assert err.value.knob == "tile"


def test_the_knob_is_stored_sorted_and_hashable():
    s = spc.Schedule(tile={"j": 128, "i": 64})
    assert s.tile == (("i", 64), ("j", 128))
    assert s == spc.Schedule(tile=[["j", 128], ["i", 64]]) and hash(s) == hash(
        spc.Schedule(tile=(("i", 64), ("j", 128))))
    assert str(s) == "Schedule(tile=(('i', 64), ('j', 128)))"
    assert spc.Schedule(tile={}).tile is None


@pytest.mark.parametrize("kernel, fmt, knob, message", [
    ("spmm", "csr", {"x": 8}, "this kernel has no index 'x' \\(its loop indices: i, j, k\\)"),
    ("spmm", "csr", {"k": 8}, "index 'k' has no loop over \\[0, size\\) of its own here"),
    ("sddmm", "csr", {"j": 8}, "index 'j' has no loop over"),
    ("spmv", "coo", {"i": 8}, "index 'i' has no loop over"),
])
def test_an_index_without_a_dense_loop_is_refused(kernel, fmt, knob, message):
    with pytest.raises(spc.ScheduleError, match=message) as err:
        spc.compile(kernel, fmt=fmt, tile=knob)
    assert err.value.knob == "tile"


def test_row_panels_with_permuted_rows_are_refused():
    with pytest.raises(spc.ScheduleError, match="reorder_rows' permutation"):
        spc.compile("spmm", fmt="csr", tile={"i": 8}, reorder_rows="length")


def test_cuda_refuses_panels():
    with pytest.raises(spc.ScheduleError, match="schedule tile: panels of an index are a "
                                                "CPU schedule") as err:
        spc.compile("spmm", fmt="csr", target="cuda", arch="sm_90", tile={"j": 64})
    assert err.value.knob == "tile"


def test_tiles_reads_the_panels_back():
    k = spc.compile("spmm", fmt="csr", tile={"i": 32, "j": 128})
    (kernel,) = k.lowered_kernels()
    assert tiles(kernel) == {"i": 32, "j": 128}
    assert tiles(spc.compile("spmm", fmt="csr").lowered_kernels()[0]) == {}


def test_the_tuning_database_keeps_the_knob_through_json():
    import json
    from spc.tuning.database import _schedule_from_json, _schedule_json
    s = spc.Schedule(tile={"j": 128, "i": 64}, parallel=False)
    assert _schedule_from_json(json.loads(json.dumps(_schedule_json(s)))) == s


@pytest.mark.parametrize("kernel_id", sorted(INTERP_KERNELS))
def test_tiling_any_index_of_any_kernel_keeps_its_numbers(kernel_id):
    """Every loop index of the interpreter's kernels (formats, sums, products,
    sparse outputs), panels of 2: the pipeline's IR runs race-free in the
    interpreter and gives the untiled numbers (or the index has no dense loop)."""
    kernel, formats, case = INTERP_KERNELS[kernel_id]
    A = INTERP_MATRICES["empty-rows-7x4"](3)
    operands, _ = case(A, 3)
    lowered = lower_expr(kernel, formats)
    order = [v for k in lowered.program.kernels
             for v in dict(k.attrs).get("order", "").split(",") if v]
    want = interpret(lowered, operands)
    for index in dict.fromkeys(order):
        schedule = spc.Schedule(tile={index: 2})
        scheduled = tuple(_run_pipeline(k, cpu_pipeline(schedule))
                          for k in lowered.program.kernels)
        np.testing.assert_allclose(interpret(lowered, operands, kernels=scheduled), want,
                                   rtol=1e-12, atol=1e-12, err_msg=f"tile={{{index!r}: 2}}")


def _running_blend(outer_independent):
    """``for i: for j: y[0] = y[0] * 0.5 + x[i * m + j]``: every iteration reads
    what the last wrote, so the (i, j) order is the result."""
    from spc.ir.nodes import (BinOp, Buffer, Const, DType, Kernel, Load, Param, ParamRole,
                              Store, Var, add, i64, mul)
    f64, n, m = DType.F64, Var("size_i", DType.I64), Var("size_j", DType.I64)
    i, j = Var("i", DType.I64), Var("j", DType.I64)
    x, y = Buffer("x_vals", f64), Buffer("y_vals", f64)
    blend = Store(y, i64(0), add(BinOp("*", Load(y, i64(0)), Const(0.5, f64)),
                                 Load(x, add(mul(i, m), j))))
    body = Block((For(i, i64(0), n, Block((For(j, i64(0), m, blend),))),))
    params = (Param(x, ParamRole.INPUT, "x"), Param(y, ParamRole.OUTPUT, "y"),
              Param(n, ParamRole.SIZE), Param(m, ParamRole.SIZE))
    return Kernel("blend", params, body, outer_independent=outer_independent)


def _assert_same_blend(kernel, after):
    """``kernel`` and ``after`` (a blend over a 5 x 7 x) leave the same bits in y[0]."""
    from spc.ir.interp import run_kernel
    x = dense_operand("x", 5 * 7)
    results = []
    for k in (kernel, after):
        y = np.zeros(1)
        run_kernel(k, {"x_vals": x, "y_vals": y, "size_i": 5, "size_j": 7})
        results.append(y[0])
    assert results[0] == results[1]


def test_panels_whose_entries_other_rows_share_stay_inside_the_rows():
    """Panels of j above i would reorder the updates of y[0] (a wrong answer):
    the pass keeps them inside the i loop, and the numbers are unchanged."""
    kernel = _running_blend(outer_independent=None)
    after = verify(tile(kernel, sizes=(("j", 2),)))
    assert [s.var.name for s in after.body.body] == ["i"]
    _assert_same_blend(kernel, after)


def test_panels_of_a_loop_carrying_a_scalar_stay_around_that_loop():
    """``let acc = 0; for i: for j: acc = acc * 0.5 + x[i * m + j]; y[0] = acc``:
    the loop carries ``acc`` from iteration to iteration, so its panels wrap it
    in place (in order), never the i loop."""
    from spc.ir.nodes import Assign, BinOp, Const, DType, Let, Store, Var, add, i64
    blend = _running_blend(outer_independent="i")
    acc = Var("acc", DType.F64)
    (outer,) = blend.body.body
    (inner,) = outer.body.body
    carried = Assign(acc, add(BinOp("*", acc, Const(0.5, DType.F64)), inner.body.value.rhs))
    body = Block((Let(acc, Const(0.0, DType.F64)),
                  replace(outer, body=Block((replace(inner, body=carried),))),
                  Store(inner.body.buf, i64(0), acc)))
    kernel = verify(replace(blend, body=body, outer_independent=None))
    after = verify(tile(kernel, sizes=(("j", 2),)))
    assert [s.var.name for s in after.body.body if isinstance(s, For)] == ["i"]
    _assert_same_blend(kernel, after)


def _attention_operands():
    A = next(c for c in MATRICES if c.id == "empty_rows_30x25").build()
    A = sp.csr_matrix(A[:25, :25])
    Q, K, V = (dense_operand(n, (25, 19)) for n in "QKV")
    return A, Q, K, V


@pytest.mark.parametrize("fuse", ["rows", True, False])
@pytest.mark.parametrize("knob", [{"k": 4}, {"d": 5}, {"i": 7, "d": 8}])
def test_a_program_tiles_each_statement_s_own_indices(knob, fuse):
    ops = _attention_operands()
    want = spc.compile("attention", fmt="csr", dtype="float64", fuse=fuse)(*ops)
    k = spc.compile("attention", fmt="csr", dtype="float64", fuse=fuse, tile=knob)
    assert "_tile in [0, " in k.ir
    np.testing.assert_allclose(np.asarray(k(*ops)), np.asarray(want), rtol=1e-12, atol=1e-12)


def test_a_program_refuses_an_index_no_statement_has():
    with pytest.raises(spc.ScheduleError, match="no statement of this program has an index "
                                                "'x' \\(its indices: d, i, j, k\\)"):
        spc.compile("attention", fmt="csr", schedule=spc.Schedule(tile={"x": 4}))


def test_schedule_knobs_given_as_keywords_reach_a_fused_program():
    """(A fix on the way: the fused path read the keywords as target options.)"""
    k = spc.compile("attention", fmt="csr", parallel=False)
    assert "@parallel" not in k.ir
