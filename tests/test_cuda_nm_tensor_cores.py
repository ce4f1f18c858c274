"""Sparse tensor cores on the GPU (passes/tensorize_nm.py): nm(2,4) SpMM in float16
and bfloat16 through mma.sp tiles, against a float64 reference computed from the
same 16-bit inputs; sizes no multiple of the tile (16 rows, 32 columns of k, 8
output columns), k no multiple of 4 (padding slots), empty tiles, nnz = 0, every
tile width; and, to debug a wrong metadata layout, products with an identity B
whose output is A itself as the instruction saw it, for every pair of places."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

import spc

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for torch", allow_module_level=True)
from cuda_env import cupy_or_skip_module  # noqa: E402

cupy_or_skip_module()

TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float16, torch.bfloat16]
NP = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
PAIRS = list(itertools.combinations(range(4), 2))       # the six pairs of places


def _nm(m, k, density, seed, tdtype):
    """(A as an nm(2,4) spc tensor, A as float64 of its 16-bit values)."""
    rng = np.random.default_rng(seed)
    dense = rng.uniform(-1, 1, (m, k)) * (rng.random((m, k)) < density)
    if m > 40:
        dense[16:32] = 0                                   # an empty row tile
    W = sp.csr_matrix(spc.prune.nm(sp.csr_matrix(dense), 2, 4))
    t = spc.tensor(W, "nm(2,4)", dtype=NP[tdtype])
    return t, np.asarray(t.to_numpy(), dtype=np.float64)


def _dense(shape, tdtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1).to(tdtype).cuda()


def _rel(out, ref) -> float:
    out = out.double().cpu().numpy()
    return float(np.abs(out - ref).max(initial=0) / max(np.abs(ref).max(initial=0), 1e-30))


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(96, 128, 64), (37, 45, 70), (40, 33, 1), (16, 32, 8),
                                   (130, 66, 130), (256, 512, 256), (64, 5, 24)], ids=str)
def test_nm_spmm_on_sparse_tensor_cores_matches_float64(shape, tdtype):
    m, kdim, n = shape
    t, A = _nm(m, kdim, 0.7, seed=m + n, tdtype=tdtype)
    B = _dense((kdim, n), tdtype, n)
    k = spc.compile("spmm", fmt="nm(2,4)", target="cuda")
    got = k(k.prepare(t, name="A"), B)
    assert k.specialize(NP[tdtype]).schedule.tensor_cores is True
    assert got.dtype == tdtype and tuple(got.shape) == (m, n)
    assert _rel(got, A @ B.double().cpu().numpy()) <= TOLERANCE[tdtype]


def _places_matrix(m, groups, pattern):
    """An m x 4 groups 2:4 matrix (float64) whose group q of row r keeps places
    ``pattern(r, q)`` (a pair), values small integers (exact in 16 bits) that
    name the row and place."""
    A = np.zeros((m, 4 * groups))
    for r in range(m):
        for q in range(groups):
            a, b = pattern(r, q)
            A[r, 4 * q + a] = 1 + (r % 7) + 8 * a
            A[r, 4 * q + b] = -(1 + (q % 5) + 8 * b)
    return A


def _show_mismatch(got, want, label) -> str:
    """Where the tile's A (got: C with B = I) differs from A: the first rows'
    differing groups of four, with which lane holds each row's metadata (mma.sp
    m16n8k32, selector 0: row r's group q is in lane 4 (r % 8) + (q % 8) // 4, bits
    16 (r % 16 >= 8) + 4 (q % 4) of its register)."""
    lines = [f"{label}: {int((got != want).sum())} entries differ"]
    rows = np.nonzero((got != want).any(axis=1))[0]
    for r in rows[:4]:
        for q in np.nonzero((got[r] != want[r]).reshape(-1, 4).any(axis=1))[0][:3]:
            lane = 4 * (r % 8) + (q % 8) // 4
            bits = 16 * (r % 16 >= 8) + 4 * (q % 4)
            lines.append(f"  row {r} group {q} (cols {4 * q}..{4 * q + 3}): got "
                         f"{got[r, 4 * q:4 * q + 4].tolist()} want {want[r, 4 * q:4 * q + 4].tolist()}"
                         f"  [metadata: lane {lane}, bits {bits}..{bits + 3}; values: lane "
                         f"{4 * (r % 8) + q % 4}, register {2 * ((q % 8) >= 4) + (r % 16 >= 8)}]")
    return "\n".join(lines)


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
@pytest.mark.parametrize("pair", PAIRS + ["mixed"], ids=str)
def test_the_metadata_layout_with_an_identity(pair, tdtype):
    """C = A @ I is A as the instruction read it: every group keeps the same pair of
    places, or ("mixed") row r's group q keeps pair (r + q) % 6, so every lane's
    every nibble is tried.  Exact: one product per output entry."""
    m, groups = 48, 24                                # 3 row tiles, 3 steps of k
    pattern = (lambda r, q: PAIRS[(r + q) % 6]) if pair == "mixed" else (lambda r, q: pair)
    A = _places_matrix(m, groups, pattern)
    t = spc.tensor(sp.csr_matrix(A), "nm(2,4)", dtype=NP[tdtype])
    eye = torch.eye(4 * groups, dtype=tdtype, device="cuda")
    for tile_cols in (8, 64):
        k = spc.compile("spmm", fmt="nm(2,4)", target="cuda", tile_cols=tile_cols)
        got = k(k.prepare(t, name="A"), eye).double().cpu().numpy()
        assert np.array_equal(got, A), _show_mismatch(got, A, f"pair {pair}, tile_cols "
                                                              f"{tile_cols}")


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
@pytest.mark.parametrize("tile_cols", [8, 16, 32, 64, 128, 256])
def test_every_tile_width_gives_the_same_product(tile_cols, tdtype):
    t, A = _nm(64, 96, 0.6, seed=1, tdtype=tdtype)
    B = _dense((96, 200), tdtype, 2)
    k = spc.compile("spmm", fmt="nm(2,4)", target="cuda", tile_cols=tile_cols)
    got = k(k.prepare(t, name="A"), B)
    assert k.specialize(NP[tdtype]).schedule.tile_cols == tile_cols
    assert _rel(got, A @ B.double().cpu().numpy()) <= TOLERANCE[tdtype]


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
def test_sparse_tensor_cores_agree_with_the_scalar_kernel(tdtype):
    t, A = _nm(128, 128, 0.8, seed=4, tdtype=tdtype)
    B = _dense((128, 96), tdtype, 5)
    on = spc.compile("spmm", fmt="nm(2,4)", target="cuda")
    off = spc.compile("spmm", fmt="nm(2,4)", target="cuda", tensor_cores=False)
    ref = A @ B.double().cpu().numpy()
    x, y = on(on.prepare(t, name="A"), B), off(off.prepare(t, name="A"), B)
    assert _rel(x, ref) <= TOLERANCE[tdtype] and _rel(y, ref) <= TOLERANCE[tdtype]
    assert _rel(x, y.double().cpu().numpy()) <= 2 * TOLERANCE[tdtype]


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(48, 32, 0), (0, 32, 16), (48, 0, 16), (48, 32, 16)],
                         ids=str)
def test_empty_operands(shape, tdtype):
    m, kdim, n = shape
    t = spc.tensor(sp.csr_matrix((m, kdim)), "nm(2,4)", dtype=NP[tdtype])     # nnz = 0
    B = torch.ones((kdim, n), dtype=tdtype, device="cuda")
    k = spc.compile("spmm", fmt="nm(2,4)", target="cuda")
    got = k(k.prepare(t, name="A"), B)
    assert tuple(got.shape) == (m, n)
    assert not got.any()
