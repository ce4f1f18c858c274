"""A row's hash table in the row's own slots of a compressed output (GPU SpGEMM).

Each row of an assembled output built in a workspace (``ir/workspace.py``)
gets ``table_size(bound)`` slots of the output's ``crd`` and ``vals``
arrays, where ``bound`` is the number of products the row scatters (an upper
bound of its entries: ``flops(i)``, the sum of the lengths of B's rows that
A's row i selects, for SpGEMM).  The assemble kernel stores that size where
it stored the row's count; the runtime prefix-sums it into ``pos`` as before,
so ``[pos[i], pos[i + 1])`` is row i's table.  The compute kernel then

* clears its table (``crd`` = ``EMPTY``, ``vals`` = 0: ``clear_table``),
* inserts each product by open addressing with linear probing on the key
  (``insert``: slot ``j & (size - 1)``, then the next ones),
* compacts the occupied slots to the front of the table, dropping what the
  lowerer's gather drops, sorts them by key, values alongside (``gather``),
  and records how many it kept (the runtime packs the rows, as it does for
  the dropped zeros).

A table is the first power of two at or above ``2 * bound`` when that is
below the index's extent (a *hashed* table: slot ``j & (size - 1)``, the
second half of the table the merge sort's other buffer), else the extent
itself (a *direct* table: slot ``j``, so no two keys meet and the slots are
already in key order: no sort).  ``slot_mask`` gives ``size - 1`` or, for a
direct table, -1 (all bits: ``j & -1`` is ``j``).  No row's table is larger
than the index's extent, so the tables of all rows together take no more
slots than the dense output would: the index type that holds the output's
positions holds the tables'.
"""
from __future__ import annotations

from typing import Callable

from .nodes import (Assign, BinOp, Buffer, CompareSwap, Const, Expr, For, If, Let, Load, LoopKind,
                    Select,
                    Stmt, Store, Var, While, add, and_, block, i64, lt, mul, sub)
from .workspace import INSERTION_MAX, insertion_sort, merge_sort

EMPTY = -1          # the key of an empty slot (no coordinate is negative)

Fresh = Callable[[str], Var]


def table_size(bound: Expr, extent: Expr, size: Var, fresh: Fresh) -> Stmt:
    """``let size = `` the table size of a row that scatters ``bound``
    products into an index of ``extent`` coordinates (0 for no products)."""
    want = fresh("ht_want")
    return block(
        Let(want, mul(bound, i64(2))),
        Let(size, i64(1)),
        While(and_(lt(size, want), lt(size, extent)), Assign(size, mul(size, i64(2)))),
        If(BinOp("<=", extent, size), Assign(size, extent)),
        If(BinOp("==", bound, i64(0)), Assign(size, i64(0))))


def clear_sums(vals: Buffer, base: Expr, size: Expr, fresh: Fresh,
               kind: LoopKind = LoopKind.SERIAL) -> Stmt:
    """Every sum of the direct table at ``base`` zero (a loop of ``kind``)."""
    s = fresh("ht_s")
    return For(s, i64(0), size, Store(vals, add(base, s), Const(0.0, vals.dtype.widened)), kind)


def add_direct(vals: Buffer, base: Expr, j: Expr, value: Expr, concurrent: bool) -> Stmt:
    """``vals[base + j] += value`` in a direct table that keeps no keys (atomic
    when other iterations may add at the same time)."""
    return Store(vals, add(base, j), value, accumulate=True, atomic=concurrent)


def gather_direct(sums: Buffer, first: Expr, size: Expr, emit: Callable[[Var, Var], Stmt],
                  fresh: Fresh) -> Stmt:
    """``emit(j, v)`` for every slot ``j`` of a direct table without keys, in
    order, ``v`` its sum: the emit drops the zeros, and a slot no product
    reached is zero (``emit`` may write the output in place: it never passes
    the slot read)."""
    s, v = fresh("ht_s"), Var(fresh("ht_v").name, sums.dtype.widened)
    return For(s, i64(0), size, block(Let(v, Load(sums, add(first, s))), emit(s, v)))


def slot_mask(size: Expr, extent: Expr) -> Expr:
    """The mask that makes a key its first slot: ``size - 1`` for a hashed
    table, -1 for a direct one (``size`` equal to ``extent``)."""
    return Select(lt(size, extent), sub(size, i64(1)), i64(-1))


