"""spc.prune: N:M, magnitude and block pruning, checked against plain-Python
references on matrices with many ties (small integers), for every input family."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc

SHAPES = [(6, 16), (5, 13), (1, 3), (0, 8), (4, 0), (9, 9)]
NM = [(2, 4), (1, 4), (2, 8), (4, 16), (3, 3), (1, 1)]


def tied(shape, seed, dtype=np.float64) -> np.ndarray:
    """Small integers with random signs: many equal magnitudes, some zeros."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-3, 4, shape)).astype(dtype)


def ref_nm(w: np.ndarray, n: int, m: int) -> np.ndarray:
    out = np.zeros_like(w)
    for i in range(w.shape[0]):
        for g in range(0, w.shape[1], m):
            cols = range(g, min(g + m, w.shape[1]))
            keep = sorted(cols, key=lambda j: (-abs(w[i, j]), j))[:n]
            out[i, keep] = w[i, keep]
    return out


def ref_magnitude(w: np.ndarray, s: float) -> np.ndarray:
    flat = w.reshape(-1)
    keep = sorted(range(flat.size), key=lambda k: (-abs(flat[k]), k))[:flat.size - round(s * flat.size)]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(w.shape)


def ref_blocks(w: np.ndarray, block, s: float) -> np.ndarray:
    r, c = block
    ids = [(bi, bj) for bi in range(-(-w.shape[0] // r)) for bj in range(-(-w.shape[1] // c))]
    norm = {b: float(np.sum(w[b[0] * r:(b[0] + 1) * r, b[1] * c:(b[1] + 1) * c].astype(float) ** 2))
            for b in ids}
    keep = sorted(range(len(ids)), key=lambda k: (-norm[ids[k]], k))[:len(ids) - round(s * len(ids))]
    out = np.zeros_like(w)
    for k in keep:
        bi, bj = ids[k]
        out[bi * r:(bi + 1) * r, bj * c:(bj + 1) * c] = w[bi * r:(bi + 1) * r, bj * c:(bj + 1) * c]
    return out


# ------------------------------------------------------------------------- nm


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n, m", NM)
def test_nm_matches_the_reference(n, m, shape):
    w = tied(shape, 1)
    got = spc.prune.nm(w, n, m)
    np.testing.assert_array_equal(got, ref_nm(w, n, m))
    assert spc.prune.is_nm(got, n, m)
    assert got.dtype == w.dtype
    # sparse input gives the same pattern
    np.testing.assert_array_equal(spc.prune.nm(sp.csr_matrix(w), n, m).toarray(), got)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8), (4, 16)])
def test_nm_output_converts_to_the_nm_format(n, m):
    w = np.random.default_rng(2).standard_normal((8, 37))
    assert not spc.prune.is_nm(w, n, m)
    got = spc.prune.nm(w, n, m)
    t = spc.tensor(got, f"nm({n},{m})")
    np.testing.assert_array_equal(t.to_numpy(), got)


