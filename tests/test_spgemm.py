"""SpGEMM through row workspaces on the CPU: ``C[i,j] = A[i,k]*B[k,j]`` with
every operand sparse, checked against scipy's ``A @ B``.

spc's result is sorted and duplicate-free, and, as scipy's sparse product,
holds no entry whose sum is exactly zero (cancellation drops it; a NaN stays).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spc

from matrices import MATRICES, Case, assert_allclose, from_mask, random_mask, rng_for

CSR3 = {"A": "csr", "B": "csr", "C": "csr"}
SPGEMM = "C[i,j] = A[i,k]*B[k,j]"


def right_operand(a: sp.csr_matrix, name: str, cols: int, density: float, dtype) -> sp.csr_matrix:
    """A fixed-seed CSR matrix with as many rows as ``a`` has columns."""
    rng = rng_for(name)
    return from_mask(random_mask(rng, (a.shape[1], cols), density), rng, dtype)


def assert_canonical_product(c, expected: sp.spmatrix, dtype) -> None:
    """``c`` is a canonical CSR matrix (sorted, unique columns per row) with the
    pattern and (to rounding) the values of scipy's ``expected``."""
    assert sp.issparse(c) and c.format == "csr"
    assert c.shape == expected.shape
    for r in range(c.shape[0]):
        row = c.indices[c.indptr[r]:c.indptr[r + 1]]
        assert np.all(np.diff(row) > 0), f"row {r} is not sorted and unique: {row}"
    e = expected.tocsr()
    e.sort_indices()
    assert np.array_equal(c.indptr, e.indptr)
    assert np.array_equal(c.indices, e.indices)
    assert_allclose(c, e, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_spgemm_matches_scipy(compiled, case: Case, dtype):
    a = case.build(dtype)
    b = right_operand(a, f"{case.id}-B", 23, 0.2, dtype)
    c = compiled(SPGEMM, formats=CSR3, dtype=np.dtype(dtype).name)(a, b)
    assert_canonical_product(c, a @ b, dtype)


@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_a_times_a_transposed_as_csr(compiled, case: Case):
    """``A Aᵀ`` with Aᵀ passed as a csr operand (scipy's ``A.T`` is csc: converted)."""
    a = case.build(np.float64)
    c = compiled(SPGEMM, formats=CSR3, dtype="float64")(a, a.T)
    assert_canonical_product(c, a @ a.T, np.float64)


@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_a_squared(compiled, case: Case):
    a = case.build(np.float64)
    if a.shape[0] != a.shape[1]:
        pytest.skip("A² needs a square matrix")
    c = compiled(SPGEMM, formats=CSR3, dtype="float64")(a, a)
    assert_canonical_product(c, a @ a, np.float64)


# Row lengths chosen to reach each way the workspace orders a row (ir/workspace.py):
# wide output rows with few entries (insertion sort, then heapsort) and rows
# dense enough to scan the marks.
@pytest.mark.parametrize("m, k, n, da, db", [
    pytest.param(30, 30, 5000, 0.07, 0.001, id="short-rows-insertion"),
    pytest.param(30, 30, 5000, 0.1, 0.01, id="wide-rows-heapsort"),
    pytest.param(40, 30, 60, 0.3, 0.3, id="dense-rows-scan"),
    pytest.param(1, 300, 1, 1.0, 1.0, id="one-by-one-output"),
])
def test_row_orderings(compiled, m, k, n, da, db):
    rng = rng_for(f"orderings-{m}-{k}-{n}-{da}-{db}")
    a = from_mask(random_mask(rng, (m, k), da), rng, np.float64)
    b = from_mask(random_mask(rng, (k, n), db), rng, np.float64)
    c = compiled(SPGEMM, formats=CSR3, dtype="float64")(a, b)
    assert_canonical_product(c, a @ b, np.float64)


def test_cancellation_drops_exact_zeros_as_scipy_does(compiled):
    """An entry whose products sum to exactly 0 is not stored (scipy's ``@`` drops
    it too); a NaN sum is stored."""
    a = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    b = sp.csr_matrix(np.array([[2.0, 0.0], [-2.0, 5.0], [np.nan, 0.0]]))
    c = compiled(SPGEMM, formats=CSR3, dtype="float64")(a, b)
    expected = a @ b
    assert c.nnz == expected.nnz == 4
    assert np.array_equal(c.indptr, [0, 1, 3, 4])       # (0, 0) = 2 - 2 is dropped
    assert np.array_equal(c.indices, [1, 0, 1, 0])
    assert c[0, 1] == 5.0 and np.isnan(c[2, 0])
    assert np.array_equal(c.indptr, expected.indptr)


def test_all_products_cancel(compiled):
    a = sp.csr_matrix(np.array([[1.0, -1.0], [2.0, -2.0]]))
    b = sp.csr_matrix(np.array([[3.0, 1.0], [3.0, 1.0]]))
    c = compiled(SPGEMM, formats=CSR3, dtype="float64")(a, b)
    assert c.nnz == 0 == (a @ b).nnz
    assert np.array_equal(c.indptr, [0, 0, 0])


def test_int64_indices(compiled):
    """Operands with int64 indices run the int64 kernels; the result keeps them."""
    case = next(c for c in MATRICES if c.id == "power_law_200x150")
    a = case.build(np.float64)
    b = right_operand(a, "int64-B", 90, 0.1, np.float64)
    wide = [spc.tensor(m, "csr") for m in (a, b)]
    for t in wide:
        t.arrays[1]["pos"] = t.arrays[1]["pos"].astype(np.int64)
        t.arrays[1]["crd"] = t.arrays[1]["crd"].astype(np.int64)
    c = compiled(SPGEMM, formats=CSR3, dtype="float64")(*wide)
    assert isinstance(c, spc.Tensor) and c.arrays[1]["crd"].dtype == np.int64
    assert_canonical_product(c.to_scipy("csr"), a @ b, np.float64)


def _unsorted_with_duplicates(rng, m, n) -> sp.csr_matrix:
    """Raw CSR arrays with unsorted columns, duplicates and empty rows (scipy's
    constructors would canonicalize them)."""
    indptr, cols, vals = [0], [], []
    for i in range(m):
        row = [] if i % 3 == 1 else list(rng.integers(0, n, rng.integers(1, 6)))
        cols += row
        vals += list(rng.uniform(0.1, 1.0, len(row)))
        indptr.append(len(cols))
    a = sp.csr_matrix((np.asarray(vals), np.asarray(cols, np.int32), np.asarray(indptr, np.int32)),
                      shape=(m, n))
    a.has_sorted_indices = False
    assert not a.has_canonical_format
    return a


def test_unsorted_and_duplicate_operands(compiled):
    rng = rng_for("spgemm-noncanonical")
    a = _unsorted_with_duplicates(rng, 12, 9)
    b = _unsorted_with_duplicates(rng, 9, 14)
    expected = a.toarray() @ b.toarray()
    c = compiled(SPGEMM, formats=CSR3, dtype="float64")(a, b)
    canon_a, canon_b = a.copy(), b.copy()
    canon_a.sum_duplicates()
    canon_b.sum_duplicates()
    assert_canonical_product(c, canon_a @ canon_b, np.float64)
    assert_allclose(c, expected, np.float64)


def test_threads_match_one_thread():
    """Rows in parallel chunks (each its own workspace) give the serial result,
    bit for bit (each row is summed in the same order)."""
    rng = rng_for("spgemm-threads")
    a = from_mask(random_mask(rng, (3000, 400), 0.02), rng, np.float64)
    b = from_mask(random_mask(rng, (400, 2500), 0.02), rng, np.float64)
    serial = spc.compile(SPGEMM, formats=CSR3, dtype="float64",
                         schedule=spc.Schedule(parallel=False))
    threaded = spc.compile(SPGEMM, formats=CSR3, dtype="float64",
                           schedule=spc.Schedule(threads=4))
    assert "@parallel" in threaded.ir and "@parallel" not in serial.ir
    one, many = serial(a, b), threaded(a, b)
    assert np.array_equal(one.indptr, many.indptr)
    assert np.array_equal(one.indices, many.indices)
    assert np.array_equal(one.data, many.data)
    assert_canonical_product(many, a @ b, np.float64)


@pytest.mark.parametrize("formats", [
    pytest.param({"A": "dcsr", "B": "csr", "C": "csr"}, id="dcsr-csr"),
    pytest.param({"A": "csr", "B": "dcsr", "C": "csr"}, id="csr-dcsr"),
    pytest.param({"A": "coo", "B": "csr", "C": "csr"}, id="coo-csr"),
])
def test_other_operand_formats(compiled, formats):
    case = next(c for c in MATRICES if c.id == "empty_rows_30x25")
    a = case.build(np.float64)
    b = right_operand(a, "formats-B", 31, 0.15, np.float64)
    c = compiled(SPGEMM, formats=formats, dtype="float64")(a, b)
    assert_canonical_product(c, a @ b, np.float64)


def test_csc_output_is_built_column_by_column(compiled):
    """A csc output's rows are columns: ``C`` csc with ``A``, ``B`` csc is
    Gustavson over columns (``Cᵀ = Bᵀ Aᵀ``)."""
    case = next(c for c in MATRICES if c.id == "dense_col_50x40")
    a = case.build(np.float64)
    b = right_operand(a, "csc-B", 27, 0.2, np.float64)
    k = compiled(SPGEMM, formats={"A": "csc", "B": "csc", "C": "csc"}, dtype="float64")
    assert "workspace" in k.ir
    c = k(a.tocsc(), b.tocsc())
    assert sp.issparse(c) and c.format == "csc"
    assert_allclose(c, a @ b, np.float64)


def test_sum_of_products_under_one_reduction(compiled):
    """``A B + A D`` (one reduction, k): B's and D's rows merge into one workspace."""
    case = next(c for c in MATRICES if c.id == "square_40x40")
    a = case.build(np.float64)
    b = right_operand(a, "sum-B", 35, 0.1, np.float64)
    d = right_operand(a, "sum-D", 35, 0.1, np.float64)
    k = compiled("C[i,j] = A[i,k]*B[k,j] + A[i,k]*D[k,j]",
                 formats={"A": "csr", "B": "csr", "D": "csr", "C": "csr"}, dtype="float64")
    c = k(a, b, d)
    assert_canonical_product(c, a @ b + a @ d, np.float64)


def test_masked_spgemm(compiled):
    """``C = M ⊙ (A B)`` with M csr: the workspace row holds only M's pattern."""
    case = next(c for c in MATRICES if c.id == "power_law_200x150")
    a = case.build(np.float64)
    b = right_operand(a, "masked-B", 120, 0.05, np.float64)
    rng = rng_for("masked-M")
    m = from_mask(random_mask(rng, (a.shape[0], 120), 0.1), rng, np.float64)
    k = compiled("C[i,j] = M[i,j]*A[i,k]*B[k,j]",
                 formats={"M": "csr", "A": "csr", "B": "csr", "C": "csr"}, dtype="float64")
    c = k(m, a, b)
    assert_canonical_product(c, m.multiply(a @ b).tocsr(), np.float64)


@pytest.mark.parametrize("expr, formats, second", [
    pytest.param(SPGEMM, {"A": "csr", "B": "csc", "C": "csr"}, lambda a: a.T,
                 id="B-csc-is-A.T"),
    pytest.param("C[i,j] = A[i,k]*B[j,k]", CSR3, lambda a: a, id="B[j,k]-csr-is-A"),
])
def test_a_times_a_transposed_reads_a_copy_for_gustavson(compiled, expr, formats, second):
    """``A Aᵀ`` with Aᵀ stored column-major (scipy's ``A.T`` is csc), or written
    with transposed indices: without a copy the loops are inner products over
    every (row, column) pair; since issue 13 part 3 B is read through a copy
    that gives Gustavson's row workspace (rows x columns merges -> the flops)."""
    case = next(c for c in MATRICES if c.id == "power_law_200x150")
    a = case.build(np.float64)
    k = compiled(expr, formats=formats, dtype="float64")
    assert "workspace" in k.ir and [c.source for c in k.copies] == ["B"]
    assert "by inner products over every coordinate" in k.ir
    c = k(a, second(a))
    assert_allclose(c, a @ a.T, np.float64)


def test_an_explicit_inner_product_order_is_kept(compiled):
    k = compiled(SPGEMM, formats={"A": "csr", "B": "csc", "C": "csr"}, dtype="float64",
                 schedule=spc.Schedule(order=("i", "j", "k")))
    assert "workspace" not in k.ir and not hasattr(k._last, "copies")
    a = MATRICES[0].build(np.float64)
    assert_allclose(k(a, a.T), a @ a.T, np.float64)


FORMATS = ("csr", "dcsr", "coo")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(0, 12), k=st.integers(0, 12), n=st.integers(0, 40),
       da=st.floats(0.0, 1.0), db=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
       fa=st.sampled_from(FORMATS), fb=st.sampled_from(FORMATS),
       masked=st.booleans())
