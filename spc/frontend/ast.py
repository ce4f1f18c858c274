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
    op: str            # one of "+", "-", "*", "/"
    lhs: "Expr"
    rhs: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """An element-wise function of its arguments: ``fn`` is one of ``FUNCTIONS``
    (``frontend.check`` refuses other names and wrong argument counts)."""
    fn: str
    args: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Reduce:
    """``op(index, body)``: ``body`` reduced over ``index`` with ``op`` ("max",
    "min" or "sum"), written ``m[i] = max(j, S[i,j])``.  The parser makes one
    from a call of max/min/sum whose first argument is a bare name used as an
    index in the second."""
    op: str
    index: str
    body: "Expr"
    span: Span


# element-wise functions: name -> number of arguments (max, min and sum also
# reduce: max(j, e))
FUNCTIONS = {"exp": 1, "log": 1, "sqrt": 1, "abs": 1, "relu": 1, "max": 2, "min": 2,
             "stored": 1}
REDUCTIONS = ("max", "min", "sum")

Expr = Access | Const | Neg | BinOp | Call | Reduce


def children(e: Expr) -> tuple[Expr, ...]:
    """The sub-expressions of ``e`` (none for an access or a constant)."""
    if isinstance(e, Neg):
        return (e.operand,)
    if isinstance(e, BinOp):
        return (e.lhs, e.rhs)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Reduce):
        return (e.body,)
    return ()


def map_accesses(e: Expr, access, index=None, call=None) -> Expr:
    """``e`` rebuilt with every access ``a`` replaced by ``access(a)`` (any
    expression), with ``index``, every reduction's index ``ix`` by
    ``index(ix)``, and with ``call``, every call ``c`` for which ``call(c)`` is
    not None by that expression (not walked further); constants, operators,
    other calls and spans kept."""
    if isinstance(e, Access):
        return access(e)
    if isinstance(e, Neg):
        return Neg(map_accesses(e.operand, access, index, call), e.span)
    if isinstance(e, BinOp):
        return BinOp(e.op, map_accesses(e.lhs, access, index, call),
                     map_accesses(e.rhs, access, index, call), e.span)
    if isinstance(e, Call):
        new = call(e) if call is not None else None
        if new is not None:
            return new
        return Call(e.fn, tuple(map_accesses(a, access, index, call) for a in e.args), e.span)
    if isinstance(e, Reduce):
        return Reduce(e.op, e.index if index is None else index(e.index),
                      map_accesses(e.body, access, index, call), e.span)
    return e


def reductions_in(e: Expr):
    """The reductions in ``e``, outermost ones only (not those inside another),
    left to right; ``e`` itself when it is one."""
    if isinstance(e, Reduce):
        yield e
        return
    for c in children(e):
        yield from reductions_in(c)


def nested_reduce(e: Expr) -> "Reduce | None":
    """The first reduction strictly inside ``e`` (``relu(sum(k, A[i,k]*B[k,j]) +
    b[j])``, or the one inside a reduction ``e``), or None."""
    return next((r for c in children(e) for r in reductions_in(c)), None)


def index_names(e: Expr) -> set[str]:
    """Every index an access inside ``e`` uses."""
    if isinstance(e, Access):
        return set(e.indices)
    return {ix for c in children(e) for ix in index_names(c)}


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
            for child in children(e):
                walk(child)

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
