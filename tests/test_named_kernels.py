"""The named kernels (spmv, spmm, sddmm) against scipy/numpy, over formats,
synthetic matrices (including empty and degenerate shapes) and dtypes; result
families, shapes and dtypes; input canonicalization; threads."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from matrices import (MATRICES, MATRIX_IDS, assert_allclose, dense_operand, from_mask,
                      pattern_of, rng_for)

FORMATS = ["csr", "csc", "coo", "dcsr", "dense"]
DTYPES = ["float32", "float64"]
SCIPY_CLASS = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix,
               "dcsr": sp.csr_matrix}


@dataclass(frozen=True)
class KernelCase:
    """A named kernel with its dense-operand width (spmm's N, sddmm's K')."""
    name: str
    width: int | None = None

    def __str__(self) -> str:
        return self.name if self.width is None else f"{self.name}-{'N' if self.name == 'spmm' else 'K'}{self.width}"

    def operands(self, A, dtype):
        """The dense operands for sparse A (M x K), fixed-seed."""
        m, k = A.shape
        tag = f"{self}-{m}x{k}"
        if self.name == "spmv":
            return (dense_operand(tag + "x", (k,), dtype),)
        if self.name == "spmm":
            return (dense_operand(tag + "B", (k, self.width), dtype),)
        return (dense_operand(tag + "X", (m, self.width), dtype),
                dense_operand(tag + "Y", (k, self.width), dtype))

    def reference(self, A, ops):
        """The expected result, dense, computed in float64."""
        A64 = A.astype(np.float64)
        if self.name == "sddmm":
            X, Y = (o.astype(np.float64) for o in ops)
            return A64.multiply(X @ Y.T).toarray() if A.nnz else np.zeros(A.shape)
        return np.asarray(A64 @ ops[0].astype(np.float64))

    def out_shape(self, A):
        m, k = A.shape
        return {"spmv": (m,), "spmm": (m, self.width), "sddmm": (m, k)}[self.name]


KERNELS = ([KernelCase("spmv")] + [KernelCase("spmm", n) for n in (1, 7, 32)]
           + [KernelCase("sddmm", k) for k in (1, 5, 16)])


def sparse_output(kernel: KernelCase, fmt: str) -> bool:
    return kernel.name == "sddmm" and fmt != "dense"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_named_kernel_matches_scipy(compiled, kernel, fmt, matrix, dtype):
    A = matrix.build(dtype)
    ops = kernel.operands(A, dtype)
    out = compiled(kernel.name, fmt=fmt, dtype=dtype)(A, *ops)
    expected = kernel.reference(A, ops)
    if sparse_output(kernel, fmt):
        assert type(out) is SCIPY_CLASS[fmt], f"sddmm({fmt}) on scipy returned {type(out)}"
        assert pattern_of(out) == pattern_of(A), "sddmm output pattern differs from A's"
    else:
        assert isinstance(out, np.ndarray), f"dense output came back as {type(out)}"
    assert out.shape == kernel.out_shape(A)
    assert out.dtype == np.dtype(dtype)
    assert_allclose(out, expected, dtype)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 7),
                                    KernelCase("sddmm", 5)], ids=str)
def test_tensor_inputs_give_tensor_or_numpy_outputs(compiled, kernel, fmt):
    A = MATRICES[MATRIX_IDS.index("empty_rows_30x25")].build(np.float32)
    ops = kernel.operands(A, np.float32)
    At = spc.tensor(A, fmt)
    out = compiled(kernel.name, fmt=fmt)(At, *ops)
    if sparse_output(kernel, fmt):
        assert isinstance(out, spc.Tensor), f"sddmm on spc.Tensor returned {type(out)}"
        assert out.format == At.format
        assert pattern_of(out) == pattern_of(A)
    else:
        assert isinstance(out, np.ndarray)
    assert out.shape == kernel.out_shape(A)
    assert out.dtype == np.float32
    assert_allclose(out, kernel.reference(A, ops), np.float32)


