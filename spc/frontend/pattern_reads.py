"""Which operands a statement reads the *pattern* of, not only the values.

Most expressions see a stored zero and an absent entry alike: both are 0 in a product or
a sum.  Two constructs do not: ``stored(A[i,j])`` is 1 at a stored zero and 0 where A
holds nothing, and ``max``/``min`` reductions over a sparse operand reduce over its
stored entries (a row of stored -2 and -3 has max -2; with a stored 0 beside them, 0).
For such operands a format that stores entries the input does not hold (the zeros that
fill DIA's diagonals, BSR's blocks, N:M's groups) changes the answer, and the runtime
refuses the conversion (``runtime/pattern_kept.py``).
"""
from __future__ import annotations

from .ast import Access, Assignment, Call, Expr, Reduce, children


def pattern_reads(assign: Assignment) -> frozenset[str]:
    """The tensors ``assign`` reads inside ``stored(...)`` or inside the body of a
    ``max``/``min`` reduction."""
    found: set[str] = set()

    def walk(e: Expr, sensitive: bool) -> None:
        if isinstance(e, Access):
            if sensitive:
                found.add(e.tensor)
            return
        inside = sensitive or (isinstance(e, Call) and e.fn == "stored") or (
            isinstance(e, Reduce) and e.op in ("max", "min"))
        for c in children(e):
            walk(c, inside)

    walk(assign.rhs, False)
    return frozenset(found)


def program_pattern_reads(statements: list[Assignment]) -> frozenset[str]:
    """The tensors whose pattern a program's result depends on: those some statement
    reads the pattern of (``pattern_reads``), and, for each such tensor an earlier
    statement writes, every tensor that statement reads (a sampled result such as
    ``S[i,j] = A[i,j] * ...`` has its operands' pattern).  Conservative: dense
    operands are named too; they have no pattern to change."""
    found = set().union(*(pattern_reads(s) for s in statements)) if statements else set()
    for s in reversed(statements):
        if s.lhs.tensor in found:
            found |= {a.tensor for a in s.accesses()}
    return frozenset(found)
