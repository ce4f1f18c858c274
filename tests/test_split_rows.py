"""The split_rows pass and its inspector (issue 9): rows cut into pieces of at
most K nonzeros, long rows shared by several warps or threads, partial sums
added atomically, results equal to scipy's on every edge case."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.nodes import DType
from spc.runtime import inspectors
from spc.runtime.inspect_segments import auto_max_nnz, row_segments

CUDA = dict(target="cuda", arch="sm_90")
SPLIT = dict(split_rows=3, deterministic=False)


def _matrix():
    """40 x 30: empty rows, a dense row, a long row, the rest short."""
    A = sp.random(40, 30, density=0.1, format="lil", random_state=7)
    A[2, :] = 0
    A[9, :] = np.arange(1, 31)
    A[10, :25] = 1.5
    A[39, :] = 0
    return A.tocsr()


def _edge_matrices():
    yield "random", _matrix()
    yield "nnz0", sp.csr_matrix((6, 5))
    yield "rows0", sp.csr_matrix((0, 5))
    yield "cols0", sp.csr_matrix((4, 0))
    yield "one_dense_row", sp.csr_matrix(np.vstack([np.zeros((3, 8)), np.ones((1, 8)),
                                                    np.zeros((2, 8))]))
    yield "duplicates_unsorted", sp.csr_matrix(
        (np.array([1.0, 2.0, 4.0, 8.0, 16.0]), np.array([2, 0, 2, 1, 1]),
         np.array([0, 0, 4, 5])), shape=(3, 3))


EDGES = list(_edge_matrices())


# -- the IR ------------------------------------------------------------------

def test_the_cpu_ir_iterates_pieces_of_rows_on_threads():
    k = spc.compile("spmv", fmt="csr", dtype="float64", **SPLIT)
    lines = k.ir.splitlines()
    assert lines[0].endswith(
        "in A_segment_rows: i32* = segment_rows(A, 3), in A_segment_starts: i32* = "
        "segment_starts(A, 3), in A_segment_count: i32* = segment_count(A, 3)):")
    assert "# outer_independent" not in k.ir
    assert lines[3:6] == ["  for i_seg in [0, A_segment_count[0]) @parallel:",
                          "    let i: i64 = A_segment_rows[i_seg]",
                          "    let A0_p0: i64 = i"]
    assert "    let A1_p2_lo: i64 = A_segment_starts[i_seg]" in lines
    assert "    let A1_p2_hi: i64 = A_segment_starts[i_seg + 1]" in lines
    assert lines[-1] == "    y_vals[y0_p1] atomic+= acc"


def test_the_cuda_ir_gives_warps_pieces_and_adds_partial_sums_atomically():
    k = spc.compile("spmm", fmt="csr", split_rows=64, **CUDA)
    assert k.ir.splitlines()[5:] == [
        "  for i_seg in [0, A_segment_count[0]) @gpu_warp:",
        "    let i: i64 = A_segment_rows[i_seg]",
        "    let A0_p0: i64 = i",
        "    let C0_p1: i64 = i",
        "    for j in [0, size_j) @gpu_lane_split jam(4, copies=[B1_p5, C_vals_reg, j], when=wide):",
        "      let C_vals_reg: f32 = 0.0f",
        "      for A1_p2 in [A_segment_starts[i_seg], A_segment_starts[i_seg + 1]):",
        "        let k: i64 = A1_crd[A1_p2]",
        "        let B0_p4: i64 = k",
        "        let B1_p5: i64 = B0_p4 * size_j + j",
        "        C_vals_reg = C_vals_reg + A_vals[A1_p2] * B_vals[B1_p5]",
        "      C_vals[C0_p1 * size_j + j] atomic+= C_vals_reg",
    ]
    assert "segment_rows(A, 64)" in k.ir and "spc_atomic_add" in k.source


def test_sddmm_pieces_write_their_own_entries_and_stay_independent():
    """Each position owns its output: no atomics, deterministic, and the lane
    groups and flat enumeration still apply."""
    for kw in ({}, CUDA):
        k = spc.compile("sddmm", fmt="csr", split_rows=16, **kw)
        assert "# outer_independent: i_seg" in k.ir and "atomic" not in k.ir
        assert k.schedule.deterministic is True or kw
    cuda = spc.compile("sddmm", fmt="csr", split_rows=16, deterministic=True, **CUDA)
    assert "# gpu_group: k" in cuda.ir and "# gpu_flat: A1_p3" in cuda.ir


def test_auto_size_is_printed_as_auto():
    k = spc.compile("spmm", fmt="csr", split_rows=True, deterministic=False)
    assert "segment_rows(A, auto)" in k.ir
    assert k.schedule.split_rows is True


def test_the_schedule_reports_the_split():
    assert spc.compile("spmv", fmt="csr").schedule.split_rows is False
    k = spc.compile("spmv", fmt="csr", **SPLIT)
    assert k.schedule.split_rows == 3 and k.schedule.deterministic is False


# -- refusals ----------------------------------------------------------------

@pytest.mark.parametrize("kernel, fmt, expr", [
    ("spmv", "coo", None),                       # rows are not a dense level
    ("spmv", "dia", None),
    ("spmv", "ell", None),
    ("spmm", "bsr(2,2)", None),                  # a block row's rows loop comes first
    (None, None, "y[j] = A[i,j] * x[i]"),        # rows are not independent
    (None, None, "y[i] = A[i,j] * B[i,j]"),      # a merge of two rows, not a position loop
])
def test_split_rows_where_rows_cannot_be_split_is_refused(kernel, fmt, expr):
    with pytest.raises(spc.ScheduleError, match="split_rows: needs an independent outer "
                                                "loop over the rows") as err:
        if kernel:
            spc.compile(kernel, fmt=fmt, **SPLIT)
        else:
            formats = {t: "csr" for t in ("A", "B") if f"{t}[" in expr}
            spc.compile(expr, formats=formats, **SPLIT)
    assert err.value.knob == "split_rows"


def test_a_split_that_adds_atomically_is_refused_where_results_must_be_deterministic():
    with pytest.raises(spc.ScheduleError, match="deterministic=True forbids that"):
        spc.compile("spmm", fmt="csr", split_rows=8, deterministic=True, **CUDA)
    with pytest.raises(spc.ScheduleError, match="on target='cpu' results are deterministic "
                                                "unless deterministic=False"):
        spc.compile("spmm", fmt="csr", split_rows=8)


@pytest.mark.parametrize("value", [0, -4, 2.5, "64"])
def test_an_illegal_piece_size_is_refused(value):
    with pytest.raises(spc.ScheduleError, match="split_rows: must be a positive int"):
        spc.Schedule(split_rows=value)


def test_split_rows_and_reorder_rows_do_not_combine():
    with pytest.raises(spc.ScheduleError, match="does not combine with reorder_rows"):
        spc.Schedule(split_rows=8, reorder_rows="length")


# -- numbers -----------------------------------------------------------------

def _operands(kernel, A, rng):
    m, n = A.shape
    if kernel == "spmv":
        x = rng.standard_normal(n)
        return (A, x), A @ x
    if kernel == "spmm":
        B = rng.standard_normal((n, 37))       # 37: every register tile width and a rest
        return (A, B), A @ B
    X, Y = rng.standard_normal((m, 5)), rng.standard_normal((n, 5))
    return (A, X, Y), A.multiply(X @ Y.T).toarray()


def _dense(x):
    if isinstance(x, spc.Tensor):
        x = x.to_scipy()
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


@pytest.mark.parametrize("name, A", EDGES, ids=[n for n, _ in EDGES])
@pytest.mark.parametrize("max_nnz", [1, 3, 64, True])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
@pytest.mark.parametrize("parallel", [True, False])
def test_split_rows_give_scipys_numbers(kernel, max_nnz, name, A, parallel):
    ops, want = _operands(kernel, A, np.random.default_rng(3))
    s = spc.Schedule(parallel=parallel, split_rows=max_nnz, deterministic=False)
    k = spc.compile(kernel, fmt="csr", dtype="float64", schedule=s)
    np.testing.assert_allclose(_dense(k(*ops)), _dense(want), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_dense(k(k.prepare(A), *ops[1:])), _dense(want),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
@pytest.mark.parametrize("max_nnz", [1, 5, True])
def test_the_pass_keeps_interpreter_results(kernel, max_nnz):
    """The CUDA IR with split rows, run by the race-checking interpreter: atomic
    partial sums, and for SDDMM pieces that own their entries."""
    from test_cuda_render import _run_with
    A = _matrix()
    ops, want = _operands(kernel, A, np.random.default_rng(5))
    kw = dict(fmt="csr", split_rows=max_nnz, deterministic=False)
    cuda = spc.compile(kernel, dtype="float64", **kw, **CUDA)
    got = _run_with(cuda._variant(DType.I32).kernels, kernel, kw, "float64", *ops)
    np.testing.assert_allclose(_dense(got), _dense(want), rtol=1e-12, atol=1e-12)


def test_an_expression_with_a_scaled_sum_splits():
    """``y[i] = 2 * A[i,j] * x[j]`` stores ``2 * acc``: the sum of the pieces'."""
    A = _matrix()
    x = np.random.default_rng(0).standard_normal(30)
    k = spc.compile("y[i] = 2 * A[i,j] * x[j]", formats={"A": "csr"}, dtype="float64", **SPLIT)
    np.testing.assert_allclose(k(A, x), 2 * (A @ x), rtol=1e-12)


