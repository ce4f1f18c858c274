"""Magnitude pruning: make a matrix N:M, sparse to a given fraction, or block sparse.

spc never prunes implicitly: ``spc.tensor(W, "nm(2,4)")`` raises when ``W`` is not
2:4, and the helpers here are the explicit way to get there::

    W24 = spc.prune.nm(W, 2, 4)               # the 2 largest |w| of every 4 columns
    spc.tensor(W24, "nm(2,4)")
    spc.prune.magnitude(W, 0.9)               # the 90% smallest |w| become 0
    spc.prune.blocks(W, (4, 4), 0.5)          # half the 4x4 blocks (smallest L2 norm) become 0
    spc.prune.is_nm(W, 2, 4)                  # True / False

Every helper takes a 2-d numpy array, scipy.sparse matrix, torch tensor (strided;
a CUDA tensor is pruned on the host and returned on its device) or spc Tensor,
and returns the same family: numpy in, numpy out (same dtype); scipy in, scipy
CSR out (``csr_array`` for sparse arrays, ``csr_matrix`` for matrices, explicit
zeros dropped); torch in, torch out (same dtype and device); spc Tensor in,
numpy out.  The input is never modified.

Order of importance (all helpers): larger ``|w|`` first, and among equal
magnitudes the lower column (``nm``), the lower row-major index
(``magnitude``) or the lower row-major block index (``blocks``) first.  The
result is therefore deterministic, ties included.  NaN values raise InputError.
"""
from __future__ import annotations

import numbers

import numpy as np

from .errors import DTypeError, InputError, ShapeError, UnsupportedError
from .formats.convert import is_torch as _is_torch
from .formats.levels_padded import ranks_in_runs

__all__ = ["nm", "magnitude", "blocks", "is_nm"]


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------

