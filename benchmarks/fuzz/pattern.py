"""The stored-entry semantics of a case, computed from its operands as handed over.

``stored(A[i,j])`` is 1 at the entries A stores, ``max``/``min``/``sum(j, e)`` reduce
over the entries ``e`` visits (a product visits the intersection of its operands'
entries), an empty reduction gives 0.  Which entries an operand has depends on how it
reaches the kernel (README, ``spc/runtime/pattern_kept.py``):

- an operand of a dense format (``dense``, ``dd``...) has every entry;
- an operand given as an spc Tensor already in the kernel's format is taken as it is,
  the zeros that pad or fill its structure (dia's diagonals, bsr's blocks) included;
- otherwise the entries the user's storage holds: a scipy or torch sparse operand's
  stored entries (explicit zeros counted, duplicates one entry, a scipy bsr's block
  zeros counted), a dense array's nonzeros.

Where the kernel reads an operand's pattern (inside ``stored``, ``max``, ``min``, or
through a sampled earlier result) and converting it into a format that may fill
(``Format.may_fill``), or one with fixed slots that drops its explicit zeros, changes
which entries it holds, spc must refuse with a FormatError (``expected_refusals``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import expr as E

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def is_dense_format(fmt: str) -> bool:
    return fmt == "dense" or set(fmt) == {"d"}


def held_mask(x, shape: tuple) -> np.ndarray:
    """The entries operand ``x`` holds, as a boolean array of ``shape``."""
    import spc
    mask = np.zeros(shape, dtype=bool)
    if not shape:
        return np.ones((), dtype=bool)
    if sp.issparse(x):
        c = x.tocoo()
        mask[c.row, c.col] = True
        return mask
    if isinstance(x, (spc.Tensor, spc.SumTensor)):
        if isinstance(x, spc.Tensor) and x.format.is_dense:
            return np.asarray(x.to_numpy()) != 0
        coords, _ = x.to_coo()
        if coords and len(coords[0]):
            mask[tuple(np.asarray(c, dtype=np.int64) for c in coords)] = True
        return mask
    if type(x).__module__.startswith("torch"):
        if str(x.layout) == "torch.strided":
            return x.detach().cpu().numpy() != 0
        idx = x.to_sparse_coo().coalesce().indices().cpu().numpy()
        mask[tuple(idx)] = True
        return mask
    return np.asarray(x) != 0


def visited_mask(given, fmt: str, shape: tuple) -> np.ndarray:
    """The entries a kernel compiled with ``fmt`` for this operand visits."""
    if not shape or is_dense_format(fmt):
        return np.ones(shape, dtype=bool)
    return held_mask(given, shape)


def _resolved(fmt: str, rank: int):
    from spc.formats.format import resolve_format
    try:
        return resolve_format(fmt, rank)
    except Exception:  # noqa: BLE001 - a composite format (hyb) has no single Format
        return None


def must_refuse(given, fmt: str, shape: tuple) -> bool:
    """Whether converting ``given`` into ``fmt`` changes which entries it holds (the
    rule of ``check_pattern_kept``: a format that may fill, one with fixed slots per
    row that keeps no explicit zeros, or a sum format; the converted entries are spc's
    own conversion, the entries held ``held_mask``'s)."""
    import spc
    from spc.formats.convert import stores_slots
    f = _resolved(fmt, len(shape))
    if f is not None and not (f.may_fill or stores_slots(f)):
        return False
    if isinstance(given, spc.Tensor) and f is not None and given.format == f:
        return False
    try:
        converted = spc.tensor(given, fmt)
    except spc.SpcError:          # (data nm refuses): spc refuses the operand itself
        return False
    if f is None and type(given).__name__ == "SumTensor" and given.format == converted.format:
        return False
    mask = np.zeros(shape, dtype=bool)
    for part in getattr(converted, "parts", [converted]):
        coords, _ = part.to_coo()
        if coords and len(coords[0]):
            mask[tuple(coords)] = True
    return not np.array_equal(mask, held_mask(given, shape))


# ------------------------------------------------------------- the tree side


def pattern_reads(tree) -> set:
    """Tensors read inside ``stored(...)`` or a ``max``/``min`` body."""
    found: set = set()

    def walk(e, inside):
        k = e[0]
        if k == "acc":
            if inside:
                found.add(e[1])
        elif k == "stored":
            walk(e[1], True)
        elif k == "red":
            walk(e[3], inside or e[1] in ("max", "min"))
        elif k == "neg":
            walk(e[1], inside)
        elif k == "mul":
            for f in e[1]:
                walk(f, inside)
        elif k == "sum":
            for _, t in e[1]:
                walk(t, inside)
    walk(tree, False)
    return found


def program_pattern_reads(statements: list) -> set:
    """``pattern_reads`` of every statement, and the operands of an earlier statement
    whose result is among them (its result has their pattern)."""
    found = set().union(*(pattern_reads(s["tree"]) for s in statements))
    for s in reversed(statements):
        if s["out"] in found:
            found |= {a[1] for a in E.accesses(s["tree"])}
    return found


def align(arr: np.ndarray, idx: list, target: list, extents: dict) -> np.ndarray:
    """``arr`` (axes named ``idx``) broadcast to the axes ``target``."""
    letter = {ix: _LETTERS[n] for n, ix in enumerate(dict.fromkeys(list(target) + list(idx)))}
    present = [ix for ix in target if ix in idx]
    out = np.einsum("".join(letter[ix] for ix in idx) + "->" +
                    "".join(letter[ix] for ix in present), arr) if idx else np.asarray(arr)
    shape = [extents[ix] if ix in idx else 1 for ix in target]
    return np.broadcast_to(np.reshape(out, shape), tuple(extents[ix] for ix in target))


def _body_mask(body, target: list, masks: dict, extents: dict) -> np.ndarray:
    """The entries a product visits: the intersection of its accesses' entries."""
    m = np.ones(tuple(extents[ix] for ix in target), dtype=bool)
    for a in E.accesses(body):
        m = m & align(masks[a[1]], a[2], target, extents)
    return m


def lower(tree, arrays: dict, masks: dict, extents: dict, absolute: bool):
    """``tree`` with each ``stored`` and ``red`` node replaced by an access of a
    computed array (added to ``arrays``): a tree ``E.reference`` evaluates."""
    k = tree[0]
    if k == "stored":
        acc = tree[1]
        name = f"stored({acc[1]})"
        arrays[name] = masks[acc[1]].astype(np.float64)
        return ["acc", name, acc[2]]
    if k == "red":
        _, op, j, body = tree
        free = [ix for ix in dict.fromkeys(ix for a in E.accesses(body) for ix in a[2])
                if ix != j]
        target = free + [j]
        inner = lower(body, arrays, masks, extents, absolute)
        val = E.reference(inner, target, extents, arrays, absolute=absolute)
        vis = _body_mask(body, target, masks, extents)
        if op == "sum" or absolute:
            r = np.where(vis, np.abs(val) if absolute else val, 0.0)
            r = r.sum(axis=-1) if (op == "sum") else r.max(axis=-1, initial=0.0)
        else:
            fill = -np.inf if op == "max" else np.inf
            r = np.where(vis, val, fill)
            r = r.max(axis=-1, initial=-np.inf) if op == "max" else r.min(axis=-1, initial=np.inf)
            r = np.where(np.isfinite(r), r, 0.0)
        name = f"{op}({j},#{len(arrays)})"
        arrays[name] = r
        return ["acc", name, free]
    if k == "neg":
        return ["neg", lower(tree[1], arrays, masks, extents, absolute)]
    if k == "mul":
        return ["mul", [lower(f, arrays, masks, extents, absolute) for f in tree[1]]]
    if k == "sum":
        return ["sum", [[s, lower(t, arrays, masks, extents, absolute)] for s, t in tree[1]],
                tree[2]]
    return tree


def result_mask(st: dict, fmt: str, masks: dict, extents: dict) -> np.ndarray:
    """The entries a statement's result stores, as later statements visit them: in a
    dense format (the default) every entry; in a sparse one (the generator picks only
    formats that do not fill) a product's, the intersection of its accesses over the
    output's indices (those reading a summed index are dense: the generator keeps them
    so); else every entry."""
    tree, out_idx = st["tree"], st["out_idx"]
    shape = tuple(extents[ix] for ix in out_idx)
    if is_dense_format(fmt):
        return np.ones(shape, dtype=bool)
    terms = tree[1] if tree[0] == "sum" and not tree[2] and len(tree[1]) == 1 else None
    body = terms[0][1] if terms else tree
    if st.get("epilogue") or any(n[0] in ("sum", "red", "stored")
                                 for n in ([body] + (body[1] if body[0] == "mul" else []))):
        return np.ones(shape, dtype=bool)
    accs = [a for a in E.accesses(body) if set(a[2]) <= set(out_idx)]
    return _body_mask(["mul", accs], list(out_idx), masks, extents)


def evaluate(case: dict, inputs: dict, absolute: bool = False) -> np.ndarray:
    """The float64 value of the case's program (its last statement) over the entries
    its operands, as handed over in ``inputs``, store."""
    arrays, masks = {}, {}
    for name, idx in case["tensors"].items():
        shape = tuple(case["extents"][ix] for ix in idx)
        arrays[name] = np.abs(_values(inputs[name], shape)) if absolute else \
            _values(inputs[name], shape)
        masks[name] = visited_mask(inputs[name], case["formats"].get(name, "dense"), shape)
    want = None
    for st in case["statements"]:
        lowered = lower(st["tree"], arrays, masks, case["extents"], absolute)
        want = E.reference(lowered, st["out_idx"], case["extents"], arrays, absolute=absolute)
        if st.get("epilogue") and not absolute:
            want = E.EPILOGUES[st["epilogue"]](want)
        arrays[st["out"]] = want
        masks[st["out"]] = result_mask(st, case["formats"].get(st["out"], "dense"), masks,
                                       case["extents"])
    return want


def _values(x, shape) -> np.ndarray:
    """An operand's values as a float64 array (duplicates summed)."""
    from .operands import to_dense
    return np.asarray(to_dense(x), dtype=np.float64).reshape(shape)


def expected_refusals(case: dict, inputs: dict) -> list[str]:
    """The operands spc must refuse (FormatError): pattern-read ones whose format
    would fill entries they do not hold."""
    out = []
    for name in sorted(program_pattern_reads(case["statements"]) & set(case["tensors"])):
        shape = tuple(case["extents"][ix] for ix in case["tensors"][name])
        fmt = case["formats"].get(name, "dense")
        if shape and not is_dense_format(fmt) and must_refuse(inputs[name], fmt, shape):
            out.append(name)
    return out
