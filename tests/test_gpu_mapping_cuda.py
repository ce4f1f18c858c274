"""On a GPU: the code of the IR passes that took decisions out of the CUDA
renderer (``unroll_jam``, ``vector_loads``, ``lane_groups``,
``flat_positions``) gives scipy's numbers on the paths each decision takes:
jammed lane loops and their short-row fallback, wide and narrow column chunks,
a block's jammed warp loop, lane groups reading vectors where aligned and
elements where not, every lane-group size with rows split over warps or
positions enumerated flat."""
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


def _skewed(dtype):
    """A csr matrix with rows of 0 to 700 entries: long rows among many short
    and empty ones (a flat chunk then starts and ends inside rows, and one step
    of 32 / group positions crosses dozens of rows)."""
    rng = np.random.default_rng(7)
    lengths = rng.choice([0, 0, 1, 2, 3, 5, 9, 40], size=900)
    lengths[[5, 300, 301, 899]] = [700, 333, 64, 129]
    n = 760
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([np.sort(rng.choice(n, size=k, replace=False)) for k in lengths])
    vals = rng.standard_normal(len(rows))
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(lengths), n)).astype(dtype)


# split takes effect with flat=False (flat=None lets the launcher go flat wherever the
# positions' total is known)
GROUP_LAUNCHES = [dict(flat=False, split=s) for s in (1, 2, 7)] + [dict(flat=True)]


@pytest.mark.parametrize("launch", GROUP_LAUNCHES,
                         ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
@pytest.mark.parametrize("group", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("fmt, dtype, depth", [("csr", "float32", 37), ("csr", "float64", 64),
                                               ("dcsr", "float32", 8)])
def test_sddmm_lane_groups_and_flat_positions(fmt, dtype, depth, group, launch):
    """Every lane-group size (the IR's ``LaneGroups.sizes``), rows split over
    1, 2 and 7 warps, and the (row, position) pairs enumerated flat
    (``FlatPositions``), on skewed rows: scipy's numbers, and the launch the
    schedule asked for is the one taken."""
    A = _skewed(dtype)
    rng = np.random.default_rng(depth)
    X = rng.standard_normal((A.shape[0], depth)).astype(dtype)
    Y = rng.standard_normal((A.shape[1], depth)).astype(dtype)
    k = spc.compile("sddmm", fmt=fmt, target="cuda", dtype=dtype,
                    schedule=spc.Schedule(group=group, **launch))
    assert "groups(k" in k.ir and "flat(" in k.ir
    want = A.multiply(X @ Y.T).tocsr()
    got = k(A, X, Y)
    np.testing.assert_allclose(got.toarray(), want.toarray(), **TOL[dtype])
    taken = k.schedule
    assert taken.group == group
    if launch["flat"]:
        assert taken.flat is True
    else:
        assert taken.split == launch["split"] and not taken.flat


@pytest.mark.parametrize("group", [1, 8, 32])
def test_sddmm_dense_rows_lane_groups(group):
    """A dense matrix's rows: lane groups without flat positions (its lane loop
    runs over a range of sizes, not positions)."""
    rng = np.random.default_rng(group)
    A = rng.standard_normal((70, 45)).astype(np.float32)
    X = rng.standard_normal((70, 19)).astype(np.float32)
    Y = rng.standard_normal((45, 19)).astype(np.float32)
    k = spc.compile("sddmm", fmt="dense", target="cuda", dtype="float32",
                    schedule=spc.Schedule(group=group, split=3))
    assert "groups(k" in k.ir and "flat(" not in k.ir
    got = k(A, X, Y)
    got = got.toarray() if hasattr(got, "toarray") else np.asarray(got)
    np.testing.assert_allclose(got, A * (X @ Y.T), **TOL["float32"])
