"""Row-permutation inspectors: the order in which a kernel visits a CSR
matrix's rows (the ``reorder_rows`` schedule pass reads row ``perm[t]`` t-th
and still writes it at row ``perm[t]``).

- ``by_length``: longest rows first (Sputnik's row swizzle), so neighbouring
  warps get rows of similar length and a block's warps finish together.
- ``by_similarity``: rows that share columns next to each other (ASpT-RR's
  row reordering), so a panel of consecutive rows touches few distinct columns
  (few distinct rows of B in SpMM).  MinHash signatures find candidate
  neighbours; a greedy walk chains them.  See its docstring.
- ``panel_columns``: the quality ``by_similarity`` lowers.
- ``check_permutation``: the InputError every consumer of a permutation raises.

All accept int32 or int64 ``indptr``/``indices``, unsorted and duplicate
column indices within a row, and return int32 permutations.
"""
from __future__ import annotations

import numba
import numpy as np

from ..errors import InputError

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_EMPTY = np.uint32(0xFFFFFFFF)          # the signature of an empty row (sorts last)


def by_length(indptr) -> np.ndarray:
    """Rows longest first, ties in stored order (stable).

    Requires: ``indptr`` a 1-D array of nrows+1 non-decreasing offsets.
    Ensures: an int32 permutation of ``range(nrows)`` equal to
    ``np.argsort(-np.diff(indptr), kind="stable")``.
    """
    lengths = np.diff(np.asarray(indptr, dtype=np.int64))
    return np.argsort(-lengths, kind="stable").astype(np.int32)


