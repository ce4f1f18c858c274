"""``spc.tensor``: from scipy, numpy and COO triplets into every format, and back."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
import spc.formats.format as format_module

MATRIX_FORMATS = ["dense", "csr", "csc", "coo", "dcsr", "dcsc", "ds", "sd", "ss"]
TENSOR3_FORMATS = ["csf", "coo", "dss", "sdd", "dds", "dsd", "sss", "dense"]
SCIPY_LAYOUTS = ["csr", "csc", "coo", "bsr", "dia"]


def sparse_dense(shape, density, seed, dtype=np.float64) -> np.ndarray:
    """A dense array with about ``density`` nonzeros, values in +-[0.5, 1.5)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    vals = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    return np.where(mask, vals, 0.0).astype(dtype)


MATRICES = {
    "5x7": lambda: sparse_dense((5, 7), 0.35, 1),
    "empty-rows-8x6": lambda: sparse_dense((8, 6), 0.3, 2) * (np.arange(8) % 3 != 0)[:, None],
    "empty-cols-6x8": lambda: sparse_dense((6, 8), 0.3, 3) * (np.arange(8) % 3 != 0)[None, :],
    "nnz0-4x3": lambda: np.zeros((4, 3)),
    "full-3x3": lambda: sparse_dense((3, 3), 1.0, 4),
    "shape-0x0": lambda: np.zeros((0, 0)),
    "shape-0x5": lambda: np.zeros((0, 5)),
    "shape-5x0": lambda: np.zeros((5, 0)),
    "shape-1x1": lambda: np.full((1, 1), 2.5),
}

TENSORS3 = {
    "3x4x5": lambda: sparse_dense((3, 4, 5), 0.25, 5),
    "nnz0-2x3x2": lambda: np.zeros((2, 3, 2)),
    "shape-2x0x3": lambda: np.zeros((2, 0, 3)),
    "shape-0x2x2": lambda: np.zeros((0, 2, 2)),
    "one-fiber-4x1x6": lambda: sparse_dense((4, 1, 6), 0.5, 6),
}


def stores_only_nonzeros(fmt: str, rank: int) -> bool:
    """True when the format stores exactly the nonzeros (its last level is not dense)."""
    levels = format_module.resolve_format(fmt, rank).levels
    return not isinstance(levels[-1], spc.Dense)


def stored_index_dtypes(t: spc.Tensor) -> set:
    return {a.dtype for level in t.arrays for a in level.values()}


def assert_scipy_equal(m, dense: np.ndarray) -> None:
    assert sp.issparse(m)
    assert m.shape == dense.shape
    np.testing.assert_array_equal(m.toarray(), dense)


# ---------------------------------------------------------------------- numpy in


@pytest.mark.parametrize("fmt", MATRIX_FORMATS)
@pytest.mark.parametrize("matrix", list(MATRICES))
def test_numpy_matrix_round_trip(matrix, fmt):
    dense = MATRICES[matrix]()
    t = spc.tensor(dense, fmt)
    assert t.shape == dense.shape
    assert t.dtype == np.float64
    np.testing.assert_array_equal(t.to_numpy(), dense)
    assert_scipy_equal(t.to_scipy(), dense)
    if stores_only_nonzeros(fmt, dense.ndim):
        assert t.nnz == np.count_nonzero(dense), "only nonzeros are stored"
        assert stored_index_dtypes(t) <= {np.dtype(np.int32)}
    t.validate()


@pytest.mark.parametrize("fmt", TENSOR3_FORMATS)
@pytest.mark.parametrize("tensor", list(TENSORS3))
def test_numpy_3d_round_trip(tensor, fmt):
    dense = TENSORS3[tensor]()
    t = spc.tensor(dense, fmt)
    assert t.shape == dense.shape
    np.testing.assert_array_equal(t.to_numpy(), dense)
    if stores_only_nonzeros(fmt, dense.ndim):
        assert t.nnz == np.count_nonzero(dense)
    assert stored_index_dtypes(t) <= {np.dtype(np.int32)}
    t.validate()