def test_random_products_with_workspaces(m, k, n, da, db, seed, fa, fb, masked):
    """Random shapes, densities and operand formats, masked or not, against scipy."""
    rng = np.random.default_rng(seed)
    a = from_mask(random_mask(rng, (m, k), da), rng, np.float64)
    b = from_mask(random_mask(rng, (k, n), db), rng, np.float64)
    formats = {"A": fa, "B": fb, "C": "csr"}
    if masked:
        mask = from_mask(random_mask(rng, (m, n), 0.3), rng, np.float64)
        kern = spc.compile("C[i,j] = M[i,j]*A[i,k]*B[k,j]", formats={**formats, "M": "csr"},
                           dtype="float64")
        c, expected = kern(mask, a, b), mask.multiply(a @ b).tocsr()
    else:
        kern = spc.compile(SPGEMM, formats=formats, dtype="float64")
        c, expected = kern(a, b), a @ b
    assert "workspace" in kern.ir
    assert_canonical_product(c, expected, np.float64)


def test_masked_product_with_b_in_csc_takes_inner_products(compiled):
    """``M ⊙ (A B)`` with B in csc: the order i, j (M's row), k (A's row merged with
    B's column) appends in storage order; no workspace."""
    case = next(c for c in MATRICES if c.id == "power_law_200x150")
    a = case.build(np.float64)
    b = right_operand(a, "masked-csc-B", 120, 0.05, np.float64)
    rng = rng_for("masked-csc-M")
    m = from_mask(random_mask(rng, (a.shape[0], 120), 0.1), rng, np.float64)
    k = compiled("C[i,j] = M[i,j]*A[i,k]*B[k,j]",
                 formats={"M": "csr", "A": "csr", "B": "csc", "C": "csr"}, dtype="float64")
    assert "workspace" not in k.ir
    c = k(m, a, b.tocsc())
    assert_allclose(c, m.multiply(a @ b), np.float64)


