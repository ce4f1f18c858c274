"""Index expressions as sums of terms: the queries passes and the verifier share
to see how an index moves with a loop variable (``c * v + terms without v``),
after inlining the Lets that compute it."""
from __future__ import annotations

from .nodes import (Alloc, Assign, BinOp, Block, CompareSwap, Const, DType, Expr, For, If, Let,
                    Neg, Stmt, Store, Var, While)
from .traverse import rewrite, walk

_STATEMENTS = (Block, Let, Assign, Store, For, While, If, Alloc, CompareSwap)


def var_names(e: Expr) -> set[str]:
    """The names of the variables ``e`` reads."""
    return {n.name for n in walk(e) if isinstance(n, Var)}


def let_env(body: Stmt) -> dict[str, Expr]:
    """Lets of ``body`` that can be inlined: declared once, never reassigned."""
    counts: dict[str, int] = {}
    values: dict[str, Expr] = {}
    changed: set[str] = set()
    for n in walk(body):
        if isinstance(n, Let):
            counts[n.var.name] = counts.get(n.var.name, 0) + 1
            values[n.var.name] = n.value
        elif isinstance(n, Assign):
            changed.add(n.var.name)
    return {k: v for k, v in values.items() if counts[k] == 1 and k not in changed}


def inline(e: Expr, env: dict[str, Expr], depth: int = 16) -> Expr:
    """``e`` with the variables of ``env`` replaced by their definitions."""
    for _ in range(depth):
        if not var_names(e) & env.keys():
            return e
        e = rewrite(e, lambda n: env[n.name] if isinstance(n, Var) and n.name in env else n)
    return e


def signed_terms(e: Expr, sign: int = 1):
    """(sign, term) for each term of ``e`` read as a sum (``+``, ``-``, negation)."""
    if isinstance(e, BinOp) and e.op == "+":
        yield from signed_terms(e.lhs, sign)
        yield from signed_terms(e.rhs, sign)
    elif isinstance(e, BinOp) and e.op == "-":
        yield from signed_terms(e.lhs, sign)
        yield from signed_terms(e.rhs, -sign)
    elif isinstance(e, Neg):
        yield from signed_terms(e.operand, -sign)
    else:
        yield sign, e


def coefficient(term: Expr, v: str) -> int | None:
    """c when ``term`` is c * v (c an integer constant), else None."""
    if isinstance(term, Var) and term.name == v:
        return 1
    if isinstance(term, Neg):
        c = coefficient(term.operand, v)
        return None if c is None else -c
    if isinstance(term, BinOp) and term.op == "*":
        for a, b in ((term.lhs, term.rhs), (term.rhs, term.lhs)):
            if isinstance(a, Const) and not a.dtype.is_float and a.dtype is not DType.BOOL:
                c = coefficient(b, v)
                if c is not None:
                    return int(a.value) * c
    return None


def linear_coefficient(e: Expr, v: str) -> int | None:
    """c when ``e`` is c * v plus terms without v (each term with v an integer
    multiple of it), else None."""
    total = 0
    for sign, term in signed_terms(e):
        if v in var_names(term):
            c = coefficient(term, v)
            if c is None:
                return None
            total += sign * c
    return total


__all__ = ["coefficient", "inline", "let_env", "linear_coefficient", "signed_terms",
           "var_names"]
