"""The jitted structure checks the fast call paths run on every call
(formats/inspect_numba.py): they accept exactly what check_compressed accepts."""
from __future__ import annotations

import numpy as np
import pytest

from spc.formats.inspect_numba import (OK, _all_below, check_compressed, compressed_in_bounds,
                                       looks_valid)

INDEX_TYPES = (np.int32, np.int64)


@pytest.mark.parametrize("dt", INDEX_TYPES)
@pytest.mark.parametrize("values, bound, expected", [
    ([0, 3, 2], 4, True),
    ([0, 3, 2], 3, False),
    ([], 0, True),
    ([0], 0, False),
    ([-1], 5, False),
    ([-1], 2**40, False),          # a bound past the signed range: -1 is still out
    ([5, -2, 0], 2**31, False),
    ([2**31 - 1], 2**41, True),
])
def test_all_below(dt, values, bound, expected):
    assert _all_below(np.array(values, dtype=dt), np.int64(bound)) is expected


def _random_level(rng, parents, dim, nnz):
    counts = rng.multinomial(nnz, np.ones(parents) / parents) if parents else np.zeros(0, int)
    pos = np.concatenate([[0], np.cumsum(counts)])
    crd = np.concatenate([np.sort(rng.choice(dim, size=c, replace=False)) for c in counts]
                         or [np.zeros(0, int)])
    return pos, crd


BREAKS = ("none", "negative", "too_big", "decreasing_pos", "bad_end", "unsorted", "duplicate")


def _broken(pos, crd, dim, how):
    pos, crd = pos.copy(), crd.copy()
    if how == "negative":
        crd[len(crd) // 2] = -1
    elif how == "too_big":
        crd[-1] = dim
    elif how == "decreasing_pos":
        pos[2], pos[3] = pos[3], pos[2]
    elif how == "bad_end":
        pos[-1] -= 1
    elif how == "unsorted":
        row = int(np.argmax(np.diff(pos) >= 2))
        crd[pos[row]], crd[pos[row] + 1] = crd[pos[row] + 1], crd[pos[row]]
    elif how == "duplicate":
        row = int(np.argmax(np.diff(pos) >= 2))
        crd[pos[row] + 1] = crd[pos[row]]
    return pos, crd


@pytest.mark.parametrize("dt", INDEX_TYPES)
@pytest.mark.parametrize("how", BREAKS)
def test_checks_agree_with_check_compressed(dt, how):
    rng = np.random.default_rng(3)
    parents, dim = 40, 30
    pos, crd = _random_level(rng, parents, dim, 300)
    pos, crd = _broken(pos, crd, dim, how)
    pos, crd = pos.astype(dt), crd.astype(dt)
    full = check_compressed(pos, crd, np.int64(parents), np.int64(dim), True, True)[0] == OK
    walkable = check_compressed(pos, crd, np.int64(parents), np.int64(dim), False, False)[0] == OK
    assert looks_valid(pos, crd, np.int64(parents), np.int64(dim), True, True) is full
    assert compressed_in_bounds(pos, crd, np.int64(parents), np.int64(dim)) is walkable
    assert full is (how == "none")
    assert walkable is (how in ("none", "unsorted", "duplicate"))
