"""scipy sparse arrays (csr_array...) in, arrays out; matrices in, matrices out; with
both among the inputs, matrices (on the fast path and the general path)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from dlpack_only import DLPackOnly

A = sp.random(6, 5, density=0.5, format="csr", random_state=0)
X, Y = np.ones((6, 2)), np.ones((5, 2))


def _kind(x) -> str:
    return "array" if type(x).__name__.endswith("_array") else "matrix"


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "hyb"])
@pytest.mark.parametrize("kind", ["matrix", "array"])
@pytest.mark.parametrize("path", ["fast", "general"])
def test_sddmm_returns_the_inputs_kind(fmt, kind, path):
    a = getattr(sp, f"{fmt if fmt != 'hyb' else 'csr'}_{kind}")(A)
    k = spc.compile("sddmm", fmt=fmt)
    out = k(a, X, Y) if path == "fast" else k(A=a, X=X, Y=Y)
    assert _kind(out) == kind
    np.testing.assert_allclose(out.toarray(), A.toarray() * (X @ Y.T))


def test_mixed_kinds_give_matrices_and_dense_results_stay_numpy():
    add = spc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"})
    assert _kind(add(sp.csr_array(A), sp.csr_array(A))) == "array"
    assert _kind(add(sp.csr_array(A), A)) == "matrix"
    y = spc.compile("spmv", fmt="csr")(sp.csr_array(A), np.ones(5))
    assert isinstance(y, np.ndarray)


def test_dlpack_arrays_are_read_without_a_copy_and_results_are_numpy():
    x = np.arange(5, dtype=np.float64)
    y = spc.compile("spmv", fmt="csr")(A, DLPackOnly(x))
    np.testing.assert_allclose(y, A @ x)
    B = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    C = spc.compile("spmm", fmt="csr", dtype="float32")(A.astype(np.float32), DLPackOnly(B))
    assert isinstance(C, np.ndarray)
    np.testing.assert_allclose(C, A.astype(np.float32) @ B, rtol=1e-6)
    view = np.from_dlpack(DLPackOnly(x))
    assert np.shares_memory(view, x)
