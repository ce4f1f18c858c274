"""A compressed level stored in whole chunks of ``k`` slots: the column level of
the ``condensed`` format (TC-GNN, DTC-SpMM, FlashSparse), whose chunks are the
k columns of a dense tensor-core tile.  It follows the protocol of
:mod:`spc.formats.levels`.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, InputError
from ..ir.nodes import BinOp, Load, add, i64, mul
from .levels import Level, position_ranges


class Chunked(Level):
    """Coordinates in chunks of ``k`` slots: parent position q owns chunks
    ``pos[q] .. pos[q+1]`` (``pos`` counts chunks, not slots), so its slots are
    positions ``pos[q] * k .. pos[q+1] * k`` and their coordinates ``crd[p]``,
    ascending, with padding (``crd = -1``) after the last entry of a parent (at
    most ``k - 1`` slots: only its last chunk is partial).

    Every position range a parent owns starts and ends on a multiple of ``k``:
    the IR shows this as bounds ``pos[q] * k`` and ``pos[q + 1] * k``, which
    ``passes/tensorize_chunks`` strip-mines into whole chunks of ``k``.
    """
    name = "chunked"
    iterable = True
    fills = False                       # its padding is marked (crd = -1), not stored
    array_names = ("pos", "crd")

    def __init__(self, k: int):
        if int(k) < 1:
            raise FormatError(f"chunked level: chunk size must be >= 1, not {k}")
        self.k = int(k)

    def iter_bounds(self, io, parent):
        if parent.is_segment:
            raise NotImplementedError("a chunked level below a non-unique level")
        pos, k = io.buffer("pos"), i64(self.k)
        return mul(Load(pos, parent.pos), k), mul(Load(pos, add(parent.pos, i64(1))), k)

    def coord(self, io, p, parent):
        return Load(io.buffer("crd"), p)

    def valid(self, io, p, coord):
        return BinOp("<=", i64(0), coord)

    def size(self, arrays, parent_count, dim):
        return len(arrays["crd"])

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        n = len(coords)
        new = np.ones(n, dtype=bool)
        if n:
            new[1:] = (parent_pos[1:] != parent_pos[:-1]) | (coords[1:] != coords[:-1])
        owner, crd_kept = parent_pos[new].astype(np.int64), coords[new].astype(np.int64)
        counts = np.bincount(owner, minlength=parent_count) if n else \
            np.zeros(parent_count, dtype=np.int64)
        pos = np.zeros(parent_count + 1, dtype=np.int64)
        np.cumsum(-(-counts // self.k), out=pos[1:])
        first = np.zeros(parent_count + 1, dtype=np.int64)      # first kept entry per parent
        np.cumsum(counts, out=first[1:])
        rank = np.arange(len(owner)) - first[owner]
        slot = pos[owner] * self.k + rank
        crd = np.full(int(pos[-1]) * self.k, -1, dtype=np.int64)
        crd[slot] = crd_kept
        positions = slot[np.cumsum(new) - 1] if n else np.zeros(0, dtype=np.int64)
        return ({"pos": pos.astype(index_dtype), "crd": crd.astype(index_dtype)},
                positions, len(crd))

    def unpack(self, arrays, parent_pos, parent_count, dim):
        pos = arrays["pos"].astype(np.int64) * self.k
        owner, child = position_ranges(pos[parent_pos], pos[parent_pos + 1])
        crd = arrays["crd"][child].astype(np.int64)
        keep = crd >= 0
        return owner[keep], child[keep], crd[keep]

    def validate(self, arrays, parent_count, dim, what):
        pos, crd = arrays["pos"].astype(np.int64), arrays["crd"].astype(np.int64)
        if pos.ndim != 1 or len(pos) != parent_count + 1:
            raise InputError(f"{what}: chunk pointer array has length {len(pos)}, "
                             f"expected {parent_count + 1}")
        if pos[0] != 0 or np.any(np.diff(pos) < 0):
            raise InputError(f"{what}: chunk pointers must start at 0 and not decrease")
        if len(crd) != pos[-1] * self.k:
            raise InputError(f"{what}: {len(crd)} coordinates for {pos[-1]} chunks of "
                             f"{self.k}")
        if len(crd) == 0:
            return 0
        if crd.min() < -1 or crd.max() >= dim:
            bad = int(crd.max()) if crd.max() >= dim else int(crd.min())
            raise InputError(f"{what}: coordinate {bad} is out of range [0, {dim}) "
                             f"(-1 marks padding)")
        owner = np.repeat(np.arange(parent_count), np.diff(pos) * self.k)
        same = owner[1:] == owner[:-1]
        pad = crd < 0
        if np.any(same & pad[:-1] & ~pad[1:]):
            at = int(np.argmax(same & pad[:-1] & ~pad[1:])) + 1
            raise InputError(f"{what}: coordinate {crd[at]} at position {at} follows "
                             f"padding; padding (-1) goes after a parent's entries")
        if np.any(same & ~pad[1:] & (crd[1:] <= crd[:-1])):
            at = int(np.argmax(same & ~pad[1:] & (crd[1:] <= crd[:-1]))) + 1
            raise InputError(f"{what}: unsorted or duplicate coordinate {crd[at]} at "
                             f"position {at}")
        full = np.bincount(owner[~pad], minlength=parent_count)
        if np.any(-(-full // self.k) != np.diff(pos)):
            q = int(np.argmax(-(-full // self.k) != np.diff(pos)))
            raise InputError(f"{what}: parent {q} has {full[q]} entries in "
                             f"{np.diff(pos)[q]} chunks of {self.k}; a whole chunk of padding")
        return len(crd)

    def __repr__(self):
        return f"chunked({self.k})"
