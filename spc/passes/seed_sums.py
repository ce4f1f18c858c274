"""seed_sums: a sum whose result is only used as ``sum + e`` starts at ``e``.

An epilogue that adds a term which does not depend on the reduction (SpMM +
bias: ``C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])``) is lowered as

    let acc = 0
    for p in row: acc = acc + A[p] * B[k, j]
    C[i, j] = max(acc + b[j], 0)

On the GPU that load of ``b`` after the row loop made the kernel 1.46x slower
than SpMM on the H200 (16384^2 at 0.1%, N = 256: 53.7 against 36.8 us; the same
source with the sum starting at ``b[j]`` instead: 36.9 us; with ``b[j]`` loaded
into a register before the loop: 42.7 us, 2026-11-30, hand variants of spc's
source).  This pass writes the second form:

    let acc = b[j]
    for p in row: acc = acc + A[p] * B[k, j]
    C[i, j] = max(acc, 0)

The sum then adds its terms to ``e`` first instead of last, so float results
may differ in the last bits (the order of a sum is not fixed by the language;
the interpreter runs either form).

Requires: nothing.  Ensures: in each Block, a ``let acc = 0`` directly followed
by a loop that reads ``acc`` only in updates ``acc = acc + x`` (``x`` not
reading it), then a plain Store whose value reads ``acc`` once, as ``acc + e``
or ``e + acc`` with ``e`` of ``acc``'s type reading neither ``acc`` nor any
variable or array the loop assigns, and no later use of ``acc``: the Let
becomes ``let acc = e`` and the value reads ``acc`` alone.  Anything else is
left as it is.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.affine import var_names
from ..ir.nodes import Assign, BinOp, Block, Const, For, Kernel, Let, Load, Store, Var, dtype_of
from ..ir.traverse import rewrite, walk
from .map_gpu import all_stmts, assigned, declared


def seed_sums(kernel: Kernel) -> Kernel:
    """``kernel`` with each sum that an epilogue only adds a term to started at
    that term (module docstring)."""
    def visit(n):
        return _seeded(n) if isinstance(n, Block) else n
    body = rewrite(kernel.body, visit)
    return kernel if body == kernel.body else replace(kernel, body=body)


def _seeded(block: Block) -> Block:
    body = list(block.body)
    for i in range(len(body) - 2):
        let, loop, store = body[i], body[i + 1], body[i + 2]
        if not (isinstance(let, Let) and isinstance(loop, For) and isinstance(store, Store)):
            continue
        acc = let.var
        if not (isinstance(let.value, Const) and let.value.value == 0 and _only_sums(loop, acc)
                and not store.accumulate and not _reads(store.index, acc)
                and not any(_reads(s, acc) for s in body[i + 3:])):
            continue
        found = _added_term(store.value, acc)
        if found is None:
            continue
        term, value = found
        if dtype_of(term) is not acc.dtype or _reads(term, acc) \
                or _names(term) & _assigned(loop):
            continue
        body[i] = Let(acc, term)
        body[i + 2] = replace(store, value=value)
    return Block(tuple(body)) if body != list(block.body) else block


def _reads(node, var: Var) -> bool:
    return var.name in var_names(node)


def _only_sums(loop: For, acc: Var) -> bool:
    """``acc`` is read in ``loop`` only by updates ``acc = acc + x``, ``x`` not
    reading it."""
    updates = 0
    for n in walk(loop.body):
        if isinstance(n, Assign) and n.var.name == acc.name:
            v = n.value
            if not (isinstance(v, BinOp) and v.op == "+" and isinstance(v.lhs, Var)
                    and v.lhs.name == acc.name and not _reads(v.rhs, acc)):
                return False
            updates += 1
    reads = sum(1 for n in walk(loop.body) if isinstance(n, Var) and n.name == acc.name)
    return updates > 0 and reads == 2 * updates        # the target and the lhs of each


def _added_term(value, acc: Var):
    """(e, value with ``acc + e`` or ``e + acc`` replaced by ``acc``) where
    ``value`` reads ``acc`` exactly once, in such a sum; else None."""
    if sum(1 for n in walk(value) if isinstance(n, Var) and n.name == acc.name) != 1:
        return None
    found = []

    def visit(n):
        if isinstance(n, BinOp) and n.op == "+" and not found:
            for mine, other in ((n.lhs, n.rhs), (n.rhs, n.lhs)):
                if isinstance(mine, Var) and mine.name == acc.name:
                    found.append(other)
                    return mine
        return n
    rebuilt = rewrite(value, visit)
    return (found[0], rebuilt) if found else None


def _names(node) -> set[str]:
    """The variables ``node`` reads and the arrays it loads from."""
    return var_names(node) | {n.buf.name for n in walk(node) if isinstance(n, Load)}


def _assigned(loop: For) -> set[str]:
    """The variables and arrays ``loop`` declares, assigns or stores to."""
    return declared(loop) | assigned(loop) | \
        {n.buf.name for n in all_stmts(loop) if isinstance(n, Store)}


__all__ = ["seed_sums"]
