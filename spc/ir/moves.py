"""Tile copies by 16-byte moves (``nodes.VectorMoves``): the loop a pass builds to
copy a tile, and the check that a loop has that shape.

One definition shared by the pass that builds the copies (``passes/stage_tiles.py``),
the verifier that checks a recorded ``VectorMoves`` against its loop, and the
CUDA renderer that prints the moves.
"""
from __future__ import annotations

from .affine import linear_coefficient, var_names
from .nodes import (BinOp, Block, Const, DType, Expr, For, Let, Load, LoopKind, Select, Store,
                    Var, VectorMoves)

MOVE_BYTES = 16


def move_width(dtype: DType) -> int:
    """Elements of ``dtype`` in one 16-byte move."""
    return MOVE_BYTES // dtype.nbytes


def copy_loop(var: Var, rows: int, cols: int, dst, dst_stride: int, src, src_base: Expr,
              src_stride: Expr, *, src_row: Expr | None = None,
              keep: Expr | None = None) -> For:
    """A lane loop copying ``rows`` x ``cols`` elements: row r of the tile from
    ``src[src_base + g * src_stride + c]`` to ``dst[r * dst_stride + c]``, with
    ``g`` = r, or ``src_row`` (a gathered row: an expression of the row variable
    ``Var(var.name + "_row")``, e.g. ``crd[q + row]``); where ``keep`` (an
    expression of that variable) is False, the row is zeros and ``src`` is not read.

    Requires: ``dst`` and ``src`` Buffers of one value type, ``cols`` a
    multiple of that type's move width, ``var`` a fresh i64 variable whose
    name with ``_row`` and ``_col`` appended is fresh too.
    Ensures: a ``@gpu_lane`` loop with ``VectorMoves`` that ``moves_of`` accepts.
    """
    i64 = DType.I64
    row, col = Var(var.name + "_row", i64), Var(var.name + "_col", i64)
    g = row if src_row is None else src_row
    value = Load(src, BinOp("+", BinOp("+", src_base, BinOp("*", g, src_stride)), col))
    if keep is not None:
        value = Select(keep, value, Const(0.0, DType.F32 if src.dtype.nbytes < 4 else src.dtype))
    body = Block((
        Let(row, BinOp("/", var, Const(cols, i64))),
        Let(col, BinOp("-", var, BinOp("*", row, Const(cols, i64)))),
        Store(dst, BinOp("+", BinOp("*", row, Const(dst_stride, i64)), col), value)))
    return For(var, Const(0, i64), Const(rows * cols, i64), body, kind=LoopKind.GPU_LANE,
               moves=VectorMoves(move_width(src.dtype), cols))


def copy_parts(loop: For) -> tuple[Let, Let, Store, Load] | None:
    """A copying loop's ``let row = e / cols``, ``let col = e - row * cols``,
    its store and its load (inside ``copy_keep``'s select, if any), or None when
    the body is not shaped so (``cols`` read from the first Let)."""
    body = loop.body.body if isinstance(loop.body, Block) else (loop.body,)
    if len(body) != 3 or not isinstance(body[0], Let) or not isinstance(body[1], Let) \
            or not isinstance(body[2], Store):
        return None
    row, col, store = body
    e = loop.var
    r = row.value
    if not (isinstance(r, BinOp) and r.op == "/" and r.lhs == e and isinstance(r.rhs, Const)):
        return None
    c = col.value
    if c != BinOp("-", e, BinOp("*", row.var, r.rhs)):
        return None
    value = selected(store.value)
    if store.accumulate or store.atomic or not isinstance(value, Load):
        return None
    return row, col, store, value


def selected(value: Expr) -> Expr:
    """``v`` where ``value`` is ``select(cond, v, 0)`` (a read that a condition
    zeroes), else ``value``."""
    if isinstance(value, Select) and isinstance(value.if_false, Const) \
            and value.if_false.value == 0:
        return value.if_true
    return value


def copy_keep(loop: For) -> Expr | None:
    """The condition under which a copying loop (``copy_parts``) copies a row,
    None when it copies every row."""
    value = copy_parts(loop)[2].value
    return value.cond if isinstance(value, Select) else None


def moves_of(loop: For, width: int, cols: int) -> bool:
    """True when ``loop`` may move ``width`` elements at a time in rows of
    ``cols``: a ``@gpu_lane`` loop over ``[0, a multiple of cols)`` whose body
    is ``copy_loop``'s (``row = e / cols``, ``col = e - row * cols``, one
    store of one load, or of a select of it and zero by a condition reading
    neither ``e`` nor ``col``), ``cols`` a multiple of ``width``, ``width`` 16 bytes of
    the one value type it copies, and both indices ``f(row) + col`` (``e``
    read in neither, ``col`` added once)."""
    parts = copy_parts(loop)
    if parts is None or loop.kind is not LoopKind.GPU_LANE:
        return False
    row, col, store, load = parts
    if row.value.rhs.value != cols:
        return False
    if store.buf.dtype is not load.buf.dtype or width != move_width(load.buf.dtype):
        return False
    if not (isinstance(loop.lo, Const) and loop.lo.value == 0 and isinstance(loop.hi, Const)
            and cols > 0 and cols % width == 0 and loop.hi.value % cols == 0):
        return False
    keep = copy_keep(loop)
    if keep is not None and {loop.var.name, col.var.name} & var_names(keep):
        return False
    return all(_row_plus_col(e, loop.var.name, col.var.name) for e in (store.index, load.index))


def _row_plus_col(index: Expr, e: str, col: str) -> bool:
    """True when ``index`` reads ``col`` once, added, and does not read ``e``."""
    return e not in var_names(index) and linear_coefficient(index, col) == 1


__all__ = ["MOVE_BYTES", "copy_keep", "copy_loop", "copy_parts", "move_width", "moves_of",
           "selected"]
