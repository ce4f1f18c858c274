"""Level kinds for deep-learning sparsity: fixed-width (ELL), diagonal (DIA) and
N-of-M groups.  Each stores a fixed number of slots per parent position, some of
which may be padding (``valid`` is False there), so kernels need no per-row
pointer array.  They follow the protocol of :mod:`spc.formats.levels`.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, InputError
from ..ir.nodes import BinOp, DType, Load, add, i64, mul, sub
from .levels import Level


def _le(a, b):
    return BinOp("<=", a, b)


def ranks_in_runs(keys: np.ndarray) -> np.ndarray:
    """For sorted ``keys``: each entry's index among the entries with its key."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.ones(n, dtype=bool)
    start[1:] = keys[1:] != keys[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return np.arange(n) - first


class FixedWidth(Level):
    """ELL: ``width`` slots per parent position, coordinates ``crd[p]`` in
    ascending order, padding (``crd = -1``) at the end of each parent's slots.

    ``width`` None packs to the longest row; a given width rejects longer rows.
    The kernel reads the width as the scalar ``width``.
    """
    fills = False                       # its padding is marked (crd = -1), not stored
    name = "fixed"
    iterable = True
    array_names = ("crd",)
    scalar_names = ("width",)

    def __init__(self, width: int | None = None):
        if width is not None and int(width) < 0:
            raise FormatError(f"ell width must be >= 0, not {width}")
        self.width = None if width is None else int(width)

    def iter_bounds(self, io, parent):
        w = io.scalar("width")
        return mul(parent.pos, w), add(mul(parent.pos, w), w)

    def coord(self, io, p, parent):
        return Load(io.buffer("crd"), p)

    def valid(self, io, p, coord):
        return _le(i64(0), coord)

    def scalars(self, arrays, parent_count, dim):
        return {"width": len(arrays["crd"]) // parent_count if parent_count else 0}

    def size(self, arrays, parent_count, dim):
        return len(arrays["crd"])

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        rank = ranks_in_runs(parent_pos)
        longest = int(rank.max()) + 1 if len(rank) else 0
        width = longest if self.width is None else self.width
        if longest > width:
            row = int(parent_pos[int(np.argmax(rank >= width))])
            raise InputError(f"ell: parent {row} has {longest} entries but the width is "
                             f"{width}; use a larger width, or hyb for a few long rows")
        crd = np.full(parent_count * width, -1, dtype=index_dtype)
        positions = parent_pos.astype(np.int64) * width + rank
        crd[positions] = coords
        return {"crd": crd}, positions, parent_count * width

    def unpack(self, arrays, parent_pos, parent_count, dim):
        crd = arrays["crd"]
        width = len(crd) // parent_count if parent_count else 0
        child = (parent_pos.astype(np.int64)[:, None] * width + np.arange(width)).reshape(-1)
        owner = np.repeat(np.arange(len(parent_pos)), width)
        keep = crd[child] >= 0 if len(child) else np.zeros(0, dtype=bool)
        return owner[keep], child[keep], crd[child[keep]].astype(np.int64)

    def validate(self, arrays, parent_count, dim, what):
        crd = arrays["crd"]
        if parent_count == 0:
            if len(crd):
                raise InputError(f"{what}: {len(crd)} slots for 0 parents")
            return 0
        if len(crd) % parent_count:
            raise InputError(f"{what}: {len(crd)} slots are not a whole number of rows of "
                             f"{parent_count} parents")
        width = len(crd) // parent_count
        if self.width is not None and width != self.width:
            raise InputError(f"{what}: width {width}, the format says {self.width}")
        if width == 0:
            return 0
        rows = crd.reshape(parent_count, width).astype(np.int64)
        if rows.max() >= dim or rows.min() < -1:
            bad = int(rows.max()) if rows.max() >= dim else int(rows.min())
            raise InputError(f"{what}: coordinate {bad} is out of range [0, {dim}) "
                             f"(-1 marks padding)")
        pad = rows < 0
        if np.any(pad[:, :-1] & ~pad[:, 1:]):
            r = int(np.argmax(np.any(pad[:, :-1] & ~pad[:, 1:], axis=1)))
            raise InputError(f"{what}: parent {r} has an entry after padding; padding "
                             f"(-1) goes at the end of each row")
        step = np.diff(rows, axis=1)
        bad = (step <= 0) & ~pad[:, 1:]
        if np.any(bad):
            r = int(np.argmax(np.any(bad, axis=1)))
            raise InputError(f"{what}: parent {r} has unsorted or duplicate coordinates")
        return len(crd)

    def reads(self, other) -> bool:
        """A width left open (None) reads any width: kernels take it as a scalar."""
        return type(other) is FixedWidth and self.width in (None, other.width)

    def __repr__(self):
        return "fixed" if self.width is None else f"fixed({self.width})"


class Diagonal(Level):
    """DIA: one slot per stored diagonal below each row.  ``offsets`` (ascending)
    lists the diagonals; slot ``d`` of row ``i`` is position ``i * K + d`` with
    coordinate ``i + offsets[d]``, padding where that falls outside the matrix.

    Requires: the parent is a dense level whose positions are the row
    coordinates (the ``dia`` format: dense rows, then this level).
    """
    name = "diagonal"
    iterable = True
    array_names = ("offsets",)
    scalar_names = ("ndiag",)

    def check_place(self, levels, level, order):
        from .levels import Dense
        if level != 1 or not isinstance(levels[0], Dense) \
                or not all(lv.full and lv.locatable for lv in levels[2:]):
            return ("a diagonal level must be the second level, below a dense level of "
                    "rows (its positions are the row coordinates), with only full levels "
                    "(a batch, formats.batched) below it")
        return None

    def iter_bounds(self, io, parent):
        k = io.scalar("ndiag")
        return mul(parent.pos, k), add(mul(parent.pos, k), k)

    def coord(self, io, p, parent):
        k = io.scalar("ndiag")
        return add(parent.pos, Load(io.buffer("offsets"), sub(p, mul(parent.pos, k))))

    def valid(self, io, p, coord):
        return BinOp("&&", _le(i64(0), coord), BinOp("<", coord, io.dim))

    def scalars(self, arrays, parent_count, dim):
        return {"ndiag": len(arrays["offsets"])}

    def size(self, arrays, parent_count, dim):
        return parent_count * len(arrays["offsets"])

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        diag = coords - parent_pos
        offsets = np.unique(diag)
        k = len(offsets)
        positions = parent_pos.astype(np.int64) * k + np.searchsorted(offsets, diag)
        return {"offsets": offsets.astype(index_dtype)}, positions, parent_count * k

    def unpack(self, arrays, parent_pos, parent_count, dim):
        off = arrays["offsets"].astype(np.int64)
        k = len(off)
        rows = parent_pos.astype(np.int64)
        cols = (rows[:, None] + off[None, :]).reshape(-1)
        child = (rows[:, None] * k + np.arange(k)).reshape(-1)
        owner = np.repeat(np.arange(len(rows)), k)
        keep = (cols >= 0) & (cols < dim)
        return owner[keep], child[keep], cols[keep]

    def validate(self, arrays, parent_count, dim, what):
        off = arrays["offsets"]
        if len(off) > 1 and np.any(np.diff(off.astype(np.int64)) <= 0):
            at = int(np.argmax(np.diff(off.astype(np.int64)) <= 0)) + 1
            raise InputError(f"{what}: diagonal offsets must be strictly increasing "
                             f"(offset {off[at]} at {at})")
        return parent_count * len(off)


class NMGroup(Level):
    """N:M: the dimension is cut into groups of ``m`` consecutive coordinates
    and each group keeps exactly ``n`` slots, its entries' in-group offsets
    (int8, ascending) in ``off``.  Slot t of group g below parent position q is
    position ``q * S + g * n + t`` (S = n * number of groups) with coordinate
    ``g * m + off``; ``off = -1`` marks padding (only in a last group narrower
    than n).  Groups with fewer than n nonzeros store explicit zeros.
    """
    name = "nm"
    iterable = True
    array_names = ("off",)
    array_dtypes = {"off": "int8"}

    def __init__(self, n: int, m: int):
        n, m = int(n), int(m)
        if not 1 <= n <= m or m > 127:
            raise FormatError(f"nm({n},{m}): need 1 <= n <= m <= 127")
        self.n, self.m = n, m

    def _slots(self, dim):            # IR: slots per parent position
        return mul(BinOp("/", add(dim, i64(self.m - 1)), i64(self.m)), i64(self.n))

    def slots(self, dim: int) -> int:
        """Slots per parent position for a dimension of ``dim``: n per group of m, groups rounded up."""
        return -(-dim // self.m) * self.n

    def iter_bounds(self, io, parent):
        s = self._slots(io.dim)
        return mul(parent.pos, s), add(mul(parent.pos, s), s)

    def coord(self, io, p, parent):
        local = sub(p, mul(parent.pos, self._slots(io.dim)))
        off = Load(io.buffer("off", DType.I8), p)
        return add(mul(BinOp("/", local, i64(self.n)), i64(self.m)), off)

    def valid(self, io, p, coord):
        return _le(i64(0), Load(io.buffer("off", DType.I8), p))

    def size(self, arrays, parent_count, dim):
        return parent_count * self.slots(dim)

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        n, m = self.n, self.m
        groups = -(-dim // m)
        grp = parent_pos.astype(np.int64) * groups + coords // m
        rank = ranks_in_runs(grp)
        if len(rank) and rank.max() >= n:
            k = int(np.argmax(rank >= n))
            row, g = int(parent_pos[k]), int(coords[k] // m)
            count = int(np.sum(grp == grp[k]))
            raise InputError(
                f"not {n}:{m} sparse: row {row} has {count} nonzeros in columns "
                f"{g * m}..{min(dim, g * m + m) - 1}, at most {n} are allowed; prune it first "
                f"with spc.prune.nm(W, {n}, {m})")
        ngroups = parent_count * groups
        used = np.zeros((ngroups, m), dtype=bool)
        used[grp, coords % m] = True
        # fill groups with fewer than n entries with explicit zeros at unused
        # in-range offsets; what cannot be filled (a narrow last group) is padding
        width = np.full(groups, m, dtype=np.int64)
        if groups:
            width[-1] = dim - (groups - 1) * m
        in_range = np.arange(m)[None, :] < np.tile(width, parent_count)[:, None]
        need = n - used.sum(axis=1)
        free = in_range & ~used
        take = free & (np.cumsum(free, axis=1) <= need[:, None])
        stored = used | take
        off_sorted = np.where(stored, np.arange(m)[None, :], m)
        off_sorted.sort(axis=1)
        off = off_sorted[:, :n]
        off = np.where(off >= m, -1, off).astype(np.int8)
        # each input entry's slot: its rank among the stored offsets of its group
        slot_of = np.cumsum(stored, axis=1) - 1
        positions = grp * n + slot_of[grp, coords % m]
        return {"off": off.reshape(-1)}, positions.astype(np.int64), ngroups * n

    def unpack(self, arrays, parent_pos, parent_count, dim):
        s = self.slots(dim)
        off = arrays["off"]
        child = (parent_pos.astype(np.int64)[:, None] * s + np.arange(s)).reshape(-1)
        owner = np.repeat(np.arange(len(parent_pos)), s)
        o = off[child].astype(np.int64) if len(child) else np.zeros(0, dtype=np.int64)
        keep = o >= 0
        coords = (child % s // self.n) * self.m + o if s else o
        return owner[keep], child[keep], coords[keep]

    def validate(self, arrays, parent_count, dim, what):
        off = arrays["off"]
        s = self.slots(dim)
        if len(off) != parent_count * s:
            raise InputError(f"{what}: {len(off)} offsets, expected {parent_count * s} "
                             f"({self.n} per group of {self.m}, {parent_count} parents)")
        if not len(off):
            return 0
        g = off.astype(np.int64).reshape(-1, self.n)
        if g.min() < -1 or g.max() >= self.m:
            raise InputError(f"{what}: in-group offsets must be in [0, {self.m}) "
                             f"(-1 marks padding)")
        pad = g < 0
        if np.any(pad[:, :-1] & ~pad[:, 1:]) or np.any((np.diff(g, axis=1) <= 0) & ~pad[:, 1:]):
            bad = int(np.argmax(np.any(pad[:, :-1] & ~pad[:, 1:], axis=1)
                                | np.any((np.diff(g, axis=1) <= 0) & ~pad[:, 1:], axis=1)))
            raise InputError(f"{what}: group {bad}: offsets must ascend, padding last")
        groups = -(-dim // self.m)
        base = (np.arange(len(g)) % groups) * self.m
        if np.any(~pad & (base[:, None] + g >= dim)):
            raise InputError(f"{what}: an offset points past the last column {dim - 1}")
        return len(off)

    def __repr__(self):
        return f"nm({self.n},{self.m})"