def clear_table(crd: Buffer, vals: Buffer, base: Expr, size: Expr, fresh: Fresh,
                kind: LoopKind = LoopKind.SERIAL) -> Stmt:
    """Every slot of the table at ``base`` empty, its value zero (a loop of
    ``kind`` over the slots)."""
    s = fresh("ht_s")
    return For(s, i64(0), size, block(Store(crd, add(base, s), i64(EMPTY)),
                                      Store(vals, add(base, s), Const(0.0, vals.dtype.widened))),
               kind)


def insert(crd: Buffer, vals: Buffer, base: Expr, mask: Expr, j: Expr, value: Expr,
           fresh: Fresh, concurrent: bool = False) -> Stmt:
    """``vals[slot of j] += value`` in the table at ``base`` of ``mask + 1``
    slots, claiming an empty slot for ``j`` if it has none.  Requires: the
    table holds fewer than ``mask + 1`` keys, or ``j`` already.

    ``concurrent``: other iterations may insert into the table at the same
    time: a slot is claimed by compare-and-swap (a lost race shows the key
    that won, which the probe then compares as if it had read it) and the
    value added atomically.  A plain load that finds a slot empty may be
    stale, never wrong otherwise (a slot changes once, from empty)."""
    h, key = fresh("ht_h"), fresh("ht_key")
    at = add(base, h)
    if concurrent:
        old = fresh("ht_old")
        claim = If(BinOp("==", key, i64(EMPTY)), block(
            CompareSwap(old, crd, at, i64(EMPTY), j),
            Assign(key, Select(BinOp("==", old, i64(EMPTY)), j, old))))
        step = If(BinOp("!=", key, j), block(
            Assign(h, BinOp("&", add(h, i64(1)), mask)),
            Assign(key, Load(crd, at))))
        return block(
            Let(h, BinOp("&", j, mask)),
            Let(key, Load(crd, at)),
            While(BinOp("!=", key, j), block(claim, step)),
            Store(vals, at, value, accumulate=True, atomic=True))
    return block(
        Let(h, BinOp("&", j, mask)),
        Let(key, Load(crd, at)),
        While(and_(BinOp("!=", key, j), BinOp("!=", key, i64(EMPTY))), block(
            Assign(h, BinOp("&", add(h, i64(1)), mask)),
            Assign(key, Load(crd, at)))),
        If(BinOp("==", key, i64(EMPTY)), Store(crd, at, j)),
        Store(vals, at, value, accumulate=True))


def gather(crd: Buffer, vals: Buffer, base: Expr, size: Expr, extent: Expr, out_p: Var,
           emit: Callable[[Var, Var], Stmt], fresh: Fresh,
           table: tuple[Buffer, Buffer, Expr] | None = None) -> Stmt:
    """``emit(j, v)`` for each occupied slot in slot order, ``out_p`` starting
    at ``base`` (emit writes ``crd[out_p]``, ``vals[out_p]`` and advances it:
    in place, never past the slot read); then the entries ``[base, out_p)``
    sorted by key, values alongside.  ``table``: the keys, values and first
    slot of a table held elsewhere than the output's slots (shared memory);
    the entries are still emitted into, and sorted in, the output's.
    Requires: the table's sizes as ``table_size`` gives them (see the module
    docstring)."""
    keys, sums, first = table if table is not None else (crd, vals, base)
    s, j, v = fresh("ht_s"), fresh("ht_j"), Var(fresh("ht_v").name, sums.dtype.widened)
    kept, off, q = fresh("ht_kept"), fresh("ht_off"), fresh("ht_q")
    compact = For(s, i64(0), size, block(
        Let(j, Load(keys, add(first, s))),
        If(BinOp("!=", j, i64(EMPTY)), block(Let(v, Load(sums, add(first, s))), emit(j, v)))))
    back = If(BinOp("!=", off, base), For(q, i64(0), kept, block(
        Store(crd, add(base, q), Load(crd, add(off, q))),
        Store(vals, add(base, q), Load(vals, add(off, q))))))
    sort = If(BinOp("<=", kept, i64(INSERTION_MAX)),
              insertion_sort(crd, kept, fresh, start=base, carry=(vals,)),
              block(Let(off, base),
                    merge_sort(crd, kept, kept, off, fresh, start=base, carry=(vals,)),
                    back))
    return block(compact, Let(kept, sub(out_p, base)), If(lt(size, extent), sort))


__all__ = ["EMPTY", "add_direct", "clear_sums", "clear_table", "gather", "gather_direct",
           "insert", "slot_mask", "table_size"]
