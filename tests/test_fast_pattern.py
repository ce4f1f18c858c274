"""The CPU fast call path for outputs with an operand's pattern (SDDMM):
the same result as the general path, independent of the operand, and
validation still on (non-canonical operands are canonicalized by the general
path, malformed ones refused)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc

M, N, K = 37, 29, 8


def _matrix(fmt: str, nnz_density: float = 0.2):
    A = sp.random(M, N, density=nnz_density, format=fmt, dtype=np.float32, random_state=3)
    A.indices = A.indices.astype(np.int32)
    A.indptr = A.indptr.astype(np.int32)
    return A


def _dense(S) -> np.ndarray:
    return S.toarray() if hasattr(S, "toarray") else S.to_numpy()


def _reference(A, X, Y) -> np.ndarray:
    return np.asarray(A.toarray(), np.float64) * (X.astype(np.float64) @ Y.astype(np.float64).T)


FAMILIES = {
    "matrix": lambda A: A,
    "array": lambda A: sp.csr_array(A) if A.format == "csr" else sp.csc_array(A),
    "tensor": lambda A: spc.tensor(A, A.format),
}


@pytest.fixture(scope="module", params=["csr", "csc"])
def kernel(request):
    return request.param, spc.compile("sddmm", fmt=request.param, target="cpu")


@pytest.fixture(scope="module")
def dense_operands():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((M, K)).astype(np.float32),
            rng.standard_normal((N, K)).astype(np.float32))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
def test_fast_pattern_result_equals_general_path(kernel, dense_operands, family, density):
    fmt, k = kernel
    X, Y = dense_operands
    A = _matrix(fmt, density)
    op = FAMILIES[family](A)
    k(op, X, Y)                                       # plans the fast path
    fast = k._fast_call((op, X, Y), True)
    assert fast is not None                           # the fast path served the call
    general = k.run(k.bind((op, X, Y), {}), True)
    assert type(fast) is type(general)
    np.testing.assert_allclose(_dense(fast), _reference(A, X, Y), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_dense(fast), _dense(general))
    if family == "tensor":
        assert fast.format == general.format
        for lv_fast, lv_general in zip(fast.arrays, general.arrays):
            assert lv_fast.keys() == lv_general.keys()
            for name in lv_fast:
                np.testing.assert_array_equal(lv_fast[name], lv_general[name])
    else:
        fast.check_format(full_check=True)
        np.testing.assert_array_equal(fast.indptr, A.indptr)
        np.testing.assert_array_equal(fast.indices, A.indices)
        assert fast.format == fmt and fast.shape == A.shape


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_pattern_result_owns_its_structure(kernel, dense_operands, family):
    fmt, k = kernel
    X, Y = dense_operands
    A = _matrix(fmt)
    op = FAMILIES[family](A)
    k(op, X, Y)
    S = k(op, X, Y)
    if family == "tensor":
        pairs = [(S.arrays[1][n], op.arrays[1][n]) for n in ("pos", "crd")]
    else:
        pairs = [(S.indptr, op.indptr), (S.indices, op.indices), (S.data, op.data)]
    for mine, theirs in pairs:
        assert not np.shares_memory(mine, theirs)
    before = A.indices.copy()
    _dense(S)
    if family != "tensor":
        S.indices[:] = 0                              # the caller may change its result
        np.testing.assert_array_equal(A.indices, before)


def test_noncanonical_operand_takes_the_general_path(kernel, dense_operands):
    fmt, k = kernel
    X, Y = dense_operands
    A = _matrix(fmt)
    # reverse the entries within each row (column): unsorted, and duplicate the first
    idx, data = A.indices.copy(), A.data.copy()
    for r in range(len(A.indptr) - 1):
        lo, hi = A.indptr[r], A.indptr[r + 1]
        idx[lo:hi], data[lo:hi] = idx[lo:hi][::-1], data[lo:hi][::-1]
    cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
    U = cls((data, idx, A.indptr.copy()), shape=A.shape)
    assert not U.has_sorted_indices
    k(A, X, Y)
    assert k._fast_call((U, X, Y), True) is None      # refused: not canonical
    S = k(U, X, Y)
    assert S.has_sorted_indices
    np.testing.assert_allclose(_dense(S), _reference(A, X, Y), rtol=1e-5, atol=1e-5)


def test_malformed_operand_is_refused(kernel, dense_operands):
    fmt, k = kernel
    X, Y = dense_operands
    A = _matrix(fmt)
    k(A, X, Y)
    bad = A.copy()
    bad.indices[len(bad.indices) // 2] = 10_000
    with pytest.raises(spc.InputError):
        k(bad, X, Y)
