"""Formats: a sequence of levels plus a mode order; the named formats.

``Format(levels, order)`` stores dimension ``order[l]`` of the tensor at level
``l``.  CSR is (dense, compressed) in order (0, 1); CSC the same levels in order
(1, 0); COO is (compressed non-unique, singleton).

``block`` splits dimensions into blocks: with ``block[m] = b > 1`` mode m
appears twice in ``order``, first for its block coordinate ``i // b`` and then
for the coordinate inside the block ``i % b`` (a level of size b).  BSR(r, c)
is (dense, compressed, dense, dense) in order (0, 1, 0, 1) with block (r, c).
A dimension that is not a multiple of its block is padded: the last block
holds positions past the end, which kernels skip.  A user-defined format is just
another ``Format`` (possibly with a user-written ``Level``), registered with
:func:`register_format`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..errors import FormatError
from .level_batch import Batch
from .levels import Compressed, Dense, Level, Singleton
from .levels_chunked import Chunked
from .levels_padded import Diagonal, FixedWidth, NMGroup


@dataclass(frozen=True)
class Format:
    levels: tuple[Level, ...]
    order: tuple[int, ...]
    name: str = ""
    block: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "order", tuple(int(m) for m in self.order))
        block = tuple(int(b) for b in self.block)
        object.__setattr__(self, "block", block)
        modes = len(block) if block else len(self.levels)
        want = sorted(m for m in range(modes) for _ in range(2 if block and block[m] > 1 else 1))
        if len(self.order) != len(self.levels) or sorted(self.order) != want:
            what = "with each blocked mode twice " if block else ""
            raise FormatError(f"format {self.name or '?'}: mode order {self.order} is not "
                              f"a permutation of 0..{modes - 1} {what}for {len(self.levels)} "
                              f"levels")
        if any(b < 1 for b in block):
            raise FormatError(f"format {self.name or '?'}: block sizes {block} must be >= 1")
        for lvl, level in enumerate(self.levels):
            why = level.check_place(self.levels, lvl, self.order)
            if why is not None:
                raise FormatError(f"format {self.name or '?'}: level {lvl} ({level!r}): {why}")
        # derived once: the runtime asks these on every call
        object.__setattr__(self, "_rank", modes)
        object.__setattr__(self, "_is_dense", all(isinstance(lv, Dense) for lv in self.levels)
                           and not any(b > 1 for b in block))
        object.__setattr__(self, "_identity", self.order == tuple(range(len(self.levels))))
        parts = []
        seen = set()
        for m in self.order:
            b = block[m] if block else 1
            parts.append("all" if b == 1 else ("inner" if m in seen else "outer"))
            seen.add(m)
        object.__setattr__(self, "_parts", tuple(parts))

    @property
    def rank(self) -> int:
        """The rank of the tensors this format stores (levels may be more)."""
        return self._rank

    @property
    def nlevels(self) -> int:
        """The number of levels."""
        return len(self.levels)

    @property
    def is_blocked(self) -> bool:
        """Whether some mode is stored in blocks larger than 1 (bsr)."""
        return any(b > 1 for b in self.block)

    def block_of(self, mode: int) -> int:
        """The block size of dimension ``mode`` (1 for an unblocked mode)."""
        return self.block[mode] if self.block else 1

    def level_part(self, level: int) -> str:
        """"all" (the level stores the whole coordinate of its mode), "outer" (the
        block coordinate i // b) or "inner" (the coordinate inside the block)."""
        return self._parts[level]

    def level_dims(self, shape) -> tuple[int, ...]:
        """The size of each level's coordinate range for a tensor of ``shape``."""
        dims = []
        for lvl, m in enumerate(self.order):
            b, part = self.block_of(m), self._parts[lvl]
            dims.append(shape[m] if part == "all" else b if part == "inner" else -(-shape[m] // b))
        return tuple(dims)

    def padded_shape(self, shape) -> tuple[int, ...]:
        """``shape`` rounded up to whole blocks (``shape`` itself when unblocked)."""
        return tuple(-(-n // self.block_of(m)) * self.block_of(m) for m, n in enumerate(shape))

    def level_coords(self, by_mode) -> list:
        """Per-level coordinates from per-mode coordinates (numpy arrays)."""
        return [by_mode[m] if p == "all" else (by_mode[m] % self.block_of(m) if p == "inner"
                                                 else by_mode[m] // self.block_of(m))
                for m, p in zip(self.order, self._parts)]

    def mode_coords(self, by_level) -> list:
        """Per-mode coordinates from per-level coordinates (the inverse of level_coords)."""
        out = [0] * self.rank
        for c, m, p in zip(by_level, self.order, self._parts):
            out[m] = out[m] + (c * self.block_of(m) if p == "outer" else c)
        return out

    @property
    def may_fill(self) -> bool:
        """Whether converting a tensor into this format may store entries it does not
        hold (zeros filling a structure): a level below the first that is not full
        says it fills (``Level.fills``).  False for dense formats (every entry is
        stored: nothing is added to a pattern there is none of)."""
        if self._is_dense:
            return False
        first = next(i for i, lv in enumerate(self.levels) if not lv.full)
        return any(lv.fills for lv in self.levels[first:])

    @property
    def is_dense(self) -> bool:
        """Whether every level is dense (the format stores every entry)."""
        return self._is_dense

    @property
    def identity_order(self) -> bool:
        """True when dimension l is stored at level l."""
        return self._identity

    def level_of_mode(self, mode: int) -> int:
        """The level that stores dimension ``mode``."""
        return self.order.index(mode)

    def __str__(self) -> str:
        return self.name or "(" + ", ".join(map(repr, self.levels)) + f"; order={self.order})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Format) and self.levels == other.levels
                and self.order == other.order and self.block == other.block)

    def __hash__(self) -> int:
        return hash((self.levels, self.order, self.block))

    def reads(self, other: "Format") -> bool:
        """True when a kernel compiled for this format reads a tensor stored in
        ``other`` as it is: the same levels (up to their run-time parameters,
        ``Level.reads``: an open ell width reads ``ell(6)``), order and blocks."""
        return (self.order == other.order and self.block == other.block
                and len(self.levels) == len(other.levels)
                and all(a.reads(b) for a, b in zip(self.levels, other.levels)))


def dense(rank: int) -> Format:
    return Format(tuple(Dense() for _ in range(rank)), tuple(range(rank)), "dense")


def coo(rank: int) -> Format:
    if rank == 1:
        return Format((Compressed(),), (0,), "coo")
    levels = (Compressed(unique=False),) + tuple(
        Singleton(unique=(k == rank - 1)) for k in range(1, rank))
    return Format(levels, tuple(range(rank)), "coo")


def _fixed(rank_needed: int, build: Callable[[], Format]) -> Callable[[int], Format]:
    def make(rank: int) -> Format:
        if rank != rank_needed:
            raise FormatError(f"format '{build().name}' is for {rank_needed}-d tensors, "
                              f"not {rank}-d")
        return build()
    return make


_NAMED: dict[str, Callable[[int], Format]] = {
    "dense": dense,
    "coo": coo,
    "csr": _fixed(2, lambda: Format((Dense(), Compressed()), (0, 1), "csr")),
    "csc": _fixed(2, lambda: Format((Dense(), Compressed()), (1, 0), "csc")),
    "dcsr": _fixed(2, lambda: Format((Compressed(), Compressed()), (0, 1), "dcsr")),
    "dcsc": _fixed(2, lambda: Format((Compressed(), Compressed()), (1, 0), "dcsc")),
    "sparse": lambda r: Format(tuple(Compressed() for _ in range(r)), tuple(range(r)), "sparse"),
    "csf": lambda r: Format(tuple(Compressed() for _ in range(r)), tuple(range(r)), "csf"),
}
_LEVEL_LETTERS = {"d": Dense, "s": Compressed}


def bsr(r: int, c: int) -> Format:
    """Block CSR: dense r x c blocks, block rows dense, block columns compressed."""
    r, c = int(r), int(c)
    if r < 1 or c < 1:
        raise FormatError(f"bsr({r},{c}): block sizes must be >= 1")
    levels = [Dense(), Compressed()] + [Dense() for b in (r, c) if b > 1]
    order = (0, 1) + tuple(m for m, b in enumerate((r, c)) if b > 1)
    return Format(tuple(levels), order, f"bsr({r},{c})", block=(r, c))


def ell(width: int | None = None) -> Format:
    """ELLPACK: every row padded to ``width`` slots (None: the longest row)."""
    return Format((Dense(), FixedWidth(width)), (0, 1), "ell" if width is None else f"ell({width})")


def dia() -> Format:
    """Diagonal storage: the stored diagonals' offsets, a value slot per row each."""
    return Format((Dense(), Diagonal()), (0, 1), "dia")


def nm(n: int, m: int) -> Format:
    """N:M structured sparsity: n stored values in every group of m columns."""
    return Format((Dense(), NMGroup(n, m)), (0, 1), f"nm({int(n)},{int(m)})")


def condensed(r: int, k: int) -> Format:
    """Rows in windows of ``r``; per window, the distinct columns its entries use,
    ascending, in chunks of ``k`` (the last padded with -1); per column kept,
    the window's ``r`` rows dense.  Each chunk is a dense ``r x k`` tile of the
    window whose columns are the chunk's coordinates (TC-GNN's and DTC-SpMM's
    condensed tiles, which ``passes/tensorize_chunks`` runs on tensor cores with
    r = 16 and k = 16 for 16-bit values, k = 8 for tf32).  Levels: bsr(r, 1)'s,
    with a ``Chunked(k)`` level for the columns."""
    r, k = int(r), int(k)
    if r < 1 or k < 1:
        raise FormatError(f"condensed({r},{k}): window rows and chunk columns must be >= 1")
    levels = (Dense(), Chunked(k)) + ((Dense(),) if r > 1 else ())
    order = (0, 1) + ((0,) if r > 1 else ())
    return Format(levels, order, f"condensed({r},{k})", block=(r, 1))


def batched(fmt: Format) -> Format:
    """``fmt`` over one more dimension, a batch (attention's heads ``h``), put
    first among the modes and stored by a ``Batch`` level below all of
    ``fmt``'s.

    Requires: ``fmt`` a Format.  Ensures: a tensor ``S[h, ...]`` in this format
    keeps ``fmt``'s levels and their arrays unchanged (its index structure is
    that of the one ``fmt`` tensor every batch entry shares), and its values
    are one run of ``fmt``'s stored entries per batch entry (``Batch``:
    positions ``h * nnz + p``).  The lowerer sees ordinary levels
    (``ir/lower.stores_pattern_of`` lets a result in this format take the
    pattern of an operand in ``fmt``)."""
    block = (1,) + fmt.block if fmt.block else ()
    return Format(fmt.levels + (Batch(),), tuple(m + 1 for m in fmt.order) + (0,),
                  f"batched({fmt.name or '?'})", block)


# formats with parameters: name(args) in a format string
_PARAMETRIC: dict[str, tuple[Callable[..., Format], tuple[int, ...]]] = {
    # name: (builder, how many integer arguments it takes (any of these counts))
    "bsr": (bsr, (2,)),
    "ell": (ell, (0, 1)),
    "nm": (nm, (2,)),
    "condensed": (condensed, (2,)),
}
_NAMED.update({
    "dia": _fixed(2, dia),
    "ell": _fixed(2, ell),
})


def _parametric(key: str, rank: int, what: str) -> Format | None:
    match = re.fullmatch(r"([a-z_]\w*)\s*\((.*)\)", key)
    if match is None or match.group(1) not in _PARAMETRIC:
        return None
    name, text = match.group(1), match.group(2).strip()
    build, counts = _PARAMETRIC[name]
    try:
        args = [int(a) for a in text.split(",")] if text else []
    except ValueError:
        raise FormatError(f"{what}: format '{key}' needs integer arguments") from None
    if len(args) not in counts:
        raise FormatError(f"{what}: format '{name}' takes {' or '.join(map(str, counts))} "
                          f"integer arguments, got {len(args)}")
    fmt = build(*args)
    if fmt.rank != rank:
        raise FormatError(f"{what}: format '{key}' is for {fmt.rank}-d tensors, not {rank}-d")
    return fmt


def register_format(name: str, make: Callable[[int], Format]) -> None:
    """Make ``name`` usable wherever a format name is accepted.

    ``make(rank)`` returns the Format for a tensor of that rank (or raises
    FormatError when the rank does not fit).
    """
    _NAMED[name.lower()] = make


def format_names() -> list[str]:
    """The format names every format argument accepts, sorted (parametric ones as ``name(...)``)."""
    return sorted(set(_NAMED) | {f"{n}(...)" for n in _PARAMETRIC} | {"hyb", "hyb(...)"})


def resolve_format(spec, rank: int, *, what: str = "tensor") -> Format:
    """Turn a format spec (a name, a level-letter string like "ds", or a Format)
    into a Format for a tensor of ``rank`` dimensions.
    """
    if isinstance(spec, Format):
        if spec.rank != rank:
            raise FormatError(f"{what}: format {spec} stores rank-{spec.rank} tensors but the "
                              f"tensor has rank {rank}")
        return spec
    if not isinstance(spec, str):
        raise FormatError(f"{what}: a format must be a name or spc.Format, got {spec!r}")
    key = spec.strip().lower()
    if key in _NAMED:
        try:
            fmt = _NAMED[key](rank)
        except FormatError as err:
            raise FormatError(f"{what}: {err.message}") from None
        if not isinstance(fmt, Format) or fmt.rank != rank:
            raise FormatError(f"{what}: format '{spec}' gave "
                              f"{getattr(fmt, 'rank', '?')} levels for a rank-{rank} tensor")
        return fmt
    fmt = _parametric(key, rank, what)
    if fmt is not None:
        return fmt
    if re.fullmatch(r"[ds]+", key):
        if len(key) != rank:
            raise FormatError(f"{what}: level string '{spec}' has {len(key)} levels but the "
                              f"tensor has rank {rank}")
        return Format(tuple(_LEVEL_LETTERS[c]() for c in key), tuple(range(rank)), key)
    raise FormatError(f"{what}: unknown format '{spec}' (known: "
                      f"{', '.join(format_names())}, or a string of 'd'/'s' level letters)")
