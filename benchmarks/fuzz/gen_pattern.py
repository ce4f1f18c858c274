"""Fuzz cases that read a sparse operand's pattern (``pattern.py`` gives their meaning).

Four shapes, each over every format and operand family the fuzzer uses:

- ``stored``: ``stored(A[i,j])`` as a factor (``y[i] = stored(A[i,j]) * x[j]``,
  ``Z[i,j] = stored(A[i,j]) * B[i,j] + ...``, ``c[i] = sum(j, stored(A[i,j]))``);
- ``reduce``: ``m[i] = max(j, A[i,j] * x[j])`` (also ``min``, ``sum``, over either index
  of A, times a vector or constant of the output's index);
- ``epilogue``: ``C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])`` (``max``/``min`` too);
- ``program``: a sampled ``S[i,j] = A[i,j] * ...``, then ``m[i] = max(j, S[i,j])`` (or
  ``min``, ``sum``, ``sum(j, stored(S[i,j]))``), then now and then a third statement
  reading both (``r[i] = sum(j, S[i,j] * m[i])``, ``max(j, ...)``, ``m[i] * x[i] + 1``).

A case has ``statements`` (each ``out``, ``out_idx``, ``tree``, ``epilogue``), its ``expr``
the statements joined by ``; ``, and for a program a ``fuse`` choice.  ``tree``, ``out``
and ``out_idx`` are the last statement's (what the call returns).
"""
from __future__ import annotations

import random

import numpy as np

from . import expr as E
from .gen import (FAMILIES, PATTERNS, PLAIN_INDICES, PLAIN_TENSORS, apply_nm, formats_for,
                  gen_values, nm_params, pick_name)

SHAPES = ["stored", "reduce", "reduce", "epilogue", "program", "program"]
OPS = ["max", "max", "min", "sum"]
# formats of a program's sampled result S: ones that do not fill (a result in dia or bsr
# stores zeros filling its structure; what max over it should see is not fuzzed)
PATTERN_FAMILIES = ["scipy-csr-zeros", "scipy-csr-unsorted-dup-zeros", "scipy-bsr", "spc",
                    "spc-from-scipy"]
SAMPLED_FORMATS = ["csr", "csr", "dcsr", "ss", "coo", "sparse", "csf", "csc", "ds"]


def _acc(name, idx):
    return ["acc", name, list(idx)]


def _tree(*factors, sign=1, extra=()):
    """A sum of one product (and ``extra`` signed terms)."""
    f = list(factors)
    t = f[0] if len(f) == 1 else ["mul", f]
    return ["sum", [[sign, t]] + list(extra), False]


def _stmt(out, out_idx, tree, epilogue=None) -> dict:
    return {"out": out, "out_idx": list(out_idx), "tree": tree, "epilogue": epilogue}


def _text(st: dict) -> str:
    lhs = st["out"] + (f"[{','.join(st['out_idx'])}]" if st["out_idx"] else "")
    rhs = E.text(st["tree"])
    if st["epilogue"]:
        rhs = f"{st['epilogue']}({rhs})"
    return f"{lhs} = {rhs}"


