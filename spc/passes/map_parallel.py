"""map_parallel: run the outermost loop on CPU threads when that is safe.

A kernel that builds rows in workspaces (``Kernel.workspaces``: arrays declared
before its top loop, which every iteration leaves zeroed) runs in chunks of
rows instead: the top loop becomes a PARALLEL loop over at most
``WORKSPACE_CHUNKS`` chunks, each declaring its own workspaces (an array
declared in a concurrent loop's body is each iteration's own) and running its
rows in order.  Enough chunks that threads balance uneven rows, few enough
that allocating a workspace per chunk costs little beside the chunk's rows.

A kernel whose top loop is a panel loop (``passes/tile.py``: SpMM's N panels
hoisted above the rows) holding an independent loop over rows runs in chunks
of rows too, each walking every panel over its rows: the threads take rows, and
a chunk's rows share a panel of the dense operand in cache.  (Threads taking
panels instead measured the same on the 2-core machine, within its noise, as
did 8 or 2 chunks of rows: ``benchmarks/README.md``, "Panels"; rows keep
threads busy however few panels N makes.)
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, BinOp, Block, For, Kernel, Let, LoopKind, ParamRole, Store, Var,
                        add, i64, mul, sub)

WORKSPACE_CHUNKS = 64
PANEL_CHUNKS = 64          # chunks of rows a kernel with panels above its rows runs in
from ..ir.traverse import walk


def _free_vars(loop: For) -> set[str]:
    """Names read in ``loop`` that it does not define itself."""
    defined = {loop.var.name}
    used: set[str] = set()
    for n in walk(loop.body):
        if isinstance(n, Let):
            defined.add(n.var.name)
        elif isinstance(n, For):
            defined.add(n.var.name)
        elif isinstance(n, Var):
            used.add(n.name)
    return used - defined


def _binds(loop: For, index: str | None) -> bool:
    """True when each iteration of ``loop`` has its own value of ``index``:
    a dense loop over it, or a position loop whose first statement reads it."""
    if index is None:
        return False
    if loop.var.name == index:
        return True
    body = loop.body.body if isinstance(loop.body, Block) else (loop.body,)
    return bool(body) and isinstance(body[0], Let) and body[0].var.name == index


def _commutes(loop: For) -> bool:
    """True when every store in ``loop`` is an atomic accumulation (split_rows'
    pieces of rows) and it assigns no variable declared outside it: its
    iterations may run in any order, at once.  (Stores to arrays allocated
    inside the loop are each iteration's own.)"""
    from .map_gpu import all_stmts, assigned, declared
    private = {n.buf.name for n in all_stmts(loop.body) if isinstance(n, Alloc)}
    stores = [n for n in all_stmts(loop.body)
              if isinstance(n, Store) and n.buf.name not in private]
    return bool(stores) and all(n.atomic for n in stores) \
        and not assigned(loop.body) - declared(loop.body)


def map_parallel(kernel: Kernel) -> Kernel:
    """Mark the outermost loop PARALLEL.

    Requires: the kernel's ``outer_independent`` names the loop's
    variable when its iterations write disjoint output entries.
    Ensures: only such a loop, or one whose stores are all atomic
    accumulations, alone at the top of the kernel and reading no variable
    defined outside it except size parameters, becomes PARALLEL.
    """
    body = kernel.body
    stmts = body.body if isinstance(body, Block) else (body,)
    if kernel.workspaces:
        return _chunked(kernel, stmts)
    if len(stmts) != 1 or not isinstance(stmts[0], For):
        return kernel
    loop = stmts[0]
    if not (_binds(loop, kernel.outer_independent) or _commutes(loop)):
        return _rows_under_panels(kernel, loop)
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    if not _free_vars(loop) <= sizes:
        return kernel
    return replace(kernel, body=Block((replace(loop, kind=LoopKind.PARALLEL),)))


def _chunked(kernel: Kernel, stmts) -> Kernel:
    """``kernel`` (workspaces, then its top loop) with the loop run in PARALLEL
    chunks that each declare the workspaces; unchanged unless the loop's
    iterations are independent (``outer_independent``) and the workspaces are
    exactly the statements before it."""
    allocs, loop = stmts[:-1], stmts[-1] if stmts else None
    if not isinstance(loop, For) or not _binds(loop, kernel.outer_independent) \
            or tuple(a.buf.name for a in allocs if isinstance(a, Alloc)) != kernel.workspaces \
            or len(allocs) != len(kernel.workspaces):
        return kernel
    chunk = Var(f"{loop.var.name}_chunk", loop.var.dtype)
    span = sub(loop.hi, loop.lo)
    per = BinOp("max", i64(1), BinOp("/", add(span, i64(WORKSPACE_CHUNKS - 1)),
                                     i64(WORKSPACE_CHUNKS)))
    first = add(loop.lo, mul(chunk, per))
    rows = For(loop.var, first, BinOp("min", loop.hi, add(first, per)), loop.body, loop.kind)
    count = BinOp("/", add(span, sub(per, i64(1))), per)
    par = For(chunk, i64(0), count, Block((*allocs, rows)), LoopKind.PARALLEL)
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    if not _free_vars(par) <= sizes:
        return kernel
    return replace(kernel, body=Block((par,)), workspaces=(), outer_independent=chunk.name)


def _rows_under_panels(kernel: Kernel, panels: For) -> Kernel:
    """``for t: lets; for i in [lo, hi): body`` (``t`` a panel loop, the ``i``
    loop one ``map_parallel`` would run on threads, its bounds free of ``t``) as
    ``parallel for c: for t: lets; for i in chunk c of [lo, hi): body``, in at most
    ``PANEL_CHUNKS`` chunks of rows; else ``kernel`` unchanged.

    Legal because only iterations of one ``i`` may touch the same entries, and
    those still run their panels in order."""
    from .tile import tile_of
    body = panels.body.body if isinstance(panels.body, Block) else (panels.body,)
    lets, rows = body[:-1], body[-1] if body else None
    if tile_of(panels) is None or not isinstance(rows, For) \
            or not all(isinstance(s, Let) for s in lets) \
            or not (_binds(rows, kernel.outer_independent) or _commutes(rows)):
        return kernel
    inner = {panels.var.name} | {s.var.name for s in lets}
    if any(isinstance(n, Var) and n.name in inner for e in (rows.lo, rows.hi) for n in walk(e)):
        return kernel
    chunk = Var(f"{rows.var.name}_chunk", rows.var.dtype)
    span = sub(rows.hi, rows.lo)
    per = BinOp("max", i64(1), BinOp("/", add(span, i64(PANEL_CHUNKS - 1)), i64(PANEL_CHUNKS)))
    first = Var(f"{rows.var.name}_chunk_lo", rows.var.dtype)
    last = Var(f"{rows.var.name}_chunk_hi", rows.var.dtype)
    chunk_rows = replace(rows, lo=first, hi=last)
    par = For(chunk, i64(0), BinOp("/", add(span, sub(per, i64(1))), per), Block((
        Let(first, add(rows.lo, mul(chunk, per))),
        Let(last, BinOp("min", rows.hi, add(first, per))),
        replace(panels, body=Block((*lets, chunk_rows))))), LoopKind.PARALLEL)
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    if not _free_vars(par) <= sizes:
        return kernel
    return replace(kernel, body=Block((par,)), outer_independent=chunk.name)
