"""Formats: a sequence of levels plus a mode order; the named formats.

``Format(levels, order)`` stores dimension ``order[l]`` of the tensor at level
``l``.  CSR is (dense, compressed) in order (0, 1); CSC the same levels in order
(1, 0); COO is (compressed non-unique, singleton).  A user-defined format is just
another ``Format`` (possibly with a user-written ``Level``), registered with
:func:`register_format`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..errors import FormatError
from .levels import Compressed, Dense, Level, Singleton


@dataclass(frozen=True)
class Format:
    levels: tuple[Level, ...]
    order: tuple[int, ...]
    name: str = ""

    def __post_init__(self):
        if sorted(self.order) != list(range(len(self.levels))):
            raise FormatError(f"format {self.name or '?'}: mode order {self.order} is not "
                              f"a permutation of 0..{len(self.levels) - 1}")
        # derived once: the runtime asks these on every call
        object.__setattr__(self, "_is_dense", all(isinstance(lv, Dense) for lv in self.levels))
        object.__setattr__(self, "_identity", self.order == tuple(range(len(self.levels))))

    @property
    def rank(self) -> int:
        return len(self.levels)

    @property
    def is_dense(self) -> bool:
        return self._is_dense

    @property
    def identity_order(self) -> bool:
        """True when dimension l is stored at level l."""
        return self._identity

    def level_of_mode(self, mode: int) -> int:
        return self.order.index(mode)

    def __str__(self) -> str:
        return self.name or "(" + ", ".join(map(repr, self.levels)) + f"; order={self.order})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Format) and self.levels == other.levels
                and self.order == other.order)

    def __hash__(self) -> int:
        return hash((self.levels, self.order))


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


def register_format(name: str, make: Callable[[int], Format]) -> None:
    """Make ``name`` usable wherever a format name is accepted.

    ``make(rank)`` returns the Format for a tensor of that rank (or raises
    FormatError when the rank does not fit).
    """
    _NAMED[name.lower()] = make


def format_names() -> list[str]:
    return sorted(_NAMED)


def resolve_format(spec, rank: int, *, what: str = "tensor") -> Format:
    """Turn a format spec (a name, a level-letter string like "ds", or a Format)
    into a Format for a tensor of ``rank`` dimensions.
    """
    if isinstance(spec, Format):
        if spec.rank != rank:
            raise FormatError(f"{what}: format {spec} has {spec.rank} levels but the "
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
    if re.fullmatch(r"[ds]+", key):
        if len(key) != rank:
            raise FormatError(f"{what}: level string '{spec}' has {len(key)} levels but the "
                              f"tensor has rank {rank}")
        return Format(tuple(_LEVEL_LETTERS[c]() for c in key), tuple(range(rank)), key)
    raise FormatError(f"{what}: unknown format '{spec}' (known: "
                      f"{', '.join(format_names())}, or a string of 'd'/'s' level letters)")