@pytest.mark.parametrize("layout", ["csr", "csc", "coo"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_scipy_input_layout_does_not_matter(compiled, fmt, layout):
    A = MATRICES[MATRIX_IDS.index("power_law_200x150")].build(np.float64)
    X = dense_operand("layout-X", (200, 4))
    Y = dense_operand("layout-Y", (150, 4))
    x = dense_operand("layout-x", (150,))
    given = A.asformat(layout)
    assert_allclose(compiled("spmv", fmt=fmt, dtype="float64")(given, x), A @ x, np.float64)
    S = compiled("sddmm", fmt=fmt, dtype="float64")(given, X, Y)
    assert_allclose(S, A.multiply(X @ Y.T).toarray(), np.float64)


# ---------------------------------------------------------------- canonicalization

def messy_csr(dtype=np.float64) -> tuple[sp.csr_matrix, np.ndarray]:
    """A CSR matrix whose rows hold unsorted and duplicate column indices, and
    its dense value (duplicates summed, as scipy defines it)."""
    indptr = np.array([0, 3, 3, 7, 9])
    indices = np.array([4, 0, 2,      5, 1, 5, 0,   3, 3])
    data = np.array([1.0, 2.0, 3.0,   4.0, 5.0, 6.0, 7.0,   8.0, -8.5], dtype=dtype)
    A = sp.csr_matrix((data, indices, indptr), shape=(4, 6))
    expected = np.zeros((4, 6))
    for r in range(4):
        for p in range(indptr[r], indptr[r + 1]):
            expected[r, indices[p]] += data[p]
    return A, expected


def messy(layout: str):
    """``messy_csr`` as the scipy ``layout`` ("csr", "csc": the same arrays read
    as columns, i.e. the transpose; "coo": duplicate triplets, unsorted)."""
    A, dense_A = messy_csr()
    if layout == "csr":
        return A, dense_A
    if layout == "csc":
        return sp.csc_matrix((A.data, A.indices, A.indptr), shape=(6, 4)), dense_A.T.copy()
    rows = np.repeat(np.arange(4), np.diff(A.indptr))
    order = np.random.default_rng(3).permutation(len(rows))
    return (sp.coo_matrix((A.data[order], (rows[order], A.indices[order])), shape=(4, 6)),
            dense_A)


@pytest.mark.parametrize("layout", ["csr", "csc", "coo"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 3),
                                    KernelCase("sddmm", 2)], ids=str)
def test_unsorted_duplicate_scipy_is_canonicalized(compiled, kernel, fmt, layout):
    A, dense_A = messy(layout)
    assert not A.has_canonical_format
    arrays = (A.row, A.col, A.data) if layout == "coo" else (A.indptr, A.indices, A.data)
    before = tuple(a.copy() for a in arrays)
    ops = kernel.operands(sp.csr_matrix(dense_A), np.float64)
    out = compiled(kernel.name, fmt=fmt, dtype="float64")(A, *ops)
    canon = sp.csr_matrix(dense_A)           # the matrix scipy means by A
    assert_allclose(out, kernel.reference(canon, ops), np.float64)
    if sparse_output(kernel, fmt):
        A_sum = A.copy()
        A_sum.sum_duplicates()
        assert pattern_of(out) == pattern_of(A_sum), "one entry per distinct coordinate"
    for got, was in zip(arrays, before):
        np.testing.assert_array_equal(got, was, err_msg="the caller's matrix was modified")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 5),
                                    KernelCase("sddmm", 3)], ids=str)
def test_int64_index_scipy_input(compiled, kernel, fmt):
    A = MATRICES[MATRIX_IDS.index("dense_row_40x50")].build(np.float32)
    A64 = A.copy()
    A64.indices = A.indices.astype(np.int64)     # the constructor would downcast them
    A64.indptr = A.indptr.astype(np.int64)
    assert A64.indices.dtype == np.int64 and A64.indptr.dtype == np.int64
    ops = kernel.operands(A, np.float32)
    out = compiled(kernel.name, fmt=fmt)(A64, *ops)
    assert out.dtype == np.float32
    assert_allclose(out, kernel.reference(A, ops), np.float32)


