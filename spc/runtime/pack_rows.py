"""Packing the rows of an assembled output whose kernels dropped entries."""
from __future__ import annotations

import sys

import numba
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
    numpy arrays are packed in place (``crd`` and ``vals`` are overwritten and
    the result is their leading part); cupy's are gathered into new arrays.
    Each kept entry finds its row by a binary search of the packed row starts
    and is gathered from its slot: work in the entries kept, not in the slots
    (the GPU's tables leave most slots unkept), and no ``repeat`` by an array
    of counts (which CuPy before v14 refuses).
    """
    xp = array_module(pos)
    packed = xp.zeros_like(pos)
    if len(kept):
        xp.cumsum(kept, out=packed[1:])
    total = int(packed[-1])
    if total == int(pos[-1]):
        return pos, crd, vals
    if xp is np:
        return _pack_host(pos, packed, total, crd, vals)
    entry = xp.arange(total, dtype=pos.dtype)
    row = xp.searchsorted(packed, entry, side="right") - 1    # rows keeping none are skipped
    slot = pos[row] + (entry - packed[row])
    return packed, crd[slot], vals[slot]


def _pack_host(pos, packed, total, crd, vals):
    """``pack_rows`` for numpy arrays whose rows start at ``packed`` once packed
    (``total`` entries kept, fewer than the slots), in place: one compiled pass
    moving each row's kept entries down to its packed start (never above where
    they are, so ascending copies are safe), rows before the first that dropped
    any left where they are; the arrays returned are the leading parts of ``crd``
    and ``vals`` (their slack stays allocated with them)."""
    bits = (lambda a: a.view(np.uint16)) if vals.dtype.itemsize == 2 else (lambda a: a)
    _move_kept(pos, packed, crd, bits(vals))       # 16-bit floats move as their bits
    return packed, crd[:total], vals[:total]


@numba.njit(cache=True, nogil=True)
def _move_kept(pos, packed, crd, vals):  # pragma: no cover - jitted
    for r in range(len(packed) - 1):
        src, dst = pos[r], packed[r]
        if src == dst:
            continue
        for q in range(packed[r + 1] - dst):
            crd[dst + q] = crd[src + q]
            vals[dst + q] = vals[src + q]
