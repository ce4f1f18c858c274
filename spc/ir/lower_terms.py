"""Sums whose terms reduce over different indices, into a sparse output: each
term scatters into the same row workspace.

``C[i,j] = A[i,k]*B[k,j] + D[i,j]`` with C sparse: spc sums each term over its
own reductions (``D`` once, not once per ``k``), so the terms need loop nests of
their own.  A dense output takes them one kernel after another (each adds to
the output); a sparse output cannot, since its pattern is assembled once.  So
the rows are visited once, and under each row every term runs its own loops
(``k, j`` for the product, ``j`` for ``D``), scattering into the row's
workspace (ir/workspace.py); the row is then gathered as for one term.
"""
from __future__ import annotations

from ..errors import UnsupportedError
from ..formats.format import Format
from ..frontend import ast
from .nodes import DType, For, Kernel, Stmt, Var, block, i64


def lower_terms_in_workspace(assign: ast.Assignment, groups: list[ast.Assignment],
                             formats: dict[str, Format], *, name: str,
                             order: tuple[str, ...] | None, value_dtype: DType,
                             index_dtype: DType, sum_dtype: DType | None):
    """The Program computing ``assign`` (a sparse, assembled output), whose
    additive terms are ``groups`` (``split_terms``), in one pair of kernels.

    Requires: the output is assembled (dense levels, then one compressed level)
    and no operand is stored in blocks; every operand locates the levels it
    stores by the output's row indices (its rows are not iterated, so that one
    loop over the rows serves every term).  Raises UnsupportedError otherwise.
    ``order`` (a schedule's loop order), if given, orders each term's loops.
    """
    from .lower import (IndexPlan, Lowerer, OutputKind, Program, _loop_order, _params,
                        check_loop_order, classify_output, group_order)
    out_fmt = formats[assign.lhs.tensor]
    kind, _ = classify_output(assign, formats)
    if kind != OutputKind.ASSEMBLED:     # pragma: no cover - a sum never reuses a pattern
        raise UnsupportedError(f"'{assign.source}': cannot assemble its output")
    rows = tuple(assign.lhs.indices[m] for m in out_fmt.order)[:-1]
    why = _unsupported(assign, groups, formats, rows)
    if why:
        raise UnsupportedError(
            f"'{assign.source}': additive terms with different reductions into the sparse "
            f"output {assign.lhs.tensor} {why}; use a dense output, or compute the terms "
            f"separately")
    orders = []
    for group in groups:
        plan = IndexPlan.of(group, formats)
        if order is not None:
            o = group_order(order, plan.loop_vars)
            check_loop_order(group, formats, o)
        else:
            o = _loop_order(group, formats, workspace=True)
        if tuple(o[:len(rows)]) != rows:
            raise UnsupportedError(
                f"'{assign.source}': the loop order of term '{group.rhs}' must start with the "
                f"output's rows {rows}")
        orders.append(tuple(o))
    kernels = []
    for phase in ("assemble", "compute"):
        lowerers = []
        for group, o in zip(groups, orders):
            lw = Lowerer(group, formats, o, value_dtype, index_dtype, OutputKind.ASSEMBLED,
                         None, phase, False, sum_dtype, workspace=True)
            if lowerers:                     # one name space, one workspace, one parameter list
                first = lowerers[0]
                lw.names, lw.ws = first.names, first.ws
                lw.used_buffers, lw.used_scalars = first.used_buffers, first.used_scalars
            lw.row_owner = False             # the rows' start and gather are _rows_body's
            lowerers.append(lw)
        body = _rows_body(lowerers, rows)
        first = lowerers[0]
        every = tuple(dict.fromkeys(v for o in orders for v in o))
        params = _params(first, every)
        attrs = (("order", " + ".join(",".join(o) for o in orders)),
                 ("output", OutputKind.ASSEMBLED), ("workspace", out_fmt_last(assign, formats)))
        independent = rows[0] if rows and out_fmt.levels[0].locatable else None
        kname = name if phase == "compute" else f"{name}_assemble"
        kernels.append(Kernel(kname, params, body, attrs, outer_independent=independent,
                              workspaces=tuple(b.name for b in first.ws.buffers)
                              if independent is not None else ()))
    return Program(tuple(kernels), assign.lhs.tensor, OutputKind.ASSEMBLED, out_fmt, None,
                   tuple(dict.fromkeys(v for o in orders for v in o)),
                   tuple(sorted(formats.items())), value_dtype, index_dtype, drops_zeros=True)


def out_fmt_last(assign: ast.Assignment, formats: dict[str, Format]) -> str:
    fmt = formats[assign.lhs.tensor]
    return assign.lhs.indices[fmt.order[-1]]


def _unsupported(assign, groups, formats, rows) -> str | None:
    """Why one loop over the output's rows cannot serve every term, or None."""
    from .lower import IndexPlan
    for group in groups:
        plan = IndexPlan.of(group, formats)
        if plan.splits:
            return "read operands stored in blocks"
        for acc in group.accesses():
            fmt = formats[acc.tensor]
            for lvl, level in enumerate(fmt.levels):
                var = plan.level_var(fmt, acc.indices, lvl)
                if var in rows and not level.locatable:
                    return (f"need operands that locate the output's rows, but "
                            f"{acc.tensor} ({fmt}) iterates '{var}'")
    return None


def _rows_body(lowerers, rows: tuple[str, ...]) -> Stmt:
    """The workspaces, the loops over ``rows`` and, in each row, every term's loops
    between the row's start (append point, workspace count) and its gather."""
    first = lowerers[0]
    lets, states = [], []
    for lw in lowerers:
        st = {a: _root() for a in range(len(lw.accesses))}
        st[-1] = _root()
        st, located = lw.resolve_located(st, set(rows))
        lets.extend(located)
        states.append(st)
    inner = [*lets, *first.begin_append(states[0]), first.ws.begin_row()]
    for lw, st in zip(lowerers, states):
        inner.append(lw.loops(len(rows), st, frozenset(), set(rows)))
    inner.append(first.end_row(states[0]))
    body: Stmt = block(*inner)
    for ix in reversed(rows):
        body = For(Var(ix, DType.I64), i64(0), first.plan.extent(ix), body)
    return block(*first.ws.allocs(), body)


def _root():
    from ..formats.levels import ROOT
    from .lower import AccessState
    return AccessState(0, ROOT)


__all__ = ["lower_terms_in_workspace"]