def test_nm_ties_keep_the_lowest_column_and_a_narrow_last_group_keeps_what_it_has():
    w = np.array([[1.0, -1.0, 1.0, -1.0, 5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(spc.prune.nm(w, 2, 4), [[1, -1, 0, 0, 5, 5, 0]])
    np.testing.assert_array_equal(spc.prune.nm(w, 3, 4), [[1, -1, 1, 0, 5, 5, 5]])
    np.testing.assert_array_equal(spc.prune.nm(w[:, :5], 2, 4), [[1, -1, 0, 0, 5]])


def test_nm_keeps_the_largest_magnitudes_negative_ones_too():
    w = np.array([[0.1, -4.0, 3.0, 0.2, 0.0, 0.0, -0.5, 0.0]])
    np.testing.assert_array_equal(spc.prune.nm(w, 2, 4), [[0, -4, 3, 0, 0, 0, -0.5, 0]])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.float32, np.bool_])
def test_nm_integer_and_other_dtypes(dtype):
    w = tied((5, 12), 3).astype(dtype) if dtype != np.bool_ else tied((5, 12), 3) > 0
    got = spc.prune.nm(w, 2, 4)
    assert got.dtype == w.dtype
    np.testing.assert_array_equal(got, ref_nm(w.astype(np.float64), 2, 4).astype(w.dtype))


def test_nm_most_negative_integer_has_the_largest_magnitude():
    w = np.array([[-128, 127, 1, 0]], dtype=np.int8)
    np.testing.assert_array_equal(spc.prune.nm(w, 1, 4), [[-128, 0, 0, 0]])


def test_is_nm():
    w = np.array([[1.0, 2, 0, 0, 3, 0, 0, 4], [0, 0, 0, 0, 1, 1, 1, 0]])
    assert spc.prune.is_nm(w, 2, 4) is False
    assert spc.prune.is_nm(w, 3, 4) is True
    assert spc.prune.is_nm(w[:1], 2, 4) is True
    assert spc.prune.is_nm(np.zeros((0, 5)), 1, 4) is True
    m = sp.csr_matrix(w[:1])
    m.data[:] = [1.0, 0.0, 0.0, 4.0]           # explicit zeros do not count
    m2 = sp.csr_matrix((np.array([1.0, 0, 0, 0]), np.array([0, 1, 2, 3]), np.array([0, 4])),
                       shape=(1, 4))
    assert spc.prune.is_nm(m, 1, 4) is True and spc.prune.is_nm(m2, 1, 4) is True
    assert spc.prune.is_nm(spc.tensor(w, "csr"), 3, 4) is True


# ------------------------------------------------------------------ magnitude


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("s", [0.0, 0.25, 0.5, 0.7, 0.9, 1.0])
def test_magnitude_matches_the_reference(s, shape):
    w = tied(shape, 4)
    got = spc.prune.magnitude(w, s)
    np.testing.assert_array_equal(got, ref_magnitude(w, s))
    k = round(s * w.size)
    assert np.count_nonzero(got == 0) == max(k, np.count_nonzero(w == 0))
    np.testing.assert_array_equal(spc.prune.magnitude(sp.csr_matrix(w), s).toarray(), got)


def test_magnitude_zeroes_exactly_round_sparsity_size_entries():
    w = np.random.default_rng(5).standard_normal((10, 10)) + 5.0   # no zeros
    for s in (0.0, 0.01, 0.333, 0.5, 0.875, 1.0):
        got = spc.prune.magnitude(w, s)
        assert np.count_nonzero(got == 0) == round(s * 100)
        kept = np.abs(w[got != 0])
        dropped = np.abs(w[got == 0])
        assert not len(kept) or not len(dropped) or kept.min() >= dropped.max()


def test_magnitude_ties_keep_the_earlier_entry():
    w = np.array([[2.0, -1.0, 1.0], [1.0, -2.0, 0.5]])
    np.testing.assert_array_equal(spc.prune.magnitude(w, 0.5), [[2, -1, 0], [0, -2, 0]])


def test_magnitude_of_a_large_sparse_matrix_does_not_densify():
    rng = np.random.default_rng(6)
    n = 20000                                        # 4e8 entries: a dense copy would be 3 GB
    m = sp.csr_matrix((rng.standard_normal(4000), (rng.integers(0, n, 4000),
                                                   rng.integers(0, n, 4000))), shape=(n, n))
    got = spc.prune.magnitude(m, 0.9999975)          # keeps 4e8 - round(0.9999975 * 4e8) = 1000
    assert isinstance(got, sp.csr_matrix) and got.nnz == 1000
    kept = np.abs(got.data)
    assert kept.min() >= np.sort(np.abs(m.data))[-1000]
    assert spc.prune.blocks(m, (16, 16), 0.99).nnz == m.nnz       # 1% of 1.6e6 blocks > nnz


# --------------------------------------------------------------------- blocks


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [(2, 2), (4, 4), (1, 4), (3, 5), (16, 16)])
@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 1.0])
def test_blocks_matches_the_reference(s, block, shape):
    w = tied(shape, 7)
    got = spc.prune.blocks(w, block, s)
    np.testing.assert_array_equal(got, ref_blocks(w, block, s))
    np.testing.assert_array_equal(spc.prune.blocks(sp.csr_matrix(w), block, s).toarray(), got)


def test_blocks_zeroes_whole_blocks():
    w = np.random.default_rng(8).standard_normal((12, 20)) + 3.0    # no zeros
    got = spc.prune.blocks(w, (4, 4), 0.4)
    tiles = (got == 0).reshape(3, 4, 5, 4).transpose(0, 2, 1, 3).reshape(15, 16)
    assert set(tiles.all(axis=1)) | set(tiles.any(axis=1)) <= {True, False}
    assert np.all(tiles.all(axis=1) == tiles.any(axis=1))           # each block all or nothing
    assert tiles.all(axis=1).sum() == round(0.4 * 15)
    # the zeroed blocks have the smallest norms
    norms = (w ** 2).reshape(3, 4, 5, 4).sum(axis=(1, 3)).reshape(-1)
    assert norms[tiles.all(axis=1)].max() <= norms[~tiles.all(axis=1)].min()


def test_blocks_edge_blocks_are_partial():
    w = np.ones((5, 5))
    got = spc.prune.blocks(w, (4, 4), 0.5)     # 4 blocks: 16, 4, 4 and 1 entries
    expect = np.zeros((5, 5))
    expect[:4, :4] = 1
    expect[:4, 4] = 1                          # tie of the two 4-entry blocks: the earlier kept
    np.testing.assert_array_equal(got, expect)


# --------------------------------------------------------------- families


