"""Packing the rows of an assembled output whose kernels dropped entries."""
from __future__ import annotations


def pack_rows(pos, kept, crd, vals, xp):
    """``(pos, crd, vals)`` of a compressed level whose row r keeps only its first
    ``kept[r]`` entries.

    Requires: ``pos`` (length rows + 1) gives each row's slots in ``crd`` and
    ``vals``, ``0 <= kept[r] <= pos[r + 1] - pos[r]``; ``xp`` is numpy or cupy.
    Ensures: the arrays returned hold the kept entries in the same order, and
    are the ones given when every entry was kept (nothing is copied then).
    """
    total = int(kept.sum()) if len(kept) else 0
    if total == int(pos[-1]):
        return pos, crd, vals
    lengths = xp.diff(pos)
    slot = xp.arange(len(crd), dtype=pos.dtype) - xp.repeat(pos[:-1], lengths)
    keep = slot < xp.repeat(kept, lengths)
    packed = xp.zeros_like(pos)
    xp.cumsum(kept, out=packed[1:])
    return packed, crd[keep], vals[keep]
