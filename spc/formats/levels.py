"""Level formats (Chou, Kjolstad, Amarasinghe, OOPSLA 2018).

A tensor is stored as a sequence of levels, one per dimension in the format's
mode order.  Each level maps a parent position to child positions and their
coordinates.  A level answers only these questions, so the lowerer never needs
to know a format by name:

* capabilities: ``locatable`` (random access in O(1)), ``iterable`` (iterate the
  stored coordinates by position), ``unique``, ``ordered``, ``full``;
* IR for iteration: ``iter_bounds(io, parent)``, ``coord(io, p, parent)`` and
  ``valid(io, p, coord)`` (False at padding positions, None if the level has
  none);
* IR for random access: ``locate(io, parent_pos, i)``;
* storage: ``array_names`` (with ``array_dtypes`` for arrays of a fixed narrow
  type), ``scalar_names`` (integers derived from the arrays, passed to kernels),
  ``pack`` (coordinates -> arrays), ``unpack`` (arrays -> coordinates),
  ``size`` (positions) and ``validate`` (reject malformed arrays).

``parent`` in the IR methods is a :class:`Parent`: a single position, or a
segment ``[lo, hi)`` of positions when the parent level is not unique (the
positions that share one coordinate, as in COO's row level).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..ir.nodes import Buffer, DType, Expr, Load, Var, add, i64, mul


@dataclass(frozen=True)
class Parent:
    """Where a level's parent points: one position, or a segment [lo, hi)."""
    pos: Expr | None = None
    seg_lo: Expr | None = None
    seg_hi: Expr | None = None

    @property
    def is_segment(self) -> bool:
        """Whether the parent is a segment ``[seg_lo, seg_hi)`` of positions (below a non-unique level), not one position."""
        return self.pos is None


ROOT = Parent(pos=i64(0))


@dataclass(frozen=True)
class LevelIO:
    """The IR names of one level's storage inside a kernel.

    ``buffer(name)`` is the level's array ``name`` (e.g. "pos", "crd"),
    ``scalar(name)`` one of its integer scalars and ``dim`` the size of the
    dimension the level stores (an expression of the kernel's sizes).
    """
    tensor: str
    level: int
    index_dtype: DType
    dim: Expr

    def buffer(self, name: str, dtype: DType | None = None) -> Buffer:
        """The IR buffer of the level's array ``name`` (of ``dtype``, else the index type)."""
        return Buffer(f"{self.tensor}{self.level}_{name}", dtype or self.index_dtype)

    def scalar(self, name: str) -> Var:
        """The IR variable of the level's integer scalar ``name``."""
        return Var(f"{self.tensor}{self.level}_{name}", DType.I64)


