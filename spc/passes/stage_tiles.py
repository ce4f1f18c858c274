"""Tensor-core tiles read their operands from shared memory, copied there by
16-byte moves.

A warp's tensor-core product (``passes/tensorize.py``: ``@mma_m``, ``@mma_n``,
``@mma_k`` around ``acc[...] += X * Y``; ``passes/tensorize_nm.py``'s 2:4 tiles,
``@mma_sparse_k``, whose B rows are the ``let k`` of the step's 32) loads every
fragment element straight
from global memory: one 2-byte load per element, and a B fragment's pairs of
elements from rows far apart.  This pass copies each operand's tile (rows of
consecutive elements) into a shared array of the warp before the product,
with one ``@gpu_lane`` loop whose ``VectorMoves`` lets the lanes move 16 bytes
at a time (``ir/moves.py``), and points the product's load at the copy.  Each
row of the copy is padded by 16 bytes, so that the fragment reads of one
column fall into different banks, and every row starts 16-byte aligned.

Applies to products whose operand loads are plain (whole tiles; an edge
tile's loads are selects and keep reading global memory), to each operand
whose index is ``base + r * stride + c`` over two of the tile's loop
variables (``c`` at unit stride; ``base`` and ``stride`` read no tile
variable) and whose rows lie apart or which is large (``CONSECUTIVE_MIN``),
operands whose rows lie apart first, while the shared arrays of a block's
warps fit in ``SHARED_BYTES``.  Rows may be gathered (``_gathered``: condensed
SpMM's B, ``base + crd[q + r] * stride + c``, under ``select(0 <= crd[q + r],
..., 0)``): each row is copied from the row its index names, a row whose
condition fails is stored as zeros and its source not read.  The values are the same; only where they are read from
changes.  Runs after ``map_gpu`` (shared arrays live in a warp's iteration).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.affine import var_names
from ..ir.moves import copy_loop, move_width, selected
from ..ir.nodes import (Alloc, BinOp, Block, Buffer, Const, DType, Expr, For, If, Kernel, Load,
                        LoopKind, Neg, Select, ToTF32, Var)
from ..ir.simplify_expr import simplify_expr
from ..ir.traverse import rewrite, walk
from .map_gpu import WARPS_PER_BLOCK

SHARED_BYTES = 40 * 1024         # of a block's 48 KiB of static shared memory
# A tile whose rows are consecutive in memory (a block of the sparse operand's values)
# is staged only from this many elements: on the H200 (2026-11-30, fp16, 4096 x 4096 at
# 90% block sparsity) staging bsr(32,32)'s blocks beside B made SpMM 1.2x faster at 32
# columns, while staging bsr(16,16)'s made it 1.1x slower than staging B alone.
CONSECUTIVE_MIN = 1024
_I64 = DType.I64


def stage_tiles(kernel: Kernel) -> Kernel:
    """``kernel`` with its tensor-core products' operand tiles staged in shared
    memory (see the module docstring); unchanged on the CPU or where no product
    qualifies (``pipeline`` leaves the pass out for ``stage_tiles=False``)."""
    if kernel.gpu is None:
        return kernel
    taken = {n.name for n in walk(kernel) if isinstance(n, (Var, Buffer))}
    shared = [a for a in walk(kernel.body) if isinstance(a, Alloc) and a.shared]
    budget = [SHARED_BYTES - sum(_bytes(a) for a in shared)]
    in_shared = {a.buf.name for a in shared}        # read there already: not copied again

    def fresh(stem: str) -> str:
        name, k = stem, 0
        while name in taken or any(n in taken for n in (name + "_row", name + "_col")):
            k += 1
            name = f"{stem}{k}"
        taken.add(name)
        return name

    def visit(s, in_warp: bool):
        if isinstance(s, Block):
            out = []
            for c in s.body:
                if in_warp and isinstance(c, For) and c.kind is LoopKind.MMA_M:
                    out.extend(_stage(c, fresh, budget, in_shared))
                else:
                    out.append(visit(c, in_warp))
            return Block(tuple(out))
        if isinstance(s, For):
            return replace(s, body=visit(s.body, in_warp or s.kind is LoopKind.GPU_WARP))
        if isinstance(s, If):
            return replace(s, then=visit(_block(s.then), in_warp),
                           otherwise=None if s.otherwise is None
                           else visit(_block(s.otherwise), in_warp))
        return s

    body = visit(kernel.body, False)
    return kernel if body == kernel.body else replace(kernel, body=body)


def staged(kernel: Kernel) -> bool:
    """True when ``kernel`` copies a tile into shared memory (this pass's loops)."""
    return any(isinstance(n, For) and n.moves is not None for n in walk(kernel.body))


def _block(s):
    return s if isinstance(s, Block) else Block((s,))


def _bytes(alloc: Alloc) -> int:
    return WARPS_PER_BLOCK * alloc.size * alloc.buf.dtype.nbytes


def _stage(mma: For, fresh, budget: list[int], in_shared: set[str]) -> list:
    """The statements replacing the tile ``mma``: a shared array and its copy per
    staged operand, then the product reading the copies (``[mma]`` alone when
    no operand qualifies)."""
    n_loop = mma.body.body[0] if isinstance(mma.body, Block) else mma.body
    k_loop = n_loop.body.body[0] if isinstance(n_loop.body, Block) else n_loop.body
    if not (isinstance(k_loop, For) and k_loop.kind in (LoopKind.MMA_K,
                                                        LoopKind.MMA_SPARSE_K)):
        return [mma]                               # the write-out
    body = k_loop.body.body if isinstance(k_loop.body, Block) else (k_loop.body,)
    *lets, store = body
    extents = {loop.var.name: int(loop.hi.value) for loop in (mma, n_loop)}
    if k_loop.kind is LoopKind.MMA_K:
        extents[k_loop.var.name] = int(k_loop.hi.value)
    else:        # 2:4: ``let k = s / 2 * 4 + index`` spans two k per slot of the step
        extents[lets[0].var.name] = 2 * int(k_loop.hi.value)
    staged: list = []
    swaps: dict = {}
    plans = []
    for operand in (store.value.lhs, store.value.rhs):
        read = operand.value if isinstance(operand, ToTF32) else operand
        load = selected(read)
        if not isinstance(load, Load) or load.buf.name in in_shared:
            continue
        plain = _row_major(load, extents) if read is load else None
        plan = plain + (None, None) if plain is not None else _gathered(read, load, extents)
        if plan is not None:
            plans.append((read, load, plan))
    # an operand whose rows lie apart (SpMM's B) gains most: first at the budget
    plans.sort(key=lambda lp: lp[2][3] == Const(extents[lp[2][1]], _I64))
    for read, load, (row, col, base, stride, src_row, keep) in plans:
        rows, cols = extents[row], extents[col]
        if stride == Const(cols, _I64) and rows * cols < CONSECUTIVE_MIN:
            continue
        width = move_width(load.buf.dtype)
        pitch = cols + width                       # 16 bytes of padding per row
        alloc = Alloc(Buffer(fresh(f"{load.buf.name}_tile"), load.buf.dtype), rows * pitch,
                      shared=True)
        if cols % width or _bytes(alloc) > budget[0]:
            continue
        budget[0] -= _bytes(alloc)
        e = Var(fresh("e"), _I64)
        copy_row = Var(e.name + "_row", _I64)
        at_row = (lambda x: rewrite(x, lambda n: copy_row if isinstance(n, Var)
                                    and n.name == row else n))
        copy = copy_loop(e, rows, cols, alloc.buf, pitch, load.buf, base, stride,
                         src_row=None if src_row is None else at_row(src_row),
                         keep=None if keep is None else at_row(keep))
        staged += [alloc, copy]
        swaps[read] = Load(alloc.buf, BinOp("+", BinOp("*", Var(row, _I64),
                                                       Const(pitch, _I64)), Var(col, _I64)))
    if not swaps:
        return [mma]
    product = rewrite(store, lambda n: swaps.get(n, n) if isinstance(n, (Load, Select)) else n)
    k_new = replace(k_loop, body=Block((*lets, product)))
    n_new = replace(n_loop, body=Block((k_new,)))
    return staged + [replace(mma, body=Block((n_new,)))]


def _row_major(load: Load, extents: dict[str, int]):
    """``(row, col, base, stride)`` when ``load``'s index is ``base + row * stride
    + col`` for two tile variables ``row`` and ``col`` (``base`` and ``stride``
    reading neither, nor any other tile variable), else None."""
    tile_vars = var_names(load.index) & extents.keys()
    if len(tile_vars) != 2 or any(isinstance(x, Load) and var_names(x.index) & extents.keys()
                                  for x in walk(load.index)):
        return None
    coefs = {v: _coefficient(load.index, v) for v in tile_vars}
    if any(c is None or var_names(c) & extents.keys() for c in coefs.values()):
        return None
    units = [v for v, c in coefs.items() if c == Const(1, _I64)]
    if len(units) != 1:
        return None
    col = units[0]
    (row,) = tile_vars - {col}
    base = simplify_expr(rewrite(load.index, lambda n: Const(0, _I64)
                                 if isinstance(n, Var) and n.name in tile_vars else n))
    return row, col, base, coefs[row]


def _gathered(read, load: Load, extents: dict[str, int]):
    """``(row, col, base, stride, gather, keep)`` when ``read`` (``load``, or
    ``select(keep, load, 0)``) reads a tile whose rows are gathered: ``load``'s
    index is ``base + gather * stride + col`` with ``gather`` one index load
    reading the tile variable ``row`` (``crd[q + row]``: tensorize_chunks'
    B rows), ``col`` another tile variable at unit stride, ``base`` and
    ``stride`` reading no tile variable, ``keep`` (None for a plain load) only
    ``row``.  Else None."""
    tile = extents.keys()
    gathers = [x for x in walk(load.index) if isinstance(x, Load) and var_names(x.index) & tile]
    if len(gathers) != 1 or len(var_names(gathers[0].index) & tile) != 1:
        return None
    gather = gathers[0]
    (row,) = var_names(gather.index) & tile
    g = Var("spc_gathered_row", _I64)
    index = rewrite(load.index, lambda n: g if n == gather else n)
    cols = var_names(index) & tile
    if len(cols) != 1 or row in var_names(index) or g.name not in var_names(index):
        return None
    (col,) = cols
    if _coefficient(index, col) != _ONE:
        return None
    stride = _coefficient(index, g.name)
    if stride is None or var_names(stride) & (tile | {g.name}):
        return None
    keep = read.cond if read is not load else None
    if keep is not None and var_names(keep) & tile != {row}:
        return None
    base = simplify_expr(rewrite(index, lambda n: Const(0, _I64) if isinstance(n, Var)
                                 and n.name in (g.name, col) else n))
    return row, col, base, stride, gather, keep


_ZERO, _ONE = Const(0, _I64), Const(1, _I64)


def _coefficient(e: Expr, v: str) -> Expr | None:
    """The coefficient of ``v`` in ``e`` when ``e`` is linear in ``v`` (an
    expression not reading ``v``; 0 where ``e`` does not read it), else None."""
    if v not in var_names(e):
        return _ZERO
    if isinstance(e, Var):
        return _ONE
    if isinstance(e, Neg):
        c = _coefficient(e.operand, v)
        return None if c is None else _times(Const(-1, _I64), c)
    if isinstance(e, BinOp) and e.op in ("+", "-"):
        a, b = _coefficient(e.lhs, v), _coefficient(e.rhs, v)
        if a is None or b is None:
            return None
        return _plus(a, b if e.op == "+" else _times(Const(-1, _I64), b))
    if isinstance(e, BinOp) and e.op == "*":
        for x, y in ((e.lhs, e.rhs), (e.rhs, e.lhs)):
            if v not in var_names(y):
                c = _coefficient(x, v)
                return None if c is None else _times(c, y)
    return None


def _plus(a: Expr, b: Expr) -> Expr:
    if a == _ZERO:
        return b
    if b == _ZERO:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + b.value, _I64)
    return BinOp("+", a, b)


def _times(a: Expr, b: Expr) -> Expr:
    if _ZERO in (a, b):
        return _ZERO
    if a == _ONE:
        return b
    if b == _ONE:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value, _I64)
    return BinOp("*", a, b)


__all__ = ["CONSECUTIVE_MIN", "SHARED_BYTES", "stage_tiles", "staged"]
