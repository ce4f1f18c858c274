"""Packing the rows of an assembled output whose kernels dropped entries."""
from __future__ import annotations

import sys

import numpy as np


def array_module(a):
    """numpy for a numpy array, else the package of ``a``'s type (cupy)."""
    return np if isinstance(a, np.ndarray) else sys.modules[type(a).__module__.partition(".")[0]]


def pack_rows(pos, kept, crd, vals):
    """``(pos, crd, vals)`` of a compressed level whose row r keeps only its first
    ``kept[r]`` entries.

    Requires: ``pos`` (length rows + 1) gives each row's slots in ``crd`` and
    ``vals``, ``0 <= kept[r] <= pos[r + 1] - pos[r]``; numpy or cupy arrays (the
    work is done by ``pos``'s module).
    Ensures: the arrays returned hold the kept entries in the same order, and
    are the ones given when every entry was kept (nothing is copied then).
    Each slot finds its row by a binary search of ``pos`` (CuPy before v14 has
    no ``repeat`` by an array of counts; the search needs no slot-sized
    temporaries but the slots' own), and the kept slots are gathered once.
    """
    total = int(kept.sum()) if len(kept) else 0
    if total == int(pos[-1]):
        return pos, crd, vals
    xp = array_module(pos)
    slot = xp.arange(len(crd), dtype=pos.dtype)
    row = xp.searchsorted(pos, slot, side="right") - 1      # empty rows: the last of equal starts
    where = xp.nonzero(slot - pos[row] < kept[row])[0]
    packed = xp.zeros_like(pos)
    xp.cumsum(kept, out=packed[1:])
    return packed, crd[where], vals[where]