@pytest.mark.parametrize("prune", [lambda w: spc.prune.nm(w, 2, 4),
                                   lambda w: spc.prune.magnitude(w, 0.6),
                                   lambda w: spc.prune.blocks(w, (2, 4), 0.5)],
                         ids=["nm", "magnitude", "blocks"])
def test_families_and_determinism(prune):
    w = tied((8, 12), 9)
    orig = w.copy()
    want = prune(w)
    np.testing.assert_array_equal(w, orig)                     # input untouched
    np.testing.assert_array_equal(prune(w), want)              # deterministic
    assert isinstance(want, np.ndarray)
    m = prune(sp.csr_matrix(w))
    assert isinstance(m, sp.csr_matrix) and m.format == "csr"
    assert np.all(m.data != 0) and m.has_sorted_indices
    np.testing.assert_array_equal(m.toarray(), want)
    a = prune(sp.coo_array(w))
    assert isinstance(a, sp.csr_array)
    np.testing.assert_array_equal(a.toarray(), want)
    t = prune(spc.tensor(w, "csr"))
    assert isinstance(t, np.ndarray)
    np.testing.assert_array_equal(t, want)
    f32 = prune(w.astype(np.float32))
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, want)
    np.testing.assert_array_equal(prune(w.tolist()), want)


@pytest.mark.parametrize("prune", [lambda w: spc.prune.nm(w, 2, 4),
                                   lambda w: spc.prune.magnitude(w, 0.6),
                                   lambda w: spc.prune.blocks(w, (2, 4), 0.5)],
                         ids=["nm", "magnitude", "blocks"])
def test_torch_family(prune):
    torch = pytest.importorskip("torch")
    w = tied((8, 12), 9)
    want = prune(w)
    for dtype in (torch.float32, torch.float64, torch.int32, torch.float16, torch.bfloat16):
        x = torch.from_numpy(w).to(dtype)
        got = prune(x)
        assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.device == x.device
        np.testing.assert_array_equal(got.double().numpy(), want)
    x = torch.from_numpy(w).requires_grad_()
    assert torch.equal(prune(x).detach(), torch.from_numpy(want))
    with pytest.raises(spc.UnsupportedError, match="to_dense"):
        prune(torch.from_numpy(w).to_sparse())


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("call, error, match", [
    (lambda w: spc.prune.nm(w, 0, 4), spc.InputError, "1 <= n <= m"),
    (lambda w: spc.prune.nm(w, 5, 4), spc.InputError, "1 <= n <= m"),
    (lambda w: spc.prune.nm(w, 2.0, 4), spc.InputError, "n must be an integer"),
    (lambda w: spc.prune.nm(w, True, 4), spc.InputError, "n must be an integer"),
    (lambda w: spc.prune.is_nm(w, 2, "4"), spc.InputError, "m must be an integer"),
    (lambda w: spc.prune.magnitude(w, -0.1), spc.InputError, r"in \[0, 1\]"),
    (lambda w: spc.prune.magnitude(w, 1.5), spc.InputError, r"in \[0, 1\]"),
    (lambda w: spc.prune.magnitude(w, float("nan")), spc.InputError, r"in \[0, 1\]"),
    (lambda w: spc.prune.magnitude(w, "0.5"), spc.InputError, "must be a number"),
    (lambda w: spc.prune.blocks(w, (2, 2), 2), spc.InputError, r"in \[0, 1\]"),
    (lambda w: spc.prune.blocks(w, (0, 4), 0.5), spc.InputError, "block sizes must be >= 1"),
    (lambda w: spc.prune.blocks(w, (4,), 0.5), spc.InputError, r"pair \(rows, cols\)"),
    (lambda w: spc.prune.blocks(w, 4, 0.5), spc.InputError, r"pair \(rows, cols\)"),
    (lambda w: spc.prune.blocks(w, (2.5, 2), 0.5), spc.InputError, "must be an integer"),
    (lambda w: spc.prune.nm(w[0], 2, 4), spc.ShapeError, "2-d matrix"),
    (lambda w: spc.prune.magnitude(w[None], 0.5), spc.ShapeError, "2-d matrix"),
    (lambda w: spc.prune.blocks(spc.tensor(w[None], "csf"), (2, 2), 0.5), spc.ShapeError,
     "2-d matrix"),
    (lambda w: spc.prune.nm(w.astype(object), 2, 4), spc.DTypeError, "numeric"),
    (lambda w: spc.prune.nm(np.where(w > 2, np.nan, w), 2, 4), spc.InputError, "NaN at"),
    (lambda w: spc.prune.magnitude(sp.csr_matrix(np.where(w > 2, np.nan, w)), 0.5),
     spc.InputError, "NaN at"),
])
def test_bad_arguments_raise_spc_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(tied((4, 8), 10))


def test_errors_are_spc_errors():
    with pytest.raises(spc.SpcError):
        spc.prune.nm(np.ones((2, 4)), 3, 2)
