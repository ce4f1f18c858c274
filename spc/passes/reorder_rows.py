"""reorder_rows: visit the rows of the outer loop in an order computed from the matrix.

    for i in [0, n):                         for i_t in [0, n):
      let A0_p0 = i              ==>           let i = A_rows_length[i_t]
      ... A1_pos[A0_p0] ...                    let A0_p0 = i
                                               ...

``A_rows_length`` is a new int32 parameter whose ``inspector`` (``rows_by_length``,
``runtime/inspectors.py``) the runtime runs once per prepared operand: rows sorted
longest first (Sputnik's row swizzle), so neighbouring warps, and a thread's chunk
of rows, get similar work; or (``how="similarity"``, ``rows_by_similarity``) rows
with overlapping column sets next to each other, so a block's or a thread's rows
share rows of the dense operand in cache (ASpT's row reordering).  Results land at row ``i`` as before: callers see
their own row order.  Only the order of independent iterations changes, so the
numbers are the same, bit for bit.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Block, Buffer, Const, DType, For, Kernel, Let, Load, Param, ParamRole,
                        Var)
from ..ir.traverse import top_loop, walk
from .map_gpu import FreshNames, assigned, inline, let_env, stmts_of, stores_follow

HOW = ("length", "similarity")     # the orders an inspector computes


def rows_param(kernel: Kernel, loop: For) -> Param | None:
    """The ``pos`` array of level 1 of an input tensor read at position
    ``loop.var`` in ``loop``'s body (a csr-like operand whose rows the loop
    visits), or None.  (An assembled output's ``pos`` is no input: the runtime
    fills it, so no inspector can read it first.)"""
    env = let_env(loop.body)
    by_name = {p.name: p for p in kernel.params}
    outputs = {p.tensor for p in kernel.params if p.role is ParamRole.OUTPUT}
    for node in walk(loop.body):
        if isinstance(node, Load) and node.buf.name in by_name:
            p = by_name[node.buf.name]
            if (p.role is not ParamRole.INPUT or p.tensor in outputs or p.tensor is None
                    or p.inspector or node.buf.name != f"{p.tensor}1_pos"):
                continue
            index = inline(node.index, env)
            if isinstance(index, Var) and index.name == loop.var.name:
                return p
    return None


def row_loop(kernel: Kernel) -> tuple[tuple, For, Param] | None:
    """(leading lets, loop, the operand's ``pos`` parameter) when ``kernel``'s
    body is lets and one loop over ``[0, n)`` that ``outer_independent`` names,
    whose stores follow its variable, which assigns no variable declared before
    it (a co-iteration cursor carried from row to row needs the stored order),
    and which reads an input tensor's level-1 ``pos`` at its variable (the rows
    of a csr-like operand, ``rows_param``); else None.  The loop the passes that
    choose how rows are visited (reorder_rows, split_rows) rewrite."""
    found = top_loop(kernel)
    if found is None:
        return None
    lets, loop = found
    if kernel.outer_independent != loop.var.name or not stores_follow(loop):
        return None
    if assigned(loop) & {s.var.name for s in lets}:
        return None
    if not (isinstance(loop.lo, Const) and loop.lo.value == 0):
        return None
    pos = rows_param(kernel, loop)
    return None if pos is None else (lets, loop, pos)


def reorder_rows(kernel: Kernel, how: str = "length") -> Kernel:
    """Visit the outer loop's rows in the order inspector ``rows_by_<how>`` gives.

    Requires: a verified kernel.  Applies to the loop ``row_loop`` finds.  Ensures: that loop
    runs ``i_t`` over ``[0, n)`` and binds its variable to ``perm[i_t]``, ``perm``
    a new int32 input parameter computed by the inspector from the tensor;
    ``outer_independent`` names ``i_t``.  Any other kernel is returned unchanged.
    """
    if how not in HOW:
        raise ValueError(f"reorder_rows: how must be one of {HOW}, not {how!r}")
    found = row_loop(kernel)
    if found is None:
        return kernel
    lets, loop, pos = found
    names = FreshNames(kernel)
    perm = Buffer(names.fresh(f"{pos.tensor}_rows_{how}", DType.I32).name, DType.I32)
    step = names.fresh(f"{loop.var.name}_t", DType.I64)
    body = Block((Let(loop.var, Load(perm, step)),) + stmts_of(loop.body))
    new_loop = For(step, loop.lo, loop.hi, body, loop.kind)
    params = kernel.params + (Param(perm, ParamRole.INPUT, pos.tensor, f"rows_by_{how}"),)
    return replace(kernel, params=params, body=Block(lets + (new_loop,)),
                   outer_independent=step.name)


__all__ = ["HOW", "reorder_rows", "row_loop", "rows_param"]
