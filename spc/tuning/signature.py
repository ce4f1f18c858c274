"""A matrix's signature: the few numbers the tuner keys its database on and
its rules read (shape, nnz, row-length statistics, block density, N:M fit).

Cheap by design (numpy only, no sort of all nonzeros): block densities are
measured exactly on at most ``SAMPLE_NNZ`` nonzeros' worth of evenly spaced
block rows, so a 1M-nonzero matrix takes a few milliseconds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..formats.levels import position_ranges

BLOCKS = ((1, 4), (4, 4), (16, 16))   # block shapes whose density is measured
SAMPLE_NNZ = 1 << 14                   # nonzeros visited per block density, at most


@dataclass(frozen=True)
class Signature:
    """What the tuner knows of a sparse matrix.

    ``row_cv``: the coefficient of variation (std / mean) of row lengths (0 for
    a matrix without nonzeros).  ``block_density[(r, c)]``: nonzeros over the
    entries of the r x c blocks holding at least one (1.0: every block full;
    1.0 for a matrix without nonzeros).  ``nm_2_4``: every aligned group of 4
    columns of every row holds at most 2 nonzeros (the matrix is 2:4 sparse).
    """
    rows: int
    cols: int
    nnz: int
    row_mean: float
    row_max: int
    row_cv: float
    empty_rows: float                  # the fraction of rows without nonzeros
    block_density: tuple[tuple[tuple[int, int], float], ...]
    nm_2_4: bool

    def density(self, block: tuple[int, int]) -> float:
        """The block density measured for ``block`` (one of BLOCKS)."""
        return dict(self.block_density)[tuple(block)]

    def key(self) -> str:
        """A short stable hash naming this signature (equal matrices, equal keys)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def features(self) -> np.ndarray:
        """A vector of comparable scale per field, for nearest-signature lookup."""
        return np.array([math.log1p(self.rows), math.log1p(self.cols), math.log1p(self.nnz),
                         math.log1p(self.row_mean), math.log1p(self.row_max),
                         min(self.row_cv, 10.0), self.empty_rows,
                         *(4.0 * d for _, d in self.block_density), float(self.nm_2_4)])

    def distance(self, other: "Signature") -> float:
        """Euclidean distance between the two ``features`` vectors (0: same matrix shape
        and structure statistics)."""
        return float(np.linalg.norm(self.features() - other.features()))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["block_density"] = [[list(b), v] for b, v in self.block_density]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Signature":
        """The Signature ``to_json`` wrote; KeyError/TypeError/ValueError when malformed."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(d) != fields:
            raise KeyError(f"signature fields {sorted(d)} are not {sorted(fields)}")
        blocks = tuple((tuple(int(x) for x in b), float(v)) for b, v in d["block_density"])
        return cls(int(d["rows"]), int(d["cols"]), int(d["nnz"]), float(d["row_mean"]),
                   int(d["row_max"]), float(d["row_cv"]), float(d["empty_rows"]), blocks,
                   bool(d["nm_2_4"]))


def signature(A) -> Signature:
    """The Signature of ``A``, a 2-D scipy.sparse matrix or array, a numpy array or an
    spc Tensor.

    Requires: a matrix (2 dimensions); an InputError otherwise.  Duplicates are
    counted once (the matrix is made canonical first when it is not).
    """
    indptr, indices, shape = _csr_pattern(A)
    rows, cols = shape
    lengths = np.diff(indptr)
    nnz = int(indptr[-1]) if rows else 0
    mean = nnz / rows if rows else 0.0
    cv = float(lengths.std() / mean) if rows and mean > 0 else 0.0
    return Signature(
        rows=int(rows), cols=int(cols), nnz=nnz, row_mean=float(mean),
        row_max=int(lengths.max()) if rows else 0, row_cv=cv,
        empty_rows=float(np.count_nonzero(lengths == 0) / rows) if rows else 0.0,
        block_density=tuple((b, _block_density(indptr, indices, cols, b)) for b in BLOCKS),
        nm_2_4=_fits_nm(indptr, indices, cols, 2, 4))


def _csr_pattern(A):
    """(indptr, indices, shape) of ``A``'s canonical CSR pattern (sorted, no duplicates)."""
    import scipy.sparse as sp
    if hasattr(A, "to_scipy") and not sp.issparse(A):
        A = A.to_scipy()
    if not sp.issparse(A):
        arr = np.asarray(A)
        if arr.ndim != 2:
            raise InputError(f"a matrix signature needs 2 dimensions, not shape {arr.shape}")
        A = sp.csr_matrix(arr)
    if A.ndim != 2:
        raise InputError(f"a matrix signature needs 2 dimensions, not shape {A.shape}")
    csr = A.tocsr() if A.format != "csr" else A
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return np.asarray(csr.indptr, dtype=np.int64), np.asarray(csr.indices, np.int64), csr.shape


def _block_density(indptr, indices, cols: int, block: tuple[int, int]) -> float:
    """Nonzeros over the entries of the nonempty ``block``-shaped blocks, on evenly
    spaced block rows holding at most SAMPLE_NNZ nonzeros in all."""
    r, c = block
    rows = len(indptr) - 1
    nnz = int(indptr[-1]) if rows else 0
    if nnz == 0:
        return 1.0
    block_rows = -(-rows // r)
    take = max(1, min(block_rows, block_rows * SAMPLE_NNZ // nnz))
    chosen = np.unique(np.linspace(0, block_rows - 1, take).astype(np.int64))
    lo, hi = indptr[chosen * r], indptr[np.minimum(chosen * r + r, rows)]
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return 1.0
    owner, positions = position_ranges(lo, hi)
    col_blocks = -(-cols // c)
    keys = owner * col_blocks + indices[positions] // c
    blocks = len(np.unique(keys)) if r > 1 else int(np.count_nonzero(np.diff(keys)) + 1)
    return total / (blocks * r * c)


def _fits_nm(indptr, indices, cols: int, n: int, m: int) -> bool:
    """Every aligned group of ``m`` columns of every row has at most ``n`` nonzeros
    (indices sorted within rows, as ``_csr_pattern`` ensures).  Evenly spaced rows
    holding about SAMPLE_NNZ nonzeros are checked first, so a matrix that is not
    N:M is usually told in well under a millisecond; one that passes is checked whole."""
    rows = len(indptr) - 1
    nnz = int(indptr[-1]) if rows else 0
    if nnz == 0:
        return True
    take = max(1, min(rows, rows * SAMPLE_NNZ // nnz))
    sample = np.unique(np.linspace(0, rows - 1, take).astype(np.int64))
    return _rows_fit(indptr, indices, sample, cols, n, m) and (
        len(sample) == rows or _rows_fit(indptr, indices, np.arange(rows), cols, n, m))


def _rows_fit(indptr, indices, chosen, cols: int, n: int, m: int) -> bool:
    lo, hi = indptr[chosen], indptr[chosen + 1]
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return True
    if len(chosen) == len(indptr) - 1:          # every row: no gather needed
        groups = indices[:total] // m
    else:
        _, positions = position_ranges(lo, hi)
        groups = indices[positions] // m
    # a group holding more than n entries has its first and (n+1)-th entries in one
    # row and one group: equal groups n apart, no row boundary between them
    row_end = np.cumsum(counts)
    same = groups[n:] == groups[:-n] if total > n else np.zeros(0, bool)
    if not same.any():
        return True
    at = np.flatnonzero(same)
    return not np.any(np.searchsorted(row_end, at, side="right")
                      == np.searchsorted(row_end, at + n, side="right"))
