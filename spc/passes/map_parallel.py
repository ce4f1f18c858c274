"""map_parallel: run the outermost loop on CPU threads when that is safe."""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import Block, For, Kernel, Let, LoopKind, ParamRole, Var
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


def map_parallel(kernel: Kernel) -> Kernel:
    """Mark the outermost loop PARALLEL.

    Requires: the lowerer's ``outer_independent`` attribute names the loop's
    variable when its iterations write disjoint output entries.
    Ensures: only such a loop, alone at the top of the kernel and reading no
    variable defined outside it except size parameters, becomes PARALLEL.
    """
    attrs = dict(kernel.attrs)
    body = kernel.body
    stmts = body.body if isinstance(body, Block) else (body,)
    if len(stmts) != 1 or not isinstance(stmts[0], For):
        return kernel
    loop = stmts[0]
    if not _binds(loop, attrs.get("outer_independent")):
        return kernel
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    if not _free_vars(loop) <= sizes:
        return kernel
    return replace(kernel, body=Block((replace(loop, kind=LoopKind.PARALLEL),)))
