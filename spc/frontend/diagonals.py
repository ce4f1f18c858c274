"""Diagonal reads: an access that repeats an index (``A[i,i]``, ``T[i,j,i]``).

numpy's ``einsum("ii->i", A)`` reads A's diagonal; spc's loops bind one index
per mode, so such an access is rewritten to read a new tensor holding the
diagonal (``A[i,i]`` -> ``A_diag[i]``), which the runtime
(``runtime/diagonal_reads.py``) builds from A at call time: the entries of A
whose coordinates agree over the repeated modes, one mode kept per index.  This
module rewrites the expression's text only; it never looks at values.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParseError
from . import ast


@dataclass(frozen=True)
class DiagonalRead:
    """Tensor ``name`` (rank ``len(keep)``) holds the entries of ``source``
    whose coordinates agree over each group of modes read with one index:
    ``groups[m]`` is the position in ``name``'s modes of ``source``'s mode
    ``m``; ``keep[g]`` the first ``source`` mode of group ``g``."""
    source: str
    name: str
    groups: tuple[int, ...]
    keep: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.source}'s diagonal over modes {self.groups} is read as {self.name}"


def _groups(indices: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(per mode, its group; the groups' indices in first-use order)."""
    order: list[str] = []
    groups = []
    for ix in indices:
        if ix not in order:
            order.append(ix)
        groups.append(order.index(ix))
    return tuple(groups), tuple(order)


def rewrite_diagonals(assign: ast.Assignment) -> tuple[str, tuple[DiagonalRead, ...]] | None:
    """The expression's text with every input access that repeats an index
    replaced by an access of a diagonal tensor, and those tensors; None when
    no access repeats an index.

    Requires: ``assign`` came from ``parse``.  Ensures: the new text parses
    to the same expression but for those accesses; each new tensor name is
    unused in ``assign``; the same tensor read with the same repetition twice
    gets one diagonal tensor.  A repeated output index raises ParseError.
    """
    lhs = assign.lhs
    if len(set(lhs.indices)) != len(lhs.indices):
        return None                      # check() explains a repeated output index
    used = {a.tensor for a in assign.accesses()} | {lhs.tensor}
    reads: dict[tuple[str, tuple[int, ...]], DiagonalRead] = {}
    edits: list[tuple[tuple[int, int], str]] = []
    for acc in assign.accesses():
        if len(set(acc.indices)) == len(acc.indices):
            continue
        if acc.tensor == lhs.tensor:
            raise ParseError(f"output tensor '{lhs.tensor}' also appears on the right-hand side",
                             source=assign.source, span=acc.span)
        groups, kept = _groups(acc.indices)
        read = reads.get((acc.tensor, groups))
        if read is None:
            base = f"{acc.tensor}_diag"
            name, n = base, 1
            while name in used:
                n += 1
                name = f"{base}{n}"
            used.add(name)
            keep = tuple(groups.index(g) for g in range(len(kept)))
            read = reads[acc.tensor, groups] = DiagonalRead(acc.tensor, name, groups, keep)
        edits.append((acc.span, f"{read.name}[{','.join(kept)}]"))
    if not edits:
        return None
    text = assign.source
    for (start, end), new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text, tuple(reads.values())


__all__ = ["DiagonalRead", "rewrite_diagonals"]