def gen_pattern_case(seed: int, number: int, *, target: str, weird: float, sizes,
                     variants: int) -> dict:
    """Case ``number`` of ``seed`` (a pattern-reading one): the program and formats from
    ``number // variants``, the data from ``number``."""
    rng = random.Random(f"{seed}:{number // variants}:pattern-program")
    drng = random.Random(f"{seed}:{number}:pattern-data")
    nrng = np.random.default_rng([seed, number, 7])
    names: set = set()

    def index():
        ix = pick_name(rng, names, PLAIN_INDICES, weird)
        names.add(ix)
        return ix

    def tensor():
        n = pick_name(rng, names, PLAIN_TENSORS, weird)
        names.add(n)
        return n

    i, j, k = index(), index(), index()
    tensors: dict = {}
    formats: dict = {}
    dense_only: set = set()               # operands whose format must stay dense

    def use(idx, dense=False):
        n = tensor()
        tensors[n] = list(idx)
        if dense:
            dense_only.add(n)
        return _acc(n, idx)

    def coef():
        return rng.choice([[], [["const", rng.choice(["2", "0.5", "-1", "3"])]]])

    shape = rng.choice(SHAPES)
    statements = []
    fuse = None
    if shape == "stored":
        A = use(rng.choice([[i, j], [j, i]]))
        form = rng.choice(["vec", "mat", "count"])
        if form == "vec":
            statements.append(_stmt(tensor(), [i], _tree(["stored", A], use([j]))))
        elif form == "mat":
            extra = [[rng.choice([1, -1]), use([i, j])]] if rng.random() < 0.5 else []
            statements.append(_stmt(tensor(), [i, j],
                                    _tree(["stored", A], use([i, j]), *coef(), extra=extra)))
        else:
            statements.append(_stmt(tensor(), [i], _tree(["red", "sum", j, ["stored", A]])))
    elif shape == "reduce":
        op = rng.choice(OPS)
        o, r = rng.choice([(i, j), (j, i)])
        body = [use([i, j] if rng.random() < 0.7 else [j, i])]
        if rng.random() < 0.4:
            body.append(use([r]))
        if rng.random() < 0.2:
            body.append(use([i, j]))
        body += coef()
        if rng.random() < 0.15:
            body[0] = ["neg", body[0]]
        red = ["red", op, r, body[0] if len(body) == 1 else ["mul", body]]
        outer = [red] + ([use([o])] if rng.random() < 0.3 else [])
        extra = [[1, ["const", "1"]]] if rng.random() < 0.2 else []
        statements.append(_stmt(tensor(), [o], _tree(*outer, extra=extra)))
    elif shape == "epilogue":
        op = rng.choice(["sum", "sum", "max", "min"])
        red = ["red", op, k, ["mul", [use([i, k]), use([k, j])]]]
        extra = [[rng.choice([1, -1]), use([j])]] if rng.random() < 0.7 else []
        statements.append(_stmt(tensor(), [i, j], _tree(red, extra=extra),
                                rng.choice(["relu", "abs", None])))
    else:
        A = use([i, j])
        other = rng.choice(["vec", "sddmm", "const", "mat"])
        if other == "vec":
            fac = [use([j], dense=True)]
        elif other == "sddmm":
            fac = [use([i, k], dense=True), use([j, k], dense=True)]
        elif other == "mat":
            fac = [use([i, j], dense=True)]
        else:
            fac = [["const", rng.choice(["2", "0.5", "1"])]]
        S = tensor()
        if rng.random() < 0.6:             # a sampled result stored sparse (A's pattern)
            formats[S] = rng.choice(SAMPLED_FORMATS)
        statements.append(_stmt(S, [i, j], _tree(A, *fac)))
        S_ij = _acc(S, [i, j])
        m = tensor()
        op = rng.choice(OPS + ["count"])
        body = ["stored", S_ij] if op == "count" else S_ij
        statements.append(_stmt(m, [i], _tree(["red", "sum" if op == "count" else op, j, body])))
        if rng.random() < 0.5:
            third = rng.choice(["sum", "max", "min", "scale"])
            if third == "scale":
                tree = _tree(_acc(m, [i]), use([i], dense=True), extra=[[1, ["const", "1"]]])
            else:
                tree = _tree(["red", third, j, ["mul", [S_ij, _acc(m, [i])]]])
            statements.append(_stmt(tensor(), [i], tree))
        fuse = rng.choice([None, True, "rows", False])
    for name, idx in tensors.items():
        if name in dense_only or name in formats:
            continue
        fmt = formats_for(len(idx), rng)
        if fmt != "dense":
            formats[name] = fmt
    dtype = rng.choice(["float64", "float32"])
    # the data side: one extent per index (0..7, now and then 16..64)
    extents = {ix: drng.choice(sizes) for ix in (i, j, k)}
    if drng.random() < 0.08:
        extents[drng.choice([i, j, k])] = drng.choice([16, 33, 64])
    used = {ix for st in statements for a in E.accesses(st["tree"]) for ix in a[2]}
    extents = {ix: n for ix, n in extents.items() if ix in used}
    operands = {}
    for name, idx in tensors.items():
        shp = tuple(extents[ix] for ix in idx)
        arr = gen_values(nrng, shp, drng.choice(PATTERNS), dtype)
        if drng.random() < 0.5:                       # negative entries: max sees a stored 0
            arr = -np.abs(arr)
        nm = nm_params(formats.get(name, "dense"))
        if nm and drng.random() < 0.9:
            arr = apply_nm(arr, *nm)
        fams = FAMILIES[len(idx)]
        if len(idx) == 2 and drng.random() < 0.3:      # storage whose pattern is not the
            fams = PATTERN_FAMILIES                     # nonzeros: explicit zeros, padding
        operands[name] = {"values": arr.tolist(), "family": drng.choice(fams),
                          "seed": drng.randrange(2**31)}
    last = statements[-1]
    case = {"id": f"{seed}-{number}", "target": target, "shape": shape,
            "expr": "; ".join(_text(s) for s in statements), "statements": statements,
            "epilogue": None, "out": last["out"], "out_idx": list(last["out_idx"]),
            "tree": last["tree"], "tensors": tensors, "formats": formats, "schedule": None,
            "extents": extents, "dtype": dtype, "operands": operands,
            "call": drng.choice(["keyword", "keyword", "positional"]),
            "force_threads": target == "cpu" and drng.random() < 0.3}
    if fuse is not None:
        case["fuse"] = fuse
    return case
