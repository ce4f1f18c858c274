"""Random expressions, formats, shapes and data against numpy einsum.

An expression is a signed sum of products; a product's factors are accesses
(tensors of rank 0-3 over indices from {i, j, k}, sometimes the same tensor
twice), constants, or a parenthesized sum.  The reference distributes products
over sums and sums each resulting term over its own indices that are not on
the left, broadcasting it over the output indices it lacks, which is spc's
meaning.  spc may refuse a combination with UnsupportedError (then the example
is discarded); any other exception, or a wrong number, fails.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import spc
from matrices import to_dense

INDICES = ("i", "j", "k")
NAMES = "ABCDEFGH"
CONSTS = (2, 3, 0.5, 1.5, 0.25)

# ---------------------------------------------------------------- expression trees


@dataclass(frozen=True)
class Acc:
    name: str
    idx: tuple[str, ...]

    def text(self) -> str:
        return self.name if not self.idx else f"{self.name}[{','.join(self.idx)}]"


@dataclass(frozen=True)
class Const:
    value: float

    def text(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Neg:
    operand: object

    def text(self) -> str:
        return "-" + self.operand.text()


@dataclass(frozen=True)
class Prod:
    factors: tuple

    def text(self) -> str:
        return "*".join(f.text() for f in self.factors)


@dataclass(frozen=True)
class Sum:
    terms: tuple            # ((sign, Prod), ...), sign in (+1, -1)
    paren: bool = False

    def text(self) -> str:
        out = ""
        for n, (sign, term) in enumerate(self.terms):
            if n == 0:
                out = ("-" if sign < 0 else "") + term.text()
            else:
                out += (" - " if sign < 0 else " + ") + term.text()
        return f"({out})" if self.paren else out


def monomials(e) -> list[tuple[float, list[Acc]]]:
    """``e`` as a sum of (coefficient, accesses) products."""
    if isinstance(e, Acc):
        return [(1.0, [e])]
    if isinstance(e, Const):
        return [(float(e.value), [])]
    if isinstance(e, Neg):
        return [(-c, accs) for c, accs in monomials(e.operand)]
    if isinstance(e, Prod):
        out = [(1.0, [])]
        for f in e.factors:
            out = [(c1 * c2, a1 + a2) for c1, a1 in out for c2, a2 in monomials(f)]
        return out
    return [(sign * c, accs) for sign, t in e.terms for c, accs in monomials(t)]


def accesses(e) -> list[Acc]:
    return [a for _, accs in monomials(e) for a in accs]


@st.composite
def sum_trees(draw, tensors: dict, budget: list, depth: int = 0):
    """A Sum of 1-3 signed products; ``tensors`` (name -> indices) is filled
    as accesses are drawn, ``budget`` caps the number of accesses."""
    terms = []
    for _ in range(draw(st.integers(1, 3))):
        factors = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["acc", "acc", "acc", "const", "paren"]))
            if budget[0] <= 0 or (kind == "paren" and depth > 0):
                kind = "const"
            if kind == "acc":
                budget[0] -= 1
                if tensors and draw(st.integers(0, 4)) == 0:       # the same tensor again
                    name = draw(st.sampled_from(sorted(tensors)))
                    f = Acc(name, tensors[name])
                else:
                    name = NAMES[len(tensors)]
                    rank = draw(st.integers(0, 3))
                    idx = tuple(draw(st.permutations(INDICES))[:rank])
                    tensors[name] = idx
                    f = Acc(name, idx)
            elif kind == "const":
                f = Const(draw(st.sampled_from(CONSTS)))
            else:
                f = draw(sum_trees(tensors, budget, depth + 1))
                f = Sum(f.terms, paren=True)
            if draw(st.integers(0, 6)) == 0:
                f = Neg(f)
            factors.append(f)
        terms.append((draw(st.sampled_from([1, 1, -1])), Prod(tuple(factors))))
    return Sum(tuple(terms))


def formats_for(rank: int) -> list[str]:
    if rank == 0:
        return ["dense"]
    levels = ["".join(p) for p in itertools.product("ds", repeat=rank)]
    named = {1: ["coo", "sparse"], 2: ["csr", "csc", "coo", "dcsr", "dcsc"], 3: ["csf", "coo"]}
    return ["dense"] * 3 + levels + named[rank]


def is_dense_format(fmt: str) -> bool:
    return fmt == "dense" or set(fmt) == {"d"}


@dataclass
class Problem:
    expr: str
    tree: Sum
    out_idx: tuple[str, ...]
    tensors: dict           # name -> indices
    extents: dict           # index -> size
    formats: dict           # name -> format (output included)
    arrays: dict            # name -> dense numpy array
    inputs: dict            # name -> what is handed to spc
    dtype: str


@st.composite
def problems(draw, sparse_output: bool = False, sizes=(0, 1, 2, 3, 4, 5),
             dtypes=("float64", "float64", "float32")):
    tensors: dict = {}
    tree = draw(sum_trees(tensors, [4]))
    used = list(dict.fromkeys(ix for a in accesses(tree) for ix in a.idx))
    order = draw(st.permutations(used)) if used else []
    if sparse_output:
        assume(order)
    out_idx = tuple(order[:draw(st.integers(1 if sparse_output else 0, len(order)))])
    lhs = "Z" + (f"[{','.join(out_idx)}]" if out_idx else "")
    expr = f"{lhs} = {tree.text()}"
    extents = {ix: draw(st.sampled_from(sizes)) for ix in INDICES}
    dtype = draw(st.sampled_from(list(dtypes)))
    np_dtype = spc.tensor(np.zeros(1), "dense", dtype=dtype).dtype    # bfloat16: ml_dtypes'
    wide_only = np_dtype.itemsize < 4                # scipy.sparse holds no 16-bit values
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    formats, arrays, inputs = {}, {}, {}
    for name, idx in tensors.items():
        fmt = draw(st.sampled_from(formats_for(len(idx))))
        shape = tuple(extents[ix] for ix in idx)
        density = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
        vals = rng.uniform(-1, 1, shape) * (rng.random(shape) < density)
        arr = np.asarray(vals, dtype=np_dtype)
        arrays[name] = arr
        family = draw(st.sampled_from(["numpy", "spc"] + (["scipy"] if len(idx) == 2
                                                           and not wide_only else [])))
        if family == "scipy":
            inputs[name] = sp.csr_matrix(arr)
        elif family == "spc":
            inputs[name] = spc.tensor(arr, fmt)
        elif len(idx) == 0 and draw(st.booleans()):
            inputs[name] = float(arr)
        else:
            inputs[name] = arr
        if fmt != "dense":
            formats[name] = fmt
    if sparse_output:
        formats["Z"] = draw(st.sampled_from(
            [f for f in formats_for(len(out_idx)) if not is_dense_format(f)]))
    elif out_idx and draw(st.integers(0, 4)) == 0:
        formats["Z"] = draw(st.sampled_from(formats_for(len(out_idx))))
    return Problem(expr, tree, out_idx, tensors, extents, formats, arrays, inputs, dtype)


def reference(p: Problem, absolute: bool = False) -> np.ndarray:
    """numpy's value of ``p`` (float64); with ``absolute``, of |each term| (an error scale)."""
    out_shape = tuple(p.extents[ix] for ix in p.out_idx)
    total = np.zeros(out_shape)
    for coef, accs in monomials(p.tree):
        present = [ix for ix in p.out_idx if any(ix in a.idx for a in accs)]
        ops = [np.abs(p.arrays[a.name]) if absolute else p.arrays[a.name] for a in accs]
        spec = ",".join("".join(a.idx) for a in accs) + "->" + "".join(present)
        part = np.einsum(spec, *[o.astype(np.float64) for o in ops]) if accs else np.float64(1)
        part = (abs(coef) if absolute else coef) * part
        shape = [p.extents[ix] if ix in present else 1 for ix in p.out_idx]
        total = total + np.broadcast_to(np.reshape(part, shape), out_shape)
    return total