def test_sparse_vector_output_of_a_transposed_product(compiled):
    """``y[j] = A[i,j]*x[i]`` with y a sparse vector: its one compressed level is
    bound under the reduction i, so the whole vector is one workspace row."""
    case = next(c for c in MATRICES if c.id == "empty_rows_30x25")
    a = case.build(np.float64)
    x = rng_for("ws-vector-x").uniform(-1, 1, a.shape[0])
    k = compiled("y[j] = A[i,j]*x[i]", formats={"A": "csr", "y": "s"}, dtype="float64")
    assert "workspace" in k.ir
    y = k(a, x)
    assert np.all(np.diff(y.arrays[0]["crd"]) > 0)
    np.testing.assert_allclose(y.to_numpy(), a.T @ x, rtol=1e-12, atol=1e-12)


def test_three_tensor_output_rows(compiled):
    """``C[i,j,l] = T[i,j,k]*B[k,l]`` with C in dds: each (i, j) is a workspace row."""
    rng = rng_for("ws-3d")
    t = np.where(rng.random((6, 7, 8)) < 0.2, rng.uniform(0.1, 1, (6, 7, 8)), 0.0)
    b = from_mask(random_mask(rng, (8, 9), 0.3), rng, np.float64)
    k = compiled("C[i,j,l] = T[i,j,k]*B[k,l]", formats={"T": "dds", "B": "csr", "C": "dds"},
                 dtype="float64")
    assert "workspace" in k.ir
    np.testing.assert_allclose(k(t, b).to_numpy(), np.einsum("ijk,kl->ijl", t, b.toarray()),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case_id", ["square_40x40", "empty_rows_30x25", "nnz0_12x15",
                                     "rows0_0x9", "dense_row_40x50"])
