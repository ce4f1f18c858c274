"""Conversions between spc Tensors and numpy, scipy.sparse and torch, in both
directions, for every format (spc/formats/convert.py).  torch tests skip
without torch; tests of torch's 2:4 semi-structured tensors need CUDA."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats import convert

FORMATS = ["csr", "csc", "coo", "dcsr", "bsr(1,4)", "bsr(4,4)", "bsr(3,5)", "bsr(16,16)",
           "ell", "ell(24)", "dia", "nm(2,4)", "nm(1,4)", "nm(2,8)", "nm(4,16)", "dense"]


def _values(rng, shape, density, dtype=np.float64):
    mask = rng.random(shape) < density
    mag = rng.uniform(0.25, 2.0, shape)
    return np.where(mask, np.where(rng.random(shape) < 0.5, -mag, mag), 0).astype(dtype)


def _empty_rows(rng):
    x = _values(rng, (8, 12), 0.4)
    x[::3] = 0
    return x


def _dense_row(rng):
    x = _values(rng, (6, 20), 0.1)
    x[2] = rng.uniform(0.5, 1.0, 20)
    return x


MATRICES = {
    "rand-9x13": lambda rng: _values(rng, (9, 13), 0.35),
    "rand-32x32": lambda rng: _values(rng, (32, 32), 0.2),
    "empty-rows-8x12": _empty_rows,
    "dense-row-6x20": _dense_row,
    "nnz0-5x7": lambda rng: np.zeros((5, 7)),
    "shape-0x6": lambda rng: np.zeros((0, 6)),
    "shape-6x0": lambda rng: np.zeros((6, 0)),
    "shape-0x0": lambda rng: np.zeros((0, 0)),
    "shape-1x1": lambda rng: np.full((1, 1), -1.5),
    "float32-7x9": lambda rng: _values(rng, (7, 9), 0.4, np.float32),
    "int-5x8": lambda rng: np.round(_values(rng, (5, 8), 0.5) * 3).astype(np.int64),
}


def matrix(name: str, fmt: str = "csr") -> np.ndarray:
    """The matrix ``name``, N:M-pruned when ``fmt`` is nm(n, m) (fixed seed)."""
    x = MATRICES[name](np.random.default_rng(sorted(MATRICES).index(name)))
    if fmt.startswith("nm("):
        n, m = (int(a) for a in fmt[3:-1].split(","))
        x = spc.prune.nm(x, n, m)
    return x


def expected(x: np.ndarray) -> np.ndarray:
    """What spc stores: integers become float64."""
    return x.astype(np.float64) if x.dtype.kind in "iub" else x


def assert_same(got, x) -> None:
    got = got.toarray() if sp.issparse(got) else np.asarray(got)
    assert got.shape == x.shape
    np.testing.assert_array_equal(got, expected(x))


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# --------------------------------------------------------------------- numpy


@pytest.mark.parametrize("name", list(MATRICES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_numpy_round_trip(fmt, name):
    x = matrix(name, fmt)
    t = spc.tensor(x, fmt)
    assert t.shape == x.shape
    assert t.dtype == expected(x).dtype
    assert_same(t.to_numpy(), x)
    # and through every other format
    back = spc.tensor(spc.tensor(t, "csr"), fmt)
    assert_same(back.to_numpy(), x)


# --------------------------------------------------------------------- scipy


@pytest.mark.parametrize("name", list(MATRICES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_scipy_round_trip(fmt, name):
    x = matrix(name, fmt)
    for layout in ("csr", "csc", "coo", "bsr", "dia", "lil"):
        t = spc.tensor(sp.csr_matrix(x).asformat(layout), fmt)
        assert t.format == spc.tensor(x, fmt).format
        assert_same(t.to_numpy(), x)
    for out in (None, "csr", "csc", "coo", "dia", "lil"):
        got = t.to_scipy(out)
        assert out is None or got.format == out
        assert got.dtype == t.dtype
        assert_same(got, x)
    if t.padding == (0, 0) or convert.bsr_block(t.format) is None:
        assert_same(t.to_scipy("bsr", blocksize=convert.bsr_block(t.format) or (1, 1)), x)


@pytest.mark.parametrize("fmt, layout", [("csr", "csr"), ("csc", "csc"), ("coo", "coo"),
                                         ("dcsr", "csr"), ("dcsc", "csc"), ("ell", "csr"),
                                         ("nm(2,4)", "csr"), ("dense", "csr"), ("dia", "dia"),
                                         ("bsr(2,2)", "bsr"), ("bsr(3,5)", "csr")])
def test_default_scipy_layout(fmt, layout):
    x = matrix("empty-rows-8x12", fmt)     # 8x12: a multiple of 2x2, not of 3x5
    got = spc.tensor(x, fmt).to_scipy()
    assert got.format == layout
    assert_same(got, x)


def test_to_scipy_csr_shares_a_csr_tensors_arrays():
    t = spc.tensor(matrix("rand-9x13"), "csr")
    m = t.to_scipy("csr")
    assert np.shares_memory(m.indices, t.arrays[1]["crd"])
    assert np.shares_memory(m.data, t.vals)


def test_to_scipy_csr_of_a_blocked_tensor_is_canonical_and_keeps_block_zeros():
    """csr/csc/coo hold the stored values inside the shape (block zeros included,
    as scipy's bsr.tocsr() does), sorted, without the padding past the shape."""
    x = matrix("rand-9x13")
    t = spc.tensor(x, "bsr(4,4)")                  # padded to 12 x 16
    m = t.to_scipy("csr")
    assert m.has_sorted_indices
    nblocks = len(t.arrays[1]["crd"])
    assert m.nnz == len(t.to_coo()[1]) < nblocks * 16
    c = t.to_scipy("coo")
    assert c.nnz == m.nnz and c.has_canonical_format
    assert_same(m, x)
    m.eliminate_zeros()
    assert m.nnz == np.count_nonzero(x)


@pytest.mark.parametrize("cls", [sp.bsr_matrix, sp.bsr_array])
@pytest.mark.parametrize("block", [(1, 4), (4, 4), (2, 8)])
def test_scipy_bsr_into_bsr_reuses_its_arrays(cls, block):
    x = matrix("rand-32x32")
    m = cls(x, blocksize=block)
    if not m.has_sorted_indices:            # scipy may block a dense array out of order:
        t = spc.tensor(m, f"bsr({block[0]},{block[1]})")     # sorted block by block
        assert len(t.arrays[1]["crd"]) == len(m.indices)
        assert np.all(np.diff(t.arrays[1]["crd"][:t.arrays[1]["pos"][1]]) > 0)
        assert_same(t.to_numpy(), x)
        m.sort_indices()
    fmt = f"bsr({block[0]},{block[1]})"
    t = spc.tensor(m, fmt)
    assert t.format.name == fmt
    assert t.arrays[1]["crd"] is m.indices or np.shares_memory(t.arrays[1]["crd"], m.indices)
    assert np.shares_memory(t.vals, m.data)
    assert t.padding == (0, 0)
    assert_same(t.to_numpy(), x)
    back = t.to_scipy("bsr")
    assert back.blocksize == block
    np.testing.assert_array_equal(back.indptr, m.indptr)
    np.testing.assert_array_equal(back.indices, m.indices)
    np.testing.assert_array_equal(back.data, m.data)


def test_scipy_bsr_of_another_block_size_goes_through_coordinates():
    x = matrix("rand-32x32")
    m = sp.bsr_matrix(x, blocksize=(2, 2))
    for fmt in ("bsr(4,4)", "bsr(3,5)", "csr", "ell", "dia"):
        t = spc.tensor(m, fmt)
        assert t.format.name == fmt
        assert_same(t.to_numpy(), x)


def test_scipy_bsr_with_unsorted_and_duplicate_blocks_is_canonicalized():
    data = np.arange(1, 13, dtype=np.float64).reshape(3, 2, 2)
    indptr = np.array([0, 3, 3])
    indices = np.array([1, 0, 1])          # unsorted, block (0, 1) twice
    m = sp.bsr_matrix((data, indices, indptr), shape=(4, 4))
    want = m.toarray()
    t = spc.tensor(m, "bsr(2,2)")
    t.validate()
    np.testing.assert_array_equal(t.arrays[1]["crd"], [0, 1])
    assert_same(t.to_numpy(), want)


def test_malformed_scipy_bsr_raises_input_error():
    m = sp.bsr_matrix((np.ones((1, 2, 2)), np.array([0]), np.array([0, 1, 1])), shape=(4, 4))
    m.indices[0] = 5                        # block column out of range
    with pytest.raises(spc.InputError, match="out of range"):
        spc.tensor(m, "bsr(2,2)")


@pytest.mark.parametrize("fmt", ["bsr(3,5)", "bsr(4,4)", "bsr(16,16)", "bsr(1,4)"])
def test_padded_bsr_shape_metadata_and_scipy_out(fmt):
    x = matrix("rand-9x13")
    t = spc.tensor(x, fmt)
    r, c = t.format.block
    want_padded = (-(-9 // r) * r, -(-13 // c) * c)
    assert t.shape == (9, 13)
    assert t.padded_shape == want_padded
    assert t.padding == (want_padded[0] - 9, want_padded[1] - 13)
    with pytest.raises(spc.ShapeError, match=r"pad=True.*padded shape"):
        t.to_scipy("bsr")
    padded = t.to_scipy("bsr", pad=True)
    assert padded.shape == want_padded and padded.blocksize == (r, c)
    dense = padded.toarray()
    assert_same(dense[:9, :13], x)
    assert not dense[9:].any() and not dense[:, 13:].any()
    assert t.to_scipy().format == "csr"      # the default keeps the exact shape
    assert_same(t.to_scipy(), x)


def test_to_scipy_bsr_reblocks_and_blocks_other_formats():
    x = matrix("rand-32x32")
    for fmt in ("csr", "coo", "bsr(4,4)", "nm(2,4)", "dia"):
        y = matrix("rand-32x32", fmt)
        t = spc.tensor(y, fmt)
        m = t.to_scipy("bsr", blocksize=(8, 2))
        assert m.blocksize == (8, 2)
        assert_same(m, y)
    # no block size for a tensor that is not bsr: scipy's own tobsr() choice
    m = spc.tensor(x, "csr").to_scipy("bsr")
    assert m.format == "bsr"
    assert_same(m, x)
    with pytest.raises(spc.InputError, match="blocksize"):
        spc.tensor(x, "csr").to_scipy("bsr", pad=True)
    with pytest.raises(spc.InputError, match="block sizes must be >= 1"):
        spc.tensor(x, "csr").to_scipy("bsr", blocksize=(0, 2))


def test_scipy_dia_into_dia_keeps_its_diagonals():
    data = np.array([[1.0, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], [0, 0, 0, 0, 0, 0]])
    m = sp.dia_matrix((data, [1, -2, 3]), shape=(5, 6))     # unsorted, one all-zero diagonal
    t = spc.tensor(m, "dia")
    np.testing.assert_array_equal(t.arrays[1]["offsets"], [-2, 1, 3])
    assert t.arrays[1]["offsets"].dtype == np.int32
    assert_same(t.to_numpy(), m.toarray())
    back = t.to_scipy()
    assert back.format == "dia"
    np.testing.assert_array_equal(back.offsets, [-2, 1, 3])
    assert_same(back, m.toarray())
    # into another format only the nonzeros go through coordinates (as scipy's tocoo)
    c = spc.tensor(m, "coo")
    assert c.nnz == m.tocoo().nnz == np.count_nonzero(m.toarray())


def test_scipy_dia_with_diagonals_outside_the_matrix_and_short_data():
    data = np.arange(1.0, 13).reshape(3, 4)        # data narrower than the 5x6 matrix
    m = sp.dia_matrix((data, [0, 7, -9]), shape=(5, 6))
    t = spc.tensor(m, "dia")
    np.testing.assert_array_equal(t.arrays[1]["offsets"], [0])   # 7 and -9 miss the matrix
    assert_same(t.to_numpy(), m.toarray())


def test_to_scipy_dia_of_other_formats():
    x = matrix("rand-9x13")
    for fmt in ("csr", "bsr(3,5)", "ell"):
        m = spc.tensor(x, fmt).to_scipy("dia")
        assert m.format == "dia"
        assert_same(m, x)


@pytest.mark.parametrize("layout", ["bsc", "csr_matrix", "", "dense"])
def test_unknown_scipy_layout_is_a_format_error(layout):
    with pytest.raises(spc.FormatError, match="unknown layout"):
        spc.tensor(matrix("rand-9x13"), "csr").to_scipy(layout)


def test_to_scipy_needs_a_matrix():
    t = spc.tensor(np.ones((2, 3, 4)), "csf")
    with pytest.raises(spc.ShapeError, match="rank 3"):
        t.to_scipy()


# ---------------------------------------------------------------- N:M inputs


def _not_nm() -> np.ndarray:
    x = np.zeros((3, 8))
    x[1, 4:7] = [1.0, 2.0, 3.0]             # 3 nonzeros in group 1 of row 1
    x[0, 0] = 5.0
    return x


@pytest.mark.parametrize("make", ["numpy", "scipy", "tensor", "triplets"])
def test_non_nm_input_raises_naming_the_prune_helper(make):
    x = _not_nm()
    src = {"numpy": lambda: x, "scipy": lambda: sp.csr_matrix(x),
           "tensor": lambda: spc.tensor(x, "csr"),
           "triplets": lambda: (np.nonzero(x), x[np.nonzero(x)])}[make]()
    kw = {"shape": x.shape} if make == "triplets" else {}
    with pytest.raises(spc.InputError, match=r"not 2:4.*row 1.*columns 4\.\.7.*spc\.prune\.nm\(W, 2, 4\)"):
        spc.tensor(src, "nm(2,4)", **kw)
    t = spc.tensor(spc.prune.nm(x, 2, 4), "nm(2,4)")
    assert spc.prune.is_nm(t.to_numpy(), 2, 4)


def test_non_nm_torch_input_raises(torch):
    with pytest.raises(spc.InputError, match=r"spc\.prune\.nm\(W, 2, 4\)"):
        spc.tensor(torch.from_numpy(_not_nm()), "nm(2,4)")


def test_explicit_zeros_do_not_count_against_nm():
    x = matrix("rand-32x32", "nm(2,4)")
    m = sp.csr_matrix(x)
    # make every stored pattern dense with explicit zeros: 4 entries per group
    full = sp.csr_matrix((np.where(x != 0, x, 0.0).reshape(-1),
                          np.tile(np.arange(32), 32), np.arange(0, 32 * 33, 32)), shape=(32, 32))
    assert full.nnz == 32 * 32 and m.nnz < full.nnz
    for src in (full, spc.tensor(x, "bsr(4,4)"), spc.tensor(x, "dia"), full.tocoo()):
        t = spc.tensor(src, "nm(2,4)")
        assert_same(t.to_numpy(), x)
    # nm filler zeros do not count either: 2:4 -> 1:4 when the values allow it
    y = spc.prune.nm(x, 1, 4)
    assert_same(spc.tensor(spc.tensor(y, "nm(2,4)"), "nm(1,4)").to_numpy(), y)


def test_ell_with_a_fixed_width_ignores_explicit_zeros():
    x = np.diag([1.0, 2.0, 3.0])
    m = sp.csr_matrix(np.ones((3, 3)))
    m.data[:] = x.reshape(-1)                # a full pattern, mostly explicit zeros
    t = spc.tensor(m, "ell(1)")
    assert_same(t.to_numpy(), x)


# --------------------------------------------------------------------- torch

TORCH_IN = ["dense", "coo", "csr", "csc", "bsr", "bsc"]


def torch_of(torch, x, layout):
    t = torch.from_numpy(np.ascontiguousarray(x))
    if layout == "dense":
        return t
    if layout == "coo":
        return t.to_sparse_coo()
    if layout == "csr":
        return t.to_sparse_csr()
    if layout == "csc":
        return t.to_sparse_csc()
    block = (2, 2) if x.shape[0] % 2 == 0 and x.shape[1] % 2 == 0 else (1, 1)
    return t.to_sparse_bsr(block) if layout == "bsr" else t.to_sparse_bsc(block)


def to_dense_numpy(torch, t) -> np.ndarray:
    """A torch tensor as numpy, read from its own arrays (torch's to_dense() is slow)."""
    if t.layout == torch.strided:
        return t.numpy()
    if t.layout == torch.sparse_coo:
        out = np.zeros(tuple(t.shape), dtype=t.values().numpy().dtype)
        np.add.at(out, tuple(t.indices().numpy()), t.values().numpy())
        return out
    shape = tuple(t.shape)
    if t.layout == torch.sparse_csr:
        arrays = (t.values().numpy(), t.col_indices().numpy(), t.crow_indices().numpy())
        return sp.csr_matrix(arrays, shape=shape).toarray()
    if t.layout == torch.sparse_csc:
        arrays = (t.values().numpy(), t.row_indices().numpy(), t.ccol_indices().numpy())
        return sp.csc_matrix(arrays, shape=shape).toarray()
    assert t.layout == torch.sparse_bsr
    arrays = (t.values().numpy(), t.col_indices().numpy(), t.crow_indices().numpy())
    return sp.bsr_matrix(arrays, shape=shape).toarray()


@pytest.mark.filterwarnings("ignore:Sparse .* support is in beta state")
@pytest.mark.parametrize("name", list(MATRICES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_round_trip(torch, fmt, name):
    x = matrix(name, fmt)
    for layout in TORCH_IN:
        if x.shape == (0, 0) and layout in ("bsr", "bsc"):
            continue                       # torch cannot block a 0x0 tensor
        t = spc.tensor(torch_of(torch, x, layout), fmt)
        assert t.format == spc.tensor(x, fmt).format
        assert_same(t.to_numpy(), x)
    for out in (None, "dense", "coo", "csr", "csc", torch.sparse_csr):
        got = t.to_torch(out)
        assert got.dtype == getattr(torch, t.dtype.name)
        assert tuple(got.shape) == x.shape
        assert_same(to_dense_numpy(torch, got), x)
        assert_same(spc.tensor(got, fmt).to_numpy(), x)


@pytest.mark.parametrize("fmt, layout", [("csr", "sparse_csr"), ("csc", "sparse_csc"),
                                         ("coo", "sparse_coo"), ("dense", "strided"),
                                         ("bsr(2,2)", "sparse_bsr"), ("bsr(3,5)", "sparse_csr"),
                                         ("dcsr", "sparse_csr"), ("ell", "sparse_csr"),
                                         ("dia", "sparse_csr"), ("nm(2,4)", "sparse_csr")])
def test_default_torch_layout(torch, fmt, layout):
    x = matrix("empty-rows-8x12", fmt)
    got = spc.tensor(x, fmt).to_torch()
    assert got.layout == getattr(torch, layout)
    assert_same(to_dense_numpy(torch, got), x)


@pytest.mark.parametrize("layout, fmt", [("dense", "dense"), ("coo", "coo"), ("csr", "csr"),
                                         ("csc", "csc"), ("bsr", "bsr(2,2)"),
                                         ("bsc", "bsr(2,2)")])
def test_default_format_of_torch_input(torch, layout, fmt):
    x = matrix("empty-rows-8x12")
    assert spc.tensor(torch_of(torch, x, layout)).format.name == fmt


def test_torch_csr_into_csr_shares_its_arrays(torch):
    x = matrix("rand-9x13")
    src = torch.from_numpy(x).to_sparse_csr()
    t = spc.tensor(src, "csr")
    assert np.shares_memory(t.vals, src.values().numpy())
    assert t.index_dtype == np.int64
    out = t.to_torch()
    assert out.layout == torch.sparse_csr
    assert np.shares_memory(out.values().numpy(), t.vals)


def test_torch_bsr_into_bsr_directly_and_back(torch):
    x = matrix("rand-32x32")
    src = torch.from_numpy(x).to_sparse_bsr((4, 8))
    t = spc.tensor(src, "bsr(4,8)")
    assert np.shares_memory(t.vals, src.values().numpy())
    assert_same(t.to_numpy(), x)
    out = t.to_torch()
    assert out.layout == torch.sparse_bsr and out.values().shape[1:] == (4, 8)
    assert torch.equal(out.crow_indices(), src.crow_indices().to(out.crow_indices().dtype))
    assert torch.equal(out.values(), src.values())
    # another block size goes through coordinates
    assert_same(spc.tensor(src, "bsr(4,4)").to_numpy(), x)


def test_to_torch_bsr_padding_rule(torch):
    x = matrix("rand-9x13")
    t = spc.tensor(x, "bsr(3,5)")
    with pytest.raises(spc.ShapeError, match="pad=True"):
        t.to_torch("bsr")
    padded = t.to_torch("bsr", pad=True)
    assert tuple(padded.shape) == t.padded_shape == (9, 15)
    assert_same(padded.to_dense().numpy()[:, :13], x)
    assert t.to_torch().layout == torch.sparse_csr
    with pytest.raises(spc.InputError, match="blocksize"):
        spc.tensor(x, "csr").to_torch("bsr")
    m = spc.tensor(matrix("rand-32x32"), "csr").to_torch(torch.sparse_bsr, blocksize=(8, 4))
    assert m.values().shape[1:] == (8, 4)
    assert_same(m.to_dense().numpy(), matrix("rand-32x32"))


def test_torch_unsorted_csr_is_canonicalized_and_malformed_raises(torch):
    crow = torch.tensor([0, 2, 3])
    col = torch.tensor([3, 1, 0])
    vals = torch.tensor([1.0, 2.0, 3.0])
    src = torch.sparse_csr_tensor(crow, col, vals, size=(2, 5), check_invariants=False)
    t = spc.tensor(src, "csr")
    np.testing.assert_array_equal(t.to_numpy(), [[0, 2, 0, 1, 0], [3, 0, 0, 0, 0]])
    t.validate()
    bad = torch.sparse_csr_tensor(crow, torch.tensor([3, 9, 0]), vals, size=(2, 5),
                                  check_invariants=False)
    with pytest.raises(spc.InputError, match="out of range"):
        spc.tensor(bad, "csr")


def test_torch_uncoalesced_coo_sums_duplicates(torch):
    idx = torch.tensor([[1, 0, 1], [2, 0, 2]])
    src = torch.sparse_coo_tensor(idx, torch.tensor([1.0, 2.0, 3.0]), (2, 3),
                                  check_invariants=True)
    np.testing.assert_array_equal(spc.tensor(src).to_numpy(), [[2, 0, 0], [0, 0, 4]])


def test_torch_3d_coo_round_trip(torch):
    rng = np.random.default_rng(7)
    x = _values(rng, (3, 4, 5), 0.3)
    t = spc.tensor(torch.from_numpy(x).to_sparse(), "csf")
    assert_same(t.to_numpy(), x)
    out = t.to_torch()
    assert out.layout == torch.sparse_coo and out.is_coalesced()
    assert_same(out.to_dense().numpy(), x)
    with pytest.raises(spc.ShapeError, match="rank 3"):
        t.to_torch("csr")


@pytest.mark.parametrize("tdtype, expect", [("float32", np.float32), ("float64", np.float64),
                                            ("int64", np.float64), ("int32", np.float64),
                                            ("bool", np.float64)])
def test_torch_value_dtypes(torch, tdtype, expect):
    x = torch.tensor([[0, 1, 0], [2, 0, 3]]).to(getattr(torch, tdtype))
    for src in (x, x.to_sparse(), x.to_sparse_csr()):
        t = spc.tensor(src, "csr")
        assert t.dtype == expect
        np.testing.assert_array_equal(t.to_numpy(), x.double().numpy())


@pytest.mark.parametrize("tdtype", ["float16", "bfloat16"])
def test_torch_half_values_keep_their_type_or_convert(torch, tdtype):
    x = torch.tensor([[0.0, 1.5], [2.0, 0.0]], dtype=getattr(torch, tdtype))
    t = spc.tensor(x, "csr")
    assert t.dtype.name == tdtype
    np.testing.assert_array_equal(t.to_numpy().astype(np.float32), [[0, 1.5], [2, 0]])
    for dtype in (np.float32, torch.float32):
        t = spc.tensor(x.to_sparse_csr(), "csr", dtype=dtype)
        assert t.dtype == np.float32
        np.testing.assert_array_equal(t.to_numpy(), [[0, 1.5], [2, 0]])


def test_torch_input_with_grad_is_detached(torch):
    x = torch.tensor([[0.0, 1.0], [2.0, 0.0]], requires_grad=True)
    np.testing.assert_array_equal(spc.tensor(x, "csr").to_numpy(), [[0, 1], [2, 0]])


def test_unknown_torch_layout_is_a_format_error(torch):
    t = spc.tensor(matrix("rand-9x13"), "csr")
    for bad in ("bsc", "jagged", torch.sparse_bsc):
        with pytest.raises(spc.FormatError):
            t.to_torch(bad)


def test_hybrid_and_batched_torch_tensors_are_unsupported(torch):
    hybrid = torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.ones(2, 3), (2, 3),
                                     check_invariants=True)
    with pytest.raises(spc.UnsupportedError, match="hybrid"):
        spc.tensor(hybrid)
    batched = torch.ones(2, 3, 4).to_sparse_csr()
    with pytest.raises(spc.UnsupportedError, match="batched"):
        spc.tensor(batched)


# ------------------------------------------------------------ without torch


def test_without_torch_conversions_raise_unsupported(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)      # import torch -> ImportError
    t = spc.tensor(matrix("rand-9x13", "nm(2,4)"), "nm(2,4)")
    with pytest.raises(spc.UnsupportedError, match="needs PyTorch"):
        t.to_torch()
    with pytest.raises(spc.UnsupportedError, match="needs PyTorch"):
        convert.to_torch_semi_structured(t)


# ----------------------------------------------- torch 2:4 semi-structured


def test_semi_structured_rejects_non_24_input_first():
    with pytest.raises(spc.InputError, match=r"spc\.prune\.nm\(W, 2, 4\)"):
        convert.to_torch_semi_structured(spc.tensor(_not_nm(), "csr"))


def test_semi_structured_without_cuda_is_unsupported(torch):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    t = spc.tensor(matrix("rand-32x32", "nm(2,4)"), "nm(2,4)")
    with pytest.raises(spc.UnsupportedError, match="needs a CUDA GPU"):
        convert.to_torch_semi_structured(t)


def _cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not hasattr(torch.sparse, "SparseSemiStructuredTensor"):
        pytest.skip("this torch has no semi-structured sparse tensors")
    return torch


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_semi_structured_round_trip_on_cuda(dtype):
    torch = _cuda_torch()
    rng = np.random.default_rng(11)
    w = spc.prune.nm(rng.uniform(-1, 1, (128, 128)).astype(np.float32), 2, 4)
    t = spc.tensor(w, "nm(2,4)")
    s = convert.to_torch_semi_structured(t, dtype=getattr(torch, dtype))
    assert isinstance(s, torch.sparse.SparseSemiStructuredTensor)
    want = torch.from_numpy(w).to(getattr(torch, dtype)).float().numpy()
    np.testing.assert_array_equal(s.to_dense().float().cpu().numpy(), want)
    back = spc.tensor(s, dtype=np.float32)
    assert back.format.name == "nm(2,4)"
    np.testing.assert_array_equal(back.to_numpy(), want)
    with pytest.raises(spc.DTypeError, match="dtype="):
        spc.tensor(s)


@pytest.mark.cuda
def test_semi_structured_shapes_torch_rejects_are_unsupported():
    torch = _cuda_torch()
    t = spc.tensor(spc.prune.nm(np.ones((8, 8)), 2, 4), "nm(2,4)")
    with pytest.raises(spc.UnsupportedError, match="torch cannot hold this 8x8"):
        convert.to_torch_semi_structured(t, dtype=torch.float16)
    big = spc.tensor(matrix("rand-32x32", "nm(2,4)"), "nm(2,4)")
    with pytest.raises(spc.UnsupportedError, match=r"pass e\.g\. dtype=torch\.float16"):
        convert.to_torch_semi_structured(spc.tensor(np.tile(big.to_numpy(), (4, 4)), "nm(2,4)"))


@pytest.mark.cuda
def test_cuda_tensors_are_copied_to_the_host():
    torch = _cuda_torch()
    x = matrix("rand-9x13")
    for src in (torch.from_numpy(x).cuda(), torch.from_numpy(x).cuda().to_sparse_csr()):
        assert_same(spc.tensor(src, "csr").to_numpy(), x)


# ------------------------------------------------------------------ hyb


def test_hyb_tensor_converts_into_plain_formats():
    x = matrix("dense-row-6x20")
    h = spc.tensor(x, "hyb")
    assert spc.tensor(h) is h
    for fmt in ("csr", "coo", "bsr(4,4)", "dia", "dense"):
        t = spc.tensor(h, fmt)
        assert t.format.name == fmt
        assert_same(t.to_numpy(), x)
    with pytest.raises(spc.InputError, match=r"spc\.prune\.nm"):
        spc.tensor(h, "nm(2,4)")
