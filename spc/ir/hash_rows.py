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

from .nodes import (Assign, BinOp, Buffer, CompareSwap, Const, DType, Expr, For, If, Let, Load,
                    LoopKind, Select, WarpSum,
                    Stmt, Store, Var, While, add, and_, block, i64, lt, mul, sub)
from .workspace import INSERTION_MAX, insertion_sort, merge_runs, merge_sort

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


__all__ = ["EMPTY", "add_direct", "clear_sums", "clear_table", "compact_on_lanes", "gather",
           "gather_direct", "gather_direct_on_lanes", "gather_hashed_on_lanes", "insert",
           "lane_merge_sort", "slot_mask", "table_size"]


def lane_merge_sort(buf: Buffer, n: Expr, start: Expr, fresh, carry: tuple[Buffer, ...] = ()
                    ) -> Stmt:
    """Sort ``buf[start, start + n)`` ascending (unique keys), ``carry``'s
    entries moved alongside, by a bottom-up merge sort whose merges of a pass
    run on a warp's lanes (``@gpu_lane`` over the merges: the first passes
    spread ``n / 2w`` merges over the lanes, the last is one lane's), with
    ``buf[start + n, start + 2n)`` as the other buffer; the result ends in
    ``[start, start + n)``.  Every lane runs the passes alike."""
    src, dst, w, t = fresh("srt_src"), fresh("srt_dst"), fresh("srt_w"), fresh("srt_t")
    m, p, mid, hi = fresh("srt_m"), fresh("srt_p"), fresh("srt_mid"), fresh("srt_hi")
    a, b, o, x, y = fresh("srt_a"), fresh("srt_b"), fresh("srt_o"), fresh("srt_x"), fresh("srt_y")
    q = fresh("srt_q")
    from_b = Var(fresh("srt_fromb").name, DType.BOOL)
    width = mul(w, i64(2))

    merge = block(
        Let(p, mul(m, width)),
        Let(mid, BinOp("min", add(p, w), n)),
        Let(hi, BinOp("min", add(p, width), n)),
        *merge_runs(buf, carry, src, dst, p, mid, hi, (a, b, o, x, y, from_b)))
    merges = BinOp("/", add(n, sub(width, i64(1))), width)
    back = If(BinOp("!=", src, start), For(q, i64(0), n, block(
        Store(buf, add(start, q), Load(buf, add(src, q))),
        *(Store(c, add(start, q), Load(c, add(src, q))) for c in carry)), LoopKind.GPU_LANE))
    return block(
        Let(src, start), Let(dst, add(start, n)), Let(w, i64(1)),
        While(lt(w, n), block(
            For(m, i64(0), merges, merge, LoopKind.GPU_LANE),
            Let(t, src), Assign(src, dst), Assign(dst, t),
            Assign(w, width))),
        back)


def gather_direct_on_lanes(crd: Buffer, vals: Buffer, base: Expr, size: Expr, out_p: Var,
                           fresh: Fresh, counts: Buffer, window: Buffer,
                           table: tuple[Buffer, Expr] | None = None) -> Stmt:
    """The nonzero sums of a direct table without keys written to the row's
    output slots from ``base`` in slot order, as ``gather_direct`` with the
    emit ``if v != 0: crd[out_p] = j; vals[out_p] = v; out_p += 1`` would, by a
    warp's lanes: each lane counts the nonzeros of its run of ``size / 32``
    slots into ``counts`` (a shared array of 32), then writes their slots to
    ``crd`` from its offset (the counts before its own); the values follow in
    windows of 32 (all the window's reads, a warp sync, then its writes: a kept
    entry's slot is never below its place, so a window reads nothing an
    earlier one wrote), through ``window`` (a shared array of 32).  ``table``:
    the sums and first slot of a table outside the output (shared memory),
    whose values move in one pass.  ``out_p`` ends past the last."""
    chunk, mine, kept = fresh("ht_chunk"), fresh("ht_mine"), fresh("ht_kept")
    lane, lo, hi, c, s = fresh("ht_l"), fresh("ht_lo"), fresh("ht_hi"), fresh("ht_c"), fresh("ht_s")
    lane2, o, r, s2 = fresh("ht_l"), fresh("ht_o"), fresh("ht_r"), fresh("ht_s")
    sums, first = table if table is not None else (vals, base)
    zero = Const(0.0, sums.dtype.widened)
    W = i64(32)

    def run(of: Var) -> tuple[Expr, Expr]:      # lane ``of``'s slots
        start = mul(of, chunk)
        return start, BinOp("min", add(start, chunk), size)
    count = block(
        Let(chunk, BinOp("/", add(size, i64(31)), W)),
        Let(mine, i64(0)),
        For(lane, i64(0), W, block(
            Let(lo, run(lane)[0]), Let(hi, run(lane)[1]), Let(c, i64(0)),
            For(s, lo, hi, If(BinOp("!=", Load(sums, add(first, s)), zero),
                              Assign(c, add(c, i64(1))))),
            Store(counts, lane, c),
            Assign(mine, add(mine, c))), LoopKind.GPU_LANE),
        Let(kept, WarpSum(mine)))
    lo2, hi2 = run(lane2)
    place = For(lane2, i64(0), W, block(
        Let(o, base),
        For(r, i64(0), lane2, Assign(o, add(o, Load(counts, r)))),
        For(s2, lo2, hi2, If(BinOp("!=", Load(sums, add(first, s2)), zero), block(
            Store(crd, o, s2), Assign(o, add(o, i64(1))))))), LoopKind.GPU_LANE)
    if table is not None:
        q = fresh("ht_q")
        move = For(q, i64(0), kept, Store(vals, add(base, q),
                                          Load(sums, add(first, Load(crd, add(base, q))))),
                   LoopKind.GPU_LANE)
    else:
        w, l1, l2, q1, q2 = fresh("ht_w"), fresh("ht_l"), fresh("ht_l"), fresh("ht_q"), \
            fresh("ht_q")
        move = For(w, i64(0), BinOp("/", add(kept, i64(31)), W), block(
            For(l1, i64(0), W, block(
                Let(q1, add(mul(w, W), l1)),
                If(lt(q1, kept), Store(window, l1,
                                       Load(vals, add(base, Load(crd, add(base, q1))))))),
                LoopKind.GPU_LANE),
            For(l2, i64(0), W, block(
                Let(q2, add(mul(w, W), l2)),
                If(lt(q2, kept), Store(vals, add(base, q2), Load(window, l2)))),
                LoopKind.GPU_LANE)))
    return block(count, place, move, Assign(out_p, add(base, kept)))


