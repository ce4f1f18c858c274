"""collapse_rows: one loop over (batch, row) pairs instead of a batch loop around rows.

A program over a batch of heads (attention with ``Q[h,i,k]``, issue 12) lowers
to the heads loop outermost, the rows of the shared sparse mask inside it:

    for h in [0, size_h):                    for hi in [0, size_h * size_i):
      lets                                     let h = hi / size_i
      for i in [0, size_i):           ->       let i = hi - h * size_i
        ... walks row i of A ...               lets
                                               ... walks row i of A ...

With a few heads the heads loop alone cannot occupy the machine (H = 1 runs
on one CPU thread, H warps on a GPU); collapsed, the threads (CPU) or warps
(CUDA) take (head, row) pairs as they take rows of a single matrix.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Assign, BinOp, Block, Buffer, Const, DType, For, Kernel, Let, Load,
                        ParamRole, mul, sub)
from ..ir.traverse import top_loop, walk
from .map_gpu import FreshNames, stores_follow, var_names

I64 = DType.I64


def collapse_rows(kernel: Kernel) -> Kernel:
    """Fuse an independent outer loop with the loop over rows that makes up the
    rest of its body.

    Requires: a verified kernel.  Applies when the top loop starts at 0 and is
    the kernel's ``outer_independent``; its body is lets then one loop, the
    kernel's ``rows_independent`` (the lowerer's claim that its iterations too
    write disjoint entries), from 0
    to a bound that is not a constant (a block's rows are ``collapse_blocks``'
    on CUDA, and stay nested on the CPU) and that no statement of the outer
    body defines; each iteration of
    that inner loop stores only where its own values point
    (``map_gpu.stores_follow``) and assigns no variable declared outside it (no
    state carried from row to row, as a merge's positions are); and the inner
    loop's body reads an input index array (it walks rows of a sparse operand: not a dense nest, whose inner
    loop the CPU vectorizes).
    Ensures: the same statements run for the same (outer, inner) pairs in the
    same order, under one loop that ``outer_independent`` names.  Any other
    kernel, or one already mapped to the GPU, is returned unchanged.
    """
    found = top_loop(kernel) if kernel.gpu is None else None
    if found is None:
        return kernel
    lets, outer = found
    if kernel.outer_independent != outer.var.name or not _zero(outer.lo) \
            or kernel.rows_independent is None:
        return kernel
    body = outer.body.body if isinstance(outer.body, Block) else (outer.body,)
    if not body or not isinstance(body[-1], For) or not all(isinstance(s, Let) for s in body[:-1]):
        return kernel
    inner = body[-1]
    defined = {outer.var.name} | {s.var.name for s in body[:-1]}
    if inner.var.name != kernel.rows_independent or not _zero(inner.lo) \
            or isinstance(inner.hi, Const) or var_names(inner.hi) & defined \
            or not stores_follow(inner) or not _reads_structure(inner, kernel) \
            or _carried(inner):
        return kernel
    flat = FreshNames(kernel).fresh(f"{outer.var.name}_{inner.var.name}_flat", I64)
    collapsed = For(flat, Const(0, I64), mul(outer.hi, inner.hi), Block(
        (Let(outer.var, BinOp("/", flat, inner.hi)),
         Let(inner.var, sub(flat, mul(outer.var, inner.hi)))) + tuple(body[:-1])
        + (inner.body,)), outer.kind)
    return replace(kernel, body=Block(lets + (collapsed,)), outer_independent=flat.name,
                   rows_independent=None)


def _carried(loop: For) -> bool:
    """Whether an iteration of ``loop`` assigns a variable declared outside its body
    (a merge's position, ``p = p + 1``, that the next row starts from): such
    iterations depend on the ones before and cannot be taken apart."""
    local = {n.var.name for n in walk(loop.body) if isinstance(n, (Let, For))}
    return any(isinstance(n, Assign) and n.var.name not in local for n in walk(loop.body))


def _zero(e) -> bool:
    return isinstance(e, Const) and e.value == 0


def _reads_structure(loop: For, kernel: Kernel) -> bool:
    """Whether ``loop``'s body reads an input index array (a sparse level's
    positions, coordinates or offsets), as a walk of a sparse row does."""
    index_arrays = {p.name for p in kernel.params if p.role is ParamRole.INPUT
                    and isinstance(p.value, Buffer) and not p.value.dtype.is_float}
    return any(isinstance(n, Load) and n.buf.name in index_arrays for n in walk(loop.body))
