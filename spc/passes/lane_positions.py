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

    let m_lane = -inf;  alloc acc_row: f32[64] per lane
    for p in row i @gpu_lane:
      stage;  m_lane = max(m_lane, acc)
      for d in [0, size_d):  acc_row[d] += exp(acc - m_row) * V[j*size_d + d]
    m = max(m, warp_max(m_lane))
    for d in [0, size_d):  let t = warp_sum(acc_row[d]);  O[i*size_d + d] += t

A loop that adds into an output row (the ``d`` loop) accumulates in a
lane-private row (32 or 64 entries: the narrowest that holds it, known at
run time, so one ``if`` per width; wider rows would take more registers than
a warp can keep at useful occupancy) that the warp sums once, at the end;
its loops run over the width (``@vector``, a constant trip count the CUDA
renderer unrolls: the row stays in registers) with the entries past the
row's length skipped.  Where the row is longer than 64, an ``if`` keeps the
loop as map_gpu would map it otherwise.  The interpreter runs both
branches' loops in order (a warp sum of one lane is its value), so the
numbers are the serial loop's.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, Const, DType, For, If, Let, Load,
                        LoopKind, Stmt, Store, Var, WarpSum, sub)
from ..ir.traverse import rewrite

ROW_WIDTHS = (32, 64)   # a lane's private output row: the narrowest that holds the row,
                             # a constant, so that unrolled loops keep it in registers


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
    length = sub(row.hi, row.lo)
    versions = []
    for width in ROW_WIDTHS:
        acc = Buffer(names.fresh(f"{store.buf.name}_row{width}", acc_type).name, acc_type)
        t = names.fresh(f"{row.var.name}_t", DType.I64)
        lanes = replace(loop, kind=LoopKind.GPU_LANE, body=rewrite(
            new_body, lambda n, acc=acc, t=t, w=width: _over_row(
                n, row, t, w, length, lambda s: Store(acc, t, s.value, accumulate=True))
            if isinstance(n, For) and n.var == row.var else n))
        total = names.fresh(f"{store.buf.name}_sum", acc_type)
        write_back = _over_row(For(row.var, row.lo, row.hi, Block((
            Let(total, WarpSum(Load(acc, t))), Store(store.buf, index, total, accumulate=True)))),
            row, t, width, length, lambda s: s)
        versions.append((width, Block(tuple(before) + (Alloc(acc, width, per_lane=True), lanes)
                                      + tuple(after) + (write_back,))))
    chosen = versions[-1][1]                    # the caller's guard: length <= the widest
    for width, version in reversed(versions[:-1]):
        chosen = If(BinOp("<=", length, Const(width, DType.I64)), version, chosen)
    return chosen, BinOp("<=", length, Const(ROW_WIDTHS[-1], DType.I64))


def _over_row(loop: For, row: For, t: Var, width: int, length, store_as) -> For:
    """``loop`` (over ``row``'s range) as ``for t in [0, width) @vector: if t <
    length: let d = lo + t; ...`` with its stores replaced by ``store_as(store)``:
    a constant trip count, so a lane's row stays in registers once unrolled."""
    from .map_gpu import stmts_of
    body = tuple(store_as(s) if isinstance(s, Store) else s for s in stmts_of(loop.body))
    inner = Block((Let(row.var, BinOp("+", row.lo, t)),) + body)
    return For(t, Const(0, DType.I64), Const(width, DType.I64),
               If(BinOp("<", t, length), inner), LoopKind.VECTOR)


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
