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
    """
    total = int(kept.sum()) if len(kept) else 0
    if total == int(pos[-1]):
        return pos, crd, vals
    xp = array_module(pos)
    lengths = xp.diff(pos)
    slot = xp.arange(len(crd), dtype=pos.dtype) - xp.repeat(pos[:-1], lengths)
    keep = slot < xp.repeat(kept, lengths)
    packed = xp.zeros_like(pos)
    xp.cumsum(kept, out=packed[1:])
    return packed, crd[keep], vals[keep]
