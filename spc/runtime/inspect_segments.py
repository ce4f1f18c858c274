"""Row segments: each nonempty row of a CSR-like operand cut into pieces of at
most K positions (the inspector of ``passes/split_rows.py``)."""
from __future__ import annotations

import numpy as np

MIN_AUTO = 32            # the smallest K chosen automatically (one warp's lanes)
TARGET_SEGMENTS = 4096   # automatic K: pieces enough to fill a large GPU ...


def auto_max_nnz(pos: np.ndarray) -> int:
    """K for a matrix with row pointers ``pos``: a power of two at least the mean
    nonempty row's length (typical rows stay whole), lowered until there are
    about ``TARGET_SEGMENTS`` pieces, never below ``MIN_AUTO``."""
    lengths = np.diff(pos.astype(np.int64))
    nonempty = int(np.count_nonzero(lengths))
    nnz = int(lengths.sum())
    if nonempty == 0:
        return MIN_AUTO
    k = 1 << max(0, int(np.ceil(np.log2(max(1.0, nnz / nonempty)))))
    fill = 1 << max(0, int(np.floor(np.log2(max(1, nnz // TARGET_SEGMENTS)))))
    return max(MIN_AUTO, min(k, fill))


def row_segments(pos: np.ndarray, max_nnz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, starts, count) of the pieces of at most ``max_nnz`` positions.

    Requires: ``pos`` nondecreasing (a compressed level's row pointers, any
    order of entries within rows), ``max_nnz`` >= 1.  Ensures, in ``pos``'s
    dtype: piece ``s`` is row ``rows[s]``'s positions ``[starts[s], starts[s +
    1])``, pieces in row order, covering every position once; ``len(starts) ==
    count[0] + 1``; empty rows have no piece.
    """
    if max_nnz < 1:
        raise ValueError(f"max_nnz must be >= 1, not {max_nnz}")
    dtype = pos.dtype
    p = pos.astype(np.int64)
    lengths = np.diff(p)
    if len(lengths) and lengths.min() < 0:
        raise ValueError("row pointers decrease")
    pieces = -(-lengths // max_nnz)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), pieces)
    first = np.cumsum(pieces) - pieces              # each row's first piece
    within = np.arange(len(rows), dtype=np.int64) - np.repeat(first, pieces)
    starts = np.empty(len(rows) + 1, np.int64)
    starts[:-1] = p[:-1][rows] + within * max_nnz
    starts[-1] = p[-1] if len(p) else 0
    count = np.array([len(rows)], np.int64)
    return rows.astype(dtype), starts.astype(dtype), count.astype(dtype)


__all__ = ["auto_max_nnz", "row_segments"]
