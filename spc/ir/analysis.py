"""Queries over a kernel's IR that the runtime and passes share.

``accepts_noncanonical`` decides, from the IR alone, which sparse inputs a
kernel reads in a way that makes unsorted or duplicated stored entries
harmless: each entry is visited once by a position loop and only *added* into
state that outlives the loop, so duplicates sum (scipy's meaning) and order
does not matter.  Anything else (merges, cursors, stores that overwrite,
values used non-linearly, assembled sparse outputs) needs canonical input.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass

from .nodes import (Alloc, Assign, BinOp, Block, Buffer, Cast, Const, DType, For, If, Kernel, Let,
                    Load, Neg, ParamRole, Stmt, Store, Var, While)
from .traverse import walk


def accepts_noncanonical(kernel: Kernel) -> tuple[str, ...]:
    """The input tensors (sorted) whose unsorted or duplicate entries ``kernel``
    sums exactly as it sums canonical ones.

    Requires: ``kernel.params`` name the tensor of every storage parameter.
    Ensures: a tensor is listed only if every rule of ``_Reader`` holds for it;
    a kernel that writes a sparse structure (integer output arrays) lists none.
    """
    if any(p.role is ParamRole.OUTPUT and isinstance(p.value, Buffer) and p.value.dtype.is_int
           for p in kernel.params):
        return ()
    tensors = sorted({p.tensor for p in kernel.params
                      if p.role is ParamRole.INPUT and p.tensor is not None
                      and isinstance(p.value, Buffer) and p.value.dtype.is_int})
    return tuple(t for t in tensors if _Reader.of(kernel, t).tolerant(kernel.body))


class _Intolerant(Exception):
    pass


class _Reader:
    """Checks how one tensor's arrays are read.  The rules:

    1. its index arrays are loaded only in a ``For``'s bounds (that loop is then
       a *position loop* of the tensor) or at a position loop's variable;
    2. nothing of it is loaded inside a ``While`` (merges and cursors rely on
       order);
    3. its values are loaded at a position loop's variable, inside a value that
       is added to state declared outside that loop, at most once and linearly;
       and a value added there inside a position loop loads them or carries a
       local of the loop (one that does neither, like ``stored(A)``'s 1, is
       added once per stored entry: duplicates would count twice);
    4. inside a position loop, every store to an array declared outside it
       accumulates, and every assignment to a variable declared outside it is
       ``v = v + e``.
    """

    def __init__(self, structure: frozenset[str], values: frozenset[str]):
        self.structure = structure
        self.values = values

    @classmethod
    def of(cls, kernel: Kernel, tensor: str) -> "_Reader":
        # (an inspector's array is computed from the storage as it is, in any
        # order and with duplicates: runtime/inspectors.py)
        mine = [p.value for p in kernel.params
                if p.tensor == tensor and isinstance(p.value, Buffer) and not p.inspector]
        return cls(frozenset(b.name for b in mine if b.dtype.is_int),
                   frozenset(b.name for b in mine if b.dtype.is_float))

    def tolerant(self, body: Stmt) -> bool:
        try:
            self.stmt(body, ())
        except _Intolerant:
            return False
        return True

    # loops: the enclosing position loops, each (loop variable, names declared in its body)
    def stmt(self, s: Stmt, loops: tuple[tuple[str, frozenset[str]], ...]) -> None:
        if isinstance(s, Block):
            for t in s.body:
                self.stmt(t, loops)
        elif isinstance(s, Let):
            self.expr(s.value, loops)
        elif isinstance(s, Assign):
            outside = [name for name, inner in loops if s.var.name not in inner]
            if outside:
                added = _added_to(s.var, s.value)
                if added is None:
                    raise _Intolerant
                self.expr(added, loops, accumulated=True)
            else:
                self.expr(s.value, loops)
        elif isinstance(s, Store):
            self.expr(s.index, loops)
            outside = [name for name, inner in loops if s.buf.name not in inner]
            if outside and not s.accumulate:
                raise _Intolerant
            self.expr(s.value, loops, accumulated=bool(outside))
        elif isinstance(s, For):
            reads = self.reads(s.lo) | self.reads(s.hi)
            self.expr(s.lo, loops, bounds=True)
            self.expr(s.hi, loops, bounds=True)
            if reads & self.structure:
                loops = loops + ((s.var.name, _declared(s.body)),)
            self.stmt(s.body, loops)
        elif isinstance(s, While):
            if any(isinstance(n, Load) and n.buf.name in self.structure | self.values
                   for n in walk(s)):
                raise _Intolerant
            self.stmt(s.body, loops)
        elif isinstance(s, If):
            self.expr(s.cond, loops)
            self.stmt(s.then, loops)
            if s.otherwise is not None:
                self.stmt(s.otherwise, loops)
        elif isinstance(s, Alloc) or s is None:
            pass
        else:
            raise _Intolerant          # a statement kind this analysis does not know

    def expr(self, e, loops, *, accumulated: bool = False, bounds: bool = False) -> None:
        loop_vars = {name for name, _ in loops}
        value_loads = 0
        for n in walk(e):
            if not isinstance(n, Load):
                continue
            at_position = isinstance(n.index, Var) and n.index.name in loop_vars
            if n.buf.name in self.structure and not (bounds or at_position):
                raise _Intolerant
            if n.buf.name in self.values:
                if not (accumulated and at_position):
                    raise _Intolerant
                value_loads += 1
        if value_loads > 1 or (value_loads and not self.linear(e)):
            raise _Intolerant
        if accumulated and loops and not value_loads and not _carries_local(
                e, frozenset().union(*(inner for _, inner in loops))):
            raise _Intolerant      # added once per stored entry (stored(A)): counts duplicates

    def reads(self, e) -> set[str]:
        return {n.buf.name for n in walk(e) if isinstance(n, Load)}

    def linear(self, e) -> bool:
        """The tensor's value enters ``e`` through + - * (by a factor free of it),
        negation and casts only."""
        if isinstance(e, Load):
            return True
        if not self.reads(e) & self.values:
            return True
        if isinstance(e, (Neg, Cast)):
            return self.linear(e.operand if isinstance(e, Neg) else e.value)
        if isinstance(e, BinOp) and e.op in ("+", "-", "*"):
            return self.linear(e.lhs) and self.linear(e.rhs)
        return False


def _carries_local(e, declared: frozenset[str]) -> bool:
    """Whether ``e``'s value (not an index it loads at) reads a variable or array
    in ``declared`` (a partial sum computed inside the loop)."""
    if isinstance(e, Var):
        return e.name in declared
    if isinstance(e, Load):
        return e.buf.name in declared
    return any(_carries_local(getattr(e, f.name), declared) for f in fields(e)) \
        if is_dataclass(e) else False


def _added_to(var: Var, value):
    """``e`` when ``value`` is ``var + e`` with ``var`` absent from ``e``, else None."""
    if isinstance(value, BinOp) and value.op == "+" and value.lhs == var \
            and not any(n == var for n in walk(value.rhs)):
        return value.rhs
    return None


def _declared(body: Stmt) -> frozenset[str]:
    """Names of the variables, loop variables and local arrays declared in ``body``."""
    names = set()
    for n in walk(body):
        if isinstance(n, Let):
            names.add(n.var.name)
        elif isinstance(n, For):
            names.add(n.var.name)
        elif isinstance(n, Alloc):
            names.add(n.buf.name)
    return frozenset(names)


def sparse_slot(value, slot: str):
    """The index expression ``e`` of ``slot / 2 * 4 + e`` (an @mma_sparse_k loop's
    k: the slot's group, four k each, plus its place in the group), or None when
    ``value`` is not so shaped."""
    if not (isinstance(value, BinOp) and value.op == "+" and isinstance(value.lhs, BinOp)
            and value.lhs.op == "*" and value.lhs.rhs == Const(4, DType.I64)):
        return None
    group = value.lhs.lhs
    if not (isinstance(group, BinOp) and group.op == "/" and group.lhs == Var(slot, DType.I64)
            and group.rhs == Const(2, DType.I64)):
        return None
    return value.rhs

