"""Producer inlining: a sampled result recomputed where it is read, never stored.

A statement whose result has the pattern of a sparse operand (SDDMM,
``S[i,j] = c * A[i,j] * Q[i,k] * K[j,k]``) stores one value per stored entry of
``A``.  When later statements of a program read it only entry by entry, as
they walk its rows, the value can be recomputed at each read instead:

    for i:                                  for i:
      for p in row i of A:                    for p in row i of S:     (S: A's pattern)
        let j = A_crd[p]                        let j = S_crd[p]
        acc = sum_k Q[i,k] * K[j,k]             ... S_vals[p] ...
        S_vals[p] = c * A_vals[p] * acc

becomes one loop per reading loop, the producer's body in front of the reader's:

    for i:
      for p in row i of A:
        let j_s = A_crd[p];  acc_s = sum_k Q[i,k] * K[j_s,k];  let S_at = c * A_vals[p] * acc_s
        let j = A_crd[p]
        ... S_at ...

The nnz-sized intermediate ``S`` is gone: the price is one recomputation per
reading loop (three for attention: the row's max, its sum, its product with
``V``).

Over a batch of heads (``S[h,i,j] = c * A[i,j] * Q[h,i,k] * K[h,j,k]``, S stored
per head as dense h, dense i, compressed j: row (h, i) holds row i of A),
``inline_batched`` does the same: each reader loop over row (h, i) of S walks
row i of A instead, the producer's statements (lowered with S dense, never
run) in front.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (BinOp, Block, Buffer, Const, DType, For, Kernel, Let, Load, Param,
                        ParamRole, Store, Var, cast_to)
from ..ir.simplify_expr import simplify_expr
from ..ir.traverse import rewrite, top_loop, walk
from .fuse_rows import NotFusable, row_entry
from .map_gpu import reads, stmts_of


class NotInlinable(NotFusable):
    """The producer or a reader does not have the shape ``inline_producer`` takes."""


def inline_sampled(producer: Kernel, reader: Kernel, result: str, pattern: str,
                   tag: str) -> Kernel:
    """``reader`` with its reads of tensor ``result`` (which ``producer`` computes
    with the pattern of tensor ``pattern``) recomputed in place, or ``reader``
    itself where it does not read ``result`` (see ``inline_producer``)."""
    outs = [p.name for p in producer.params if p.role is ParamRole.OUTPUT]
    if len(outs) != 1:
        raise NotInlinable("the producer has more than one output")
    reads = [p.name for p in reader.params if p.tensor == result]
    if not reads:
        return reader
    known = {p.name for p in producer.params if p.tensor == pattern}
    # scalars of the result's batch levels (a Batch level's ``parents``) that the
    # producer's store locates with too: they index only the values
    mine = {p.name for p in producer.params if p.tensor == result}
    scalars = {p.name for p in reader.params if p.tensor == result
               and not isinstance(p.value, Buffer) and p.name in mine}
    level_arrays = {}
    for name in reads:
        if name == outs[0] or name in scalars:
            continue
        twin = pattern + name[len(result):] if name.startswith(result) else None
        if twin not in known:
            raise NotInlinable(f"{name} has no twin among {pattern}'s arrays")
        level_arrays[name] = twin
    return inline_producer(producer, reader, outs[0], pattern, level_arrays, tag,
                           frozenset(scalars))


def inline_producer(producer: Kernel, reader: Kernel, result: str, pattern: str,
                    level_arrays: dict[str, str], tag: str,
                    batch_scalars: frozenset[str] = frozenset()) -> Kernel:
    """``reader`` with its reads of ``producer``'s result recomputed in place.

    Requires: ``producer`` is lowered (before the target's passes): lets, then
    one loop over rows whose body is lets and one loop over the positions of
    the rows of ``pattern`` (the tensor whose pattern the result takes), which
    ends in the one store of the result's values at its position (for a batch
    of the pattern, ``formats.batched``'s ``S[h,i,j]`` of ``A[i,j]``: loops from
    0 over the batch, lets then one loop each, around the rows, and the store
    at the position located from it); ``level_arrays`` maps the result's level
    arrays (``S1_pos``, ``S1_crd``) to the pattern's (``A1_pos``, ``A1_crd``),
    which hold the same numbers; ``batch_scalars`` names the result's scalars
    that only locate its values in the batch (``S2_parents``); ``result``
    names the result's values buffer.  ``reader`` reads the values only at the
    position of a loop over the result's positions that encloses the read
    (located further by the reader's own batch variables, which have the
    producer's names).
    Ensures: the same numbers as running ``producer`` then ``reader``, with
    the result's buffers gone from the reader's parameters and the producer's
    inputs added; names the producer declares get the suffix ``tag`` (its
    batch loops' variables are the reader's); else NotInlinable.
    """
    shape = top_loop(producer)
    if shape is None:
        raise NotInlinable("the producer is not one loop after its lets")
    row_lets, nest = list(shape[0]), [shape[1]]
    while True:                  # batch loops (from 0) around the rows, then the rows
        inner = stmts_of(nest[-1].body)
        if not inner or not isinstance(inner[-1], For) or \
                not all(isinstance(s, Let) for s in inner[:-1]):
            raise NotInlinable("the producer's row body is not lets then one loop")
        row_lets.extend(inner[:-1])
        if isinstance(inner[-1].lo, Load) or not batch_scalars:
            positions = inner[-1]
            break
        nest.append(inner[-1])
    rows, batch = nest[-1], nest[:-1]
    if any(loop.lo != Const(0, DType.I64) for loop in batch):
        raise NotInlinable("the producer's batch loop does not start at 0")
    body = stmts_of(positions.body)
    if not body or not isinstance(body[-1], Store) or body[-1].buf.name != result \
            or body[-1].accumulate or (not batch and body[-1].index != positions.var):
        raise NotInlinable("the producer's position loop does not end in its one store")
    if any(isinstance(n, Store) for n in walk(tuple(body[:-1]))):
        raise NotInlinable("the producer stores more than its result")
    kept = {loop.var.name for loop in batch}          # the reader's own batch variables
    declared = {s.var.name for s in row_lets} | {n.var.name for n in walk(tuple(body))
                                                 if isinstance(n, (Let, For))}

    def renamed(node):
        return rewrite(node, lambda n: Var(f"{n.name}_{tag}", n.dtype)
                       if isinstance(n, Var) and n.name in declared else n)

    row_var = rows.var

    def recompute(p: Var, i_value) -> tuple[list, Var]:
        """The producer's statements for position ``p`` of row ``i_value``, and the
        scalar holding its value there."""
        value = Var(f"{result}_{tag}", body[-1].buf.dtype.widened)
        subst = {row_var.name: i_value, positions.var.name: p}
        stmts = [renamed(s) for s in (*row_lets, *body[:-1])]
        stmts.append(Let(value, cast_to(renamed(body[-1].value), value.dtype)))   # as stored
        stmts = [rewrite(s, lambda n: subst.get(n.name, n) if isinstance(n, Var) else n)
                 for s in stmts]
        return stmts, value

    reader_rows = top_loop(reader)
    if reader_rows is None:
        raise NotInlinable("the reader is not one loop after its lets")
    rows_of_reader = reader_rows[1]
    while rows_of_reader.var.name in kept:      # the reader's batch loops around its rows
        stmts = stmts_of(rows_of_reader.body)
        if not stmts or not isinstance(stmts[-1], For) or \
                not all(isinstance(s, Let) for s in stmts[:-1]):
            raise NotInlinable("the reader's batch loop is not lets then one loop")
        rows_of_reader = stmts[-1]
    i = rows_of_reader.var
    if i.name != row_var.name:
        raise NotInlinable("the reader's rows are not the producer's")
    arrays = set(level_arrays)
    row_lets_of_reader = {s.var.name: s.value for s in stmts_of(rows_of_reader.body)
                          if isinstance(s, Let)}
    seen_loops = []

    reader_lets = {n.var.name: n.value for n in walk(reader.body) if isinstance(n, Let)}
    # the store's position in the producer's own terms (its lets substituted): the
    # batch, row and position variables, and sizes, which the reader names alike
    store_index = _resolved(body[-1].index, {n.var.name: n.value for n in walk(producer.body)
                                             if isinstance(n, Let)})

    def fn(n):
        if isinstance(n, For) and _reads(n.lo, arrays):
            if not _at_row(n.lo, i, row_lets_of_reader):
                raise NotInlinable(f"the reader walks another row of {result} than its own")
            stmts, value = recompute(n.var, i)
            # the producer's store position, at this loop's position
            at = _resolved(rewrite(store_index, lambda m: n.var if isinstance(m, Var)
                                   and m.name == positions.var.name else m), reader_lets)

            def read(m):
                if isinstance(m, Load) and m.buf.name == result and (
                        m.index == n.var or (batch and _resolved(m.index, reader_lets) == at)):
                    return value
                return m
            new_body = rewrite(n.body, read)
            seen_loops.append(n.var.name)
            return For(n.var, n.lo, n.hi, Block(tuple(stmts) + tuple(stmts_of(new_body))),
                       n.kind)
        return n

    new_reader = rewrite(reader, fn)
    for n in walk(new_reader.body):
        if isinstance(n, Load) and n.buf.name == result:
            raise NotInlinable(f"the reader reads {result} outside a loop over its positions")
    if not seen_loops:
        raise NotInlinable(f"the reader does not walk the rows of {result}")
    if batch_scalars:
        new_reader = replace(new_reader, body=_drop_dead_lets(new_reader.body, batch_scalars))
        if any(isinstance(n, Var) and n.name in batch_scalars for n in walk(new_reader.body)):
            raise NotInlinable(f"the reader locates {result}'s batch for more than its values")
    new_reader = rewrite(new_reader, lambda n: Buffer(level_arrays[n.name], n.dtype)
                         if isinstance(n, Buffer) and n.name in level_arrays else n)
    params = _params(reader, producer, result, {**level_arrays,
                                                **{s: s for s in batch_scalars}})
    return Kernel(reader.name, params, new_reader.body, reader.attrs,
                  outer_independent=reader.outer_independent,
                  rows_independent=reader.rows_independent)


def _drop_dead_lets(body, names: frozenset[str]):
    """``body`` without the lets whose value reads a variable of ``names`` and
    whose own variable nothing reads (the positions of values no longer
    loaded; loads and arithmetic only, so no result changes)."""
    while True:
        used = set(reads(body))
        dead = {n.var.name for n in walk(body) if isinstance(n, Let) and n.var.name not in used
                and any(isinstance(m, Var) and m.name in names for m in walk(n.value))}
        if not dead:
            return body
        body = rewrite(body, lambda n: Block(()) if isinstance(n, Let) and n.var.name in dead
                       else n)


def _at_row(lo, i: Var, lets: dict) -> bool:
    """Whether ``lo`` is ``pos[x]`` with ``x`` (its lets substituted) the row ``i``."""
    if not isinstance(lo, Load):
        return False
    x = rewrite(lo.index, lambda n: lets.get(n.name, n) if isinstance(n, Var) else n)
    return simplify_expr(x) == i


def _reads(e, names: set[str]) -> bool:
    return any(isinstance(n, Load) and n.buf.name in names for n in walk(e))


def _params(reader: Kernel, producer: Kernel, result: str,
            level_arrays: dict[str, str]) -> tuple[Param, ...]:
    """The reader's parameters without the result's arrays, with the producer's
    inputs and sizes (each once; buffers first, sizes last, by name)."""
    dropped = {result, *level_arrays}
    seen: dict[str, Param] = {}
    for p in reader.params + producer.params:
        if p.name in dropped or p.name in seen:
            continue
        if p.role is ParamRole.OUTPUT and p in producer.params:
            continue
        seen[p.name] = p
    bufs = sorted((p for p in seen.values() if isinstance(p.value, Buffer)), key=lambda p: p.name)
    sizes = sorted((p for p in seen.values() if not isinstance(p.value, Buffer)),
                   key=lambda p: p.name)
    return tuple(bufs) + tuple(sizes)


def inline_batched(producer: Kernel, reader: Kernel, result: str, tag: str) -> Kernel:
    """``reader`` with its reads of ``result`` recomputed in place, where
    ``result`` has a batch of a sparse operand's pattern: ``S[h,i,j] = c *
    A[i,j] * Q[h,i,k] * K[h,j,k]`` stored as (dense h, dense i, compressed j),
    row (h, i) holding the entries of row i of A in A's order (issue 12's
    attention over heads).

    Requires: ``producer`` is the statement lowered with ``result`` dense
    (what it stores is never run, only the value it computes): lets, then a
    nest of loops from 0 (h, i), each body lets and one loop, the innermost
    body lets and one loop over positions of a sparse level (its lower bound
    loaded), which ends in the one store of the result's values; nothing else
    stores.  ``reader`` reads the result only through loops over the positions
    of its row at the reader's nest entry (``S2_pos[h * size_i + i]`` to
    ``S2_pos[h * size_i + i + 1]``), with coordinates and values loaded at the
    loop's position; its nest variables have the producer's names.
    Ensures: each such loop walks the producer's positions instead, the
    producer's statements at its front, the coordinate its producer's, the
    value recomputed: the same numbers as running the assembled result and
    then ``reader``; the result's arrays leave the reader's parameters and the
    producer's inputs join them; else NotInlinable.
    """
    shape = top_loop(producer)
    if shape is None:
        raise NotInlinable("the producer is not one loop after its lets")
    row_lets, nest = list(shape[0]), [shape[1]]
    while True:
        stmts = stmts_of(nest[-1].body)
        if not stmts or not isinstance(stmts[-1], For) or \
                not all(isinstance(s, Let) for s in stmts[:-1]):
            raise NotInlinable("the producer's loops are not lets then one loop each")
        row_lets.extend(stmts[:-1])
        if isinstance(stmts[-1].lo, Load):
            positions = stmts[-1]
            break
        nest.append(stmts[-1])
    body = stmts_of(positions.body)
    out = [p.name for p in producer.params if p.role is ParamRole.OUTPUT]
    if len(out) != 1 or not body or not isinstance(body[-1], Store) \
            or body[-1].buf.name != out[0] or body[-1].accumulate:
        raise NotInlinable("the producer's position loop does not end in its one store")
    if any(isinstance(n, Store) for n in walk(tuple(body[:-1]))):
        raise NotInlinable("the producer stores more than its result")
    if any(loop.lo != Const(0, DType.I64) for loop in nest):
        raise NotInlinable("the producer's nest does not start at 0")
    declared = {s.var.name for s in row_lets} | {positions.var.name} | \
        {n.var.name for n in walk(tuple(body)) if isinstance(n, (Let, For))}
    coords = {s.var.name for s in body if isinstance(s, Let)}

    def renamed(node):
        return rewrite(node, lambda n: Var(f"{n.name}_{tag}", n.dtype)
                       if isinstance(n, Var) and n.name in declared else n)

    arrays = {p.name for p in reader.params if p.tensor == result and isinstance(p.value, Buffer)}
    values = f"{result}_vals"
    if values not in arrays:
        raise NotInlinable(f"the reader does not read {result}'s values")
    entry = row_entry(nest)
    reader_lets = {n.var.name: n.value for n in walk(reader.body) if isinstance(n, Let)}
    seen_loops = []

    def fn(n):
        if not (isinstance(n, For) and _reads(n.lo, arrays)):
            return n
        pos = n.lo.buf.name if isinstance(n.lo, Load) else None
        if pos is None or n.hi != Load(n.lo.buf, BinOp("+", n.lo.index, Const(1, DType.I64))) \
                or _resolved(n.lo.index, reader_lets) != entry:
            raise NotInlinable(f"the reader walks {result} otherwise than by its rows")
        p = n.var
        stmts = [renamed(s) for s in body[:-1]]
        value = Var(f"{result}_{tag}", body[-1].buf.dtype.widened)
        stmts.append(Let(value, cast_to(renamed(body[-1].value), value.dtype)))   # as stored
        stmts = [rewrite(s, lambda m: p if isinstance(m, Var) and m.name == f"{positions.var.name}_{tag}"
                         else m) for s in stmts]

        def read(m):
            if isinstance(m, Let) and isinstance(m.value, Load) and m.value.buf.name in arrays \
                    and m.value.buf.name not in (pos, values) and m.value.index == p:
                if m.var.name not in coords:
                    raise NotInlinable(f"the producer computes no coordinate {m.var.name}")
                return Let(m.var, Var(f"{m.var.name}_{tag}", m.var.dtype))
            if isinstance(m, Load) and m.buf.name == values and m.index == p:
                return value
            return m
        new_body = rewrite(n.body, read)
        if any(isinstance(m, Load) and m.buf.name in arrays for m in walk(new_body)):
            raise NotInlinable(f"the reader reads {result} elsewhere than at its loop's position")
        if any(isinstance(m, Var) and m.name == p.name for m in walk(new_body)):
            raise NotInlinable(f"the reader uses {result}'s position {p.name} for more than "
                               f"reading {result}")
        seen_loops.append(p.name)
        prefix = tuple(renamed(s) for s in row_lets)
        return Block(prefix + (For(p, renamed(positions.lo), renamed(positions.hi),
                                   Block(tuple(stmts) + tuple(stmts_of(new_body))), n.kind),))

    new_reader = rewrite(reader, fn)
    if any(isinstance(n, Load) and n.buf.name in arrays for n in walk(new_reader.body)):
        raise NotInlinable(f"the reader reads {result} outside a loop over its positions")
    if not seen_loops:
        return reader
    params = _params(reader, producer, out[0], {a: a for a in arrays})
    return Kernel(reader.name, params, new_reader.body, reader.attrs,
                  outer_independent=reader.outer_independent,
                  rows_independent=reader.rows_independent)


def _resolved(e, lets: dict):
    """``e`` with the lets it names substituted until none is left, simplified."""
    seen = None
    while e != seen:
        seen, e = e, rewrite(e, lambda n: lets.get(n.name, n) if isinstance(n, Var) else n)
    return simplify_expr(e)
