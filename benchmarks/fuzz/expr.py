"""Expression trees of the fuzzer as plain JSON lists, their text and their meaning.

    ["acc", name, [index, ...]]     an access (rank 0: a bare name)
    ["const", text]                 a number, spelled as in the expression
    ["neg", e]                      unary minus
    ["mul", [e, ...]]               a product
    ["sum", [[sign, e], ...], paren]  a signed sum, parenthesized or not
    ["stored", access]              stored(A[i,j]): 1 where A stores an entry
    ["red", op, index, e]           max/min/sum(index, e): over the entries e visits
                                    (``pattern.lower`` turns the last two into accesses
                                    of computed arrays before ``reference``)

spc's meaning (the README, tests/test_hypothesis.py): distribute products over
sums; each resulting monomial is summed over its own indices absent from the
left-hand side and broadcast over the output indices it lacks.
"""
from __future__ import annotations

import numpy as np


def text(e) -> str:
    kind = e[0]
    if kind == "acc":
        _, name, idx = e
        return name if not idx else f"{name}[{','.join(idx)}]"
    if kind == "const":
        return e[1]
    if kind == "neg":
        return "-" + text(e[1])
    if kind == "mul":
        return "*".join(text(f) for f in e[1])
    if kind == "stored":
        return f"stored({text(e[1])})"
    if kind == "red":
        return f"{e[1]}({e[2]}, {text(e[3])})"
    out = ""
    for n, (sign, term) in enumerate(e[1]):
        if n == 0:
            out = ("-" if sign < 0 else "") + text(term)
        else:
            out += (" - " if sign < 0 else " + ") + text(term)
    return f"({out})" if e[2] else out


EPILOGUES = {"relu": lambda a: np.maximum(a, 0.0), "abs": np.abs}   # 1-Lipschitz: the
                                                  # tolerance of the sum still holds


def reduced_index(tree, out_idx) -> tuple[bool, str | None]:
    """(whether an epilogue can wrap ``tree``, the one index it sums over or
    None): every product reduces the same indices, at most one (``f(sum(k,
    e))`` sums every term over ``k``; einsum sums each term over its own)."""
    sets = {frozenset(ix for a in acc for ix in a[2]) - set(out_idx)
            for _, acc in monomials(tree)}
    if len(sets) != 1:
        return False, None
    (only,) = sets
    if len(only) > 1:
        return False, None
    return True, next(iter(only), None)


def statement(out: str, out_idx, tree, epilogue: str | None = None) -> str:
    """The statement's text; with ``epilogue`` (a name of ``EPILOGUES``, valid
    per ``reduced_index``) the right side is ``f(sum(k, ...))`` or ``f(...)``."""
    lhs = out + (f"[{','.join(out_idx)}]" if out_idx else "")
    rhs = text(tree)
    if epilogue is not None:
        _, k = reduced_index(tree, out_idx)
        rhs = f"{epilogue}(sum({k}, {rhs}))" if k is not None else f"{epilogue}({rhs})"
    return f"{lhs} = {rhs}"


def with_epilogue(case: dict, want: np.ndarray) -> np.ndarray:
    """The reference ``want`` with the case's epilogue applied (if any)."""
    name = case.get("epilogue")
    return want if name is None else EPILOGUES[name](want)


def monomials(e) -> list[tuple[float, list]]:
    """``e`` as a list of (coefficient, [access, ...]) products."""
    kind = e[0]
    if kind == "acc":
        return [(1.0, [e])]
    if kind == "const":
        return [(float(e[1]), [])]
    if kind == "neg":
        return [(-c, a) for c, a in monomials(e[1])]
    if kind == "mul":
        out = [(1.0, [])]
        for f in e[1]:
            out = [(c1 * c2, a1 + a2) for c1, a1 in out for c2, a2 in monomials(f)]
        return out
    return [(sign * c, a) for sign, t in e[1] for c, a in monomials(t)]


def accesses(e) -> list:
    kind = e[0]
    if kind == "acc":
        return [e]
    if kind == "const":
        return []
    if kind == "neg":
        return accesses(e[1])
    if kind == "mul":
        return [a for f in e[1] for a in accesses(f)]
    if kind == "stored":
        return accesses(e[1])
    if kind == "red":
        return accesses(e[3])
    return [a for _, t in e[1] for a in accesses(t)]


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def reference(tree, out_idx, extents: dict, arrays: dict, absolute: bool = False) -> np.ndarray:
    """The float64 value of the expression (with ``absolute``: of |each monomial|,
    an error scale for the tolerance)."""
    letter = {}
    for ix in list(out_idx) + [ix for a in accesses(tree) for ix in a[2]]:
        letter.setdefault(ix, _LETTERS[len(letter)])
    out_shape = tuple(extents[ix] for ix in out_idx)
    total = np.zeros(out_shape)
    for coef, accs in monomials(tree):
        present = [ix for ix in out_idx if any(ix in a[2] for a in accs)]
        ops = [np.asarray(arrays[a[1]], dtype=np.float64) for a in accs]
        if absolute:
            ops = [np.abs(o) for o in ops]
        spec = ",".join("".join(letter[ix] for ix in a[2]) for a in accs) + "->" + \
            "".join(letter[ix] for ix in present)
        part = np.einsum(spec, *ops) if accs else np.float64(1.0)
        part = (abs(coef) if absolute else coef) * part
        shape = [extents[ix] if ix in present else 1 for ix in out_idx]
        total = total + np.broadcast_to(np.reshape(part, shape), out_shape)
    return total