class Level:
    """Base class of level formats.  Subclasses set the capability flags."""
    name = "level"
    locatable = False
    iterable = False
    unique = True
    ordered = True
    full = False
    # converting into this level may store a slot (a zero) at a coordinate the input
    # does not hold (a dense level below a sparse one, DIA's diagonals, N:M's groups);
    # True unless a level says otherwise, so a new level is checked (runtime/pattern_kept)
    fills = True
    array_names: tuple[str, ...] = ()
    array_dtypes: dict[str, str] = {}     # arrays whose dtype is fixed (else the index dtype)
    scalar_names: tuple[str, ...] = ()

    # -- IR ---------------------------------------------------------------
    def iter_bounds(self, io: LevelIO, parent: Parent) -> tuple[Expr, Expr]:
        """Iterate by position: the IR bounds ``(lo, hi)`` of the positions below ``parent``
        (a compressed level: ``pos[p] .. pos[p+1]``).  Levels that cannot iterate raise
        NotImplementedError."""
        raise NotImplementedError(f"{self.name} level cannot be iterated by position")

    def coord(self, io: LevelIO, p: Expr, parent: Parent) -> Expr:
        """The IR coordinate stored at position ``p`` below ``parent`` (a compressed level:
        ``crd[p]``).  Levels that cannot iterate raise NotImplementedError."""
        raise NotImplementedError(f"{self.name} level cannot be iterated by position")

    def valid(self, io: LevelIO, p: Expr, coord: Expr) -> Expr | None:
        """False where position ``p`` is padding (its coordinate ``coord`` is then
        meaningless); None when the level stores no padding."""
        return None

    def check_place(self, levels: tuple, level: int, order: tuple) -> str | None:
        """Why this level cannot be level ``level`` of a format with ``levels``
        and mode ``order``, or None where it can (most levels fit anywhere)."""
        return None

    def buffers(self, io: LevelIO) -> list[Buffer]:
        """The IR buffers of this level's arrays."""
        return [io.buffer(n, DType.from_numpy(self.array_dtypes[n]) if n in self.array_dtypes
                          else None) for n in self.array_names]

    def scalars(self, arrays: dict, parent_count: int, dim: int) -> dict[str, int]:
        """Values of ``scalar_names`` for these arrays."""
        return {}

    def size(self, arrays: dict, parent_count: int, dim: int) -> int:
        """Number of positions of this level below ``parent_count`` parent positions."""
        raise NotImplementedError

    def locate(self, io: LevelIO, parent_pos: Expr, i: Expr) -> Expr:
        """Locate: the IR position of coordinate ``i`` below ``parent_pos``, in O(1) (a
        dense level: ``parent_pos * dim + i``).  Levels that cannot locate raise
        NotImplementedError."""
        raise NotImplementedError(f"{self.name} level cannot locate")

    # -- storage ------------------------------------------------------------
    def pack(self, parent_pos: np.ndarray, parent_count: int, coords: np.ndarray,
             dim: int, index_dtype) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """Store sorted, unique coordinates.

        Requires: ``coords[n]`` is the coordinate at this level of nonzero n,
        ``parent_pos[n]`` its position at the parent level, and (parent_pos,
        coords) is sorted lexicographically.
        Ensures: returns (arrays, position of each nonzero here, number of positions).
        """
        raise NotImplementedError

    def unpack(self, arrays: dict[str, np.ndarray], parent_pos: np.ndarray,
               parent_count: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Enumerate stored entries below each parent position.

        Ensures: returns (index into parent_pos of each child, child positions,
        child coordinates), children in storage order.
        """
        raise NotImplementedError

    def validate(self, arrays: dict[str, np.ndarray], parent_count: int, dim: int,
                 what: str) -> int:
        """Raise InputError if the arrays are malformed; return the position count."""
        return parent_count

    def device_check(self, index: DType, parent: "Level | None"):
        """The kernels (``formats/storage_check``) that check this level's arrays on
        a device, below a level ``parent`` (None at the root): a tuple, empty
        when the level has no arrays; None when it has no such check (the caller
        checks a copy on the host)."""
        return None

    def lengths_fit(self, arrays: dict, parent_count: int) -> bool:
        """Whether the arrays are 1-d with the lengths ``parent_count`` parents
        need: what ``device_check``'s kernels take for granted."""
        return all(getattr(arrays.get(n), "ndim", None) == 1 for n in self.array_names)

    def __repr__(self) -> str:
        flags = "" if self.unique else "(nonunique)"
        return f"{self.name}{flags}"

    def parameters(self) -> tuple:
        """Every parameter the level was made with (its instance attributes), by
        name: two levels of one class are equal exactly when these are.  Levels
        do not change once made, so this is read once (format comparisons sit
        on the call path)."""
        cached = self.__dict__.get("_parameters")
        if cached is None:
            cached = tuple(sorted((k, _hashable(v)) for k, v in vars(self).items()
                                  if k != "_parameters"))
            self.__dict__["_parameters"] = cached
        return cached

    def __eq__(self, other) -> bool:
        return self is other or (type(self) is type(other)
                                 and self.parameters() == other.parameters())

    def reads(self, other: "Level") -> bool:
        """True when a kernel compiled for this level reads a tensor whose level is
        ``other`` as it is stored (this level's parameters that kernels take at
        run time may differ)."""
        return self == other

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, self.parameters()))


