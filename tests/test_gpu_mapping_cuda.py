"""On a GPU: the code of the IR passes that took decisions out of the CUDA
renderer (``unroll_jam``, ``vector_loads``) gives scipy's numbers on the
paths each decision takes: jammed lane loops and their short-row fallback,
wide and narrow column chunks, a block's jammed warp loop, and lane groups
reading vectors where aligned and elements where not."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

pytestmark = pytest.mark.cuda

from cuda_env import cupy_or_skip_module  # noqa: E402

cupy = cupy_or_skip_module()

import spc  # noqa: E402

TOL = {"float32": dict(rtol=1e-4, atol=1e-4), "float64": dict(rtol=1e-11, atol=1e-11)}


def _rows_of_every_length(dtype, longest=300):
    """A csr matrix whose row r has r % longest entries (0 to 299): rows below
    and above a jammed lane loop's minimum trip count (96)."""
    rng = np.random.default_rng(0)
    m, n = 2 * longest, longest + 7
    rows, cols = [], []
    for r in range(m):
        k = r % longest
        rows += [r] * k
        cols += sorted(rng.choice(n, size=k, replace=False).tolist())
    vals = rng.standard_normal(len(rows))
    return sp.csr_matrix((vals, (rows, cols)), shape=(m, n)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_spmv_jammed_and_short_rows(dtype):
    A = _rows_of_every_length(dtype)
    x = np.random.default_rng(1).standard_normal(A.shape[1]).astype(dtype)
    k = spc.compile("spmv", fmt="csr", target="cuda", dtype=dtype)
    assert "jam(4" in k.ir
    np.testing.assert_allclose(k(A, x), A @ x, **TOL[dtype])


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("n", [1, 31, 130, 256])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_spmm_wide_and_narrow_chunks(dtype, n, wide):
    A = _rows_of_every_length(dtype, longest=120)
    B = np.random.default_rng(2).standard_normal((A.shape[1], n)).astype(dtype)
    k = spc.compile("spmm", fmt="csr", target="cuda", dtype=dtype,
                    schedule=spc.Schedule(wide=wide))
    assert "when=wide" in k.ir
    np.testing.assert_allclose(k(A, B), A @ B, **TOL[dtype])


def test_a_blocks_jammed_warp_loop():
    rng = np.random.default_rng(3)
    T = rng.standard_normal((40, 9, 33)) * (rng.random((40, 1, 1)) < 0.5)
    M = rng.standard_normal((9, 33, 21))
    k = spc.compile("C[i,l] = T[i,j,k]*M[j,k,l]", formats={"T": "sdd"}, target="cuda",
                    dtype="float64")
    assert "@gpu_warp jam(4" in k.ir
    np.testing.assert_allclose(k(T=T, M=M), np.einsum("ijk,jkl->il", T, M),
                               rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("group", [1, 4, 32])
@pytest.mark.parametrize("depth", [3, 8, 9, 64, 67])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sddmm_vector_and_scalar_dot_products(dtype, depth, group):
    """Depths that are multiples of the vector width (every row aligned) and
    that are not (odd rows start unaligned: the scalar loop runs)."""
    A = _rows_of_every_length(dtype, longest=50)
    rng = np.random.default_rng(depth)
    X = rng.standard_normal((A.shape[0], depth)).astype(dtype)
    Y = rng.standard_normal((A.shape[1], depth)).astype(dtype)
    k = spc.compile("sddmm", fmt="csr", target="cuda", dtype=dtype,
                    schedule=spc.Schedule(group=group))
    assert "vector(" in k.ir
    want = A.multiply(X @ Y.T).tocsr()
    got = k(A, X, Y)
    np.testing.assert_allclose(got.toarray(), want.toarray(), **TOL[dtype])
