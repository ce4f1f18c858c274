"""Row fusion: kernels of consecutive statements that share their outer loop become one.

    for i: m[i] = max_j S[i,j]                 for i:
    for i: r[i] = 1 / sum_j exp(S[i,j]-m[i])     m_row = max_j S[i,j]
    for i: O[i,:] = sum_j ... m[i] ... r[i]  ->  r_row = 1 / sum_j exp(S[i,j]-m_row)
                                                 O[i,:] = sum_j ... m_row ... r_row

Each kernel's top loop runs over the same index and range, and its iterations
are independent (``outer_independent``).  A result one kernel stores at entry
``i`` (a dense vector over the loop's index) and later kernels read at entry
``i`` only becomes a scalar of the fused loop's body: it never reaches memory.
Every other name a body declares is renamed apart.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, Block, Buffer, For, Kernel, Let, Load, Param, ParamRole, Store,
                        Var)
from ..ir.simplify_expr import simplify_expr
from ..ir.traverse import rewrite, top_loop, walk


class NotFusable(Exception):
    """The kernels do not have the shape ``fuse_rows`` fuses (the message says why)."""


def fuse_rows(kernels: list[Kernel], name: str) -> Kernel:
    """One kernel computing what ``kernels`` compute in order.

    Requires: each kernel is lowered (before the target's passes) with a top
    loop over the same variable and bounds that it claims independent; every
    output of a kernel but the last is a buffer later kernels read, stored once
    per iteration at the loop's index and read there only.
    Ensures: the result has the last kernel's output and the inputs of all
    (the intermediate buffers gone), one top loop whose body runs the kernels'
    bodies in order, the intermediates held in scalars; else NotFusable.
    """
    shapes = [top_loop(k) for k in kernels]
    if any(s is None for s in shapes):
        raise NotFusable("a kernel's body is not one loop after its lets")
    first = shapes[0][1]
    for k, (lets, loop) in zip(kernels, shapes):
        if lets:
            raise NotFusable("a kernel has statements before its loop")
        if (loop.var, loop.lo, loop.hi) != (first.var, first.lo, first.hi):
            raise NotFusable("the kernels' top loops differ")
        if k.outer_independent != loop.var.name:
            raise NotFusable(f"{k.name}: iterations of its top loop are not independent")
        if k.adds_to_output:
            raise NotFusable(f"{k.name} adds to its output")
    i = first.var
    outputs = [[p for p in k.params if p.role is ParamRole.OUTPUT] for k in kernels]
    intermediates: dict[str, Var] = {}
    for outs in outputs[:-1]:
        if len(outs) != 1:
            raise NotFusable("a kernel before the last has more than one output")
        buf = outs[0].value
        intermediates[buf.name] = Var(f"{outs[0].tensor or buf.name}_row", buf.dtype.widened)
    body: list = []
    for t, (k, (_, loop)) in enumerate(zip(kernels, shapes)):
        stmts = _renamed(loop.body, t, keep={i.name})
        stmts = _scalarized(stmts, i, intermediates, t == len(kernels) - 1)
        body.extend(stmts)
    params = _merged_params(kernels, set(intermediates))
    last = kernels[-1]
    return Kernel(name, params, For(i, first.lo, first.hi, Block(tuple(body)), first.kind),
                  last.attrs, outer_independent=i.name)


def _renamed(stmt, t: int, keep: set[str]) -> list:
    """The statements of ``stmt`` with every name it declares suffixed by ``_f<t>``."""
    declared = set()
    for n in walk(stmt):
        if isinstance(n, (Let, For)):
            declared.add(n.var.name)
        elif isinstance(n, Alloc):
            declared.add(n.buf.name)
    declared -= keep

    def fn(n):
        if isinstance(n, Var) and n.name in declared:
            return Var(f"{n.name}_f{t}", n.dtype)
        if isinstance(n, Buffer) and n.name in declared:
            return Buffer(f"{n.name}_f{t}", n.dtype)
        return n
    out = rewrite(stmt, fn)
    return list(out.body) if isinstance(out, Block) else [out]


def _scalarized(stmts: list, i: Var, intermediates: dict[str, Var], last: bool) -> list:
    """``stmts`` (one loop body) with stores of intermediates at entry ``i`` as Lets
    of their scalars, and loads of them at entry ``i`` as those scalars."""
    lets = {s.var.name: s.value for s in stmts if isinstance(s, Let)}

    def at_i(index) -> bool:
        e = rewrite(index, lambda n: lets.get(n.name, n) if isinstance(n, Var) else n)
        return simplify_expr(e) == i

    for n in walk(tuple(stmts)):
        if isinstance(n, Load) and n.buf.name in intermediates and not at_i(n.index):
            raise NotFusable(f"{n.buf.name} is read at another entry than the loop's")
        if isinstance(n, Store) and n.buf.name in intermediates and n not in stmts:
            raise NotFusable(f"{n.buf.name} is stored inside a nested statement")
    out = []
    for s in stmts:
        if isinstance(s, Store) and s.buf.name in intermediates:
            if s.accumulate or not at_i(s.index):
                raise NotFusable(f"{s.buf.name} is not stored once at the loop's entry")
            out.append(Let(intermediates[s.buf.name], s.value))
            continue
        out.append(s)
    return list(rewrite(tuple(out), lambda n: intermediates[n.buf.name]
                        if isinstance(n, Load) and n.buf.name in intermediates else n))


def _merged_params(kernels: list[Kernel], dropped: set[str]) -> tuple[Param, ...]:
    """The kernels' parameters, each once (sizes last), without ``dropped`` buffers."""
    seen: dict[str, Param] = {}
    for k in kernels:
        for p in k.params:
            if p.name in dropped:
                continue
            old = seen.get(p.name)
            if old is not None and replace(old, role=p.role) != p:
                raise NotFusable(f"parameter {p.name} differs between the kernels")
            if old is None or p.role is ParamRole.OUTPUT:
                seen[p.name] = p
    bufs = sorted((p for p in seen.values() if isinstance(p.value, Buffer)), key=lambda p: p.name)
    sizes = sorted((p for p in seen.values() if not isinstance(p.value, Buffer)),
                   key=lambda p: p.name)
    return tuple(bufs) + tuple(sizes)
