"""Which sum reduction loops can read vectors, and which loads (``nodes.VectorLoads``).

One analysis shared by the pass that records it (``passes/vector_loads.py``)
and the verifier that checks a recorded ``VectorLoads`` against its loop.
"""
from __future__ import annotations

from .affine import inline, let_env, linear_coefficient, var_names
from .nodes import Assign, BinOp, Block, DType, For, Let, Load, Var, VectorLoads
from .traverse import walk

# elements of one 16-byte load, by the arrays' type
VECTOR_WIDTHS = {DType.F32: 4, DType.F64: 2}


def _flat(s) -> list:
    if isinstance(s, Block):
        return [x for c in s.body for x in _flat(c)]
    return [s]


def vector_of(loop: For) -> VectorLoads | None:
    """The VectorLoads of ``loop``, or None when it cannot read vectors.

    Requires nothing.  Ensures: a result only when the body is Lets and sums
    ``r = r + e`` into variables declared outside it, the summands (Lets
    inlined) read no other local of the body, every load whose index reads the
    loop variable reads it once at coefficient 1 (``base + var``), there is at
    least one such load, and all of them are of one float type of
    ``VECTOR_WIDTHS``.
    """
    stmts = _flat(loop.body)
    if not all(isinstance(n, (Let, Assign)) for n in stmts):
        return None
    k = loop.var.name
    local = {n.var.name for n in walk(loop.body) if isinstance(n, (Let, For))} | {k}
    sums: dict[str, Var] = {}
    for n in walk(loop.body):
        if isinstance(n, Assign) and n.var.name not in local:
            sums.setdefault(n.var.name, n.var)
    env = let_env(loop.body)
    variant = local - {k}
    loads: list[Load] = []
    for n in stmts:
        if not isinstance(n, Assign):
            continue
        v = n.value
        if not (isinstance(v, BinOp) and v.op == "+" and isinstance(v.lhs, Var)
                and v.lhs.name == n.var.name and n.var.name in sums):
            return None
        e = inline(v.rhs, env)
        if var_names(e) & variant:
            return None
        for x in walk(e):
            if isinstance(x, Load) and k in var_names(x.index):
                if not _unit_stride(x, k):
                    return None
                if x not in loads:
                    loads.append(x)
    if not loads:
        return None
    types = {x.buf.dtype for x in loads}
    if len(types) != 1 or types.copy().pop() not in VECTOR_WIDTHS:
        return None
    return VectorLoads(VECTOR_WIDTHS[types.pop()], tuple(loads), tuple(sums.values()))


def _unit_stride(load: Load, k: str) -> bool:
    """True when ``load``'s index is ``base + k`` (k's coefficient 1, no load
    inside the index reading k)."""
    return linear_coefficient(load.index, k) == 1 and not any(
        isinstance(y, Load) and k in var_names(y.index) for y in walk(load.index))


__all__ = ["VECTOR_WIDTHS", "vector_of"]
