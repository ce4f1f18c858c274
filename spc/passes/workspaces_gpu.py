"""workspaces_gpu: rows built in workspaces, one GPU thread per chunk of rows,
each chunk's workspaces a slice of a zeroed global scratch array.

A kernel whose top loop builds rows in workspaces (``Kernel.workspaces``: a
SpGEMM's assemble and compute kernels) becomes

    for c in [0, chunks) @gpu_thread:                # one thread per chunk
      for i in [c * per, min(rows, (c + 1) * per)):  # its rows, in order
        ... ws[c * size + j] ...                     # its slice of the scratch

with each workspace turned into a SCRATCH parameter of ``chunks * size``
elements (the runtime zeroes it; every row leaves its slots zeroed, the
lowerer's claim).  ``chunks`` keeps each scratch array within
``SCRATCH_ELEMENTS`` (a wide index gets fewer, longer chunks) and is at most
the number of rows.  The simplest mapping that is correct: one thread walks a
whole row; warps sharing rows, hashed workspaces and a counting launch that
sizes chunks to the work are later work.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, BinOp, Block, DType, For, GpuMapping, GridMode, Kernel, Let,
                        Load, LoopKind, Param, ParamRole, Store, Var, add, i64, mul, sub)
from ..ir.traverse import rewrite

SCRATCH_ELEMENTS = 1 << 25       # per workspace array: 32 Mi elements (128 MiB of int32)
I64 = DType.I64


def workspaces_gpu(kernel: Kernel, *, parallel: bool = True) -> Kernel:
    """Map a workspace kernel's rows to GPU threads (see the module docstring);
    with ``parallel`` False (the schedule's), one thread runs every row.

    Requires: a verified kernel.  Ensures: kernels without workspaces (or not
    shaped as workspaces then the top loop) are returned unchanged; otherwise
    the result declares no workspace, its top loop is ``@gpu_thread`` with
    ``kernel.gpu`` set (map_gpu leaves it), and the interpreter gives the same
    results, each chunk touching only its own slice of the scratch.
    """
    body = kernel.body.body if isinstance(kernel.body, Block) else (kernel.body,)
    if not kernel.workspaces or not body or not isinstance(body[-1], For):
        return kernel
    allocs, loop = body[:-1], body[-1]
    if [a.buf.name for a in allocs if isinstance(a, Alloc)] != list(kernel.workspaces) \
            or len(allocs) != len(kernel.workspaces) or kernel.outer_independent is None:
        return kernel
    chunk = Var(f"{loop.var.name}_chunk", loop.var.dtype)
    span = sub(loop.hi, loop.lo)
    widest = allocs[0].size
    for a in allocs[1:]:
        widest = BinOp("max", widest, a.size)
    most = BinOp("max", i64(1), BinOp("/", i64(SCRATCH_ELEMENTS), BinOp("max", widest, i64(1))))
    chunks = BinOp("min", BinOp("max", span, i64(0)), most if parallel else i64(1))
    count, per = Var(f"{loop.var.name}_chunks", I64), Var(f"{loop.var.name}_per_chunk", I64)
    setup = (Let(count, chunks),
             Let(per, BinOp("max", i64(1), BinOp("/", add(span, sub(count, i64(1))),
                                                 BinOp("max", count, i64(1))))))
    first = add(loop.lo, mul(chunk, per))
    sizes = {a.buf.name: a.size for a in allocs}

    def in_slice(node):
        if isinstance(node, Load) and node.buf.name in sizes:
            return Load(node.buf, add(mul(chunk, sizes[node.buf.name]), node.index))
        if isinstance(node, Store) and node.buf.name in sizes:
            return replace(node, index=add(mul(chunk, sizes[node.buf.name]), node.index))
        return node

    rows = For(loop.var, first, BinOp("min", loop.hi, add(first, per)),
               rewrite(loop.body, in_slice), LoopKind.SERIAL)
    top = For(chunk, i64(0), BinOp("/", add(span, sub(per, i64(1))), per), rows,
              LoopKind.GPU_THREAD)
    scratch = tuple(Param(a.buf, ParamRole.SCRATCH, extent=mul(chunks, a.size)) for a in allocs)
    return replace(kernel, body=Block((*setup, top)), params=kernel.params + scratch, workspaces=(),
                   outer_independent=chunk.name, gpu=GpuMapping(GridMode.THREAD))


__all__ = ["SCRATCH_ELEMENTS", "workspaces_gpu"]
