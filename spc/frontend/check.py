"""Static checks on a parsed assignment, and index sizes from operand shapes."""
from __future__ import annotations

from spc.errors import ParseError, ShapeError
from spc.frontend.ast import (FUNCTIONS, Access, Assignment, Call, children,
                              nested_reduce, reductions_in)


def _repeated_index(acc: Access) -> int | None:
    """Ensures: the position of the first index that repeats an earlier one, or None."""
    for n, ix in enumerate(acc.indices):
        if ix in acc.indices[:n]:
            return n
    return None


def check(assign: Assignment) -> None:
    """Check index use in ``assign``.

    Requires: ``assign`` came from ``parse``.
    Ensures: returns None when the output indices are distinct and all used on
    the right, no access repeats an index, the output tensor is not read, and
    every tensor name has one rank; otherwise raises ``ParseError`` with the
    span of the offending part.
    """
    src, lhs = assign.source, assign.lhs
    _check_calls(assign.rhs, src)
    _check_reduction(assign)

    n = _repeated_index(lhs)
    if n is not None:
        raise ParseError(f"output index '{lhs.indices[n]}' is repeated",
                         source=src, span=lhs.index_spans[n])

    ranks: dict[str, Access] = {}
    for acc in assign.accesses():
        n = _repeated_index(acc)
        if n is not None:
            raise ParseError(
                f"index '{acc.indices[n]}' is repeated in '{acc.tensor}' "
                "(a diagonal read: supported in a single expression, not in a program's "
                "statements)",
                source=src, span=acc.index_spans[n])
        if acc.tensor == lhs.tensor:
            raise ParseError(
                f"output tensor '{lhs.tensor}' also appears on the right-hand side",
                source=src, span=acc.span)
        first = ranks.setdefault(acc.tensor, acc)
        if len(first.indices) != len(acc.indices):
            raise ParseError(
                f"tensor '{acc.tensor}' is used with {len(first.indices)} indices "
                f"and with {len(acc.indices)}", source=src, span=acc.span)

    used = {ix for acc in assign.accesses() for ix in acc.indices}
    for ix, span in zip(lhs.indices, lhs.index_spans):
        if ix not in used:
            raise ParseError(
                f"output index '{ix}' does not appear on the right-hand side",
                source=src, span=span)


def _check_reduction(assign: Assignment) -> None:
    """At most one reduction ``max(j, e)``, none inside it, over an index absent
    from the left and the only index it leaves out of the left; around it (an
    epilogue) only the output's indices."""
    rhs, src = assign.rhs, assign.source
    found = list(reductions_in(rhs))
    if not found:
        return
    top = found[0]
    if len(found) > 1:
        raise ParseError("one reduction per statement (compute the other in a statement "
                         "of its own)", source=src, span=found[1].span)
    inner = nested_reduce(top)
    if inner is not None:
        raise ParseError(f"a reduction {inner.op}({inner.index}, ...) inside another one",
                         source=src, span=inner.span)
    if top is not rhs:
        # f(max(j, e), ...): the rest must read only the output's indices
        outside = set()
        stack = [rhs]
        while stack:
            e = stack.pop()
            if e is top:
                continue
            if isinstance(e, Access):
                outside |= set(e.indices)
            stack.extend(children(e))
        extra = sorted(outside - set(assign.lhs.indices))
        if extra:
            raise ParseError(f"outside the reduction {top.op}({top.index}, ...), index "
                             f"{', '.join(repr(x) for x in extra)} is not an index of the "
                             f"output", source=src, span=rhs.span)
    rhs = top
    if rhs.index in assign.lhs.indices:
        raise ParseError(f"{rhs.op}({rhs.index}, ...) reduces over '{rhs.index}', which is an "
                         f"index of the output", source=src, span=rhs.span)
    others = sorted({ix for acc in assign.accesses() for ix in acc.indices}
                    - set(assign.lhs.indices) - {rhs.index})
    if others:
        raise ParseError(f"{rhs.op}({rhs.index}, ...) reduces over '{rhs.index}' only, but "
                         f"{', '.join(repr(o) for o in others)} is not an index of the output "
                         f"either", source=src, span=rhs.span)


def _check_calls(e, src: str) -> None:
    """Raise ParseError (spanning the call) for an unknown function or a call
    with the wrong number of arguments anywhere in ``e``."""
    if isinstance(e, Call):
        arity = FUNCTIONS.get(e.fn)
        if arity is None:
            raise ParseError(f"unknown function '{e.fn}' (element-wise functions: "
                             f"{', '.join(sorted(FUNCTIONS))})", source=src, span=e.span)
        if len(e.args) != arity:
            takes = "1 argument" if arity == 1 else f"{arity} arguments"
            raise ParseError(f"{e.fn}() takes {takes}, got {len(e.args)}",
                             source=src, span=e.span)
        if e.fn == "stored" and not isinstance(e.args[0], Access):
            raise ParseError("stored() takes one tensor access, such as stored(A[i,j])",
                             source=src, span=e.span)
    for child in children(e):
        _check_calls(child, src)


def _count(n: int) -> str:
    return f"{n} index" if n == 1 else f"{n} indices"


def index_sizes(assign: Assignment, shapes: dict[str, tuple[int, ...]],
                display: dict[str, str] | None = None) -> dict[str, int]:
    """Size of every index, read off the operand shapes.

    Requires: ``shapes`` maps every tensor read on the right-hand side (and
    optionally the output) to its shape.
    Ensures: a dict ``index -> size`` over every index bound by a shaped
    access; raises ``ShapeError`` (with a span) when a shape is missing, a
    rank differs from the access's index count, or one index gets two sizes.
    Messages name tensors and indices through ``display`` (internal name ->
    the user's), where given.
    """
    src = assign.source
    show = (lambda n: display.get(n, n)) if display else (lambda n: n)
    accesses = list(assign.accesses())
    if assign.lhs.tensor in shapes:
        accesses.insert(0, assign.lhs)          # text order: output comes first

    sizes: dict[str, int] = {}
    bound_by: dict[str, str] = {}               # index -> tensor that fixed its size
    for acc in accesses:
        if acc.tensor not in shapes:
            raise ShapeError(f"no shape given for tensor '{show(acc.tensor)}'",
                             source=src, span=acc.span)
        shape = tuple(shapes[acc.tensor])
        if len(shape) != len(acc.indices):
            raise ShapeError(
                f"tensor '{show(acc.tensor)}' has rank {len(shape)} but is indexed "
                f"with {_count(len(acc.indices))}", source=src, span=acc.span)
        for ix, span, dim in zip(acc.indices, acc.index_spans, shape):
            dim = int(dim)
            if ix not in sizes:
                sizes[ix], bound_by[ix] = dim, acc.tensor
            elif sizes[ix] != dim:
                raise ShapeError(
                    f"index '{show(ix)}' is {dim} in {show(acc.tensor)} but "
                    f"{sizes[ix]} in {show(bound_by[ix])}", source=src, span=span)
    return sizes


def output_shape(assign: Assignment, sizes: dict[str, int]) -> tuple[int, ...]:
    """Shape of the output tensor.

    Requires: ``sizes`` from ``index_sizes`` for ``assign``.
    Ensures: one size per output index, in order (``()`` for a scalar);
    raises ``ShapeError`` if an output index has no known size.
    """
    out = []
    for ix, span in zip(assign.lhs.indices, assign.lhs.index_spans):
        if ix not in sizes:
            raise ShapeError(f"size of output index '{ix}' is unknown",
                             source=assign.source, span=span)
        out.append(sizes[ix])
    return tuple(out)
