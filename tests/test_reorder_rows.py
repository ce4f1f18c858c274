"""The reorder_rows pass and its inspector (issue 9): rows visited in an order
computed from the matrix, results in the caller's row order, the permutation
computed once per prepared operand."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.nodes import DType
from spc.runtime import inspectors

CUDA = dict(target="cuda", arch="sm_90")


def _matrix():
    """Rows of lengths 0..7 in scrambled order, one empty, one dense."""
    A = sp.random(12, 9, density=0.35, format="lil", random_state=4)
    A[3, :] = 0
    A[7, :] = np.arange(1, 10)
    return A.tocsr()


def test_the_cpu_ir_reads_rows_through_the_permutation():
    k = spc.compile("spmv", fmt="csr", dtype="float64", reorder_rows="length",
                    schedule=spc.Schedule(parallel=False))
    assert k.ir.splitlines()[:9] == [
        "kernel spmv_csr_dense_dense(in A1_crd: i32*, in A1_pos: i32*, in A_vals: f64*, "
        "in x_vals: f64*, out y_vals: f64*, size size_i: i64, size size_j: i64, "
        "in A_rows_length: i32* = rows_by_length(A)):",
        "  # order: i,j",
        "  # output: dense",
        "  # outer_independent: i_t",
        "  # accepts unsorted/duplicate entries of: A",
        "  for i_t in [0, size_i):",
        "    let i: i64 = A_rows_length[i_t]",
        "    let A0_p0: i64 = i",
        "    let y0_p1: i64 = i",
    ]


def test_the_cuda_ir_gives_warps_rows_in_the_permuted_order():
    k = spc.compile("spmm", fmt="csr", reorder_rows="length", **CUDA)
    lines = k.ir.splitlines()
    assert "  for i_t in [0, size_i) @gpu_warp:" in lines
    assert "    let i: i64 = A_rows_length[i_t]" in lines
    assert "A_rows_length" in k.source


def test_sddmm_with_reordered_rows_does_not_enumerate_positions_flat():
    """Flat chunks of positions need rows in stored order: reordered, warps take rows."""
    plain = spc.compile("sddmm", fmt="csr", **CUDA)
    swizzled = spc.compile("sddmm", fmt="csr", reorder_rows="length", **CUDA)
    assert "# gpu_flat" in plain.ir and "# gpu_flat" not in swizzled.ir
    assert "# gpu_group: k" in swizzled.ir


@pytest.mark.parametrize("kernel, fmt, expr", [
    ("spmv", "coo", None),                       # rows are not a dense level
    ("spmv", "dia", None),                       # no compressed level of columns
    (None, None, "y[j] = A[i,j] * x[i]"),        # rows are not independent
    (None, None, "s = A[i,j]"),
])
def test_reorder_rows_where_there_are_no_rows_to_reorder_is_refused(kernel, fmt, expr):
    with pytest.raises(spc.ScheduleError, match="reorder_rows: needs an independent outer "
                                                "loop over the rows") as err:
        if kernel:
            spc.compile(kernel, fmt=fmt, reorder_rows="length")
        else:
            spc.compile(expr, formats={"A": "csr"}, reorder_rows="length")
    assert err.value.knob == "reorder_rows"


def test_an_unknown_ordering_is_refused():
    with pytest.raises(spc.ScheduleError, match="reorder_rows: must be one of"):
        spc.Schedule(reorder_rows="random")


@pytest.mark.parametrize("how", ["length", "similarity"])
@pytest.mark.parametrize("fmt", ["csr", "bsr(2,2)", "ell", "nm(2,4)"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
@pytest.mark.parametrize("parallel", [True, False])
def test_reordered_rows_give_the_same_numbers(kernel, fmt, parallel, how):
    from test_schedule import _operands
    A = _matrix()
    if fmt.startswith("nm"):
        from test_formats import nm_prune
        A = sp.csr_matrix(nm_prune(A, 2, 4))
    ops, want = _operands(kernel, A, np.random.default_rng(3))
    s = spc.Schedule(parallel=parallel)
    plain = spc.compile(kernel, fmt=fmt, dtype="float64", schedule=s)
    try:
        k = spc.compile(kernel, fmt=fmt, dtype="float64", schedule=s.replace(reorder_rows=how))
    except spc.ScheduleError:
        assert fmt in ("bsr(2,2)", "ell", "nm(2,4)")   # formats without a compressed row level
        return
    got, base = k(*ops), plain(*ops)
    got = got.toarray() if hasattr(got, "toarray") else got
    base = base.toarray() if hasattr(base, "toarray") else base
    np.testing.assert_array_equal(got, base)           # bit for bit: only the order changed
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_the_pass_keeps_interpreter_results(kernel):
    """The CUDA IR with reordered rows, run by the race-checking interpreter."""
    from test_cuda_render import _run_with
    from test_schedule import _operands
    A = _matrix()
    ops, want = _operands(kernel, A, np.random.default_rng(5))
    cuda = spc.compile(kernel, fmt="csr", dtype="float64", reorder_rows="length", **CUDA)
    got = _run_with(cuda._variant(DType.I32).kernels, kernel,
                    dict(fmt="csr", reorder_rows="length"), "float64", *ops)
    got = got.toarray() if hasattr(got, "toarray") else got
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_rows_by_length_sorts_longest_first_ties_in_order():
    t = spc.tensor(_matrix(), "csr")
    perm = inspectors.rows_by_length(t)
    lengths = np.diff(t.arrays[1]["pos"])
    assert perm.dtype == np.int32
    np.testing.assert_array_equal(perm, np.argsort(-lengths, kind="stable"))
    assert perm[0] == 7 and perm[-1] == 3                  # the dense row, the empty row


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (3, 3)])
def test_rows_by_length_on_edge_cases(shape):
    t = spc.tensor(sp.csr_matrix(shape), "csr")
    np.testing.assert_array_equal(np.sort(inspectors.rows_by_length(t)), np.arange(shape[0]))


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = inspectors.INSPECTORS["rows_by_length"]

    def counting(t):
        calls.append(t)
        return real(t)
    monkeypatch.setitem(inspectors.INSPECTORS, "rows_by_length", counting)
    return calls


def test_a_prepared_operand_runs_its_inspector_once(counted):
    A = _matrix()
    B = np.random.default_rng(0).standard_normal((9, 4))
    k = spc.compile("spmm", fmt="csr", dtype="float64", reorder_rows="length")
    p = k.prepare(A)
    assert isinstance(p, spc.Tensor) and len(counted) == 1
    assert p.inspect_seconds > 0 and p.prepare_seconds >= p.inspect_seconds
    for _ in range(3):
        np.testing.assert_allclose(k(p, B), A @ B, rtol=1e-12)
    assert len(counted) == 1
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-12)   # unprepared: inspected per call
    assert len(counted) == 2


def test_prepare_without_inspectors_is_a_conversion():
    k = spc.compile("spmv", fmt="csr", dtype="float64")
    p = k.prepare(_matrix())
    assert p.inspect_seconds == 0.0 and p.format == spc.tensor(_matrix(), "csr").format


def test_a_prepared_operand_whose_storage_changed_is_refused():
    A = _matrix()
    k = spc.compile("spmv", fmt="csr", dtype="float64", reorder_rows="length")
    p = k.prepare(A)
    other = spc.tensor(sp.random(12, 9, density=0.5, format="csr", random_state=9), "csr")
    p.arrays, p.vals = other.arrays, other.vals
    with pytest.raises(spc.InputError, match=r"operand A was prepared \(k.prepare\) for other "
                                             r"storage .*call k.prepare on the matrix again"):
        k(p, np.ones(9))


@pytest.mark.parametrize("name, message", [("B", "must name the input"),
                                            ("Q", "no input named 'Q'")])
def test_prepare_needs_an_input_it_can_tell(name, message):
    k = spc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr"})
    with pytest.raises(spc.InputError, match=message):
        k.prepare(_matrix(), name=None if name == "B" else name)


def test_duplicate_and_unsorted_entries_sum_as_scipy_does():
    A = sp.csr_matrix((np.array([1.0, 2.0, 4.0, 8.0]), np.array([2, 0, 2, 1]),
                       np.array([0, 0, 3, 4])), shape=(3, 3))     # row 1: unsorted, a duplicate
    k = spc.compile("spmv", fmt="csr", dtype="float64", reorder_rows="length")
    assert "A" in k.accepts_noncanonical
    x = np.array([1.0, 10.0, 100.0])
    np.testing.assert_allclose(k(A, x), A.toarray() @ x)


def test_the_rows_of_an_assembled_output_are_not_an_inspectors_input():
    """The fuzzer's case (seed 780): the pass once took the output's own pos array."""
    expr = "out[k,p] = E[k,q] * N[p,q]"
    formats = {"E": "csr", "N": "csr", "out": "csr"}
    rng = np.random.default_rng(1)
    E = sp.random(6, 5, density=0.5, format="csr", random_state=1)
    N = sp.random(4, 5, density=0.5, format="csr", random_state=2)
    for s in spc.schedule_space(expr, formats=formats, dtype="float64"):
        k = spc.compile(expr, formats=formats, dtype="float64", schedule=s)
        for p in (q for kern in k.lowered_kernels() for q in kern.params if q.inspector):
            assert p.tensor in ("E", "N"), str(s)
        got = k(E, N)
        got = got.toarray() if hasattr(got, "toarray") else got
        np.testing.assert_allclose(got, (E @ N.T).toarray(), rtol=1e-12, err_msg=str(s))
    assert rng is not None


def test_rows_by_similarity_puts_rows_sharing_columns_together():
    """Two interleaved row clusters (even rows use columns 0-9, odd rows 10-19)."""
    from spc.runtime.inspect_rows import panel_columns
    rng = np.random.default_rng(0)
    rows = [np.sort(rng.choice(10, 5, replace=False)) + 10 * (r % 2) for r in range(64)]
    A = sp.csr_matrix((np.ones(320), np.concatenate(rows), np.arange(0, 321, 5)), shape=(64, 20))
    t = spc.tensor(A, "csr")
    perm = inspectors.rows_by_similarity(t)
    np.testing.assert_array_equal(np.sort(perm), np.arange(64))
    assert panel_columns(A.indptr, A.indices, perm, panel=8) < \
        0.7 * panel_columns(A.indptr, A.indices, np.arange(64), panel=8)
    k = spc.compile("spmm", fmt="csr", dtype="float64", reorder_rows="similarity")
    assert "A_rows_similarity: i32* = rows_by_similarity(A)" in k.ir
    B = rng.standard_normal((20, 3))
    np.testing.assert_allclose(k(k.prepare(A), B), A @ B, rtol=1e-12)


def test_a_prepared_operand_keeps_the_cpu_fast_path(monkeypatch, counted):
    """Positional calls with a prepared spc Tensor skip the general path; a scipy
    operand, whose permutation is not kept anywhere, takes it."""
    general = []
    real_run = spc.CompiledKernel.run

    def counting_run(self, bound, validate=True):
        general.append(1)
        return real_run(self, bound, validate)
    monkeypatch.setattr(spc.CompiledKernel, "run", counting_run)
    A = _matrix().astype(np.float32)
    x = np.random.default_rng(0).standard_normal(9).astype(np.float32)
    k = spc.compile("spmv", fmt="csr", reorder_rows="length")
    p = k.prepare(A)
    for _ in range(3):
        np.testing.assert_allclose(k(p, x), A @ x, rtol=1e-5, atol=1e-6)
    assert general == [] and len(counted) == 1
    np.testing.assert_allclose(k(A, x), A @ x, rtol=1e-5, atol=1e-6)
    assert general == [1] and len(counted) == 2
