"""Algebraic simplification of IR expressions (constant folding, x*0, x+0, x*1)."""
from __future__ import annotations

from .nodes import BinOp, Call, Cast, Const, DType, Expr, Neg, Select, dtype_of


def is_const(e: Expr, value) -> bool:
    return isinstance(e, Const) and e.value == value and e.dtype is not DType.BOOL


def _fold(op: str, a, b):
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
            "min": lambda: min(a, b), "max": lambda: max(a, b)}[op]()


def simplify_expr(e: Expr) -> Expr:
    """Return an expression equal to ``e`` with trivial arithmetic removed.

    Ensures: the result has the same value and dtype as ``e`` for every input
    (x*0 -> 0 is applied to float operands too: spc treats absent sparse values
    as structural zeros, which is what makes the rewrite valid for our use).
    """
    if isinstance(e, BinOp):
        a, b = simplify_expr(e.lhs), simplify_expr(e.rhs)
        if isinstance(a, Const) and isinstance(b, Const) and e.op in ("+", "-", "*", "min", "max") \
                and a.dtype is b.dtype:
            v = _fold(e.op, a.value, b.value)
            return Const(int(v) if not a.dtype.is_float else float(v), a.dtype)
        if e.op == "*":
            if is_const(a, 0) or is_const(b, 0):
                return Const(0 if not dtype_of(a).is_float else 0.0, dtype_of(a))
            if is_const(a, 1):
                return b
            if is_const(b, 1):
                return a
        if e.op == "+":
            if is_const(a, 0):
                return b
            if is_const(b, 0):
                return a
        if e.op == "-":
            if is_const(b, 0):
                return a
            if is_const(a, 0):
                return simplify_expr(Neg(b))
        return BinOp(e.op, a, b)
    if isinstance(e, Neg):
        x = simplify_expr(e.operand)
        if isinstance(x, Const):
            return Const(-x.value, x.dtype)
        if isinstance(x, Neg):
            return x.operand
        return Neg(x)
    if isinstance(e, Cast):
        x = simplify_expr(e.value)
        if isinstance(x, Const):
            return Const(float(x.value) if e.dtype.is_float else int(x.value), e.dtype)
        if dtype_of(x) is e.dtype:
            return x
        return Cast(x, e.dtype)
    if isinstance(e, Select):
        return Select(simplify_expr(e.cond), simplify_expr(e.if_true), simplify_expr(e.if_false))
    if isinstance(e, Call):
        return Call(e.fn, simplify_expr(e.value))
    return e