@pytest.mark.parametrize("fmt, expected_levels", [
    ("csr", ("dense", "compressed")), ("csc", ("dense", "compressed")),
    ("dcsr", ("compressed", "compressed")), ("coo", ("compressed", "singleton")),
])
def test_format_levels(fmt, expected_levels):
    t = spc.tensor(MATRICES["5x7"](), fmt)
    assert tuple(lv.name for lv in t.format.levels) == expected_levels


def test_csr_arrays_match_scipy():
    dense = MATRICES["empty-rows-8x6"]()
    t = spc.tensor(dense, "csr")
    ref = sp.csr_matrix(dense)
    np.testing.assert_array_equal(t.arrays[1]["pos"], ref.indptr)
    np.testing.assert_array_equal(t.arrays[1]["crd"], ref.indices)
    np.testing.assert_array_equal(t.vals, ref.data)


def test_csc_arrays_match_scipy():
    dense = MATRICES["empty-cols-6x8"]()
    t = spc.tensor(dense, "csc")
    ref = sp.csc_matrix(dense)
    np.testing.assert_array_equal(t.arrays[1]["pos"], ref.indptr)
    np.testing.assert_array_equal(t.arrays[1]["crd"], ref.indices)
    np.testing.assert_array_equal(t.vals, ref.data)


@pytest.mark.parametrize("fmt", ["dense", "coo", "s", "d"])
def test_vector(fmt):
    v = np.array([0.0, 1.5, 0.0, -2.0, 0.0])
    t = spc.tensor(v, fmt)
    np.testing.assert_array_equal(t.to_numpy(), v)


@pytest.mark.parametrize("dtype, expect", [
    (np.float32, np.float32), (np.float64, np.float64), (np.int64, np.float64), (bool, np.float64),
])
def test_value_dtype_from_numpy(dtype, expect):
    t = spc.tensor(np.eye(3, dtype=dtype), "csr")
    assert t.dtype == expect
    np.testing.assert_array_equal(t.to_numpy(), np.eye(3))


def test_dtype_argument_converts_values():
    t = spc.tensor(MATRICES["5x7"](), "csr", dtype=np.float32)
    assert t.dtype == np.float32


# ---------------------------------------------------------------------- scipy in


@pytest.mark.parametrize("fmt", [None] + MATRIX_FORMATS)
@pytest.mark.parametrize("layout", SCIPY_LAYOUTS)
@pytest.mark.parametrize("matrix", ["5x7", "empty-rows-8x6", "nnz0-4x3", "shape-0x5"])
def test_scipy_round_trip(matrix, layout, fmt):
    dense = MATRICES[matrix]()
    m = sp.csr_matrix(dense).asformat(layout)
    t = spc.tensor(m, fmt)
    assert t.format.name == (fmt or "csr")
    np.testing.assert_array_equal(t.to_numpy(), dense)
    assert_scipy_equal(t.to_scipy(), dense)
    if fmt != "dense":
        assert stored_index_dtypes(t) <= {np.dtype(np.int32)}


@pytest.mark.parametrize("fmt", [None, "coo"])
@pytest.mark.parametrize("layout", ["lil", "dok"])
def test_scipy_other_layouts(layout, fmt):
    """Every scipy.sparse matrix is accepted (the API contract says so)."""
    dense = MATRICES["5x7"]()
    t = spc.tensor(sp.csr_matrix(dense).asformat(layout), fmt)
    np.testing.assert_array_equal(t.to_numpy(), dense)


@pytest.mark.parametrize("cls", [sp.csr_array, sp.csc_array, sp.coo_array])
def test_scipy_sparse_arrays(cls):
    dense = MATRICES["5x7"]()
    np.testing.assert_array_equal(spc.tensor(cls(dense), "csr").to_numpy(), dense)