def by_similarity(indptr, indices, ncols: int | None = None, *, panel: int = 32,
                  hashes: int = 16, window: int = 3, seed: int = 0x5EC) -> np.ndarray:
    """Rows with overlapping column sets next to each other; empty rows last.

    Method (near-linear in nnz + nrows):
    1. MinHash: for each of ``hashes`` hash functions, a row's signature entry
       is the minimum hash of its columns; two rows agree on an entry with
       probability equal to the Jaccard similarity of their column sets.
    2. Candidates: the non-empty rows are sorted ``hashes // 2`` times, each by
       a pair of signature entries (an LSH bucket per value, ordered inside by
       the second); a row's candidates are the rows within ``window``
       positions of it in each order.
    3. Chaining: a greedy depth-first walk.  After visiting a row, its unvisited
       candidates that agree on at least one signature entry are pushed,
       best (most agreeing entries) on top; the next row is the top unvisited
       entry of the stack, so a row with no good neighbour left falls back to
       the candidates of the rows visited just before it.  When the stack
       empties the walk restarts at the next unvisited row of the first order
       (rows sharing the first MinHash value are adjacent there).

    ``panel`` is accepted for the scheduling pass's sake and not needed by this
    method (the walk keeps neighbours adjacent at every scale).

    Cost: O(nnz * hashes + nrows * hashes * (log nrows + window * hashes)); about
    0.3-1 s for 200k rows and 2M nonzeros on one core.  The first call in a
    process also compiles three small numba functions (about 2-4 s; cache=False).

    Requires: ``indptr`` nrows+1 non-decreasing offsets from 0 to len(indices);
    ``indices`` non-negative (any order and duplicates allowed); ``ncols``, if
    given, larger than every index (only checked, the method does not need it).
    Ensures: an int32 permutation of ``range(nrows)``, the same for the same
    arguments; the non-empty rows come first, in the walk's order.
    """
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    _check_csr(indptr, indices, ncols)
    if panel < 1 or hashes < 2 or window < 1:
        raise InputError(f"by_similarity needs panel >= 1, hashes >= 2 and window >= 1 "
                         f"(got panel={panel}, hashes={hashes}, window={window})")
    nrows = len(indptr) - 1
    lengths = np.diff(indptr)
    full = np.flatnonzero(lengths > 0)
    empty = np.flatnonzero(lengths == 0)
    if len(full) == 0:
        return np.arange(nrows, dtype=np.int32)
    rng = np.random.default_rng(seed)
    mult = rng.integers(1, 2**63, size=hashes, dtype=np.uint64) | np.uint64(1)
    add = rng.integers(0, 2**63, size=hashes, dtype=np.uint64)
    sig = _signatures(indptr, indices, full, mult, add)
    orders = np.empty((hashes // 2, len(full)), dtype=np.int64)
    for b in range(hashes // 2):
        key = (sig[:, 2 * b].astype(np.uint64) << np.uint64(32)) | sig[:, 2 * b + 1]
        orders[b] = np.argsort(key, kind="stable")
    walk = _walk(sig, orders, np.int64(window))
    return np.concatenate([full[walk], empty]).astype(np.int32)


def panel_columns(indptr, indices, perm, panel: int = 32) -> float:
    """Mean number of distinct columns per panel of ``panel`` consecutive rows
    in visiting order (the last panel may be shorter); 0.0 for no rows.

    Requires: ``indptr``/``indices`` a CSR pattern with non-negative indices;
    ``perm`` a permutation of ``range(nrows)`` (checked); ``panel >= 1``.
    Ensures: the mean over ceil(nrows / panel) panels; duplicates count once.
    """
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    _check_csr(indptr, indices, None)
    nrows = len(indptr) - 1
    check_permutation(perm, nrows)
    if panel < 1:
        raise InputError(f"panel must be at least 1, got {panel}")
    if nrows == 0:
        return 0.0
    ncols = int(indices.max()) + 1 if len(indices) else 1
    perm = np.ascontiguousarray(perm, dtype=np.int64)
    return float(_distinct_per_panel(indptr, indices, perm, np.int64(panel),
                                     np.int64(ncols)).mean())


def check_permutation(perm, nrows: int) -> None:
    """Raise InputError unless ``perm`` is a 1-D integer array holding each of
    ``0..nrows-1`` exactly once.

    Requires: ``nrows >= 0``.  Ensures: returns None for a valid permutation;
    otherwise the message names the first problem (dtype, shape, length, the
    first out-of-range entry or the first repeated value and its positions).
    """
    arr = np.asarray(perm)
    if not (np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"a row permutation must have an integer dtype, got {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(f"a row permutation must be 1-D, got shape {arr.shape}")
    if len(arr) != nrows:
        raise InputError(f"a row permutation of {nrows} rows must have {nrows} entries, "
                         f"got {len(arr)}")
    if nrows == 0:
        return
    bad = np.flatnonzero((arr < 0) | (arr >= nrows))
    if len(bad):
        raise InputError(f"row permutation entry perm[{bad[0]}] = {arr[bad[0]]} is outside "
                         f"[0, {nrows})")
    counts = np.bincount(arr.astype(np.int64), minlength=nrows)
    if counts.max() > 1:
        value = int(np.argmax(counts > 1))
        where = np.flatnonzero(arr == value)
        raise InputError(f"row permutation repeats row {value} (perm[{where[0]}] and "
                         f"perm[{where[1]}]); row {int(np.argmin(counts))} is never visited")


def _check_csr(indptr: np.ndarray, indices: np.ndarray, ncols: int | None) -> None:
    """The few properties the inspectors rely on for memory safety."""
    if indptr.ndim != 1 or len(indptr) == 0:
        raise InputError(f"indptr must be 1-D with nrows+1 entries, got shape {indptr.shape}")
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise InputError(f"indptr must rise from 0 to len(indices) = {len(indices)} "
                         f"without decreasing (got {indptr[0]} .. {indptr[-1]})")
    if len(indices) and indices.min() < 0:
        raise InputError(f"column indices must be non-negative, got {indices.min()}")
    if ncols is not None and len(indices) and indices.max() >= ncols:
        raise InputError(f"column index {indices.max()} is outside [0, {ncols})")


@numba.njit(cache=False, nogil=True)
def _signatures(indptr, indices, rows, mult, add):  # pragma: no cover - jitted
    """sig[k, h]: the least h-th hash (32 bits) over row rows[k]'s columns."""
    hashes = len(mult)
    sig = np.empty((len(rows), hashes), dtype=np.uint32)
    best = np.empty(hashes, dtype=np.uint64)
    for k in range(len(rows)):
        r = rows[k]
        for h in range(hashes):
            best[h] = np.uint64(0xFFFFFFFFFFFFFFFF)
        for p in range(indptr[r], indptr[r + 1]):
            x = np.uint64(indices[p])                       # splitmix64 finalizer
            x = (x ^ (x >> np.uint64(30))) * _MIX1
            x = (x ^ (x >> np.uint64(27))) * _MIX2
            x = x ^ (x >> np.uint64(31))
            for h in range(hashes):                         # multiply-shift family
                v = (mult[h] * x + add[h]) >> np.uint64(32)
                if v < best[h]:
                    best[h] = v
        for h in range(hashes):
            sig[k, h] = np.uint32(best[h])
    return sig


@numba.njit(cache=False, nogil=True)
def _walk(sig, orders, window):  # pragma: no cover - jitted
    """The greedy depth-first chain over MinHash candidates (by_similarity's
    step 3); returns positions into sig's rows, each exactly once."""
    n, hashes = sig.shape
    norders = orders.shape[0]
    where = np.empty((norders, n), dtype=np.int64)       # row -> position in each order
    for b in range(norders):
        for t in range(n):
            where[b, orders[b, t]] = t
    visited = np.zeros(n, dtype=np.bool_)
    out = np.empty(n, dtype=np.int64)
    ncand = 2 * window * norders
    cand = np.empty(ncand, dtype=np.int64)
    score = np.empty(ncand, dtype=np.int64)
    stack = np.empty(max(4 * n, 4 * ncand), dtype=np.int64)
    top = 0
    restart = 0
    for t in range(n):
        r = -1
        while top > 0:
            top -= 1
            if not visited[stack[top]]:
                r = stack[top]
                break
        if r < 0:
            while visited[orders[0, restart]]:
                restart += 1
            r = orders[0, restart]
        visited[r] = True
        out[t] = r
        # collect r's unvisited candidates that share at least one MinHash value
        m = 0
        for b in range(norders):
            at = where[b, r]
            for d in range(-window, window + 1):
                if d == 0 or at + d < 0 or at + d >= n:
                    continue
                c = orders[b, at + d]
                if visited[c]:
                    continue
                dup = False
                for j in range(m):
                    if cand[j] == c:
                        dup = True
                        break
                if dup:
                    continue
                s = 0
                for h in range(hashes):
                    s += sig[r, h] == sig[c, h]
                if s > 0:
                    cand[m] = c
                    score[m] = s
                    m += 1
        # push worst first so the best is on top (insertion sort, m is small)
        for j in range(1, m):
            cj = cand[j]
            sj = score[j]
            i = j - 1
            while i >= 0 and score[i] > sj:
                cand[i + 1] = cand[i]
                score[i + 1] = score[i]
                i -= 1
            cand[i + 1] = cj
            score[i + 1] = sj
        if top + m > len(stack):                           # bounded memory: drop the oldest half
            keep = len(stack) // 2 - m
            stack[:keep] = stack[top - keep:top].copy()
            top = keep
        for j in range(m):
            stack[top] = cand[j]
            top += 1
    return out


@numba.njit(cache=False, nogil=True)
def _distinct_per_panel(indptr, indices, perm, panel, ncols):  # pragma: no cover - jitted
    """counts[q]: distinct columns of rows perm[q*panel : (q+1)*panel]."""
    n = len(perm)
    npanels = (n + panel - 1) // panel
    stamp = np.full(ncols, -1, dtype=np.int64)
    counts = np.zeros(npanels, dtype=np.float64)
    for q in range(npanels):
        distinct = 0
        for t in range(q * panel, min(n, (q + 1) * panel)):
            r = perm[t]
            for p in range(indptr[r], indptr[r + 1]):
                c = indices[p]
                if stamp[c] != q:
                    stamp[c] = q
                    distinct += 1
        counts[q] = distinct
    return counts


__all__ = ["by_length", "by_similarity", "check_permutation", "panel_columns"]