def compact_on_lanes(crd: Buffer, vals: Buffer, base: Expr, size: Expr, out_p: Var,
                     fresh: Fresh, counts: Buffer, window_keys: Buffer, window: Buffer,
                     table: tuple[Buffer, Buffer, Expr] | None = None) -> Stmt:
    """The occupied slots of a hashed table whose sums are nonzero, moved to
    the row's output slots from ``base`` in slot order, as ``gather``'s
    compaction with the emit ``if v != 0: crd[out_p] = j; vals[out_p] = v;
    out_p += 1`` would, by a warp's lanes, 32 slots at a time: each lane reads
    its slot into the shared ``window_keys``, ``window`` and ``counts`` (1 to
    keep), a warp sum gives the window's total, then each kept entry goes to
    ``out_p`` plus the count kept before it in the window.  Every read of a
    window comes before its writes (a warp sync), and an entry never moves up,
    so the table may be the output's own slots.  ``table``: keys, sums and
    first slot of a table outside the output.  ``out_p`` ends past the last."""
    keys, sums, first = table if table is not None else (crd, vals, base)
    w, l1, l2, s, key, v = fresh("ht_w"), fresh("ht_l"), fresh("ht_l"), fresh("ht_s"), \
        fresh("ht_key"), Var(fresh("ht_v").name, sums.dtype.widened)
    keep, mine, total, at, r = fresh("ht_keep"), fresh("ht_mine"), fresh("ht_total"), \
        fresh("ht_at"), fresh("ht_r")
    W = i64(32)
    read = For(l1, i64(0), W, block(
        Let(s, add(mul(w, W), l1)),
        Let(keep, i64(0)),
        If(lt(s, size), block(
            Let(key, Load(keys, add(first, s))),
            Let(v, Load(sums, add(first, s))),
            If(and_(BinOp("!=", key, i64(EMPTY)), BinOp("!=", v, Const(0.0, v.dtype))),
               block(Assign(keep, i64(1)), Store(window_keys, l1, key), Store(window, l1, v))))),
        Store(counts, l1, keep),
        Assign(mine, add(mine, keep))), LoopKind.GPU_LANE)
    write = For(l2, i64(0), W, If(BinOp("!=", Load(counts, l2), i64(0)), block(
        Let(at, out_p),
        For(r, i64(0), l2, Assign(at, add(at, Load(counts, r)))),
        Store(crd, at, Load(window_keys, l2)),
        Store(vals, at, Load(window, l2)))), LoopKind.GPU_LANE)
    return For(w, i64(0), BinOp("/", add(size, i64(31)), W), block(
        Let(mine, i64(0)), read, Let(total, WarpSum(mine)), write,
        Assign(out_p, add(out_p, total))))


def gather_hashed_on_lanes(crd: Buffer, vals: Buffer, base: Expr, size: Expr, extent: Expr,
                           out_p: Var, fresh: Fresh, counts: Buffer, window_keys: Buffer,
                           window: Buffer, table: tuple[Buffer, Buffer, Expr] | None = None
                           ) -> Stmt:
    """``compact_on_lanes``, then the lanes sort a hashed table's entries
    (``lane_merge_sort``; lane 0's insertion sort for 16 or fewer)."""
    kept = fresh("ht_kept")
    sort = If(BinOp("<=", kept, i64(INSERTION_MAX)),
              For(fresh("ht_lane"), i64(0), i64(1),
                  insertion_sort(crd, kept, fresh, start=base, carry=(vals,)), LoopKind.GPU_LANE),
              lane_merge_sort(crd, kept, base, fresh, carry=(vals,)))
    return block(compact_on_lanes(crd, vals, base, size, out_p, fresh, counts, window_keys,
                                  window, table),
                 Let(kept, sub(out_p, base)), If(lt(size, extent), sort))