@pytest.mark.parametrize("fmt, cls", [("csr", sp.csr_matrix), ("csc", sp.csc_matrix),
                                      ("coo", sp.coo_matrix), ("dcsr", sp.csr_matrix)])
def test_to_scipy_layout_follows_the_format(fmt, cls):
    t = spc.tensor(MATRICES["5x7"](), fmt)
    assert isinstance(t.to_scipy(), cls)


@pytest.mark.parametrize("layout", ["csr", "csc", "coo"])
def test_to_scipy_with_an_explicit_layout(layout):
    dense = MATRICES["5x7"]()
    m = spc.tensor(dense, "dcsr").to_scipy(layout)
    assert m.format == layout
    np.testing.assert_array_equal(m.toarray(), dense)


def test_scipy_values_keep_their_float_dtype():
    m = sp.csr_matrix(MATRICES["5x7"]().astype(np.float32))
    assert spc.tensor(m).dtype == np.float32
    assert spc.tensor(m, "coo").dtype == np.float32


def test_scipy_integer_values_become_float():
    m = sp.csr_matrix(np.eye(3, dtype=np.int64))
    t = spc.tensor(m, "csr")
    assert t.dtype.kind == "f"
    np.testing.assert_array_equal(t.to_numpy(), np.eye(3))


def test_scipy_int64_indices_are_kept_for_a_native_layout():
    m = sp.csr_matrix(MATRICES["5x7"]())
    m.indptr = m.indptr.astype(np.int64)
    m.indices = m.indices.astype(np.int64)
    t = spc.tensor(m, "csr")
    assert stored_index_dtypes(t) == {np.dtype(np.int64)}
    np.testing.assert_array_equal(t.to_numpy(), m.toarray())


def test_scipy_csr_input_is_not_modified():
    m = sp.csr_matrix(MATRICES["5x7"]())
    before = (m.indptr.copy(), m.indices.copy(), m.data.copy())
    for fmt in ("csr", "csc", "coo", "dcsr"):
        spc.tensor(m, fmt)
    for old, new in zip(before, (m.indptr, m.indices, m.data)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr"])
def test_scipy_duplicates_and_unsorted_indices_are_canonicalized(fmt):
    m = sp.csr_matrix((3, 3))
    m.indptr = np.array([0, 3, 3, 5], dtype=np.int32)
    m.indices = np.array([2, 0, 2, 1, 0], dtype=np.int32)
    m.data = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    t = spc.tensor(m, fmt)
    t.validate()
    np.testing.assert_array_equal(t.to_numpy(), m.toarray())
    assert t.nnz == 4


# ---------------------------------------------------------------------- COO triplets in


TRIPLETS = {
    # unsorted, with duplicates (2,1) x2 and (0,3) x2, and an explicit zero sum
    "unsorted-dups": ((np.array([2, 0, 2, 1, 0, 1, 1]), np.array([1, 3, 1, 0, 3, 2, 2])),
                      np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -6.0]), (3, 4)),
    "sorted": ((np.array([0, 1, 2]), np.array([0, 1, 2])), np.array([1.0, 2.0, 3.0]), (3, 3)),
    "empty": ((np.array([], dtype=np.int64), np.array([], dtype=np.int64)),
              np.array([], dtype=np.float64), (2, 5)),
    "reverse-order": ((np.array([3, 2, 1, 0]), np.array([0, 1, 2, 3])),
                      np.array([4.0, 3.0, 2.0, 1.0]), (4, 4)),
}


def dense_from_triplets(coords, vals, shape) -> np.ndarray:
    out = np.zeros(shape)
    np.add.at(out, tuple(coords), vals)
    return out


