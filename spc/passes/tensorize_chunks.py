"""tensorize_chunks: a product whose sparse positions come in whole chunks
(the ``condensed`` format's ``Chunked`` level) onto tensor cores.

The lowerer gives SpMM with a ``condensed(16, K)`` operand (rows in windows of
16; a window's distinct columns in chunks of K, padding ``crd = -1``) as

    for i_blk in [0, (size_i + 15) / 16):                  # windows, independent
      for i_in in [0, 16):  if i < size_i:                   # the window's rows
        for p in [pos[i_blk] * K, pos[i_blk + 1] * K):      # its kept columns
          let k = crd[p]
          if 0 <= k:
            for j in [0, size_j):
              C[i * size_j + j] += A_vals[p * 16 + i_in] * B_vals[k * size_j + j]

Both bounds of the position loop are multiples of K, so it splits into chunks
with no remainder (``whole_chunks``):

        for p_chunk in [pos[i_blk], pos[i_blk + 1]):
          for p_in in [0, K):
            let p = p_chunk * K + p_in

and a chunk is a dense 16 x K tile of A times the K rows of B its coordinates
name: the shape ``passes/tensorize`` maps onto ``mma.sync`` (m16n8k16 for
float16/bfloat16 with K = 16, m16n8k8 tf32 with K = 8), the B operand gathered
row by row through ``crd`` (``B_vals[crd[p] * size_j + j]``), a padding slot
giving zero (``0 <= crd[p]`` is the tile's k guard, kept in its regular form).
The interpreter runs the tile loops in the scalar loops' order.

Applies where ``whole_chunks`` finds such a loop and ``tensorize`` then finds
its tile; else the kernel is returned unchanged (the split is kept only where
a tile uses it).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import BinOp, Block, Const, DType, For, Kernel, Let, LoopKind, add, i64, mul
from ..ir.traverse import rewrite
from .map_gpu import FreshNames
from .tensorize import tensorize, tensorized


def _chunk(e) -> tuple[object, int] | None:
    """(a, K) when ``e`` is ``a * K`` with K a constant >= 2, else None."""
    if isinstance(e, BinOp) and e.op == "*" and isinstance(e.rhs, Const) \
            and isinstance(e.rhs.value, int) and e.rhs.value >= 2:
        return e.lhs, int(e.rhs.value)
    return None


def whole_chunks(kernel: Kernel) -> Kernel:
    """``kernel`` with every serial loop over ``[a * K, b * K)`` (K a constant >= 2)
    split into a loop over ``[a, b)`` and one over ``[0, K)`` that binds the old
    variable to ``chunk * K + in``.

    Requires: a verified kernel.  Ensures: the same iterations in the same order
    (the bounds are whole multiples of K), so the interpreter's results are
    unchanged; loops of other shapes are untouched."""
    names = FreshNames(kernel)

    def split(n):
        if not (isinstance(n, For) and n.kind is LoopKind.SERIAL):
            return n
        lo, hi = _chunk(n.lo), _chunk(n.hi)
        if lo is None or hi is None or lo[1] != hi[1]:
            return n
        k = lo[1]
        chunk = names.fresh(f"{n.var.name}_chunk", DType.I64)
        inner = names.fresh(f"{n.var.name}_in", DType.I64)
        body = Block((Let(n.var, add(mul(chunk, i64(k)), inner)), n.body))
        return For(chunk, lo[0], hi[0], For(inner, i64(0), i64(k), body))

    return replace(kernel, body=rewrite(kernel.body, split))


def tensorize_chunks(kernel: Kernel, *, tile_cols: int | None = None,
                     tf32: bool = False) -> Kernel:
    """``kernel`` with a product over whole chunks of positions in tensor-core
    tiles (``tensorize`` of ``whole_chunks``), or ``kernel`` itself where that
    finds no tile.

    Requires: a verified kernel, not yet mapped to the GPU.  Ensures: where the
    module docstring's shape is found, a kernel mapped one warp per tile whose
    interpreted results equal the input's; else ``kernel``."""
    if kernel.gpu is not None:
        return kernel
    tiled = tensorize(whole_chunks(kernel), tile_cols=tile_cols, tf32=tf32)
    return tiled if tensorized(tiled) is not None else kernel


__all__ = ["tensorize_chunks", "whole_chunks"]
