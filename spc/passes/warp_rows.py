"""warp_rows: a row of a workspace kernel on a warp's lanes (workspaces_gpu's
compute kernel, its inserts concurrent: compare-and-swap, atomic additions).

The outermost loop around the row's inserts whose iterations are independent
(no scalar carried from one to the next, only atomic stores) goes to the lanes;
where its body is lets and one loop (SpGEMM: A's row around B's rows), the lanes
take it in groups chosen per row at run time, so that a long outer range fills
the lanes with its iterations and a short one shares each inner range among
several lanes (nsparse's sub-warp groups).  Every pair of iterations is visited
once, so the interpreter gives the same numbers.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Assign, BinOp, Block, CompareSwap, DType, For, If, Let, LoopKind, Store,
                        While, add, and_, block, i64, lt, mul, sub)
from ..ir.traverse import walk
from .map_gpu import WARP_SIZE, FreshNames, declared

I64 = DType.I64


def warp_row(row, names: FreshNames):
    """The compute row for a warp (``hashed_row(concurrent=True)``): the
    outermost loop around each insert (a compare-and-swap or an atomic
    addition) that carries no scalar from one iteration to the next and stores
    only atomically goes to the lanes, in groups (``lane_groups``) where its
    body is one loop after lets (SpGEMM's A row around B's rows), else
    lane-strided.  None when some insert has no such loop."""
    chosen: set[int] = set()

    def lane_safe(loop: For) -> bool:
        inside = declared(loop.body)
        return loop.kind is LoopKind.SERIAL and not any(
            isinstance(n, Assign) and n.var.name not in inside for n in walk(loop.body)) \
            and not any(isinstance(n, Store) and not n.atomic for n in walk(loop.body)) \
            and not any(isinstance(n, For) and n.kind is not LoopKind.SERIAL
                        for n in walk(loop.body))

    def choose(s, loops: tuple) -> bool:
        if isinstance(s, CompareSwap) or isinstance(s, Store) and s.atomic:   # an insert
            if any(id(lp) in chosen for lp in loops):
                return True
            loop = next((lp for lp in loops if lane_safe(lp)), None)
            if loop is not None:
                chosen.add(id(loop))
            return loop is not None
        if isinstance(s, Block):
            return all(choose(c, loops) for c in s.body)
        if isinstance(s, For):
            return choose(s.body, loops + (s,))
        if isinstance(s, While):
            return choose(s.body, loops)
        if isinstance(s, If):
            return choose(s.then, loops) and (s.otherwise is None or choose(s.otherwise, loops))
        return True

    if not choose(row, ()):
        return None

    def mapped(s):
        if isinstance(s, Block):
            return Block(tuple(mapped(c) for c in s.body))
        if isinstance(s, For) and id(s) in chosen:
            return lane_groups(s, names) or replace(s, kind=LoopKind.GPU_LANE)
        if isinstance(s, (For, While)):
            return replace(s, body=mapped(s.body))
        if isinstance(s, If):
            return replace(s, then=mapped(s.then),
                           otherwise=None if s.otherwise is None else mapped(s.otherwise))
        return s
    return mapped(row)


def lane_groups(outer: For, names: FreshNames):
    """``for p in [lo, hi): lets; for q in [lo2, hi2): body`` on a warp's lanes
    in groups of ``g`` (a power of two, the largest with ``g * (hi - lo) <= 32``,
    at least 1): each group takes every ``32 / g``-th ``p``, its lanes every
    ``g``-th ``q`` of that ``p``, so a long outer range fills the lanes with
    ``p``s and a short one shares each ``p``'s inner range among the lanes
    (nsparse's sub-warp groups, chosen per row).  Every pair ``(p, q)`` is
    visited once.  None when the loop is not shaped so."""
    body = outer.body.body if isinstance(outer.body, Block) else (outer.body,)
    if not body or not isinstance(body[-1], For) or body[-1].kind is not LoopKind.SERIAL \
            or not all(isinstance(c, Let) for c in body[:-1]):
        return None
    inner = body[-1]

    def var(stem):
        return names.fresh(stem, I64)
    n, g, per, t, which, lane = var("ht_n"), var("ht_g"), var("ht_per"), var("ht_t"), \
        var("ht_which"), var("ht_sub")
    pp, qq, first, m = var("ht_pp"), var("ht_qq"), var("ht_first"), var("ht_m")
    W = i64(WARP_SIZE)

    def trips(count, offset, step):      # iterations of offset, offset + step, ... below count
        return BinOp("/", add(sub(count, offset), sub(step, i64(1))), step)
    inner_walk = block(
        Let(first, inner.lo), Let(m, sub(inner.hi, first)),
        For(qq, i64(0), trips(m, lane, g),
            block(Let(inner.var, add(add(first, lane), mul(qq, g))), inner.body)))
    return block(
        Let(n, sub(outer.hi, outer.lo)),
        Let(g, W),
        While(and_(lt(i64(1), g), lt(W, mul(n, g))), Assign(g, BinOp("/", g, i64(2)))),
        Let(per, BinOp("/", W, g)),
        For(t, i64(0), W, block(
            Let(which, BinOp("/", t, g)),
            Let(lane, BinOp("&", t, sub(g, i64(1)))),
            For(pp, i64(0), trips(n, which, per), block(
                Let(outer.var, add(add(outer.lo, which), mul(pp, per))),
                *body[:-1],
                inner_walk))), LoopKind.GPU_LANE))


__all__ = ["lane_groups", "warp_row"]