@pytest.mark.parametrize("fmt", MATRIX_FORMATS)
@pytest.mark.parametrize("case", list(TRIPLETS))
def test_coo_triplets(case, fmt):
    coords, vals, shape = TRIPLETS[case]
    t = spc.tensor((coords, vals), fmt, shape=shape)
    t.validate()
    expect = dense_from_triplets(coords, vals, shape)
    np.testing.assert_array_equal(t.to_numpy(), expect)
    if stores_only_nonzeros(fmt, len(shape)):
        distinct = len(set(zip(*(c.tolist() for c in coords))))
        assert t.nnz == distinct, "duplicates are summed into one stored entry"


def test_coo_triplets_default_to_coo():
    coords, vals, shape = TRIPLETS["unsorted-dups"]
    assert spc.tensor((coords, vals), shape=shape).format.name == "coo"


@pytest.mark.parametrize("fmt", TENSOR3_FORMATS)
def test_coo_triplets_3d(fmt):
    coords = (np.array([1, 0, 1, 2, 1]), np.array([2, 0, 2, 1, 0]), np.array([3, 1, 3, 0, 4]))
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    t = spc.tensor((coords, vals), fmt, shape=(3, 3, 5))
    np.testing.assert_array_equal(t.to_numpy(), dense_from_triplets(coords, vals, (3, 3, 5)))


def test_from_coords_sums_duplicates():
    coords = [np.array([0, 0]), np.array([1, 1])]
    t = spc.from_coords(coords, np.array([1.0, 2.0]), (2, 2), "coo", sum_duplicates=True)
    assert t.nnz == 1 and t.vals[0] == 3.0


@pytest.mark.parametrize("bad, error", [
    pytest.param(((np.array([3]), np.array([0])), np.array([1.0])), spc.InputError, id="row-too-large"),
    pytest.param(((np.array([0]), np.array([-1])), np.array([1.0])), spc.InputError, id="col-negative"),
    pytest.param(((np.array([0, 1]), np.array([0])), np.array([1.0, 2.0])), spc.ShapeError,
                 id="ragged-coords"),
    pytest.param(((np.array([0]),), np.array([1.0])), spc.ShapeError, id="too-few-coord-arrays"),
    pytest.param(((np.array([0.5]), np.array([0])), np.array([1.0])), spc.DTypeError,
                 id="float-coords"),
    pytest.param(((np.array([0]), np.array([0])), np.array([1j])), spc.DTypeError,
                 id="complex-values"),
])
def test_bad_triplets(bad, error):
    with pytest.raises(error):
        spc.tensor(bad, "csr", shape=(3, 3))


def test_triplets_need_a_shape():
    with pytest.raises(spc.ShapeError):
        spc.tensor(((np.array([0]), np.array([0])), np.array([1.0])), "csr")


# ---------------------------------------------------------------------- conversions between formats


@pytest.mark.parametrize("dst", MATRIX_FORMATS)
@pytest.mark.parametrize("src", ["csr", "csc", "coo", "dcsr", "dense"])
def test_tensor_to_tensor_conversion(src, dst):
    dense = MATRICES["empty-cols-6x8"]()
    t = spc.tensor(spc.tensor(dense, src), dst)
    assert t.format == format_module.resolve_format(dst, 2)
    np.testing.assert_array_equal(t.to_numpy(), dense)


def test_same_format_conversion_returns_the_tensor():
    t = spc.tensor(MATRICES["5x7"](), "csr")
    assert spc.tensor(t, "csr") is t
    assert spc.tensor(t) is t


def test_index_dtype_is_int32_by_default():
    t = spc.tensor(MATRICES["5x7"](), "csr")
    assert t.index_dtype == np.int32


def test_explicit_int64_index_dtype():
    coords, vals, shape = TRIPLETS["unsorted-dups"]
    t = spc.from_coords(list(coords), vals, shape, "csr", index_dtype=np.int64)
    assert stored_index_dtypes(t) == {np.dtype(np.int64)}
    np.testing.assert_array_equal(t.to_numpy(), dense_from_triplets(coords, vals, shape))


