"""Which loops can be unrolled and jammed, and how (``nodes.Jam``).

One analysis shared by the pass that jams loops (``passes/unroll_jam.py``) and
the verifier that checks a recorded ``Jam`` against the loop it is on.
"""
from __future__ import annotations

from .nodes import (Alloc, Assign, BinOp, Block, CompareSwap, For, If, Jam, Let, Store, Var,
                    While)
from .traverse import walk

_STATEMENTS = (Block, Let, Assign, Store, For, While, If, Alloc, CompareSwap)


def _reads(e) -> set[str]:
    return {n.name for n in walk(e) if isinstance(n, Var)}


def jam_of(loop: For, factor: int, min_trips: int = 0, launch: str | None = None
           ) -> Jam | None:
    """The Jam that runs ``factor`` iterations of ``loop`` at once, or None when
    its body cannot be so copied: its control flow (inner loop bounds,
    conditions) depends on the loop variable, it allocates arrays, or it
    assigns variables declared outside it other than by summing into them
    (``r = r + e``, ``e`` not reading ``r``).

    Requires: ``factor`` >= 2.  Ensures: the Jam's ``copies`` hold the loop
    variable and every local whose value depends on it (sorted); its ``sums``
    the outer variables summed into, in the order of the body's statements.
    """
    stmts = [n for n in walk(loop.body) if isinstance(n, _STATEMENTS)]
    if any(isinstance(n, Alloc) for n in stmts):
        return None
    variant = {loop.var.name}
    changed = True
    while changed:
        changed = False
        for n in stmts:
            if isinstance(n, (Let, Assign)) and n.var.name not in variant \
                    and _reads(n.value) & variant:
                variant.add(n.var.name)
                changed = True
    for n in stmts:
        if isinstance(n, For) and (_reads(n.lo) | _reads(n.hi)) & variant:
            return None
        if isinstance(n, (While, If)) and _reads(n.cond) & variant:
            return None
    local = {n.var.name for n in stmts if isinstance(n, (Let, For))}
    sums: dict[str, Var] = {}
    for n in stmts:
        if isinstance(n, Assign) and n.var.name not in local:
            v = n.value
            if not (isinstance(v, BinOp) and v.op == "+" and isinstance(v.lhs, Var)
                    and v.lhs.name == n.var.name and n.var.name not in _reads(v.rhs)):
                return None
            sums.setdefault(n.var.name, n.var)
            variant.add(n.var.name)
    return Jam(factor, tuple(sorted(variant)), tuple(sums.values()), min_trips, launch)


__all__ = ["jam_of"]