# ---------------------------------------------------------------- threads

@pytest.fixture(scope="module")
def big_matrix():
    rng = rng_for("threads-3000")
    return from_mask(rng.random((3000, 3000)) < 0.02, rng, np.float32)


@pytest.mark.parametrize("fmt", ["csr", "coo", "dcsr", "csc"])
@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 64),
                                    KernelCase("sddmm", 64)], ids=str)
def test_threads_match_one_thread(compiled, big_matrix, kernel, fmt):
    A = big_matrix
    ops = kernel.operands(A, np.float32)
    one = compiled(kernel.name, fmt=fmt, schedule=spc.Schedule(threads=1))(A, *ops)
    many = compiled(kernel.name, fmt=fmt)(A, *ops)
    four = compiled(kernel.name, fmt=fmt, schedule=spc.Schedule(threads=4))(A, *ops)
    expected = kernel.reference(A, ops)
    assert_allclose(one, expected, np.float32)
    assert_allclose(many, one, np.float32)
    assert_allclose(four, one, np.float32)


# ---------------------------------------------------------------- operand layouts and dtypes

def relayout(a: np.ndarray, layout: str):
    """The same values as ``a`` in another memory layout."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "transposed_view":
        return np.ascontiguousarray(a.T).T
    if layout == "strided":
        return np.repeat(a, 2, axis=0)[::2]
    if layout == "reversed_view":
        return np.ascontiguousarray(a[::-1])[::-1]
    return a.tolist()                                   # "list"


@pytest.mark.parametrize("layout", ["fortran", "transposed_view", "strided", "reversed_view",
                                    "list"])
@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 7),
                                    KernelCase("sddmm", 5)], ids=str)
def test_dense_operands_in_any_layout(compiled, kernel, layout):
    A = MATRICES[MATRIX_IDS.index("power_law_200x150")].build(np.float64)
    ops = kernel.operands(A, np.float64)
    out = compiled(kernel.name, dtype="float64")(A, *(relayout(o, layout) for o in ops))
    assert_allclose(out, kernel.reference(A, ops), np.float64)


@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 7),
                                    KernelCase("sddmm", 5)], ids=str)
def test_float32_inputs_convert_to_a_float64_kernel_with_a_warning(compiled, kernel):
    A = MATRICES[MATRIX_IDS.index("square_40x40")].build("float32")
    ops = kernel.operands(A, "float32")
    k = compiled(kernel.name, dtype="float64")
    with pytest.warns(spc.DTypeWarning, match="converted to float64"):
        out = k(A, *ops)
    assert out.dtype == np.float64
    assert_allclose(out, kernel.reference(A, ops), np.float64)


@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 7),
                                    KernelCase("sddmm", 5)], ids=str)
def test_float64_inputs_are_refused_by_a_float32_kernel(compiled, kernel):
    A = MATRICES[MATRIX_IDS.index("square_40x40")].build("float64")
    ops = kernel.operands(A, "float64")
    with pytest.raises(spc.DTypeError, match="would be rounded"):
        compiled(kernel.name, dtype="float32")(A, *ops)


@pytest.mark.parametrize("given", [("float32", "float64"), ("float64", "float32"),
                                   ("float32", "int64")], ids="-".join)
@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 7),
                                    KernelCase("sddmm", 5)], ids=str)
def test_default_dtype_computes_in_the_promoted_type(kernel, given):
    """dtype=None: numpy's promotion of the operands' types (float32 with int64 is
    float64), without a warning."""
    sparse, dense = given
    A = MATRICES[MATRIX_IDS.index("square_40x40")].build(sparse)
    ops = [np.rint(o * 4).astype(dense) for o in kernel.operands(A, "float64")]
    out = spc.compile(kernel.name)(A, *ops)
    assert out.dtype == np.result_type(sparse, dense)
    assert_allclose(out, kernel.reference(A, ops), out.dtype)


@pytest.mark.parametrize("given", ["csr", "csc", "coo", "dcsr", "dense"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr"])
def test_tensor_in_another_format_is_converted(compiled, fmt, given):
    A = MATRICES[MATRIX_IDS.index("dense_col_50x40")].build(np.float64)
    kernel = KernelCase("sddmm", 5)
    ops = kernel.operands(A, np.float64)
    out = compiled("sddmm", fmt=fmt, dtype="float64")(spc.tensor(A, given), *ops)
    assert isinstance(out, spc.Tensor) and str(out.format) == fmt
    assert_allclose(out, kernel.reference(A, ops), np.float64)
    assert pattern_of(out) == pattern_of(A), "S must have the pattern of A's nonzeros"


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr"])
def test_dense_tensor_converted_to_sparse_stores_only_nonzeros(fmt):
    """spc.tensor(dense Tensor, fmt) stores what spc.tensor(ndarray, fmt) stores."""
    a = MATRICES[MATRIX_IDS.index("empty_rows_30x25")].build(np.float64).toarray()
    via_tensor = spc.tensor(spc.tensor(a), fmt)
    direct = spc.tensor(a, fmt)
    assert via_tensor.nnz == direct.nnz == np.count_nonzero(a)
    assert pattern_of(via_tensor) == pattern_of(direct)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", [KernelCase("spmv"), KernelCase("spmm", 7),
                                    KernelCase("sddmm", 5)], ids=str)
def test_validate_false_on_canonical_input(compiled, kernel, fmt):
    A = MATRICES[MATRIX_IDS.index("empty_rows_30x25")].build(np.float32)
    ops = kernel.operands(A, np.float32)
    k = compiled(kernel.name, fmt=fmt)
    assert_allclose(k(A, *ops, validate=False), k(A, *ops), np.float32)


def test_spc_tensor_operands_take_the_fast_path_and_are_still_checked():
    A = MATRICES[0].build(np.float32)
    B = dense_operand("B", (A.shape[1], 8), np.float32)
    k = spc.compile("spmm", fmt="csr")
    t = spc.tensor(A, "csr")
    assert_allclose(k(t, B), A.astype(np.float64) @ B, np.float32)
    assert k._fast_call((t, B), True) is not None        # no conversion, no general path
    crd = t.arrays[1]["crd"].copy()
    row = int(np.argmax(np.diff(t.arrays[1]["pos"]) > 1))
    lo = t.arrays[1]["pos"][row]
    crd[lo], crd[lo + 1] = crd[lo + 1], crd[lo]           # unsorted within a row
    bad = spc.Tensor(t.shape, t.format, [{}, {"pos": t.arrays[1]["pos"], "crd": crd}], t.vals,
                     validate=False)
    assert k._fast_call((bad, B), True) is None
    with pytest.raises(spc.InputError, match="unsorted"):
        k(bad, B)


def test_a_call_by_tensor_name_takes_the_fast_path(monkeypatch):
    """``k(A=A, x=x)`` and ``k(A, x=x)`` run as ``k(A, x)`` does, without the general
    path (binding by name cost about 10 us a call before); a call naming an operand
    twice or missing one is still explained."""
    from spc.runtime.compiled import CompiledKernel
    A = MATRICES[0].build(np.float32)
    x = dense_operand("x", (A.shape[1],), np.float32)
    k = spc.compile("y[i] = A[i,j]*x[j] + 2", formats={"A": "csr"})
    want = A.astype(np.float64) @ x + 2
    assert_allclose(k(A, x), want, np.float32)
    monkeypatch.setattr(CompiledKernel, "run", lambda *a, **kw: pytest.fail("general path"))
    for got in (k(A=A, x=x), k(x=x, A=A), k(A, x=x), k(A=A, x=x, validate=True)):
        assert_allclose(got, want, np.float32)
    monkeypatch.undo()
    with pytest.raises(spc.InputError, match="operand 'A' given twice"):
        k(A, A=A)
    with pytest.raises(spc.SpcError, match="x"):
        k(A=A)
