"""bound_rows: an assemble kernel sizes a row by its products where they are few.

SpGEMM's assemble kernel counts each row exactly: it marks every product's
coordinate in the workspace (``ir/workspace.py``), so it costs as much per
product as the compute kernel's scatter.  A row of few products can instead
take as many slots as it has products (never more than the index's extent),
counted by one walk over A's row (``n += len(B row k)``, no marks): the compute
kernel fills the row's first slots and records how many it kept
(``<C>1_nnz``, as for dropped zeros), and the runtime packs the rows.

The row becomes::

    let bound = 0
    for p in A's row: let k = ...; bound = bound + max(hi - lo, 0)
    if bound <= most:
        pos[i + 1] = min(bound, extent)
    else:
        <the exact count, as lowered>

Rows of at most ``most`` products waste at most ``most`` slots each; longer
rows are counted exactly, so the output's slots stay within ``most`` a row of
its entries.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, Assign, BinOp, Block, For, If, Kernel, Let, Stmt, Store, Var, add,
                        i64, sub)
from ..ir.workspace import is_mark_reset, is_scatter
from .map_gpu import FreshNames, reads

BOUND_MOST = 32    # rows of at most this many products are sized by them


def bound_rows(kernel: Kernel, *, most: int = BOUND_MOST) -> Kernel:
    """Size the rows of few products by their products (see the module docstring).

    Requires: a verified kernel.  Ensures: a kernel other than a row workspace's
    assemble kernel as the lowerer writes it (workspaces of marks and
    coordinates only, then the loop over rows; a row of lets, the count, loops
    of lets and scatters, the count's store, the marks' reset) is returned
    unchanged; otherwise each row stores a size at least its exact count and at
    most ``max(count, min(most, extent))``, and the workspaces stay as they were.
    """
    body = kernel.body.body if isinstance(kernel.body, Block) else (kernel.body,)
    if not kernel.workspaces or len(kernel.workspaces) != 2 or not body \
            or not isinstance(body[-1], For):
        return kernel
    allocs, loop = body[:-1], body[-1]
    if [a.buf.name for a in allocs if isinstance(a, Alloc)] != list(kernel.workspaces) \
            or len(allocs) != 2:
        return kernel
    mark, extent = allocs[0].buf, allocs[0].size
    row = list(loop.body.body if isinstance(loop.body, Block) else (loop.body,))
    count = next((s.then.body[-1].var for s in row for s in _stmts(s) if is_scatter(s, mark)),
                 None)
    start = next((k for k, s in enumerate(row) if isinstance(s, Let) and s.var == count), None)
    if count is None or start is None:
        return kernel
    bound = FreshNames(kernel).fresh("bound", count.dtype)
    counted, store = [], None
    for s in row[start + 1:]:
        if is_mark_reset(s, mark):
            continue
        if isinstance(s, Store) and s.value == count and store is None:
            store = s
            continue
        walk_ = _counted(s, mark, bound)
        if walk_ is None or not isinstance(s, For):
            return kernel
        counted.append(walk_)
    if store is None or not counted:
        return kernel
    sized = replace(store, value=BinOp("min", bound, extent))
    exact = Block(tuple(row[start:]))
    new_row = (*row[:start], Let(bound, i64(0)), *counted,
               If(BinOp("<=", bound, i64(most)), sized, exact))
    return replace(kernel, body=Block((*allocs, replace(loop, body=Block(new_row)))))


def _stmts(s: Stmt):
    """``s`` and every statement inside it."""
    yield s
    if isinstance(s, Block):
        for c in s.body:
            yield from _stmts(c)
    elif isinstance(s, For):
        yield from _stmts(s.body)
    elif isinstance(s, If):
        yield from _stmts(s.then)
        if s.otherwise is not None:
            yield from _stmts(s.otherwise)


def _counted(s: Stmt, mark, bound: Var) -> Stmt | None:
    """``s`` with each scatter into ``mark``'s workspace counted into ``bound``
    (a loop whose body then only counts adds its trip count at once); None when
    ``s`` holds anything but loops, lets and scatters."""
    one = Assign(bound, add(bound, i64(1)))
    if is_scatter(s, mark):
        return one
    if isinstance(s, Let):
        return s
    if isinstance(s, Block):
        parts = [_counted(c, mark, bound) for c in s.body]
        return None if any(p is None for p in parts) else Block(tuple(parts))
    if not isinstance(s, For):
        return None
    inner = _counted(s.body, mark, bound)
    if inner is None:
        return None
    stmts = list(inner.body if isinstance(inner, Block) else (inner,))
    while True:                                   # drop the lets nothing reads now
        used = set(reads(Block(tuple(stmts))))
        keep = [c for c in stmts if not (isinstance(c, Let) and c.var.name not in used)]
        if len(keep) == len(stmts):
            break
        stmts = keep
    if stmts == [one]:
        return Assign(bound, add(bound, BinOp("max", sub(s.hi, s.lo), i64(0))))
    return replace(s, body=Block(tuple(stmts)))


__all__ = ["BOUND_MOST", "bound_rows"]