def nm(W, n: int, m: int):
    """Keep the ``n`` largest-magnitude entries of every group of ``m``
    consecutive columns in each row (columns ``0..m-1``, ``m..2m-1``, ...).

    Ties keep the lowest column.  A last group narrower than ``m`` (when the
    column count is not a multiple of ``m``) keeps ``min(n, width)`` entries.
    The result satisfies ``is_nm(result, n, m)`` and converts with
    ``spc.tensor(result, f"nm({n},{m})")``.
    """
    n, m = _check_nm_args(n, m, "spc.prune.nm")
    fam = _Family.of(W, "spc.prune.nm")
    if fam.kind == "scipy":
        r, c, v = fam.triplets()
        grp = r * (-(-fam.shape[1] // m)) + c // m
        order = np.lexsort((c, -_dense_rank(_magnitude(v)), grp))
        r, c, v, grp = r[order], c[order], v[order], grp[order]
        keep = ranks_in_runs(grp) < n
        return fam.from_triplets(r[keep], c[keep], v[keep])
    A = fam.dense()
    rows, cols = A.shape
    groups = -(-cols // m)
    rank = np.full((rows, groups * m), -1, dtype=np.int64)   # padding ranks below zeros
    rank[:, :cols] = _dense_rank(_magnitude(A))
    rank = rank.reshape(rows, groups, m)
    order = np.argsort(-rank, axis=-1, kind="stable")          # ties: lowest column first
    mask = np.zeros((rows, groups, m), dtype=bool)
    np.put_along_axis(mask, order[..., :n], True, axis=-1)
    return fam.apply(mask.reshape(rows, groups * m)[:, :cols])


def magnitude(W, sparsity: float):
    """Zero the ``k = round(sparsity * W.size)`` entries of smallest magnitude
    (Python's ``round``: halves go to the even neighbour).

    Entries that are zero already count among the smallest, so the result has
    ``max(k, zeros already in W)`` zeros.  Ties zero the later (row-major)
    entry first, i.e. the earlier one is kept.
    """
    sparsity = _check_fraction(sparsity, "spc.prune.magnitude")
    fam = _Family.of(W, "spc.prune.magnitude")
    size = fam.shape[0] * fam.shape[1]
    keep_count = size - int(round(sparsity * size))
    if fam.kind == "scipy":
        r, c, v = fam.triplets()
        nz = v != 0
        r, c, v = r[nz], c[nz], v[nz]
        if keep_count < len(v):
            flat = r * fam.shape[1] + c
            order = np.lexsort((flat, -_dense_rank(_magnitude(v))))[:keep_count]
            r, c, v = r[order], c[order], v[order]
        return fam.from_triplets(r, c, v)
    A = fam.dense()
    flat_rank = _dense_rank(_magnitude(A)).reshape(-1)
    keep = np.zeros(size, dtype=bool)
    keep[np.argsort(-flat_rank, kind="stable")[:keep_count]] = True
    return fam.apply(keep.reshape(A.shape))


def blocks(W, block, sparsity: float):
    """Zero whole ``r x c`` blocks: the ``k = round(sparsity * nblocks)`` blocks
    of smallest L2 norm, where the blocks tile the matrix from the top left and
    ``nblocks = ceil(rows / r) * ceil(cols / c)``.

    Edge blocks (when the shape is not a multiple of the block) are partial:
    their norm is over the entries they hold, not normalized by their size.
    Ties zero the later (row-major block order) block first.  Norms are
    compared as sums of squares in float64.
    """
    r, c = _check_block(block, "spc.prune.blocks")
    sparsity = _check_fraction(sparsity, "spc.prune.blocks")
    fam = _Family.of(W, "spc.prune.blocks")
    rows, cols = fam.shape
    brows, bcols = -(-rows // r), -(-cols // c)
    nblocks = brows * bcols
    keep_count = nblocks - int(round(sparsity * nblocks))
    if fam.kind == "scipy":
        i, j, v = fam.triplets()
        nz = v != 0
        i, j, v = i[nz], j[nz], v[nz]
        bid = (i // r) * bcols + j // c
        ids, inverse = np.unique(bid, return_inverse=True)
        norm2 = np.zeros(len(ids), dtype=np.float64)
        np.add.at(norm2, inverse.reshape(-1), _square(v))
        if keep_count < len(ids):
            # only blocks with a nonzero entry can be kept before all-zero ones
            order = np.lexsort((ids, -norm2))[:keep_count]
            kept = np.zeros(len(ids), dtype=bool)
            kept[order] = True
            sel = kept[inverse.reshape(-1)]
            i, j, v = i[sel], j[sel], v[sel]
        return fam.from_triplets(i, j, v)
    A = fam.dense()
    padded = np.zeros((brows * r, bcols * c), dtype=np.float64)
    padded[:rows, :cols] = _square(A)
    norm2 = padded.reshape(brows, r, bcols, c).sum(axis=(1, 3)).reshape(-1)
    keep = np.zeros(nblocks, dtype=bool)
    keep[np.argsort(-norm2, kind="stable")[:keep_count]] = True
    mask = np.repeat(np.repeat(keep.reshape(brows, bcols), r, axis=0), c, axis=1)
    return fam.apply(mask[:rows, :cols])


def is_nm(W, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive columns of every row holds at
    most ``n`` nonzeros (a last, narrower group too).  Explicit zeros stored in
    a sparse input do not count."""
    n, m = _check_nm_args(n, m, "spc.prune.is_nm")
    fam = _Family.of(W, "spc.prune.is_nm", allow_nan=True)
    rows, cols = fam.shape
    groups = -(-cols // m)
    if fam.kind == "scipy":
        r, c, v = fam.triplets()
        grp = r[v != 0] * groups + c[v != 0] // m
        return bool(len(grp) == 0 or np.bincount(grp).max() <= n)
    nz = np.zeros((rows, groups * m), dtype=bool)
    nz[:, :cols] = fam.dense() != 0
    return bool(nz.reshape(rows, groups, m).sum(axis=-1).max(initial=0) <= n)


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------

def _int_arg(x, name: str, what: str) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise InputError(f"{what}: {name} must be an integer, got {x!r}")
    return int(x)


def _check_nm_args(n, m, what: str) -> tuple[int, int]:
    n, m = _int_arg(n, "n", what), _int_arg(m, "m", what)
    if not 1 <= n <= m:
        raise InputError(f"{what}: need 1 <= n <= m, got n={n}, m={m}")
    return n, m


def _check_fraction(s, what: str) -> float:
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real):
        raise InputError(f"{what}: sparsity must be a number in [0, 1], got {s!r}")
    s = float(s)
    if not 0.0 <= s <= 1.0:        # NaN fails this too
        raise InputError(f"{what}: sparsity must be in [0, 1], got {s}")
    return s


def _check_block(block, what: str) -> tuple[int, int]:
    try:
        r, c = block
    except (TypeError, ValueError):
        raise InputError(f"{what}: the block must be a pair (rows, cols), got {block!r}") from None
    r, c = _int_arg(r, "the block's row count", what), _int_arg(c, "the block's column count", what)
    if r < 1 or c < 1:
        raise InputError(f"{what}: block sizes must be >= 1, got ({r}, {c})")
    return r, c


# ---------------------------------------------------------------------------
# magnitudes and ranks
# ---------------------------------------------------------------------------

def _magnitude(a: np.ndarray) -> np.ndarray:
    """|a| in a dtype that orders exactly (unsigned for signed integers, so that
    the most negative integer has the largest magnitude)."""
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype.kind == "i":
        return np.abs(a).view(np.dtype(f"u{a.dtype.itemsize}"))
    return np.abs(a)


def _dense_rank(mag: np.ndarray) -> np.ndarray:
    """Each magnitude's rank among the distinct magnitudes (0 = smallest), int64,
    same shape: an exact sort key for any dtype."""
    if mag.size == 0:
        return np.zeros(mag.shape, dtype=np.int64)
    _, inverse = np.unique(mag.reshape(-1), return_inverse=True)
    return inverse.reshape(mag.shape).astype(np.int64)


def _square(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "c":
        return np.abs(a).astype(np.float64) ** 2
    x = a.astype(np.float64)
    return x * x


# ---------------------------------------------------------------------------
# input families
# ---------------------------------------------------------------------------

def _is_scipy(x) -> bool:
    from .formats.tensor import _is_scipy_sparse
    return _is_scipy_sparse(x)


class _Family:
    """The input, seen as a 2-d array, and how to return a result in its family."""

    def __init__(self, kind: str, x, shape, what: str):
        self.kind, self.x, self.shape, self.what = kind, x, tuple(int(s) for s in shape), what
        self._dense = None

    @classmethod
    def of(cls, W, what: str, *, allow_nan: bool = False) -> "_Family":
        from .formats.tensor import Tensor
        if isinstance(W, Tensor):
            fam = cls("spc", W, W.shape, what)
            fam._dense = W.to_numpy()
        elif _is_scipy(W):
            fam = cls("scipy", W, W.shape, what)
        elif _is_torch(W):
            import torch
            if W.layout != torch.strided:
                raise UnsupportedError(f"{what}: torch tensors of layout {W.layout} are not "
                                       f"supported; pass a dense (strided) tensor, e.g. "
                                       f"W.to_dense()")
            fam = cls("torch", W, tuple(W.shape), what)
            t = W.detach().cpu()
            if t.dtype == torch.bfloat16:       # numpy has no bfloat16; float32 holds it exactly
                t = t.float()
            fam._dense = t.numpy()
        else:
            arr = np.asarray(W)
            fam = cls("numpy", arr, arr.shape, what)
            fam._dense = arr
        fam._check_rank()
        fam._check_values(allow_nan)
        return fam

    def _check_rank(self) -> None:
        if len(self.shape) != 2:
            raise ShapeError(f"{self.what}: needs a 2-d matrix, got shape {self.shape}")

    def _values(self) -> np.ndarray:
        return self.x.data if self.kind == "scipy" else self._dense

    def _check_values(self, allow_nan: bool) -> None:
        vals = self._values()
        if vals.dtype.kind not in "biufc":
            raise DTypeError(f"{self.what}: values must be numeric, not {vals.dtype}")
        if not allow_nan and vals.dtype.kind in "fc" and vals.size and np.isnan(vals).any():
            if self.kind == "scipy":
                r, c, v = self.triplets()
                k = int(np.argmax(np.isnan(v)))
                at = (int(r[k]), int(c[k]))
            else:
                at = tuple(int(i) for i in np.argwhere(np.isnan(vals))[0])
            raise InputError(f"{self.what}: W has a NaN at {at}; magnitude pruning needs "
                             f"comparable values")

    # -- dense view -------------------------------------------------------
    def dense(self) -> np.ndarray:
        return self._dense

    def apply(self, keep: np.ndarray):
        """The input with the entries outside ``keep`` set to zero, in its family."""
        if self.kind == "torch":
            import torch
            mask = torch.from_numpy(np.ascontiguousarray(keep)).to(self.x.device)
            return torch.where(mask, self.x, torch.zeros((), dtype=self.x.dtype,
                                                         device=self.x.device))
        return np.where(keep, self._dense, np.zeros((), dtype=self._dense.dtype))

    # -- scipy view -------------------------------------------------------
    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, values) of the stored entries, duplicates summed (int64 indices)."""
        m = self.x.tocoo(copy=True) if self.x.format != "coo" else self.x.copy()
        m.sum_duplicates()
        return m.row.astype(np.int64), m.col.astype(np.int64), m.data

    def from_triplets(self, r, c, v):
        import scipy.sparse as sp
        array = isinstance(self.x, getattr(sp, "sparray", ()))
        cls = sp.csr_array if array else sp.csr_matrix
        out = cls((v, (r, c)), shape=self.shape, dtype=self.x.dtype)
        out.eliminate_zeros()
        out.sum_duplicates()
        out.sort_indices()
        return out