def _hashable(value):
    """``value``, or a tuple standing for it when it is a list or an array."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return ("array", str(value.dtype), _hashable(value.tolist()))
    return value


class Dense(Level):
    """Every coordinate of the dimension is stored: position = parent * dim + i."""
    name = "dense"
    locatable = True
    full = True

    def iter_bounds(self, io, parent):
        base = parent.pos
        return mul(base, io.dim), add(mul(base, io.dim), io.dim)

    def locate(self, io, parent_pos, i):
        return add(mul(parent_pos, io.dim), i)

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        return {}, parent_pos.astype(np.int64) * dim + coords, parent_count * dim

    def validate(self, arrays, parent_count, dim, what):
        return parent_count * dim

    def device_check(self, index, parent):
        return ()

    def size(self, arrays, parent_count, dim):
        return parent_count * dim

    def unpack(self, arrays, parent_pos, parent_count, dim):
        owner = np.repeat(np.arange(len(parent_pos)), dim)
        coords = np.tile(np.arange(dim, dtype=np.int64), len(parent_pos))
        return owner, parent_pos[owner].astype(np.int64) * dim + coords, coords


class Compressed(Level):
    """Coordinates ``crd[pos[p] : pos[p+1]]`` below parent position p."""
    name = "compressed"
    iterable = True
    fills = False
    array_names = ("pos", "crd")

    def __init__(self, unique: bool = True):
        self.unique = unique

    def iter_bounds(self, io, parent):
        pos = io.buffer("pos")
        if parent.is_segment:
            raise NotImplementedError("a compressed level below a non-unique level")
        return Load(pos, parent.pos), Load(pos, add(parent.pos, i64(1)))

    def coord(self, io, p, parent):
        return Load(io.buffer("crd"), p)

    def size(self, arrays, parent_count, dim):
        return len(arrays["crd"])

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        n = len(coords)
        if self.unique and n:
            new = np.ones(n, dtype=bool)
            new[1:] = (parent_pos[1:] != parent_pos[:-1]) | (coords[1:] != coords[:-1])
        else:
            new = np.ones(n, dtype=bool)
        crd = coords[new]
        counts = np.bincount(parent_pos[new], minlength=parent_count) if n else \
            np.zeros(parent_count, dtype=np.int64)
        pos = np.zeros(parent_count + 1, dtype=np.int64)
        np.cumsum(counts, out=pos[1:])
        positions = np.cumsum(new) - 1
        return ({"pos": pos.astype(index_dtype), "crd": crd.astype(index_dtype)},
                positions.astype(np.int64), int(new.sum()))

    def unpack(self, arrays, parent_pos, parent_count, dim):
        pos = arrays["pos"].astype(np.int64)
        owner, child = position_ranges(pos[parent_pos], pos[parent_pos + 1])
        return owner, child, arrays["crd"][child].astype(np.int64)

    def device_check(self, index, parent):
        from .storage_check import compressed_check
        return (compressed_check(index, ordered=self.ordered, unique=self.unique),)

    def lengths_fit(self, arrays, parent_count):
        return super().lengths_fit(arrays, parent_count) and \
            len(arrays["pos"]) == parent_count + 1

    def validate(self, arrays, parent_count, dim, what):
        from . import inspect_numba as ins
        pos, crd = arrays["pos"], arrays["crd"]
        if pos.ndim != 1 or len(pos) != parent_count + 1:
            raise InputError(f"{what}: pointer array has length {len(pos)}, "
                             f"expected {parent_count + 1}")
        code, at = ins.compressed_errors(pos, crd, parent_count, dim, self.unique, self.ordered)
        raise_compressed_error(code, at, pos, crd, parent_count, dim, what)
        return len(crd)


class Singleton(Level):
    """One coordinate per parent position: ``crd[p]`` (COO's column level)."""
    name = "singleton"
    iterable = True
    fills = False
    array_names = ("crd",)

    def __init__(self, unique: bool = True):
        self.unique = unique

    def iter_bounds(self, io, parent):
        if parent.is_segment:
            return parent.seg_lo, parent.seg_hi
        return parent.pos, add(parent.pos, i64(1))

    def coord(self, io, p, parent):
        return Load(io.buffer("crd"), p)

    def size(self, arrays, parent_count, dim):
        return parent_count

    def pack(self, parent_pos, parent_count, coords, dim, index_dtype):
        if len(parent_pos) != parent_count or (
                len(parent_pos) and np.any(parent_pos != np.arange(parent_count))):
            raise InputError("a singleton level needs a non-unique parent level")
        return {"crd": coords.astype(index_dtype)}, parent_pos.astype(np.int64), parent_count

    def unpack(self, arrays, parent_pos, parent_count, dim):
        owner = np.arange(len(parent_pos))
        return owner, parent_pos.astype(np.int64), arrays["crd"][parent_pos].astype(np.int64)

    def device_check(self, index, parent):
        from .storage_check import singleton_check
        if isinstance(parent, Singleton):
            return None            # an order over three levels or more: checked on the host
        after = isinstance(parent, Compressed) and not parent.unique and parent.ordered
        return (singleton_check(index, after_parent=after, unique=self.unique),)

    def lengths_fit(self, arrays, parent_count):
        return super().lengths_fit(arrays, parent_count) and len(arrays["crd"]) == parent_count

    def validate(self, arrays, parent_count, dim, what):
        crd = arrays["crd"]
        if len(crd) != parent_count:
            raise InputError(f"{what}: {len(crd)} coordinates for {parent_count} entries")
        _check_range(crd, dim, what)
        return parent_count


def position_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the index q of each position, the positions) of the ranges ``[lo[q], hi[q])``,
    in order: what a level storing its children in position ranges unpacks."""
    counts = hi - lo
    owner = np.repeat(np.arange(len(lo)), counts)
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return owner, np.arange(int(counts.sum()), dtype=np.int64) + starts


def raise_compressed_error(code: int, at: int, pos, crd, parent_count: int, dim: int,
                           what: str) -> None:
    """Raise the InputError that ``inspect_numba.compressed_errors``'s (code, at)
    describes for the compressed arrays (pos, crd); return when code is OK."""
    from . import inspect_numba as ins
    if code == ins.OK:
        return
    if code == ins.BAD_LENGTH:
        raise InputError(f"{what}: pointer array has length {len(pos)}, "
                         f"expected {parent_count + 1}")
    if code == ins.BAD_START:
        raise InputError(f"{what}: pointer array must start at 0, starts at {pos[0]}")
    if code == ins.DECREASING:
        raise InputError(f"{what}: pointer array decreases at entry {at} "
                         f"({pos[at - 1]} -> {pos[at]})")
    if code == ins.BAD_END:
        raise InputError(f"{what}: pointer array ends at {pos[at]} but there are "
                         f"{len(crd)} coordinates")
    if code == ins.OUT_OF_RANGE:
        raise InputError(f"{what}: coordinate {crd[at]} at position {at} is out of "
                         f"range [0, {dim})")
    if code in (ins.UNSORTED, ins.DUPLICATE):
        kind = "unsorted" if code == ins.UNSORTED else "duplicate"
        raise InputError(f"{what}: {kind} coordinate {crd[at]} at position {at}")
    raise InputError(f"{what}: malformed compressed arrays")


def _check_range(crd: np.ndarray, dim: int, what: str) -> None:
    if len(crd) == 0:
        return
    lo, hi = int(crd.min()), int(crd.max())
    if lo < 0 or hi >= dim:
        bad = lo if lo < 0 else hi
        raise InputError(f"{what}: coordinate {bad} is out of range [0, {dim})")