# ---------------------------------------------------------------------- user formats


@pytest.fixture
def registry(monkeypatch):
    """Formats registered inside a test disappear after it."""
    monkeypatch.setattr(format_module, "_NAMED", dict(format_module._NAMED))


DCSR_DENSE_COLS = spc.Format((spc.Compressed(), spc.Dense()), (0, 1), "dcsr-dense-cols")


def rank2_only(rank: int) -> spc.Format:
    if rank != 2:
        raise spc.FormatError(f"dcsr-dense-cols is for matrices, not rank {rank}")
    return DCSR_DENSE_COLS


def test_register_format_is_listed_and_resolves(registry):
    spc.register_format("dcsr-dense-cols", rank2_only)
    assert "dcsr-dense-cols" in spc.format_names()
    dense = MATRICES["empty-rows-8x6"]()
    t = spc.tensor(dense, "dcsr-dense-cols")
    assert t.format == DCSR_DENSE_COLS
    np.testing.assert_array_equal(t.to_numpy(), dense)
    nonempty_rows = int(np.count_nonzero(dense.any(axis=1)))
    assert t.nnz == nonempty_rows * dense.shape[1], "a stored row holds all its columns"
    np.testing.assert_array_equal(t.arrays[0]["crd"], np.flatnonzero(dense.any(axis=1)))


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_user_format_compiles_and_runs(registry, kernel):
    spc.register_format("dcsr-dense-cols", rank2_only)
    rng = np.random.default_rng(7)
    dense = MATRICES["empty-rows-8x6"]().astype(np.float32)
    A = sp.csr_matrix(dense)
    k = spc.compile(kernel, fmt="dcsr-dense-cols")
    if kernel == "spmv":
        x = rng.random(6).astype(np.float32)
        np.testing.assert_allclose(k(A, x), dense @ x, rtol=1e-5)
    elif kernel == "spmm":
        B = rng.random((6, 3)).astype(np.float32)
        np.testing.assert_allclose(k(A, B), dense @ B, rtol=1e-5)
    else:
        X = rng.random((8, 4)).astype(np.float32)
        Y = rng.random((6, 4)).astype(np.float32)
        S = k(A, X, Y)
        expect = np.where(dense != 0, dense * (X @ Y.T), 0)
        got = S.toarray() if sp.issparse(S) else S.to_numpy()
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_user_format_in_an_expression(registry):
    spc.register_format("dcsr-dense-cols", rank2_only)
    dense = MATRICES["5x7"]().astype(np.float32)
    x = np.arange(5, dtype=np.float32)
    k = spc.compile("y[j] = A[i,j] * x[i]", formats={"A": "dcsr-dense-cols"})
    np.testing.assert_allclose(k(A=sp.csr_matrix(dense), x=x), dense.T @ x, rtol=1e-5)


def test_user_format_object_without_registering():
    dense = MATRICES["5x7"]().astype(np.float32)
    x = np.arange(7, dtype=np.float32)
    k = spc.compile("y[i] = A[i,j] * x[j]", formats={"A": DCSR_DENSE_COLS})
    np.testing.assert_allclose(k(A=dense, x=x), dense @ x, rtol=1e-5)


def test_user_format_of_the_wrong_rank_is_a_format_error(registry):
    """A factory that ignores the rank must not crash the compiler."""
    spc.register_format("dcsr-dense-cols", lambda rank: DCSR_DENSE_COLS)
    with pytest.raises(spc.FormatError) as info:
        spc.compile("y[i] = A[i,j] * x[j]", formats={"x": "dcsr-dense-cols"})
    assert "x" in str(info.value)


def test_user_format_factory_raising_format_error(registry):
    spc.register_format("dcsr-dense-cols", rank2_only)
    with pytest.raises(spc.FormatError):
        spc.tensor(np.zeros(3), "dcsr-dense-cols")