def test_a_sum_of_terms_splits_the_term_with_rows():
    """``+ b[i]`` runs as a kernel of its own, after the split term's atomic sums."""
    A = _matrix()
    rng = np.random.default_rng(1)
    x, b = rng.standard_normal(30), rng.standard_normal(40)
    k = spc.compile("y[i] = A[i,j] * x[j] + b[i]", formats={"A": "csr"}, dtype="float64",
                    **SPLIT)
    assert k.ir.count("segment_rows(A, 3)") == 1
    np.testing.assert_allclose(k(A, x, b), A @ x + b, rtol=1e-12)


# -- the inspector -----------------------------------------------------------

@pytest.mark.parametrize("pos, k, rows, starts", [
    ([0, 0, 5, 6, 6, 20], 4, [1, 1, 2, 4, 4, 4, 4], [0, 4, 5, 6, 10, 14, 18, 20]),
    ([0, 3, 6], 3, [0, 1], [0, 3, 6]),
    ([0], 8, [], [0]),
    ([0, 0, 0], 2, [], [0]),
    ([5, 7, 12], 2, [0, 1, 1, 1], [5, 7, 9, 11, 12]),      # pos[0] != 0
])
def test_row_segments_tile_the_positions(pos, k, rows, starts):
    got_rows, got_starts, count = row_segments(np.array(pos, np.int32), k)
    assert got_rows.dtype == got_starts.dtype == count.dtype == np.int32
    assert got_rows.tolist() == rows and got_starts.tolist() == starts
    assert count.tolist() == [len(rows)]


