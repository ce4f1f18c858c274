"""The index-notation AST: frozen dataclasses produced by the parser.

Every node keeps ``span``, its ``(start, end)`` character range in the source
text, so later checks can point at the offending part of the expression.
"""
from __future__ import annotations

from dataclasses import dataclass

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Access:
    """``tensor[indices...]``; a scalar tensor has ``indices == ()``."""
    tensor: str
    indices: tuple[str, ...]
    span: Span
    index_spans: tuple[Span, ...] = ()


@dataclass(frozen=True, slots=True)
class Const:
    value: float
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str            # one of "+", "-", "*"
    lhs: "Expr"
    rhs: "Expr"
    span: Span


Expr = Access | Const | Neg | BinOp


@dataclass(frozen=True, slots=True)
class Assignment:
    """``lhs = rhs``; indices absent from ``lhs`` are summed over (einsum)."""
    lhs: Access
    rhs: Expr
    source: str

    def accesses(self) -> tuple[Access, ...]:
        """Every access on the right-hand side, left to right."""
        out: list[Access] = []

        def walk(e: Expr) -> None:
            if isinstance(e, Access):
                out.append(e)
            elif isinstance(e, Neg):
                walk(e.operand)
            elif isinstance(e, BinOp):
                walk(e.lhs)
                walk(e.rhs)

        walk(self.rhs)
        return tuple(out)

    def reduction_indices(self) -> tuple[str, ...]:
        """Indices on the right that are not on the left, in first-use order."""
        seen: list[str] = []
        for acc in self.accesses():
            for ix in acc.indices:
                if ix not in self.lhs.indices and ix not in seen:
                    seen.append(ix)
        return tuple(seen)
