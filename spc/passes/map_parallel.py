"""map_parallel: run the outermost loop on CPU threads when that is safe.

A kernel that builds rows in workspaces (``Kernel.workspaces``: arrays declared
before its top loop, which every iteration leaves zeroed) runs in chunks of
rows instead: the top loop becomes a PARALLEL loop over at most
``WORKSPACE_CHUNKS`` chunks, each declaring its own workspaces (an array
declared in a concurrent loop's body is each iteration's own) and running its
rows in order.  Enough chunks that threads balance uneven rows, few enough
that allocating a workspace per chunk costs little beside the chunk's rows.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, BinOp, Block, For, Kernel, Let, LoopKind, ParamRole, Store, Var,
                        add, i64, mul, sub)

WORKSPACE_CHUNKS = 64
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
        return kernel
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
