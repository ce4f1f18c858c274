"""split_rows: cut the outer loop's rows into segments of at most K nonzeros.

    for i in [0, n):                          for s in [0, A_segment_count[0]):
      lets(i)                                   let i = A_segment_rows[s]
      let acc = 0                     ==>       lets(i)
      for p in [pos[i], pos[i + 1]):            let acc = 0
        ... C[f(i, j)] += v                     for p in [A_segment_starts[s], A_segment_starts[s + 1]):
      y[i] = acc                                  ... C[f(i, j)] atomic+= v
                                                y[i] atomic+= acc

The segments are an inspector's output (``runtime/inspectors.py``,
``segment_*``), computed once per prepared operand: every nonempty row cut into
``ceil(length / K)`` consecutive pieces of at most K positions (K from the
schedule's ``split_rows``, or chosen from the matrix when it is ``True``), listed
in row order, so that the pieces tile the positions and ``starts[s + 1]`` ends
piece ``s``.  A long row is then shared by several warps or threads (nonzero
balancing, as RoDe and merge-based SpMM do) and no iteration runs more than K
positions; empty rows get no segment (outputs start at zero).

Partial sums are combined by atomic additions: stores that every position of
a row shares (SpMM's ``C[i, j]``, SpMV's ``y[i]``) become ``atomic+=``; stores
that each position owns (SDDMM's ``out[p]``) stay as they are, and a kernel
with only those keeps independent iterations.  Sums are reassociated; with
atomics the order, hence the last bits, may change from run to run
(``deterministic=True`` refuses such a split).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (BinOp, Block, Buffer, Const, For, Kernel, Let, Load, Neg, Param,
                        ParamRole, Store, Var)
from ..ir.traverse import walk
from .map_gpu import (FreshNames, _replace_stores, all_stmts, inline, injective, let_env,
                      stmts_of, sum_reductions)
from .reorder_rows import row_loop

AUTO = "auto"      # K chosen by the inspector from the matrix


def segment_inspector(what: str, max_nnz: int | str) -> str:
    """The ``Param.inspector`` name of one segment array: ``what`` is "rows",
    "starts" or "count"."""
    return f"segment_{what}:{max_nnz}"


def split_rows(kernel: Kernel, max_nnz: int | str = AUTO) -> Kernel:
    """Iterate segments of at most ``max_nnz`` positions instead of rows.

    Requires: a verified kernel; ``max_nnz`` a positive int or ``AUTO``.
    Applies to the loop ``reorder_rows.row_loop`` finds when its body is lets,
    one loop over ``[pos[i], pos[i + 1])``, then stores of linear functions of
    scalars that loop only sums into (initialized to zero in the row body): no
    other loop, no store before the position loop.  Ensures: the loop runs over segments,
    binding the row and clipping the position loop as above; shared stores are
    atomic accumulations (outputs start at zero, so the segments' partial sums
    add up to the row's); ``outer_independent`` names the segment variable when
    no store became atomic, and is dropped otherwise.  Any other kernel is
    returned unchanged.
    """
    if max_nnz != AUTO and not (isinstance(max_nnz, int) and max_nnz >= 1):
        raise ValueError(f"split_rows: max_nnz must be a positive int or {AUTO!r}, "
                         f"not {max_nnz!r}")
    found = row_loop(kernel)
    if found is None:
        return kernel
    lets, rows, pos = found
    shape = _row_shape(rows, pos.value)
    if shape is None:
        return kernel
    before, positions, after = shape
    shared = _shared_stores(before, positions, after)
    if shared is None:
        return kernel
    names = FreshNames(kernel)
    index = pos.value.dtype

    def array(what: str) -> Buffer:
        return Buffer(names.fresh(f"{pos.tensor}_segment_{what}", index).name, index)

    seg_rows, seg_starts, seg_count = array("rows"), array("starts"), array("count")
    s = names.fresh(f"{rows.var.name}_seg", rows.var.dtype)
    one = Const(1, s.dtype)
    clipped = replace(positions, lo=Load(seg_starts, s), hi=Load(seg_starts, BinOp("+", s, one)))

    def atomic(n):
        return replace(n, accumulate=True, atomic=True) if id(n) in shared else n

    body = Block((Let(rows.var, Load(seg_rows, s)),) + before
                 + (_replace_stores(clipped, atomic),)
                 + tuple(_replace_stores(a, atomic) for a in after))
    loop = For(s, Const(0, s.dtype), Load(seg_count, Const(0, s.dtype)), body, rows.kind)
    params = kernel.params + tuple(
        Param(buf, ParamRole.INPUT, pos.tensor, segment_inspector(what, max_nnz))
        for buf, what in ((seg_rows, "rows"), (seg_starts, "starts"), (seg_count, "count")))
    return replace(kernel, params=params, body=Block(lets + (loop,)),
                   outer_independent=None if shared else s.name)


def _row_shape(rows: For, pos: Buffer):
    """(statements before the position loop, the position loop, statements after
    it) when ``rows``' body has that shape (see ``split_rows``), else None."""
    body = stmts_of(rows.body)
    loops = [k for k, st in enumerate(body) if isinstance(st, For)]
    if len(loops) != 1:
        return None
    k = loops[0]
    before, positions, after = body[:k], body[k], body[k + 1:]
    if not all(isinstance(st, Let) for st in before):
        return None
    env = let_env(Block(before))
    lo, hi = inline(positions.lo, env), inline(positions.hi, env)
    row = rows.var
    if lo != Load(pos, row) or hi != Load(pos, BinOp("+", row, Const(1, row.dtype))):
        return None
    return tuple(before), positions, tuple(after)


def _shared_stores(before: tuple, positions: For, after: tuple) -> set[int] | None:
    """The ids of the stores a row's segments share (to be made atomic), or
    None when some store cannot be split: one after the position loop must
    store a linear function of scalars that the loop only sums into,
    zero-initialized in the row body (``before``), with coefficients that read
    nothing the loop assigns; one inside it must accumulate unless each
    position owns its entry.  A loop that carries other state from one
    position to the next cannot be split."""
    reductions = sum_reductions(positions)
    if reductions is None:
        return None
    changed = {v.name for v in reductions}
    zeros = {st.var.name for st in before
             if isinstance(st.value, Const) and st.value.value == 0}
    sums = changed & zeros
    shared: set[int] = set()
    for st in after:
        if not isinstance(st, Store):
            return None
        if not _linear(st.value, sums, changed):
            return None
        shared.add(id(st))
    for n in all_stmts(positions.body):
        if isinstance(n, Store):
            if injective(n.index, positions):
                continue                       # the position's own entry
            if not n.accumulate:
                return None
            shared.add(id(n))
    return shared


def _linear(e, sums: set[str], changed: set[str]) -> bool:
    """True when ``e`` is a linear function of the ``sums`` scalars with
    coefficients that read nothing in ``changed`` (``acc``, ``2 * acc``,
    ``a + b``, ``-acc / n``): the row's value is then the sum of its pieces'."""
    if isinstance(e, Var):
        return e.name in sums
    if isinstance(e, Neg):
        return _linear(e.operand, sums, changed)
    if isinstance(e, BinOp):
        if e.op in ("+", "-"):
            return _linear(e.lhs, sums, changed) and _linear(e.rhs, sums, changed)
        if e.op == "*":
            return (_linear(e.lhs, sums, changed) and _free(e.rhs, changed)) \
                or (_free(e.lhs, changed) and _linear(e.rhs, sums, changed))
        if e.op == "/":
            return _linear(e.lhs, sums, changed) and _free(e.rhs, changed)
    return False


def _free(e, names: set[str]) -> bool:
    return not any(isinstance(n, Var) and n.name in names for n in walk(e))


__all__ = ["AUTO", "segment_inspector", "split_rows"]
