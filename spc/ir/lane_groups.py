"""Which lane loops lane groups can share, and which warp loops can run flat
(``nodes.LaneGroups``, ``nodes.FlatPositions``).

One analysis shared by the passes that record them (``passes/lane_groups.py``,
``passes/flat_positions.py``), the verifier that checks a recorded one against
the loops it is on, and map_gpu (which asks ``contiguous_positions``).
"""
from __future__ import annotations

from .affine import inline, let_env, var_names
from .nodes import (Alloc, Assign, BinOp, Block, CompareSwap, Const, FlatPositions, For, If,
                    LANE_GROUP_SIZES, LaneGroups, Let, Load, LoopKind, Store, Var, While)
from .traverse import rewrite, statements, walk


def lane_groups_of(lane: For, reduction: str, sizes: tuple[int, ...] = LANE_GROUP_SIZES
                   ) -> LaneGroups | None:
    """The LaneGroups by which groups of lanes share ``lane``'s iterations and
    its loop over ``reduction``, or None when the loops are not so shaped:
    ``lane`` a ``GPU_LANE`` loop whose body holds no loop but the serial loop
    over ``reduction`` (one of its statements), which holds no stores, branches,
    loops or arrays and only sums (``r = r + e``, ``e`` not reading ``r``) into
    variables the lane body declares.

    Ensures: ``sums`` those variables in the order the loop first assigns them.
    """
    if lane.kind is not LoopKind.GPU_LANE:
        return None
    reds = [s for s in statements(lane.body) if isinstance(s, For) and s.var.name == reduction]
    inner = [n for n in walk(lane.body) if isinstance(n, (For, While, Alloc))]
    if len(reds) != 1 or inner != reds or reds[0].kind is not LoopKind.SERIAL:
        return None
    red = reds[0]
    body = [n for n in walk(red.body) if isinstance(n, (Store, If, For, While, Alloc,
                                                       CompareSwap, Let, Assign))]
    if any(isinstance(n, (Store, If, For, While, Alloc, CompareSwap)) for n in body):
        return None
    local = {n.var.name for n in body if isinstance(n, Let)} | {reduction}
    declared = {n.var.name for n in walk(lane.body) if isinstance(n, Let)}
    sums: dict[str, Var] = {}
    for n in body:
        if not isinstance(n, Assign) or n.var.name in local:
            continue
        v = n.value
        if n.var.name not in declared or not (
                isinstance(v, BinOp) and v.op == "+" and isinstance(v.lhs, Var)
                and v.lhs.name == n.var.name
                and n.var.name not in {x.name for x in walk(v.rhs) if isinstance(x, Var)}):
            return None
        sums.setdefault(n.var.name, n.var)
    if not sums:
        return None
    return LaneGroups(reduction, tuple(sums.values()), tuple(sizes))


def contiguous_positions(outer: For, inner: For) -> bool:
    """True when ``inner`` (the last statement of ``outer``'s body, after Lets)
    runs over ``[start(v), start(v + 1))`` for the outer variable ``v``, with
    ``start`` a load: consecutive outer iterations cover one contiguous range of
    positions (a compressed level's ``pos`` array), so the pairs can be
    enumerated flat, each position's outer iteration found by search."""
    env = let_env(Block(tuple(s for s in statements(outer.body) if isinstance(s, Let))))
    lo, hi = inline(inner.lo, env), inline(inner.hi, env)
    if not isinstance(lo, Load) or outer.var.name not in var_names(lo):
        return False
    v = outer.var
    shifted = rewrite(lo, lambda n: BinOp("+", v, Const(1, v.dtype))
                      if isinstance(n, Var) and n.name == v.name else n)
    return shifted == hi


def grouped_lane_loop(warp: For) -> For | None:
    """The lane loop with LaneGroups that ends ``warp``'s body, after Lets only;
    else None."""
    body = statements(warp.body)
    if not body or not isinstance(body[-1], For) or body[-1].groups is None \
            or not all(isinstance(s, Let) for s in body[:-1]):
        return None
    return body[-1]


def flat_positions_of(warp: For) -> FlatPositions | None:
    """The FlatPositions of a ``GPU_WARP`` loop whose body is Lets and a lane
    loop with LaneGroups over positions that consecutive iterations cover
    contiguously (``contiguous_positions``); else None."""
    if warp.kind is not LoopKind.GPU_WARP:
        return None
    lane = grouped_lane_loop(warp)
    if lane is None or not contiguous_positions(warp, lane):
        return None
    return FlatPositions(lane.var.name)


__all__ = ["contiguous_positions", "flat_positions_of", "grouped_lane_loop", "lane_groups_of"]
