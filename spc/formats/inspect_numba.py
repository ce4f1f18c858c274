"""Single-pass input inspectors compiled with numba (cached on disk).

Each returns an error code and the offending position instead of raising, so
the caller can build a clear message; code 0 means the arrays are well formed.
"""
from __future__ import annotations

import numba
import numpy as np
from numba.extending import overload

OK, BAD_START, DECREASING, BAD_END, OUT_OF_RANGE, UNSORTED, DUPLICATE, BAD_LENGTH = range(8)


@numba.njit(cache=True, nogil=True)
def check_compressed(pos, crd, parents, dim, unique, ordered):  # pragma: no cover - jitted
    """Validate a compressed level: pos has parents+1 entries, starts at 0, never
    decreases and ends at len(crd); coordinates lie in [0, dim); within each
    segment they increase (strictly when ``unique``) if ``ordered``.
    Returns (code, position)."""
    if len(pos) != parents + 1:
        return BAD_LENGTH, len(pos)
    if pos[0] != 0:
        return BAD_START, 0
    for i in range(parents):
        lo = pos[i]
        hi = pos[i + 1]
        if hi < lo:
            return DECREASING, i + 1
        if hi > len(crd):
            return BAD_END, i + 1
        prev = -1
        for p in range(lo, hi):
            c = crd[p]
            if c < 0 or c >= dim:
                return OUT_OF_RANGE, p
            if ordered and p > lo:
                if c < prev:
                    return UNSORTED, p
                if unique and c == prev:
                    return DUPLICATE, p
            prev = c
    if pos[parents] != len(crd):
        return BAD_END, parents
    return OK, 0


def _unsigned(a):  # pragma: no cover - numba's overload below is what runs
    """``a`` (a signed integer array) viewed as unsigned integers of its width."""
    raise NotImplementedError


@overload(_unsigned, jit_options={"cache": True})
def _unsigned_impl(a):
    ut = {32: np.uint32, 64: np.uint64}.get(getattr(getattr(a, "dtype", None), "bitwidth", 0))
    if ut is None:
        return None
    return lambda a: a.view(ut)


@numba.njit(cache=True, nogil=True)
def _all_below(a, bound):  # pragma: no cover - jitted
    """True iff every entry of the signed integer array ``a`` lies in [0, bound).

    One unsigned maximum (a negative entry is one of at least 2**(w-1) as an
    unsigned integer of w bits, so the bound is capped there): a single
    reduction that LLVM vectorizes, about twice as fast as a signed min and max
    (102,400 int32 entries: 3.9 against 7.4 us, 2026-11-29)."""
    if bound <= 0:
        return len(a) == 0
    u = _unsigned(a)
    hi = u.dtype.type(0)
    for p in range(len(u)):
        v = u[p]
        hi = v if v > hi else hi
    sign = np.uint64(1) << np.uint64(u.itemsize * 8 - 1)
    return np.uint64(hi) < min(np.uint64(bound), sign)


@numba.njit(cache=True, nogil=True)
def _pointers_ok(pos, parents, n):  # pragma: no cover - jitted
    """pos has parents+1 entries, from 0 to n, that never decrease (branch-free)."""
    if len(pos) != parents + 1 or pos[0] != 0 or pos[parents] != n:
        return False
    bad = False
    for i in range(parents):
        bad |= pos[i + 1] < pos[i]
    return not bad


@numba.njit(cache=True, nogil=True)
def looks_valid(pos, crd, parents, dim, unique, ordered):  # pragma: no cover - jitted
    """A branch-free (vectorizable) pass that is True iff check_compressed
    would find no error; it counts descents of crd and excuses those at
    segment starts instead of walking segment by segment."""
    n = len(crd)
    if not _pointers_ok(pos, parents, n):
        return False
    if not _all_below(crd, dim):
        return False
    if not ordered:
        return True
    descents = 0
    for p in range(1, n):
        descents += (crd[p] <= crd[p - 1]) if unique else (crd[p] < crd[p - 1])
    excused = 0
    for i in range(1, parents):
        p = pos[i]
        if p > 0 and p < n and pos[i + 1] > p:
            excused += (crd[p] <= crd[p - 1]) if unique else (crd[p] < crd[p - 1])
    return descents == excused


@numba.njit(cache=True, nogil=True)
def compressed_in_bounds(pos, crd, parents, dim):  # pragma: no cover - jitted
    """True iff pos has parents+1 entries from 0 to len(crd) that never decrease
    and every coordinate lies in [0, dim): everything a kernel that only walks
    the level (no merge with another operand) needs to stay in bounds."""
    return _pointers_ok(pos, parents, len(crd)) and _all_below(crd, dim)


def compressed_errors(pos: np.ndarray, crd: np.ndarray, parents: int, dim: int,
                      unique: bool, ordered: bool) -> tuple[int, int]:
    """(code, position) of the first problem in a compressed level, (OK, 0) if none."""
    if looks_valid(pos, crd, np.int64(parents), np.int64(dim), unique, ordered):
        return OK, 0
    return check_compressed(pos, crd, np.int64(parents), np.int64(dim), unique, ordered)
