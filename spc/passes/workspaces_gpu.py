"""workspaces_gpu: rows built in workspaces -> one GPU thread per row, each
row's workspace a hash table in the row's own slots of the output.

A kernel whose top loop builds rows in workspaces (``Kernel.workspaces``: a
SpGEMM's assemble and compute kernels, as ``ir/workspace.py`` writes them)
becomes, with the tables of ``ir/hash_rows.py``:

* assemble: ``for i @gpu_thread``: count the products the row scatters (each
  scatter becomes ``n = n + 1``; a loop that only counts becomes
  ``n = n + max(hi - lo, 0)``, so SpGEMM's count is one pass over A's row),
  and store the row's table size where the row's count was stored;
* compute: ``for i @gpu_thread``: the row's table is its slots
  ``[pos[i], pos[i + 1])`` of the output; clear it, insert each product
  (``ht_*``), then gather: compact the kept entries (the lowerer's own emit
  statements: exact zeros dropped), sort them, record the count kept.

No workspace array remains (no scratch), every row runs on its own thread, and
the rows' tables are as large as their work (at most 4x the products).  The
runtime's assembled path needs nothing new: it prefix-sums the sizes, and
packs the rows by the counts kept as it does for dropped zeros.  With
``parallel`` False (the schedule's) one thread runs every row in order.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir import hash_rows
from ..ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, CompareSwap, Const, DType, For, GpuMapping, GridMode, If,
                        Kernel, Let, Load, LoopKind, Store, Var, While, add, and_, block, i64, lt,
                        mul, sub)
from ..ir.traverse import rewrite, walk
from .map_gpu import WARP_SIZE, FreshNames, declared, reads

I64 = DType.I64
SHARED_BYTES_PER_WARP = 4096     # a warp's table in shared memory: 32 KiB per 8-warp block


def workspaces_gpu(kernel: Kernel, *, parallel: bool = True,
                   deterministic: bool = False) -> Kernel:
    """Map a workspace kernel's rows to GPU threads, its workspaces to hash
    tables in the output (see the module docstring).  ``deterministic``: no
    atomic addition (whose order changes from run to run): a thread per row.

    Requires: a verified kernel.  Ensures: kernels without workspaces (or not
    shaped as the lowerer writes them) are returned unchanged; otherwise the
    result declares no workspace, its top loop is ``@gpu_thread`` with
    ``kernel.gpu`` set (map_gpu leaves it), and the program (assemble, prefix
    sum, compute, pack) gives the same output as before.
    """
    body = kernel.body.body if isinstance(kernel.body, Block) else (kernel.body,)
    if not kernel.workspaces or not body or not isinstance(body[-1], For):
        return kernel
    allocs, loop = body[:-1], body[-1]
    if [a.buf.name for a in allocs if isinstance(a, Alloc)] != list(kernel.workspaces) \
            or len(allocs) != len(kernel.workspaces) or kernel.outer_independent is None:
        return kernel
    ws = _Workspace(allocs, loop.body, FreshNames(kernel))
    if ws.count is None:
        return kernel
    if ws.vals is None:                          # assemble: map_gpu maps the count
        row = ws.counted_row(loop.body)
        if row is None:
            return kernel
        if parallel:
            return replace(kernel, body=Block((replace(loop, body=row),)), workspaces=())
    else:
        lanes = parallel and not deterministic
        row = ws.hashed_row(loop.body, concurrent=lanes,
                            shared_bytes=SHARED_BYTES_PER_WARP if lanes else 0)
        if row is None:
            return kernel
        warp = _warp_row(row, ws.names) if lanes else None
        if warp is not None:
            return replace(kernel, body=Block((replace(loop, body=warp, kind=LoopKind.GPU_WARP),)),
                           workspaces=(), gpu=GpuMapping(GridMode.WARP))
        row = ws.hashed_row(loop.body, concurrent=False)
    if parallel:
        top, owner = For(loop.var, loop.lo, loop.hi, row, LoopKind.GPU_THREAD), loop.var.name
    else:
        one = ws.names.fresh(f"{loop.var.name}_thread", I64)
        top = For(one, i64(0), i64(1), For(loop.var, loop.lo, loop.hi, row), LoopKind.GPU_THREAD)
        owner = one.name
    return replace(kernel, body=Block((top,)), workspaces=(), outer_independent=owner,
                   gpu=GpuMapping(GridMode.THREAD))


class _Workspace:
    """One kernel's workspace arrays (``RowWorkspace``'s order: marks, coordinates,
    then sums in the compute kernel), its extent and the row's count variable
    (None when no scatter has the lowerer's shape)."""

    def __init__(self, allocs, row, names: FreshNames):
        self.mark, self.coords = allocs[0].buf, allocs[1].buf
        self.vals = allocs[2].buf if len(allocs) > 2 else None
        self.extent = allocs[0].size
        self.names = names
        self.count = next((s.then.body[-1].var for s in walk(row) if self.is_scatter(s)), None)

    def fresh(self, stem: str) -> Var:
        return self.names.fresh(stem, I64)

    def is_scatter(self, s) -> bool:
        """``if mark[j] == 0: mark[j] = 1; coords[n] = j; n = n + 1``."""
        return isinstance(s, If) and isinstance(s.cond, BinOp) and s.cond.op == "==" \
            and isinstance(s.cond.lhs, Load) and s.cond.lhs.buf == self.mark \
            and isinstance(s.then, Block) and isinstance(s.then.body[-1], Assign)

    def uses(self, s) -> bool:
        ws = {self.mark.name, self.coords.name} | ({self.vals.name} if self.vals else set())
        return any(isinstance(n, (Load, Store)) and n.buf.name in ws for n in walk(s))

    # -- assemble ------------------------------------------------------------------
    def counted_row(self, row):
        """The assemble kernel's row: count the scatters, store the table size
        where the count was stored; None when the row is not shaped so."""
        n = self.count
        stored = []

        def visit(s):
            if isinstance(s, Block):
                return _block([visit(c) for c in s.body])
            if self.is_scatter(s):
                return Assign(n, add(n, i64(1)))
            if isinstance(s, For) and isinstance(s.body, Store) and s.body.buf == self.mark:
                return None                                   # the marks' reset
            if isinstance(s, Store) and s.value == n:          # the row's count
                size = self.fresh("ht_size")
                stored.append(s)
                return block(hash_rows.table_size(n, self.extent, size, self.fresh),
                             replace(s, value=size))
            if isinstance(s, For):
                return _counting(replace(s, body=visit(s.body) or Block(())))
            if isinstance(s, If):
                return replace(s, then=visit(s.then) or Block(()),
                               otherwise=None if s.otherwise is None else visit(s.otherwise))
            if isinstance(s, While):
                return replace(s, body=visit(s.body) or Block(()))
            return s
        out = visit(row)
        return out if len(stored) == 1 and not self.uses(out) else None

    # -- compute -------------------------------------------------------------------
    def hashed_row(self, row, concurrent: bool, shared_bytes: int = 0):
        """The compute kernel's row: clear the table, insert, gather (see
        ``ir/hash_rows``); None when the row is not shaped so.  ``concurrent``:
        inserts that other iterations may run at the same time.
        ``shared_bytes``: a row whose table fits in that many bytes of keys and
        sums holds it in a shared array of the warp instead (0: never)."""
        gathers = [s for s in walk(row) if isinstance(s, If) and _is_gather(s, self)]
        if len(gathers) != 1:
            return None
        emit = _emit_of(gathers[0], self)
        if emit is None:
            return None
        jj, v, stmts, out_p = emit
        crd = next(s.buf for s in walk(Block(stmts)) if isinstance(s, Store) and s.value == jj)
        vals = next(s.buf for s in walk(Block(stmts)) if isinstance(s, Store) and s.value == v)
        start = [s for s in walk(row) if isinstance(s, Let) and s.var == out_p
                 and isinstance(s.value, Load)]
        if len(start) != 1:
            return None
        pos, parent = start[0].value.buf, start[0].value.index
        base, size, mask = self.fresh("ht_base"), self.fresh("ht_size"), self.fresh("ht_mask")
        sizes = block(Let(base, out_p), Let(size, sub(Load(pos, add(parent, i64(1))), base)),
                      Let(mask, hash_rows.slot_mask(size, self.extent)))
        lanes = LoopKind.GPU_LANE if concurrent else LoopKind.SERIAL

        def emit_at(j: Var, value: Var) -> Block:
            return _substituted(Block(stmts), {jj.name: j, v.name: value})

        def rest_of_row(rest, table, direct: bool) -> Block:
            """The row's statements after ``let out_p``, its table ``table``
            (keys, sums, first slot); ``direct``: a table of the whole index
            that keeps no keys (the sums alone: zeros are dropped anyway)."""
            keys, sums, first = table
            in_output = sums is vals

            def visit(s):
                if isinstance(s, Block):
                    return _block([visit(c) for c in s.body])
                if isinstance(s, Let) and s.var == self.count:
                    return None
                if self.is_scatter(s):
                    return None
                if isinstance(s, Store) and s.buf == self.vals and s.accumulate:
                    if direct:
                        return hash_rows.add_direct(sums, first, s.index, s.value, concurrent)
                    return hash_rows.insert(keys, sums, first, mask, s.index, s.value,
                                            self.fresh, concurrent)
                if s is gathers[0]:
                    if direct:
                        gather = hash_rows.gather_direct(sums, first, size, emit_at, self.fresh)
                    elif concurrent and _drops_zeros(stmts, v):   # its lanes count and sort
                        return hash_rows.gather_on_lanes(crd, vals, base, size, self.extent,
                                                         out_p, emit_at, self.fresh,
                                                         None if in_output else table)
                    else:
                        gather = hash_rows.gather(crd, vals, base, size, self.extent, out_p,
                                                  emit_at, self.fresh,
                                                  None if in_output else table)
                    if concurrent:               # lane 0 gathers what the lanes inserted
                        return For(self.fresh("ht_lane"), i64(0), i64(1), gather,
                                   LoopKind.GPU_LANE)
                    return gather
                if isinstance(s, For):
                    return replace(s, body=visit(s.body) or Block(()))
                if isinstance(s, If):
                    return replace(s, then=visit(s.then) or Block(()),
                                   otherwise=None if s.otherwise is None else visit(s.otherwise))
                if isinstance(s, While):
                    return replace(s, body=visit(s.body) or Block(()))
                return s
            clear = hash_rows.clear_sums(sums, first, size, self.fresh, lanes) if direct else \
                hash_rows.clear_table(keys, sums, first, size, self.fresh, lanes)
            return _block([clear, *(visit(c) for c in rest)])

        slots = _shared_slots(shared_bytes, crd, vals)
        keys = Buffer(self.fresh("ht_keys").name, crd.dtype)     # the warp's shared table
        sums = Buffer(self.fresh("ht_sums").name, vals.dtype)

        def placed(rest, direct: bool) -> Stmt:
            """The row's table in the warp's shared memory where it fits, else in
            the output's slots."""
            in_output = rest_of_row(rest, (crd, vals, base), direct)
            if not slots:
                return in_output
            in_shared = rest_of_row(rest, (keys, sums, i64(0)), direct)
            return If(BinOp("<=", size, i64(slots)), in_shared, in_output)

        def visit_top(s):
            if not isinstance(s, Block):
                return s
            out = []
            for k, c in enumerate(s.body):
                if c is start[0]:
                    rest = s.body[k + 1:]
                    tail = placed(rest, direct=False)
                    if _drops_zeros(stmts, v):
                        tail = If(BinOp("==", size, self.extent), placed(rest, direct=True), tail)
                    shared = (Alloc(keys, slots, shared=True), Alloc(sums, slots, shared=True)) \
                        if slots else ()
                    return _block([*out, c, sizes, *shared, tail])
                out.append(visit_top(c))
            return Block(tuple(out))
        out = visit_top(row)
        return out if not self.uses(out) and any(s is not None and _declares(s, base)
                                                 for s in walk(out)) else None


def _drops_zeros(emit: tuple, v: Var) -> bool:
    """Whether the gather's emit statements are ``if v != 0: ...`` (an exact
    zero sum is not stored), so that a slot no product reached needs no key."""
    return len(emit) == 1 and isinstance(emit[0], If) and emit[0].otherwise is None \
        and emit[0].cond == BinOp("!=", v, Const(0.0, v.dtype))


def _declares(s, var: Var) -> bool:
    return isinstance(s, Let) and s.var == var


def _shared_slots(shared_bytes: int, crd: Buffer, vals: Buffer) -> int:
    """The largest power of two of table slots (a key and a sum each) that
    fits in ``shared_bytes``; 0 below 32 slots (not worth a second path)."""
    slots = shared_bytes // (crd.dtype.nbytes + vals.dtype.nbytes) if shared_bytes else 0
    slots = 1 << (slots.bit_length() - 1) if slots else 0
    return slots if slots >= 32 else 0


def _warp_row(row, names: FreshNames):
    """The compute row for a warp (``hashed_row(concurrent=True)``): the
    outermost loop around each insert (a compare-and-swap or an atomic
    addition) that carries no scalar from one iteration to the next and stores
    only atomically goes to the lanes, in groups (``_lane_groups``) where its
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
            return _lane_groups(s, names) or replace(s, kind=LoopKind.GPU_LANE)
        if isinstance(s, (For, While)):
            return replace(s, body=mapped(s.body))
        if isinstance(s, If):
            return replace(s, then=mapped(s.then),
                           otherwise=None if s.otherwise is None else mapped(s.otherwise))
        return s
    return mapped(row)


def _lane_groups(outer: For, names: FreshNames):
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


def _is_gather(s: If, ws: _Workspace) -> bool:
    """The gather ``RowWorkspace.gather_row`` writes: ``if size <= count * 32:
    scan ... else: sort ...``."""
    return isinstance(s.cond, BinOp) and s.cond.op == "<=" and s.cond.lhs == ws.extent \
        and ws.count is not None and ws.count in walk(s.cond.rhs) and ws.uses(s)


def _emit_of(gather: If, ws: _Workspace):
    """``(j, v, emit statements, out_p)`` of the gather's scan branch: ``for j:
    if mark[j] != 0: let v = vals[j]; <emit>; vals[j] = 0; mark[j] = 0``, or None."""
    scan = gather.then
    if not (isinstance(scan, For) and isinstance(scan.body, If)
            and isinstance(scan.body.then, Block)):
        return None
    visit = scan.body.then.body
    if len(visit) < 4 or not isinstance(visit[0], Let):
        return None
    stmts = visit[1:-2]
    if ws.uses(Block(stmts)):
        return None
    out_p = next((s.var for s in walk(Block(stmts)) if isinstance(s, Assign)), None)
    return (scan.var, visit[0].var, stmts, out_p) if out_p is not None else None


def _substituted(s, names: dict):
    return rewrite(s, lambda n: names.get(n.name, n) if isinstance(n, Var) else n)


def _block(stmts) -> Block:
    return block(*(s for s in stmts if s is not None))


def _counting(loop: For):
    """``n = n + max(hi - lo, 0)`` for a loop whose body only counts (``n = n +
    1``, after Lets nothing reads); else the loop."""
    body = list(loop.body.body if isinstance(loop.body, Block) else (loop.body,))
    while True:
        used = set(reads(Block(tuple(body))))
        keep = [s for s in body if not (isinstance(s, Let) and s.var.name not in used)]
        if len(keep) == len(body):
            break
        body = keep
    if len(body) == 1 and isinstance(body[0], Assign) and body[0].value == add(body[0].var, i64(1)):
        n = body[0].var
        return Assign(n, add(n, BinOp("max", sub(loop.hi, loop.lo), i64(0))))
    return loop


__all__ = ["SHARED_BYTES_PER_WARP", "workspaces_gpu"]