@pytest.mark.parametrize("expr, reference", [
    ("C[i,j] = A[i,k]*B[k,j] + D[i,j]", lambda a, b, d: a @ b + d),
    ("C[i,j] = D[i,j] - 2*A[i,k]*B[k,j]", lambda a, b, d: d - 2 * (a @ b)),
])
def test_terms_with_different_reductions_share_the_row_workspace(compiled, case_id, expr,
                                                                   reference):
    """``A B + D`` into a sparse C: per row, the product's loops (k, j) and D's (j)
    scatter into one workspace, so D is added once."""
    case = next(c for c in MATRICES if c.id == case_id)
    a = case.build(np.float64)
    b = right_operand(a, f"terms-{case_id}-B", 17, 0.2, np.float64)
    rng = rng_for(f"terms-{case_id}-D")
    d = from_mask(random_mask(rng, (a.shape[0], 17), 0.2), rng, np.float64)
    k = compiled(expr, formats={"A": "csr", "B": "csr", "D": "csr", "C": "csr"},
                 dtype="float64")
    assert "workspace" in k.ir
    assert_canonical_product(k(A=a, B=b, D=d), reference(a, b, d), np.float64)


def test_terms_whose_operand_iterates_the_rows_read_a_csr_copy():
    """Refused before issue 13 part 3: D in dcsr iterates the rows the terms share;
    it is read through a copy in csr."""
    k = spc.compile("C[i,j] = A[i,k]*B[k,j] + D[i,j]",
                    formats={"A": "csr", "B": "csr", "D": "dcsr", "C": "csr"}, dtype="float64")
    assert [(c.source, c.format.name) for c in k.copies] == [("D", "csr")]
    a = MATRICES[0].build(np.float64)
    b = right_operand(a, "dcsr-term-B", 17, 0.2, np.float64)
    rng = rng_for("dcsr-term-D")
    d = from_mask(random_mask(rng, (a.shape[0], 17), 0.2), rng, np.float64)
    np.testing.assert_allclose(k(A=a, B=b, D=d).toarray(), (a @ b + d).toarray(), rtol=1e-12)


