"""Positions on lanes: a row's nonzeros spread over a warp when each one's work holds a loop.

map_gpu gives a warp's lanes to the innermost loop it can.  In a fused
program the loop over a row's positions carries a *stage*, a small loop of
its own whose result the rest of the iteration uses (attention's score, a dot
product over ``k``):

    for p in row i:                          (serial: the warp walks the row)
      let acc = 0;  for k: acc = acc + Q[i,k] * K[j,k]     (the stage)
      m = max(m, acc)                        (a reduction into the row)
      for d in [0, size_d):  O[i*size_d + d] += exp(acc - m_row) * V[j*size_d + d]

With lanes on the innermost loops (``k``, ``d``), every position costs a warp
sum whose latency nothing hides.  Here the positions go to the lanes instead,
each lane running its positions' stages serially:

    let m_lane = -inf;  alloc acc_row: f32[128]      (each lane its own)
    for p in row i @gpu_lane:
      stage;  m_lane = max(m_lane, acc)
      for d in [0, size_d):  acc_row[d] += exp(acc - m_row) * V[j*size_d + d]
    m = max(m, warp_max(m_lane))
    for d in [0, size_d):  let t = warp_sum(acc_row[d]);  O[i*size_d + d] += t

A loop that adds into an output row (the ``d`` loop) accumulates in a
lane-private row of ``LANE_ROW`` entries that the warp sums once, at the end;
where the row is longer than that (known only at run time), an ``if`` keeps
the loop as map_gpu would map it otherwise.  The interpreter runs both
branches' loops in order (a warp sum of one lane is its value), so the
numbers are the serial loop's.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, Const, DType, For, If, Let, Load,
                        LoopKind, Stmt, Store, Var, WarpSum, sub)
from ..ir.traverse import rewrite

LANE_ROW = 128          # entries of a lane's private output row (registers / local memory)


def positions_to_lanes(loop: For, ctx) -> tuple[Stmt, object] | None:
    """``(statement, guard)``: ``loop`` (a serial loop in a warp's body) with its
    iterations on lanes as the module docstring shows, to run where ``guard``
    holds (None: always; else the caller maps ``loop`` its own way for the
    other case); or None where ``loop`` has another shape.

    Requires: ``ctx`` is map_gpu's context (``names``, ``params``, ``sizes``).
    Applies where: the body's statements are lets, assignments, at least one
    stage loop (serial, lets and assignments only, assigning only names the
    body declares) and at most one row loop (over a range of sizes only,
    lets and one store: accumulating, non-atomic, float, to a parameter the
    body does not read, at an index that reads the row loop's variable and
    nothing else the body declares); every variable declared outside that the
    body assigns is a reduction (``reductions_of``).
    """
    from .map_gpu import (_identity, _only_sizes, all_stmts, declared, inline, let_env,
                          loaded_buffers, reductions_of, stmts_of, var_names)
    if loop.kind is not LoopKind.SERIAL:
        return None
    body = stmts_of(loop.body)
    local = declared(loop.body) | {loop.var.name}
    stages, rows = [], []
    for s in body:
        if isinstance(s, For):
            (stages if _is_stage(s, local, all_stmts) else rows).append(s)
        elif not isinstance(s, (Let, Assign)):
            return None
    if not stages or len(rows) > 1:
        return None
    reductions = reductions_of(loop)
    if reductions is None:
        return None
    row = rows[0] if rows else None
    if row is not None:
        parts = stmts_of(row.body)
        if not all(isinstance(s, Let) for s in parts[:-1]) or not isinstance(parts[-1], Store) \
                or row.kind is not LoopKind.SERIAL \
                or not _only_sizes(row.lo, ctx.sizes) or not _only_sizes(row.hi, ctx.sizes):
            return None
        store = parts[-1]
        if not store.accumulate or store.atomic or not store.buf.dtype.is_float \
                or store.buf.name not in ctx.params \
                or store.buf.name in loaded_buffers(loop.body):
            return None
        index = inline(store.index, let_env(loop.body))
        if var_names(index) & (local - {row.var.name}) or row.var.name not in var_names(index):
            return None
    names = ctx.names
    before, after, renames = [], [], {}
    for r, op in reductions:
        part = names.fresh(f"{r.name}_lane", r.dtype)
        renames[r.name] = part
        before.append(Let(part, _identity(op, r.dtype)))
        after.append(Assign(r, BinOp(op, r, WarpSum(part, op))))
    new_body = rewrite(loop.body, lambda n: renames.get(n.name, n) if isinstance(n, Var) else n)
    if row is None:
        lanes = replace(loop, body=new_body, kind=LoopKind.GPU_LANE)
        return Block(tuple(before) + (lanes,) + tuple(after)), None
    acc_type = store.buf.dtype.widened          # a lane's row sums in the values' widened type
    acc = Buffer(names.fresh(f"{store.buf.name}_lane_row", acc_type).name, acc_type)
    offset = sub(row.var, row.lo)
    lanes = replace(loop, kind=LoopKind.GPU_LANE, body=rewrite(
        new_body, lambda n: Store(acc, offset, n.value, accumulate=True)
        if isinstance(n, Store) and n.buf == store.buf else n))
    total = names.fresh(f"{store.buf.name}_sum", acc_type)
    write_back = For(row.var, row.lo, row.hi, Block((
        Let(total, WarpSum(Load(acc, offset))),
        Store(store.buf, index, total, accumulate=True))))
    fast = Block(tuple(before) + (Alloc(acc, LANE_ROW, per_lane=True), lanes) + tuple(after) + (write_back,))
    return fast, BinOp("<=", sub(row.hi, row.lo), Const(LANE_ROW, DType.I64))


def _is_stage(loop: For, local: set[str], all_stmts) -> bool:
    """Whether ``loop`` is a stage: serial, lets and assignments only, assigning
    only names of ``local`` (the enclosing position loop's own)."""
    if loop.kind is not LoopKind.SERIAL:
        return False
    for n in all_stmts(loop.body):
        if isinstance(n, (Store, For, If, Alloc)):
            return False
        if isinstance(n, Assign) and n.var.name not in local:
            return False
    return True
