"""block_reductions: run short, irregular reductions as one guarded vector block.

SpMV's inner loop ``for p in [pos[i], pos[i+1]): acc = acc + A[p] * x[crd[p]]``
runs a different number of times for every row.  On graphs (a few nonzeros a
row, varying) the CPU mispredicts the loop's exit on most rows: on pubmed (4.5
nonzeros a row) that costs 3x the arithmetic.  This pass gives rows of at most
``width`` entries a loop of constant trip count, each lane guarded:

    let p_lo = lo
    let p_hi = hi
    if p_hi - p_lo <= width:
      for p_lane in [0, width) @vector:
        let p = p_lo + p_lane
        if p < p_hi:
          (the original body)
    else:
      for p in [p_lo, p_hi):
        (the original body)

The test is predictable wherever most rows are short (graphs) or most are long
(pruned layers, whose long rows keep LLVM's unrolled vector loop), and the lane
loop, a VECTOR loop, becomes one masked load of the row's coordinates and
values and one masked gather of ``x`` (AVX2, AVX-512) instead of a branch per
nonzero.  The same entries are added to the same accumulators; only the order
of the additions changes, as the vectorizer already may change it for a
reduction (``reassoc`` on accumulator updates).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Assign, BinOp, Block, DType, For, If, Kernel, Let, Load, LoopKind, Var,
                        add, i64, lt, sub)
from ..ir.traverse import walk

WIDTH = 4      # lanes of the guarded block: an xmm vector of f32 (on Zen 5, 4 beat 8 and 16:
               # pubmed 60 vs 78 vs 128 us, cora 9.9 vs 13 vs 21 us)


def _stmts(s) -> tuple:
    return s.body if isinstance(s, Block) else (s,)


def _is_reduction(loop: For, outer: set[str]) -> bool:
    """True when ``loop`` is serial, holds only Lets and accumulator updates
    ``acc = acc + e`` of variables declared outside it (``outer``), and reads
    its own variable only through its body (no nested loops, stores or ifs)."""
    if loop.kind is not LoopKind.SERIAL:
        return False
    body = _stmts(loop.body)
    updates = 0
    for s in body:
        if isinstance(s, Let):
            continue
        if not isinstance(s, Assign) or s.var.name not in outer:
            return False
        v = s.value
        if not (isinstance(v, BinOp) and v.op == "+" and v.lhs == s.var):
            return False
        if any(isinstance(n, Var) and n.name == s.var.name for n in walk(v.rhs)):
            return False
        updates += 1
    return updates > 0


def _reads_memory(e) -> bool:
    return any(isinstance(n, Load) for n in walk(e))


def _blocked(loop: For, width: int) -> Block:
    """``loop`` with its short trip counts run as one guarded block of ``width``
    lanes (see the module docstring)."""
    name = loop.var.name
    lo, hi = Var(f"{name}_lo", DType.I64), Var(f"{name}_hi", DType.I64)
    lane = Var(f"{name}_lane", DType.I64)
    guarded = Block((Let(loop.var, add(lo, lane)), If(lt(loop.var, hi), loop.body)))
    short = For(lane, i64(0), i64(width), guarded, LoopKind.VECTOR)
    long_ = replace(loop, lo=lo, hi=hi)
    return Block((Let(lo, loop.lo), Let(hi, loop.hi),
                  If(BinOp("<=", sub(hi, lo), i64(width)), short, long_)))


def _rewrite(s, outer: set[str], width: int):
    """``s`` with every matching innermost reduction loop blocked; ``outer``
    holds the variables declared before ``s`` in enclosing scopes."""
    if isinstance(s, Block):
        seen = set(outer)
        out = []
        for t in s.body:
            out.append(_rewrite(t, seen, width))
            if isinstance(t, Let):
                seen.add(t.var.name)
        return Block(tuple(out))
    if isinstance(s, For):
        if _reads_memory(s.lo) or _reads_memory(s.hi):
            if _is_reduction(s, outer):
                return _blocked(s, width)
        return replace(s, body=_rewrite(s.body, outer | {s.var.name}, width))
    if isinstance(s, If):
        return replace(s, then=_rewrite(s.then, outer, width),
                       otherwise=None if s.otherwise is None else _rewrite(s.otherwise, outer, width))
    return s


def block_reductions(kernel: Kernel, *, width: int = WIDTH) -> Kernel:
    """Block every innermost reduction loop over a data-dependent range.

    Requires: nothing (loops that do not match are left alone).
    Ensures: a serial loop whose bounds are read from memory (a compressed
    level's ``pos``; a dense range ``[0, size)`` is predictable already) and
    whose body is Lets and updates ``acc = acc + e`` of scalars declared
    outside it runs, when its trip count is at most ``width``, as ``width``
    guarded lanes of a VECTOR loop; it visits the same positions and results
    are unchanged up to the order of additions.
    """
    params = {p.name for p in kernel.params}
    return replace(kernel, body=_rewrite(kernel.body, params, width))