def test_row_segments_keep_int64_row_pointers():
    rows, starts, count = row_segments(np.array([0, 2**33], np.int64), 2**32)
    assert rows.dtype == np.int64 and starts.tolist() == [0, 2**32, 2**33]
    assert count.tolist() == [2]


def test_row_segments_refuse_decreasing_row_pointers():
    with pytest.raises(ValueError, match="row pointers decrease"):
        row_segments(np.array([0, 4, 2], np.int32), 2)


def test_auto_size_keeps_typical_rows_whole_and_cuts_long_ones():
    lengths = np.full(10_000, 20)
    lengths[7] = 5_000                            # one long row
    pos = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    k = auto_max_nnz(pos)
    assert k == 32                                # >= the mean row, a power of two
    rows, starts, _ = row_segments(pos, k)
    assert np.diff(starts).max() <= k and (rows == 7).sum() == -(-5_000 // 32)


def test_auto_size_makes_pieces_enough_for_a_few_long_rows():
    pos = np.arange(0, 257 * 2_000, 2_000).astype(np.int32)      # 256 rows of 2000
    k = auto_max_nnz(pos)
    assert 32 <= k < 2_000 and -(-2_000 // k) * 256 >= 2_000


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = inspectors.PARAMETRIC["segment_rows"][0]

    def counting(t, arg):
        calls.append(arg)
        return real(t, arg)
    for name in ("segment_rows", "segment_starts", "segment_count"):
        monkeypatch.setitem(inspectors.PARAMETRIC, name,
                            (counting, inspectors.PARAMETRIC[name][1]))
    return calls


def test_a_prepared_operand_computes_its_segments_once(counted):
    A = _matrix()
    B = np.random.default_rng(0).standard_normal((30, 4))
    k = spc.compile("spmm", fmt="csr", dtype="float64", **SPLIT)
    p = k.prepare(A)
    assert counted == ["3"] and p.inspect_seconds > 0
    for _ in range(3):
        np.testing.assert_allclose(k(p, B), A @ B, rtol=1e-12)
    assert counted == ["3"]


def test_a_prepared_operand_whose_storage_changed_is_refused():
    k = spc.compile("spmv", fmt="csr", dtype="float64", **SPLIT)
    p = k.prepare(_matrix())
    other = spc.tensor(sp.random(40, 30, density=0.5, format="csr", random_state=9), "csr")
    p.arrays, p.vals = other.arrays, other.vals
    with pytest.raises(spc.InputError, match=r"prepared \(k.prepare\) for other storage"):
        k(p, np.ones(30))


# -- CUDA C ------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_nvcc_compiles_split_kernels(kernel):
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    k = spc.compile(kernel, fmt="csr", split_rows=32, **CUDA)
    code, log = nvcc(k.source)
    assert code == 0, log


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_the_launcher_sizes_the_grid_from_the_pieces_rows_array(kernel):
    """The piece count lives on the device; the length of the pieces' rows array
    (one entry per piece) gives it to the launcher without a read back."""
    from spc.codegen.cuda_c import launch_plan
    from spc.ir.nodes import Buffer
    k = spc.compile(kernel, fmt="csr", split_rows=16, **CUDA)
    kernel_ir = k.lowered_kernels()[0]
    buffers = [p for p in kernel_ir.params if isinstance(p.value, Buffer)]
    plan = launch_plan(kernel_ir)
    assert buffers[plan.items_buffer].inspector == "segment_rows:16"
    plain = spc.compile(kernel, fmt="csr", **CUDA)
    assert launch_plan(plain.lowered_kernels()[0]).items_buffer is None


def _spmv_ir(change_loop, store_value):
    """The lowered CSR SpMV with a scalar ``scale`` (1.0 per row) that
    ``change_loop(loop, scale)`` may update in the position loop, and the row's
    store ``y[i] = store_value(acc, scale)``."""
    from dataclasses import replace
    from test_passes import lower_expr
    from spc.ir.nodes import Block, Const, DType, Let, Store, Var
    from spc.ir.traverse import top_loop
    from spc.passes import simplify
    (k,) = lower_expr("spmv", {"A": "csr"}).program.kernels
    k = simplify(k)
    lets, rows = top_loop(k)
    body = list(rows.body.body)
    scale = Var("scale", DType.F64)
    acc = body[2].var
    body.insert(3, Let(scale, Const(1.0, DType.F64)))
    body[4] = change_loop(body[4], scale)
    body[5] = replace(body[5], value=store_value(acc, scale))
    assert isinstance(body[5], Store)
    return replace(k, body=Block(lets + (replace(rows, body=Block(tuple(body))),)))


def test_a_store_scaled_by_state_the_position_loop_carries_is_not_split():
    """``y[i] = acc * scale`` with ``scale = scale * 2`` per position: each piece
    would scale by its own count, not the row's."""
    from dataclasses import replace
    from spc.ir.nodes import Assign, BinOp, Block, Const, DType
    from spc.passes.split_rows import split_rows

    def doubling(loop, scale):
        step = Assign(scale, BinOp("*", scale, Const(2.0, DType.F64)))
        return replace(loop, body=Block(loop.body.body + (step,)))
    carried = _spmv_ir(doubling, lambda acc, scale: BinOp("*", acc, scale))
    assert split_rows(carried, 4) is carried
    fixed = _spmv_ir(lambda loop, scale: loop, lambda acc, scale: BinOp("*", acc, scale))
    assert split_rows(fixed, 4) is not fixed          # a row-level factor splits


def test_register_tiles_are_read_back_whatever_the_index_is_called():
    """An output index ending in digits (``j2``): tiles ``j2256_acc`` ... are 256 wide."""
    k = spc.compile("C[i,j2] = A[i,k] * B[k,j2]", formats={"A": "csr"}, tile_cols=64)
    assert k.schedule.tile_cols == 64
    from spc.passes.register_tile import register_tiles
    assert register_tiles(k.lowered_kernels()[0]) == (64, 32, 16, 8, 4, 2, 1)
