"""epilogue_rows: a function of a row's sums applied after the row is summed (CPU).

A function of a reduction (``C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])``) is
lowered with the reduction innermost, so that the whole sum exists when the
function is applied:

    for i:
      for j in [0, size_j):
        acc = 0
        for p in row i of A:  k = crd[p];  acc = acc + A[p] * B[k,j]
        C[i,j] = f(acc, j)

Each output entry walks the row again and gathers a column of B: on the CPU
6-30x slower than SpMM's order (measured 2026-11-29, 4096 x 4096 at 1%, N =
128).  This pass sums the row into the output itself, in SpMM's order, and
applies the function in one more pass over the row:

    for i:
      for p in row i of A:  k = crd[p];  for j in [0, size_j):  C[i,j] += A[p] * B[k,j]
      for j in [0, size_j):  C[i,j] = f(C[i,j], j)

The sums are the same, in the same order, and ``register_tile`` then keeps the
row's partial sums in registers as it does for SpMM.  ``fold_epilogue`` (after
``register_tile``) moves the function into the tiles' write-backs,
``C[i,j] = f(acc[jj], j)``, so the row is written once and not read back: SpMM +
bias + ReLU then costs what SpMM costs (0.96-1.04x on this 2-core VM,
``benchmarks/bench_epilogue.py``, 2026-11-29).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Assign, BinOp, Block, Const, For, Kernel, Let, Load, LoopKind, ParamRole,
                        Store, Var)
from ..ir.traverse import rewrite, top_loop, walk
from .map_gpu import stmts_of


def epilogue_rows(kernel: Kernel) -> Kernel:
    """``kernel`` with its per-entry reduction summed row-wise into the output
    and the epilogue applied after, where it has the shape the module
    docstring shows; else ``kernel`` unchanged.

    Requires: a verified, lowered kernel (before the target's mapping passes).
    Applies where: the body is lets and one loop over rows that the lowerer
    marked independent, whose body is lets and one loop over output columns
    (from a size to a size) holding lets, ``let acc = 0``, one serial loop that
    only declares lets and ends in ``acc = acc + e`` (its bounds read neither the
    column nor the column's lets), and one store (not accumulating) of a float
    output that reads the column, which no statement loads.
    Ensures: the interpreter's results are bit-identical (each entry's sum adds
    the same terms in the same order, from 0).
    """
    found = top_loop(kernel)
    if found is None:
        return kernel
    lets0, rows = found
    if kernel.outer_independent != rows.var.name:
        return kernel
    body = stmts_of(rows.body)
    if not body or not isinstance(body[-1], For) or not all(isinstance(s, Let) for s in body[:-1]):
        return kernel
    cols = body[-1]
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    if cols.kind is not LoopKind.SERIAL or not _size(cols.hi, sizes) \
            or not (_size(cols.lo, sizes) or isinstance(cols.lo, Const)):
        return kernel
    parts = stmts_of(cols.body)
    if len(parts) < 3 or not all(isinstance(s, Let) for s in parts[:-3]):
        return kernel
    init, red, store = parts[-3:]
    col_lets = list(parts[:-3])
    if not (isinstance(init, Let) and isinstance(init.value, Const) and init.value.value == 0
            and init.var.dtype.is_float) or not isinstance(red, For) \
            or red.kind is not LoopKind.SERIAL or not isinstance(store, Store) \
            or store.accumulate or store.atomic or not store.buf.dtype.is_float:
        return kernel
    acc = init.var
    col_names = {cols.var.name} | {s.var.name for s in col_lets}
    if _reads(red.lo, col_names) or _reads(red.hi, col_names):
        return kernel
    red_parts = stmts_of(red.body)
    step = red_parts[-1] if red_parts else None
    if not (isinstance(step, Assign) and step.var == acc and isinstance(step.value, BinOp)
            and step.value.op == "+" and step.value.lhs == acc
            and not _reads(step.value.rhs, {acc.name})) \
            or not all(isinstance(s, Let) for s in red_parts[:-1]):
        return kernel
    if not _reads(store.index, col_names) or any(
            isinstance(n, Load) and n.buf.name == store.buf.name for n in walk(kernel.body)):
        return kernel
    if any(isinstance(n, Var) and n.name == acc.name for n in walk(store.index)):
        return kernel
    # the reduction's lets that read the column go inside the column loop
    varying = set(col_names)
    inner_lets, outer_lets = [], []
    for s in red_parts[:-1]:
        if _reads(s.value, varying):
            varying.add(s.var.name)
            inner_lets.append(s)
        else:
            outer_lets.append(s)
    add_into = replace(cols, body=Block(tuple(col_lets) + tuple(inner_lets)
                                        + (Store(store.buf, store.index, step.value.rhs,
                                                 accumulate=True),)))
    summed = replace(red, body=Block(tuple(outer_lets) + (add_into,)))
    value = rewrite(store.value, lambda n: Load(store.buf, store.index)
                    if isinstance(n, Var) and n.name == acc.name else n)
    applied = replace(cols, body=Block(tuple(col_lets) + (Store(store.buf, store.index,
                                                                    value),)))
    new_rows = replace(rows, body=Block(tuple(body[:-1]) + (summed, applied)))
    return replace(kernel, body=Block(tuple(lets0) + (new_rows,)))


def _size(e, sizes: set[str]) -> bool:
    return isinstance(e, Var) and e.name in sizes


def _reads(e, names: set[str]) -> bool:
    return any(isinstance(n, Var) and n.name in names for n in walk(e))


def fold_epilogue(kernel: Kernel) -> Kernel:
    """After ``register_tile``: each tile's write-back applies the epilogue
    (``C[i,j] = f(acc[jj])`` instead of ``C[i,j] += acc[jj]`` and a pass of
    ``C[i,j] = f(C[i,j])`` over the row), where the row's columns are all summed
    in tiles (down to one column: no remainder loop) and the row ends in the
    pass ``epilogue_rows`` wrote; else ``kernel`` unchanged.

    Ensures: the same numbers: every entry is written once, by the one tile
    that holds its whole sum, with the function applied to it.
    """
    found = top_loop(kernel)
    if found is None:
        return kernel
    lets0, rows = found
    body = stmts_of(rows.body)
    if not body or not isinstance(body[-1], For):
        return kernel
    apply = body[-1]
    parts = stmts_of(apply.body)
    if not parts or not isinstance(parts[-1], Store) or not all(isinstance(s, Let)
                                                                for s in parts[:-1]):
        return kernel
    final = parts[-1]
    out = final.buf
    own = Load(out, final.index)
    if final.accumulate or not any(n == own for n in walk(final.value)) or any(
            isinstance(n, Load) and n.buf == out and n != own for n in walk(final.value)):
        return kernel
    tiles = []
    for s in body[:-1]:
        if isinstance(s, Let):
            continue
        tile = _tile_of(s, out)
        if tile is None:
            return kernel                 # a remainder loop, or anything else storing
        tiles.append(s)
    if not tiles:
        return kernel

    def folded(s):
        if not any(s is t for t in tiles):
            return s
        inner = stmts_of(s.body)
        start, write = inner[0], inner[-1]
        kk, acc = write.var, write.body.value.buf
        value = rewrite(final.value, lambda n: Load(acc, kk) if n == own else n)
        new_write = replace(write, body=Block(
            (Let(apply.var, BinOp("+", start.var, kk)),) + tuple(parts[:-1])
            + (Store(out, final.index, value),)))
        return replace(s, body=Block(tuple(inner[:-1]) + (new_write,)))

    new_rows = replace(rows, body=Block(tuple(folded(s) for s in body[:-1])))
    return replace(kernel, body=Block(tuple(lets0) + (new_rows,)))


def _tile_of(loop, out) -> bool | None:
    """True if ``loop`` is one of register_tile's tile loops over ``out``'s row
    (``for t: let j0 = ...; alloc acc; <the reduction>; for kk: out[..] += acc[kk]``)."""
    if not isinstance(loop, For):
        return None
    inner = stmts_of(loop.body)
    if len(inner) < 3 or not isinstance(inner[0], Let) or not isinstance(inner[-1], For):
        return None
    write = inner[-1]
    store = write.body if isinstance(write.body, Store) else None
    if store is None or store.buf != out or not store.accumulate \
            or not isinstance(store.value, Load) or store.value.index != write.var:
        return None
    for s in inner[1:-1]:
        if any(isinstance(n, Store) and n.buf == out for n in walk(s)):
            return None
    return True
