"""overwrite_outputs: find the outputs a kernel stores every entry of exactly once.

An output's entries need no zeroing before the launch when the kernel writes
each of them once, with a plain store (``=``): the zero fill is then a wasted
pass over the output and, on the GPU, a driver call per kernel call (about
6 us of host time on an H200 host; ``runtime/torch_fast``).  The pass proves it
from the loops around the output's one store, and records the buffer in
``Kernel.overwrites``:

    for i in [0, size_i):                         # every i once
      for j in [0, size_j):                       # every j once
        ... C_vals[i * size_j + j] += acc   ==>   C_vals[i * size_j + j] = acc

    for i in [0, size_i):                         # a pattern output (SDDMM):
      for p in [pos[i], pos[i + 1]):              # every position of pos, once
        S_vals[p] = ...

The store must be the only one to the buffer, not atomic, under no ``if`` or
``while``, and under no loop its address does not use.  Its address, with the
kernel's lets inlined, must be a row-major linearization of loop variables
``v`` each running over a whole ``[0, size_v)`` (``((a * size_b) + b) * size_c
+ c``, in any loop order), or the variable of an innermost loop over
``[pos[q], pos[q + 1])`` with ``q`` such a linearization of the loops above it
(or 0 with none): the positions of a compressed level, all of them once when
``pos`` is well formed (validated operands, or ``validate=False`` at the
caller's word).  An accumulating store proven so becomes plain: the output's
prior contents no longer matter, and the interpreter poisons them to check.
Anything else is left as it is; the runtime then zeroes the output.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (BinOp, Block, Buffer, Expr, For, If, Kernel, Load, ParamRole, Stmt,
                        Store, Var, While)
from ..ir.simplify_expr import is_const
from .map_gpu import _replace_stores, inline, let_env


def overwrite_outputs(kernel: Kernel) -> Kernel:
    """``kernel`` with ``overwrites`` naming each output buffer whose every entry
    it stores exactly once (plain stores), and those stores made plain.

    Requires: a verified kernel.  A kernel that adds to its output's prior
    contents (``adds_to_output``) is returned unchanged.  Ensures: the numbers the kernel computes are
    the same when such a buffer starts with any contents, as they were when it
    started at zero; every other store is unchanged."""
    if kernel.adds_to_output:
        return kernel
    outputs = {p.name for p in kernel.params
               if p.role is ParamRole.OUTPUT and isinstance(p.value, Buffer)}
    found: dict[str, list[tuple[Store, tuple[For, ...], bool]]] = {}
    for store, loops, guarded in _stores(kernel.body, (), False):
        if store.buf.name in outputs:
            found.setdefault(store.buf.name, []).append((store, loops, guarded))
    env = let_env(kernel.body)
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE and p.tensor is None}
    once, overwritten = set(), []
    for name, stores in sorted(found.items()):
        if len(stores) == 1:
            store, loops, guarded = stores[0]
            if not guarded and not store.atomic and _covers_once(
                    inline(store.index, env), loops, env, sizes):
                once.add(id(store))
                overwritten.append(name)
    if not once:
        return kernel
    body = _replace_stores(kernel.body,
                           lambda n: replace(n, accumulate=False) if id(n) in once else n)
    return replace(kernel, body=body, overwrites=tuple(overwritten))


def _stores(s: Stmt, loops: tuple[For, ...], guarded: bool):
    """(store, its enclosing loops outermost first, whether an if/while encloses it)."""
    if isinstance(s, Block):
        for child in s.body:
            yield from _stores(child, loops, guarded)
    elif isinstance(s, Store):
        yield s, loops, guarded
    elif isinstance(s, For):
        yield from _stores(s.body, loops + (s,), guarded)
    elif isinstance(s, If):
        yield from _stores(s.then, loops, True)
        if s.otherwise is not None:
            yield from _stores(s.otherwise, loops, True)
    elif isinstance(s, While):
        yield from _stores(s.body, loops, True)


def _covers_once(index: Expr, loops: tuple[For, ...], env, sizes: set[str]) -> bool:
    """Whether ``index`` takes every value of the output's range exactly once
    over the iterations of ``loops`` (see the module docstring)."""
    if not loops:
        return False
    whole = {}                                     # loop var -> its size var, [0, size)
    for loop in loops:
        if is_const(loop.lo, 0) and isinstance(loop.hi, Var) and loop.hi.name in sizes:
            whole[loop.var.name] = loop.hi.name
    last = loops[-1]
    if isinstance(index, Var) and index.name == last.var.name and last.var.name not in whole:
        positions = _positions(last, env)         # a compressed level's positions
        if positions is None:
            return False
        rest = [loop.var.name for loop in loops[:-1]]
        if not rest:
            return is_const(positions, 0)
        return all(v in whole for v in rest) and _row_major(positions, set(rest), whole)
    names = [loop.var.name for loop in loops]
    return all(v in whole for v in names) and len(set(names)) == len(names) \
        and _row_major(index, set(names), whole)


def _positions(loop: For, env) -> Expr | None:
    """``q`` when ``loop`` runs over ``[pos[q], pos[q + 1])`` (lets inlined)."""
    lo, hi = inline(loop.lo, env), inline(loop.hi, env)
    if not (isinstance(lo, Load) and isinstance(hi, Load) and lo.buf == hi.buf):
        return None
    q, step = lo.index, hi.index
    if isinstance(step, BinOp) and step.op == "+" and (
            (is_const(step.rhs, 1) and step.lhs == q) or (is_const(step.lhs, 1) and step.rhs == q)):
        return q
    return None


def _row_major(e: Expr, remaining: set[str], whole: dict[str, str]) -> bool:
    """Whether ``e`` is ``rest * size_v + v`` peeled down to one variable, using
    each variable of ``remaining`` once, each ``v`` scaled by its loop's size."""
    if isinstance(e, Var):
        return remaining == {e.name}
    if not (isinstance(e, BinOp) and e.op == "+"):
        return False
    for scaled, v in ((e.lhs, e.rhs), (e.rhs, e.lhs)):
        if not (isinstance(v, Var) and v.name in remaining and isinstance(scaled, BinOp)
                and scaled.op == "*"):
            continue
        for rest, size in ((scaled.lhs, scaled.rhs), (scaled.rhs, scaled.lhs)):
            if isinstance(size, Var) and size.name == whole[v.name] \
                    and _row_major(rest, remaining - {v.name}, whole):
                return True
    return False

