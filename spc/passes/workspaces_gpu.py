"""workspaces_gpu: rows built in workspaces -> a warp per row, each row's
workspace a table sized by the row's products, in the warp's shared memory or
in the row's own slots of the output.

A kernel whose top loop builds rows in workspaces (``Kernel.workspaces``: a
SpGEMM's assemble and compute kernels, as ``ir/workspace.py`` writes them)
becomes, with the tables of ``ir/hash_rows.py``:

* assemble: count the products the row scatters (each scatter becomes
  ``n = n + 1``; a loop that only counts becomes ``n = n + max(hi - lo, 0)``,
  so SpGEMM's count is one pass over A's row), and store the row's table size
  where the row's count was stored (map_gpu then gives it a warp per row);
* compute, ``for i @gpu_warp``: the row's table is its output slots
  ``[pos[i], pos[i + 1])``, or a shared array of the warp when it fits
  ``SHARED_BYTES_PER_WARP``; a *direct* table (the whole index) keeps sums
  only, a *hashed* one keys too, claimed by compare-and-swap.  The lanes clear
  it, insert each product (``passes/warp_rows.py`` picks the loop and the lane
  groups), count what to keep; lane 0 compacts through the lowerer's own emit
  statements (exact zeros dropped) and the lanes sort a hashed row
  (``hash_rows.lane_merge_sort``); the count kept goes to ``<C>1_nnz``.

No workspace array remains (no scratch), and the rows' output slots are as
many as their work (at most 4x the products, never more than the dense row).
The runtime's assembled path needs nothing new: it prefix-sums the sizes, and
packs the rows by the counts kept as it does for dropped zeros.  With
``deterministic`` (no atomics) a thread runs each row, tables in the output;
with ``parallel`` False one thread runs every row in order.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir import hash_rows
from ..ir.workspace import is_gather, is_mark_reset, is_scatter
from ..ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, Const, DType, For, GpuMapping,
                        GridMode, If, Kernel, Let, Load, LoopKind, Stmt, Store, Var, While, add,
                        block, i64, sub)
from ..ir.traverse import rewrite, walk
from .map_gpu import FreshNames, reads
from .map_gpu import WARP_SIZE
from .warp_rows import warp_row

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
        warp = warp_row(row, ws.names) if lanes else None
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
        return is_scatter(s, self.mark)

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
            if is_mark_reset(s, self.mark):
                return None                                   # the marks' reset
            if isinstance(s, Store) and s.value == n:          # the row's count
                size = self.fresh("ht_size")
                stored.append(s)
                return block(hash_rows.table_size(n, self.extent, size, self.fresh),
                             replace(s, value=size))
            if isinstance(s, For):
                return _counting(replace(s, body=visit(s.body) or Block(())))
            return _into(s, visit)
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
        crd = next((s.buf for s in walk(Block(stmts)) if isinstance(s, Store) and s.value == jj),
                   None)
        vals = next((s.buf for s in walk(Block(stmts)) if isinstance(s, Store) and s.value == v),
                    None)
        start = [s for s in walk(row) if isinstance(s, Let) and s.var == out_p
                 and isinstance(s.value, Load)]
        if len(start) != 1 or crd is None or vals is None:
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
                    if direct and concurrent and slots and \
                            _emits_plainly(stmts, jj, v, crd, vals, out_p):
                        return hash_rows.gather_direct_on_lanes(
                            crd, vals, base, size, out_p, self.fresh, counts, window,
                            None if in_output else (sums, first))
                    if direct:
                        gather = hash_rows.gather_direct(sums, first, size, emit_at, self.fresh)
                    elif concurrent and slots and _emits_plainly(stmts, jj, v, crd, vals, out_p):
                        return hash_rows.gather_hashed_on_lanes(
                            crd, vals, base, size, self.extent, out_p, self.fresh, counts,
                            window_keys, window, None if in_output else table)
                    else:
                        gather = hash_rows.gather(crd, vals, base, size, self.extent, out_p,
                                                  emit_at, self.fresh,
                                                  None if in_output else table)
                    if concurrent:               # lane 0 gathers what the lanes inserted
                        return For(self.fresh("ht_lane"), i64(0), i64(1), gather,
                                   LoopKind.GPU_LANE)
                    return gather
                return _into(s, visit)
            clear = hash_rows.clear_sums(sums, first, size, self.fresh, lanes) if direct else \
                hash_rows.clear_table(keys, sums, first, size, self.fresh, lanes)
            return _block([clear, *(visit(c) for c in rest)])

        slots = _shared_slots(shared_bytes, crd, self.vals)
        keys = Buffer(self.fresh("ht_keys").name, crd.dtype)     # the warp's shared table
        sums = Buffer(self.fresh("ht_sums").name, self.vals.dtype)   # the sums' type
        counts = Buffer(self.fresh("ht_counts").name, I64)      # a direct gather's lanes
        window = Buffer(self.fresh("ht_window").name, self.vals.dtype)
        window_keys = Buffer(self.fresh("ht_window_keys").name, crd.dtype)

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
                    shared = (Alloc(keys, slots, shared=True), Alloc(sums, slots, shared=True),
                              Alloc(counts, WARP_SIZE, shared=True),
                              Alloc(window, WARP_SIZE, shared=True),
                              Alloc(window_keys, WARP_SIZE, shared=True)) if slots else ()
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


def _emits_plainly(emit: tuple, j: Var, v: Var, crd, vals, out_p: Var) -> bool:
    """Whether the emit statements are exactly ``if v != 0: crd[out_p] = j;
    vals[out_p] = v; out_p = out_p + 1`` (what the lanes' direct gather does)."""
    return emit == (If(BinOp("!=", v, Const(0.0, v.dtype)), Block((
        Store(crd, out_p, j), Store(vals, out_p, v), Assign(out_p, add(out_p, i64(1)))))),)


def _declares(s, var: Var) -> bool:
    return isinstance(s, Let) and s.var == var


def _shared_slots(shared_bytes: int, crd: Buffer, vals: Buffer) -> int:
    """The largest power of two of table slots (a key and a sum each) that
    fits in ``shared_bytes``; 0 below 32 slots (not worth a second path)."""
    slots = shared_bytes // (crd.dtype.nbytes + vals.dtype.nbytes) if shared_bytes else 0
    slots = 1 << (slots.bit_length() - 1) if slots else 0
    return slots if slots >= 32 else 0


def _is_gather(s: If, ws: _Workspace) -> bool:
    """The gather ``RowWorkspace.gather_row`` writes: ``if size <= count * 32:
    scan ... else: sort ...``."""
    return is_gather(s, ws.extent, ws.count) and ws.uses(s)


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


def _into(s, visit):
    """``s`` with ``visit`` applied to the statements a For, If or While holds
    (a removed body becomes an empty block); any other statement as it is."""
    if isinstance(s, (For, While)):
        return replace(s, body=visit(s.body) or Block(()))
    if isinstance(s, If):
        return replace(s, then=visit(s.then) or Block(()),
                       otherwise=None if s.otherwise is None else visit(s.otherwise))
    return s


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
