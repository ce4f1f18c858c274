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

from ..ir.nodes import (Alloc, BinOp, Block, Buffer, Const, For, Kernel, Let, Load, Param,
                        ParamRole, Stmt, Store, Var, cast_to)
from ..ir.simplify_expr import simplify_expr
from ..ir.traverse import rewrite, top_loop, walk


class NotFusable(Exception):
    """The kernels do not have the shape ``fuse_rows`` fuses (the message says why)."""


def fuse_rows(kernels: list[Kernel], name: str) -> Kernel:
    """One kernel computing what ``kernels`` compute in order.

    Requires: each kernel is lowered (before the target's passes) with a top
    loop over the same variable and bounds that it claims independent; every
    output of a kernel but the last is a buffer later kernels read, stored once
    per iteration of the row nest (below) at the nest's entry and read there only.
    The row nest is the top loop, or (batched rows, ``m[h,i]``) the top loop and
    the loops directly inside it that every kernel shares (same variable,
    bounds from 0), down to the first depth whose body stores every
    intermediate; its entry is the dense position of its variables
    (``h * size_i + i``).
    Ensures: the result has the last kernel's output and the inputs of all
    (the intermediate buffers gone), one loop nest whose innermost body runs
    the kernels' bodies in order, the intermediates held in scalars; else
    NotFusable.
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
    outputs = [[p for p in k.params if p.role is ParamRole.OUTPUT] for k in kernels]
    intermediates: dict[str, Var] = {}
    for outs in outputs[:-1]:
        if len(outs) != 1:
            raise NotFusable("a kernel before the last has more than one output")
        buf = outs[0].value
        intermediates[buf.name] = Var(f"{outs[0].tensor or buf.name}_row", buf.dtype.widened)
    loops = [loop for _, loop in shapes]
    nest = _row_nest(loops, intermediates)
    keep = {v.var.name for v in nest}
    levels: list[list] = [[] for _ in nest]     # each nest level's lets, then the inner body
    inner: list = []
    entry = row_entry(nest)
    for t, loop in enumerate(loops):
        stmts = _renamed(loop.body, t, keep=keep)
        lets_seen: dict = {}
        for depth in range(1, len(nest)):
            lets = [s for s in stmts if isinstance(s, Let)]
            levels[depth - 1].extend(lets)
            lets_seen.update({s.var.name: s.value for s in lets})
            stmts = _stmts(next(s for s in stmts if isinstance(s, For)).body)
        inner.extend(_scalarized(stmts, entry, intermediates, lets_seen))
    params = _merged_params(kernels, set(intermediates))
    body: Stmt = Block(tuple(inner))
    for depth in range(len(nest) - 1, -1, -1):
        loop = nest[depth]
        body = For(loop.var, loop.lo, loop.hi, body, loop.kind)
        if depth:
            body = Block(tuple(levels[depth - 1]) + (body,))
    rows = nest[1].var.name if len(nest) > 1 and all(
        k.rows_independent == nest[1].var.name for k in kernels) else None
    return Kernel(name, params, body, kernels[-1].attrs, outer_independent=first.var.name,
                  rows_independent=rows)


def _stmts(stmt) -> list:
    return list(stmt.body) if isinstance(stmt, Block) else [stmt]


def _row_nest(loops: list[For], intermediates: dict[str, Var]) -> list[For]:
    """The loops (of the first kernel) of the row nest ``fuse_rows`` fuses: the top
    loop, then the loops every kernel has as its one loop after lets, same
    variable and bounds from 0, until a depth whose body stores every
    intermediate directly (the top loop alone when there are none)."""
    nest = [loops[0]]
    bodies = [_stmts(loop.body) for loop in loops]
    while intermediates and not _stores_all(bodies[:-1], intermediates):
        inner = []
        for stmts in bodies:
            fors = [s for s in stmts if isinstance(s, For)]
            if len(fors) != 1 or not all(isinstance(s, (Let, For)) for s in stmts):
                return nest
            inner.append(fors[0])
        head = inner[0]
        if any((f.var, f.lo, f.hi) != (head.var, head.lo, head.hi) for f in inner) \
                or head.lo != Const(0, head.lo.dtype):
            return nest
        nest.append(head)
        bodies = [_stmts(f.body) for f in inner]
    return nest


def _stores_all(bodies: list[list], intermediates: dict[str, Var]) -> bool:
    """Whether each body (but the last kernel's) stores its intermediate directly."""
    return all(any(isinstance(s, Store) and s.buf.name in intermediates for s in stmts)
               for stmts in bodies)


def row_entry(nest: list[For]):
    """The dense position of the nest's variables: ``((v0 * hi1) + v1) * hi2 + v2 ...``."""
    e = nest[0].var
    for loop in nest[1:]:
        e = BinOp("+", BinOp("*", e, loop.hi), loop.var)
    return simplify_expr(e)


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


def _scalarized(stmts: list, entry, intermediates: dict[str, Var], outer_lets: dict) -> list:
    """``stmts`` (the innermost body of the row nest) with stores of intermediates
    at the nest's ``entry`` as Lets of their scalars, and loads of them there as
    those scalars (``outer_lets``: the lets of the enclosing nest levels)."""
    lets = dict(outer_lets)
    lets.update({s.var.name: s.value for s in stmts if isinstance(s, Let)})

    def at_i(index) -> bool:
        e, seen = index, None
        while e != seen:                        # lets may name lets of outer levels
            seen, e = e, rewrite(e, lambda n: lets.get(n.name, n) if isinstance(n, Var) else n)
        return simplify_expr(e) == entry

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
            var = intermediates[s.buf.name]
            # the row's value as the kernel stored it: rounded to the array's type
            # (sums may run wider: accumulate="float64" over float32 arrays)
            out.append(Let(var, cast_to(s.value, var.dtype)))
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
