"""Generic walkers of the loop IR: a bottom-up rewriter and a pre-order walk."""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Callable

from .nodes import Block, For, Let


def rewrite(node, fn: Callable):
    """Rebuild ``node`` bottom-up, replacing each node ``n`` by ``fn(n)``.

    ``fn`` returns a node (possibly ``n`` itself).  Tuples of nodes (Block
    bodies) are rewritten element-wise.
    """
    if isinstance(node, tuple):
        return tuple(rewrite(n, fn) for n in node)
    if not is_dataclass(node) or isinstance(node, type):
        return node
    changes = {}
    for f in fields(node):
        old = getattr(node, f.name)
        if isinstance(old, tuple) or (is_dataclass(old) and not isinstance(old, type)):
            new = rewrite(old, fn)
            if new is not old:
                changes[f.name] = new
    if changes:
        node = replace(node, **changes)
    return fn(node)


def walk(node):
    """Every dataclass node below and including ``node``, parents first."""
    if isinstance(node, tuple):
        for n in node:
            yield from walk(n)
        return
    if not is_dataclass(node) or isinstance(node, type):
        return
    yield node
    for f in fields(node):
        child = getattr(node, f.name)
        if isinstance(child, tuple) or is_dataclass(child):
            yield from walk(child)


def flatten(block: Block) -> Block:
    out = []
    for s in block.body:
        if isinstance(s, Block):
            out.extend(s.body)
        else:
            out.append(s)
    return Block(tuple(out))


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
