"""simplify: fold constants and trivial arithmetic, flatten nested blocks."""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import BinOp, Block, Cast, Kernel, Neg, Select, If, Const
from ..ir.simplify_expr import simplify_expr
from ..ir.traverse import flatten, rewrite

_EXPR = (BinOp, Neg, Cast, Select)


def simplify(kernel: Kernel) -> Kernel:
    """Requires: a verified kernel.  Ensures: the same results, fewer operations
    (``0 * n + i`` becomes ``i``), no Block directly inside a Block, no If on a
    constant condition."""
    def fn(node):
        if isinstance(node, _EXPR):
            return simplify_expr(node)
        if isinstance(node, Block):
            return flatten(node)
        if isinstance(node, If) and isinstance(node.cond, Const):
            if node.cond.value:
                return node.then
            return node.otherwise if node.otherwise is not None else Block(())
        return node
    return replace(kernel, body=rewrite(kernel.body, fn))