def test_terms_check_an_explicit_order_term_by_term():
    """An explicit order is checked for each term (fuzz finding: an order visiting an
    ell level before its parent once lowered to wrong loops instead of being refused);
    now the terms it visits out of storage order read copies, and the sum is right."""
    k = spc.compile("s[j] = G[j,p]*-G[j,p] + H[p,j,l] + 3",
                    formats={"G": "ell", "H": "dds", "s": "coo"},
                    schedule=spc.Schedule(order=("l", "p", "j")))
    assert sorted(c.source for c in k.copies) == ["G", "H"]
    g = sp.random(6, 5, density=0.4, format="csr", random_state=5)
    h = np.random.default_rng(5).standard_normal((5, 6, 3))
    h[h < 0.3] = 0
    plain = spc.compile("s[j] = G[j,p]*-G[j,p] + H[p,j,l] + 3",
                        formats={"G": "ell", "H": "dds", "s": "coo"})
    assert not getattr(plain, "copies", ())
    assert_allclose(k(G=g, H=h), plain(G=g, H=h), np.float64)


@pytest.mark.parametrize("dtype, rtol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_sixteen_bit_values_sum_in_float32(dtype, rtol):
    """16-bit operands: the workspace holds float32 sums, each rounded once on output."""
    case = next(c for c in MATRICES if c.id == "square_40x40")
    a = case.build(np.float64)
    b = right_operand(a, "f16-B", 20, 0.2, np.float64)
    k = spc.compile(SPGEMM, formats=CSR3)
    c = k(spc.tensor(a, "csr", dtype=dtype), spc.tensor(b, "csr", dtype=dtype))
    assert str(c.vals.dtype) == dtype and "C1_ws_vals: f32" in k.ir
    np.testing.assert_allclose(c.to_numpy().astype(np.float64), (a @ b).toarray(),
                               rtol=rtol, atol=rtol * 4)
