"""collapse_blocks: one outer loop over a blocked output's rows instead of two.

A blocked output (BSR) loops ``for i_blk: lets; for i_in in [0, b): body``.
Mapped to a GPU as it stands, one warp walks the b rows of a block row in turn,
so a matrix has b times fewer warps than rows.  This pass fuses the pair:

    for i_blk_in in [0, n_blk * b):
      let i_blk = i_blk_in / b
      let i_in = i_blk_in - i_blk * b
      lets; body

so every row gets its own iteration (a warp each, after map_gpu).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import BinOp, Block, Const, DType, For, Kernel, Let, i64, mul, sub
from ..ir.traverse import top_loop
from .map_gpu import FreshNames, stores_follow

I64 = DType.I64


def collapse_blocks(kernel: Kernel) -> Kernel:
    """Fuse the outermost loop with a constant-trip loop that makes up the rest
    of its body.

    Requires: a verified kernel.  Ensures: the same statements run for the same
    (outer, inner) pairs in the same order; the kernel's ``outer_independent``,
    when it named the outer loop, names the fused loop (iterations of
    an independent loop over block rows that each take one of its rows stay
    independent).  Kernels of any other shape are returned unchanged, and so is
    one whose inner loop's iterations do not each write their own entries (a
    loop order that puts a reduction's in-block index, SpMV's ``j_in``, second:
    its fused iterations would share outputs), and a kernel already mapped to
    the GPU (tensorize's tiles).
    """
    found = top_loop(kernel) if kernel.gpu is None else None
    if found is None:
        return kernel
    lets, outer = found
    body = outer.body.body if isinstance(outer.body, Block) else (outer.body,)
    if not body or not isinstance(body[-1], For) or not all(isinstance(s, Let) for s in body[:-1]):
        return kernel
    inner = body[-1]
    if not (isinstance(inner.lo, Const) and inner.lo.value == 0 and isinstance(inner.hi, Const)
            and isinstance(outer.lo, Const) and outer.lo.value == 0):
        return kernel
    b = int(inner.hi.value)
    if b <= 1 or not stores_follow(inner):
        return kernel
    t = FreshNames(kernel).fresh(f"{inner.var.name}_flat", I64)
    fused = For(t, i64(0), mul(outer.hi, i64(b)), Block(
        (Let(outer.var, BinOp("/", t, i64(b))),
         Let(inner.var, sub(t, mul(outer.var, i64(b))))) + tuple(body[:-1]) + (inner.body,)),
        outer.kind)
    independent = t.name if kernel.outer_independent == outer.var.name \
        else kernel.outer_independent
    return replace(kernel, body=Block(lets + (fused,)), outer_independent=independent)
