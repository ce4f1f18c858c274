"""Generic walkers of the loop IR: a bottom-up rewriter and a pre-order walk."""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Callable

from .nodes import Block, For, Let


# The names of each dataclass type's fields, or None for a type that is not a
# dataclass (a class object's own type, an enum, an int...): fields() and
# is_dataclass() once per type instead of at every node.
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    names = _FIELD_NAMES.get(cls, _FIELD_NAMES)
    if names is _FIELD_NAMES:
        names = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
        _FIELD_NAMES[cls] = names
    return names


def rewrite(node, fn: Callable):
    """Rebuild ``node`` bottom-up, replacing each node ``n`` by ``fn(n)``.

    ``fn`` returns a node (possibly ``n`` itself).  Tuples of nodes (Block
    bodies) are rewritten element-wise.
    """
    if isinstance(node, tuple):
        return tuple(rewrite(n, fn) for n in node)
    names = _field_names(type(node))
    if names is None:                       # not a dataclass instance (a class is not one)
        return node
    changes = {}
    for name in names:
        old = getattr(node, name)
        if isinstance(old, tuple) or _field_names(type(old)) is not None:
            new = rewrite(old, fn)
            if new is not old:
                changes[name] = new
    if changes:
        node = replace(node, **changes)
    return fn(node)


def walk(node):
    """Every dataclass node below and including ``node``, parents first.

    An explicit stack, not nested generators: a node deep in the tree is handed
    out once, not once per generator between it and the root."""
    stack = [node]
    pop, push, known = stack.pop, stack.extend, _FIELD_NAMES.get
    while stack:
        n = pop()
        if isinstance(n, tuple):
            push(reversed(n))
            continue
        names = known(type(n), _FIELD_NAMES)
        if names is _FIELD_NAMES:
            names = _field_names(type(n))
        if names is None:                   # not a dataclass instance (a class is not one)
            continue
        yield n
        push(reversed([getattr(n, name) for name in names]))


def flatten(block: Block) -> Block:
    out = []
    for s in block.body:
        if isinstance(s, Block):
            out.extend(s.body)
        else:
            out.append(s)
    return Block(tuple(out))


def statements(s) -> tuple:
    """The statements of ``s`` as a flat tuple (nested Blocks flattened; none
    for None)."""
    if s is None:
        return ()
    if isinstance(s, Block):
        return tuple(c for b in s.body for c in statements(b))
    return (s,)


def top_loop(kernel):
    """``(lets, loop)``: the leading Let statements of ``kernel``'s body and the one
    For after them, or None when the body is not shaped so (the shape passes that
    map or reorder the outer loop need)."""
    stmts = kernel.body.body if isinstance(kernel.body, Block) else (kernel.body,)
    k = 0
    while k < len(stmts) and isinstance(stmts[k], Let):
        k += 1
    if len(stmts) != k + 1 or not isinstance(stmts[k], For):
        return None
    return tuple(stmts[:k]), stmts[k]
