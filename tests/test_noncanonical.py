"""Unsorted and duplicate entries: decided once, from the IR, on every call path.

A kernel lists in its IR (``Kernel.accepts_noncanonical``) the inputs it reads
correctly when their stored entries are unsorted or duplicated; every other
sparse input is canonicalized (duplicates summed, as scipy does) before it runs,
whether the call is positional, by keyword, or on pre-converted data.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.analysis import accepts_noncanonical
from spc.ir.nodes import (Assign, Block, Buffer, DType, For, If, Kernel, Let, Load, Param, ParamRole,
                          Store, Var, add, eq, i64)

ACCEPTS = "# accepts unsorted/duplicate entries of: A"


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("kernel,fmt,accepts", [
    ("spmv", "csr", True), ("spmv", "csc", True), ("spmm", "csr", True), ("spmm", "csc", True),
    ("spmm", "dcsr", True),
    ("spmv", "coo", False),        # a row segment is found by a while loop: needs sorted rows
    ("sddmm", "csr", False),       # the output has A's pattern: duplicates would stay
    ("spmm", "bsr(2,2)", False), ("spmm", "ell", False),
])
def test_named_kernel_says_what_it_accepts(target, kernel, fmt, accepts):
    k = spc.compile(kernel, fmt=fmt, target=target)
    assert (ACCEPTS in k.ir) == accepts
    assert k.accepts_noncanonical == (frozenset({"A"}) if accepts else frozenset())


EXPRESSIONS = [
    # (expression, formats, A accepted unsorted/duplicated)
    ("Y[i,j] = A[i,j]", {"A": "csr"}, False),                   # stores, does not add
    ("C[i,j] = A[i,j]*B[i,j]", {"A": "csr"}, False),
    ("Y[i,j] = A[i,j] + B[i,j]", {"A": "csr"}, False),          # a merge with dense B
    ("s = A[i,j]*A[i,j]", {"A": "csr"}, False),                 # A squared: a merge
    ("y[i] = A[i,j]*x[j]*2 - A[i,j]*z[j]", {"A": "csr"}, False),
    ("y[i] = A[i,j]*x[j]", {"A": "csr", "y": "sparse"}, False),  # assembled output
    ("y[i] = A[i,j]*x[j] + b[i]", {"A": "csr"}, True),
    ("s = A[i,j]", {"A": "csr"}, True),
    ("y[j] = A[i,j]*x[i]", {"A": "csr"}, True),
    ("y[i] = A[i,j]*x[j]", {"A": "csc"}, True),
]


def _operands(expr, A, rng):
    """Dense operands for every tensor of ``expr`` besides A (and the output)."""
    lhs, rhs = expr.split("=")
    m, n = A.shape
    out = {}
    for name, shape in (("B", (m, n)), ("x", (n,) if "x[j]" in rhs else (m,)), ("z", (n,)),
                        ("b", (m,))):
        if f"{name}[" in rhs:
            out[name] = rng.standard_normal(shape)
    return out


def _reference(expr, A, ops):
    dense = {"A": A.toarray(), **ops}
    lhs, rhs = (s.strip() for s in expr.split("="))
    terms = rhs.replace(" - ", " + -1*").split(" + ")
    out_ix = lhs[lhs.index("[") + 1:-1].replace(",", "") if "[" in lhs else ""
    total = 0
    for term in terms:
        factors, operands, scale = [], [], 1.0
        for f in term.split("*"):
            f = f.strip()
            if "[" in f:
                name = f[:f.index("[")]
                factors.append(f[f.index("[") + 1:-1].replace(",", ""))
                operands.append(dense[name])
            else:
                scale *= float(f)
        total = total + scale * np.einsum(",".join(factors) + "->" + out_ix, *operands)
    return total


def _noncanonical(rng, m=7, n=6):
    """A CSR matrix with duplicates, unsorted columns, explicit zeros and empty rows."""
    rows, cols, vals = [], [], []
    for i in range(m):
        if i in (2, 5):
            continue                    # empty rows
        for _ in range(rng.integers(1, 6)):
            rows.append(i)
            cols.append(int(rng.integers(0, n)))
            vals.append(float(rng.standard_normal()))
    rows += [0, 0]
    cols += [3, 3]
    vals += [0.25, 0.0]                 # a duplicate, and an explicit zero
    coo = sp.coo_matrix((vals, (rows, cols)), shape=(m, n))
    # scipy's tocsr would sum the duplicates: build the raw CSR arrays by hand
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(m + 1, dtype=np.int32)
    np.add.at(indptr, np.asarray(rows) + 1, 1)
    A = sp.csr_matrix((np.asarray(vals)[order], np.asarray(cols, dtype=np.int32)[order],
                       np.cumsum(indptr).astype(np.int32)), shape=(m, n))
    A.has_sorted_indices = False
    assert not A.has_canonical_format
    assert np.allclose(A.toarray(), coo.toarray())
    return A


@pytest.mark.parametrize("expr,formats,accepts", EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
def test_expression_says_what_it_accepts(expr, formats, accepts):
    k = spc.compile(expr, formats=formats, dtype="float64")
    assert ("A" in k.accepts_noncanonical) == accepts


@pytest.mark.parametrize("call", ["positional", "keyword", "validate_false_canonical"])
@pytest.mark.parametrize("expr,formats,accepts", EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
def test_duplicates_sum_on_every_path(expr, formats, accepts, call):
    rng = np.random.default_rng(7)
    A = _noncanonical(rng)
    if formats["A"] == "csc":
        A = sp.csc_matrix((A.data, A.indices, A.indptr), shape=A.shape[::-1])
    k = spc.compile(expr, formats=formats, dtype="float64")
    ops = _operands(expr, A, rng)
    want = _reference(expr, A, ops)
    if call == "positional":
        got = k(*[A if n == "A" else ops[n] for n in k.inputs])
    elif call == "keyword":
        got = k(A=A, **ops)
    else:       # validate=False promises canonical input: give it canonical input
        C = A.copy()
        C.sum_duplicates()
        got = k(*[C if n == "A" else ops[n] for n in k.inputs], validate=False)
    if isinstance(got, spc.Tensor):
        got = got.to_numpy()
    elif sp.issparse(got):
        got = got.toarray()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_issue_example_positional_and_keyword_agree():
    A = sp.csr_matrix(([.25, .25], [0, 0], [0, 2]), shape=(1, 1))
    k = spc.compile("Y[i,j] = A[i,j]", formats={"A": "csr"}, dtype="float64")
    np.testing.assert_array_equal(k(A), [[0.5]])
    np.testing.assert_array_equal(k(A=A), [[0.5]])


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_named_kernels_sum_duplicates(kernel, fmt):
    rng = np.random.default_rng(3)
    A = _noncanonical(rng, 9, 8)
    if fmt == "csc":
        A = sp.csc_matrix((A.data, A.indices, A.indptr), shape=A.shape[::-1])
    m, n = A.shape
    k = spc.compile(kernel, fmt=fmt, dtype="float64")
    if kernel == "spmv":
        x = rng.standard_normal(n)
        np.testing.assert_allclose(k(A, x), A.toarray() @ x, rtol=1e-12)
    elif kernel == "spmm":
        B = rng.standard_normal((n, 5))
        np.testing.assert_allclose(k(A, B), A.toarray() @ B, rtol=1e-12)
    else:
        X, Y = rng.standard_normal((m, 4)), rng.standard_normal((n, 4))
        got = k(A, X, Y)
        want = A.toarray() * (X @ Y.T)
        np.testing.assert_allclose(got.toarray(), want, rtol=1e-12, atol=1e-12)
        assert got.has_canonical_format or sp.csr_matrix(got).has_canonical_format


# -- the analysis on hand-written IR ---------------------------------------------------

def _kernel(body, *, value_out=True):
    pos, crd, vals = (Buffer("A1_pos", DType.I32), Buffer("A1_crd", DType.I32),
                      Buffer("A_vals", DType.F64))
    out = Buffer("y_vals", DType.F64)
    params = (Param(crd, ParamRole.INPUT, "A"), Param(pos, ParamRole.INPUT, "A"),
              Param(vals, ParamRole.INPUT, "A"), Param(out, ParamRole.OUTPUT, "y"),
              Param(Var("size_j", DType.I64), ParamRole.SIZE))
    return Kernel("k", params, body), pos, crd, vals, out


def test_analysis_accepts_an_accumulating_position_loop():
    k, pos, crd, vals, out = _kernel(None)
    p = Var("p", DType.I64)
    body = For(p, Load(pos, i64(0)), Load(pos, i64(1)),
               Block((Let(Var("j", DType.I64), Load(crd, p)),
                      Store(out, Var("j", DType.I64), Load(vals, p), accumulate=True))))
    assert accepts_noncanonical(Kernel("k", k.params, body)) == ("A",)


def test_analysis_refuses_an_overwriting_store():
    k, pos, crd, vals, out = _kernel(None)
    p = Var("p", DType.I64)
    body = For(p, Load(pos, i64(0)), Load(pos, i64(1)),
               Store(out, Load(crd, p), Load(vals, p)))
    assert accepts_noncanonical(Kernel("k", k.params, body)) == ()


def test_analysis_refuses_a_cursor():
    """A dense loop that advances a cursor through A's coordinates relies on
    order: the coordinate is loaded at a variable that is no position loop's."""
    k, pos, crd, vals, out = _kernel(None)
    j, q = Var("j", DType.I64), Var("q", DType.I64)
    body = Block((Let(q, Load(pos, i64(0))),
                  For(j, i64(0), Var("size_j", DType.I64),
                      If(eq(Load(crd, q), j),
                         Block((Store(out, j, Load(vals, q), accumulate=True),
                                Assign(q, add(q, i64(1)))))))))
    assert accepts_noncanonical(Kernel("k", k.params, body)) == ()


def test_analysis_refuses_a_squared_value():
    k, pos, crd, vals, out = _kernel(None)
    p = Var("p", DType.I64)
    sq = Load(vals, p)
    from spc.ir.nodes import mul
    body = For(p, Load(pos, i64(0)), Load(pos, i64(1)),
               Store(out, Load(crd, p), mul(sq, sq), accumulate=True))
    assert accepts_noncanonical(Kernel("k", k.params, body)) == ()