def run_and_check(p: Problem) -> None:
    note(f"expr: {p.expr}")
    note(f"formats: {p.formats}  extents: {p.extents}  dtype: {p.dtype}")
    note(f"inputs: { {n: type(x).__name__ for n, x in p.inputs.items()} }")
    try:
        kernel = spc.compile(p.expr, formats=p.formats, dtype=p.dtype)
        out = kernel(**p.inputs)
    except spc.UnsupportedError as err:
        note(f"unsupported: {err}")
        assume(False)
    expected = reference(p)
    scale = reference(p, absolute=True)
    out_fmt = p.formats.get("Z", "dense")
    if not p.out_idx:
        assert isinstance(out, np.generic), f"scalar output came back as {type(out)}"
    elif is_dense_format(out_fmt):
        assert isinstance(out, np.ndarray), f"dense output came back as {type(out)}"
    else:
        scipy_in = any(sp.issparse(x) for x in p.inputs.values())
        want = sp.spmatrix if scipy_in and len(p.out_idx) == 2 else spc.Tensor
        assert isinstance(out, want), f"sparse output came back as {type(out)}"
    assert str(out.dtype) == p.dtype
    got = to_dense(out).astype(np.float64)
    assert got.shape == expected.shape
    # 16-bit results are rounded once from float32 sums (the bars)
    rtol = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-3, "bfloat16": 1e-2}[p.dtype]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * (1 + scale.max(initial=0)))


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.filter_too_much])


