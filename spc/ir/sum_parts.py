"""How an expression reads a tensor stored in a sum format (hyb: ell + csr): each
part is an operand of its own, ``part_name(tensor, k)``, and an access of the
tensor becomes the sum of the accesses of its parts."""
from __future__ import annotations

from ..frontend import ast


def part_name(tensor: str, k: int) -> str:
    """The operand name of part ``k`` of sum-format ``tensor``."""
    return f"{tensor}__{k}"


def read_parts(e: ast.Expr, sums: dict, pick: dict[str, int] | None = None) -> ast.Expr:
    """``e`` with every access of a tensor of ``sums`` (name -> its SumFormat)
    replaced by the sum of its parts' accesses, or, for a tensor in ``pick``,
    by the access of the one part ``pick[tensor]``; ``stored(A[i,j])`` of such a
    tensor by the sum of its parts' ``stored`` (each entry is in one part)."""
    def parts(a: ast.Access, wrap) -> ast.Expr:
        fmt = sums.get(a.tensor)
        if fmt is None:
            return wrap(a)
        ks = [pick[a.tensor]] if pick is not None and a.tensor in pick \
            else range(len(fmt.parts))
        out = None
        for k in ks:
            part = wrap(ast.Access(part_name(a.tensor, k), a.indices, a.span, a.index_spans))
            out = part if out is None else ast.BinOp("+", out, part, a.span)
        return out

    def stored(c: ast.Call) -> ast.Expr | None:
        if c.fn != "stored" or not isinstance(c.args[0], ast.Access):
            return None
        return parts(c.args[0], lambda a: ast.Call("stored", (a,), c.span))
    return ast.map_accesses(e, lambda a: parts(a, lambda p: p), call=stored)


def read_inside_function(assign: ast.Assignment, sums) -> str | None:
    """The first tensor of ``sums`` (names of sum-format operands) that ``assign``
    reads inside a function or a reduction (``abs(sum(j, H[i,j] * x[j]))``), else
    None.  Such a tensor cannot be read as the sum of its parts: a function of
    the whole is not the sum of the functions of the parts.  ``stored(A[i,j])``
    is the sum of its parts' ``stored`` (``read_parts``), so it does not count."""
    def inside(e, under: bool) -> str | None:
        if isinstance(e, ast.Access):
            return e.tensor if under and e.tensor in sums else None
        if isinstance(e, ast.Call) and e.fn == "stored" and isinstance(e.args[0], ast.Access):
            return inside(e.args[0], under)
        deeper = under or isinstance(e, (ast.Call, ast.Reduce))
        for c in ast.children(e):
            found = inside(c, deeper)
            if found is not None:
                return found
        return None
    return inside(assign.rhs, False)