@settings(max_examples=200, **SETTINGS)
@given(problems())
def test_random_expression_matches_einsum(p):
    run_and_check(p)


@settings(max_examples=80, **SETTINGS)
@given(problems(sizes=(0, 1, 7, 13)))
def test_random_expression_larger_extents(p):
    run_and_check(p)


@settings(max_examples=80, **SETTINGS)
@given(problems(sparse_output=True))
def test_random_expression_sparse_output(p):
    run_and_check(p)


@settings(max_examples=120, **SETTINGS)
@given(problems(dtypes=("float16", "bfloat16")))
def test_random_expression_in_16_bits(p):
    run_and_check(p)


@settings(max_examples=40, **SETTINGS)
@given(problems(sparse_output=True, dtypes=("float16", "bfloat16")))
def test_random_expression_sparse_output_in_16_bits(p):
    run_and_check(p)


@pytest.mark.parametrize("expr, ids", [
    ("Z[i] = A[i,j]*(B[j] + 2) - -C[i]", "ABC"),
    ("Z = 0.5*A[i]*A[i] - (B[i,j] + A[i])*3", "AB"),
])
def test_reference_semantics_by_hand(expr, ids):
    """The reference's meaning of a few expressions, spelled out (so a bug in the
    reference cannot silently agree with one in spc)."""
    rng = np.random.default_rng(0)
    A2, A1, B2, B1, C1 = (rng.uniform(-1, 1, s) for s in [(3, 4), (3,), (3, 4), (4,), (3,)])
    if ids == "ABC":
        want = A2 @ B1 + 2 * A2.sum(1) + C1
        tree = Sum(((1, Prod((Acc("A", ("i", "j")), Sum(((1, Prod((Acc("B", ("j",)),))),
                                                          (1, Prod((Const(2),)))), True)))),
                    (-1, Prod((Neg(Acc("C", ("i",))),)))))
        p = Problem(expr, tree, ("i",), {}, {"i": 3, "j": 4, "k": 0}, {},
                    {"A": A2, "B": B1, "C": C1}, {}, "float64")
    else:
        want = 0.5 * A1 @ A1 - 3 * B2.sum() - 3 * A1.sum()
        tree = Sum(((1, Prod((Const(0.5), Acc("A", ("i",)), Acc("A", ("i",))))),
                    (-1, Prod((Sum(((1, Prod((Acc("B", ("i", "j")),))),
                                    (1, Prod((Acc("A", ("i",)),)))), True), Const(3))))))
        p = Problem(expr, tree, (), {}, {"i": 3, "j": 4, "k": 0}, {},
                    {"A": A1, "B": B2}, {}, "float64")
    assert f"{'Z' + ('[i]' if p.out_idx else '')} = {tree.text()}".replace(" ", "") == \
        expr.replace(" ", "")
    np.testing.assert_allclose(reference(p), want, rtol=1e-12)
    spc_out = spc.compile(expr, dtype="float64")(**p.arrays)
    np.testing.assert_allclose(spc_out, want, rtol=1e-12)
