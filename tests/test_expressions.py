"""Index-notation expressions against numpy einsum on dense copies (float64),
each under several format combinations; sparse outputs also pin their pattern."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from matrices import assert_allclose, pattern_of, sparse_array

# index extents used by every case (distinct, so a transposed access cannot pass by luck)
EXTENT = {"i": 7, "j": 9, "k": 5, "l": 4}


@dataclass(frozen=True)
class Case:
    """An expression, its operands' index strings, which operands hold sparse
    data, and the numpy reference on dense copies."""
    id: str
    expr: str
    operands: dict[str, str]                  # tensor name -> its indices, e.g. "ij"
    reference: Callable[..., np.ndarray]      # dense operands by name -> dense result
    sparse_data: frozenset = frozenset()      # operands filled ~35% (others dense-filled)
    pattern: Callable[..., set] | None = None  # stored sets by name -> output pattern
    format_sets: tuple[dict, ...] = field(default_factory=tuple)


def ein(spec, *ops):
    return np.einsum(spec, *ops)


def stored_set(a: np.ndarray, fmt: str) -> set:
    """The coordinates an operand stores: its nonzeros, or every one if dense."""
    mask = np.ones(a.shape, dtype=bool) if fmt == "dense" else a != 0
    return set(zip(*(ix.tolist() for ix in np.nonzero(mask))))


CASES = [
    Case("spmv", "y[i] = A[i,j]*x[j]", {"A": "ij", "x": "j"},
         lambda A, x: ein("ij,j->i", A, x), frozenset("A"),
         format_sets=({"A": "csr"}, {"A": "csc"}, {"A": "coo"}, {"A": "dcsr"}, {"A": "dense"},
                      {"A": "ss"}, {"A": "sd"}, {"A": "dcsc"}, {"A": "csr", "x": "s"},
                      {"A": "coo", "x": "coo"}, {"A": "csr", "y": "s"})),
    Case("spmm", "C[i,j] = A[i,k]*B[k,j]", {"A": "ik", "B": "kj"},
         lambda A, B: ein("ik,kj->ij", A, B), frozenset("AB"),
         format_sets=({"A": "csr"}, {"A": "csc"}, {"A": "coo"}, {"A": "dcsr"},
                      {"A": "csr", "B": "csr"}, {"A": "dense", "B": "csr"},
                      {"A": "csr", "C": "csr"})),
    Case("sddmm", "S[i,j] = A[i,j]*X[i,k]*Y[j,k]", {"A": "ij", "X": "ik", "Y": "jk"},
         lambda A, X, Y: A * ein("ik,jk->ij", X, Y), frozenset("A"),
         pattern=lambda A, X, Y: A,
         format_sets=({"A": "csr", "S": "csr"}, {"A": "coo", "S": "coo"},
                      {"A": "csc", "S": "csc"}, {"A": "dcsr", "S": "dcsr"},
                      {"A": "coo", "S": "csr"}, {"A": "csr", "S": "dense"},
                      {"A": "dense", "S": "dense"})),
    Case("spmv_plus_b", "y[i] = A[i,j]*x[j] + b[i]", {"A": "ij", "x": "j", "b": "i"},
         lambda A, x, b: ein("ij,j->i", A, x) + b, frozenset("Ab"),
         format_sets=({"A": "csr"}, {"A": "csc"}, {"A": "coo"}, {"A": "dcsr"}, {"A": "dense"},
                      {"A": "csr", "b": "s"})),
    Case("mul", "C[i,j] = A[i,j]*B[i,j]", {"A": "ij", "B": "ij"},
         lambda A, B: A * B, frozenset("AB"),
         pattern=lambda A, B: A & B,
         format_sets=({"A": "csr", "B": "csr", "C": "csr"}, {"A": "csr", "B": "csr"},
                      {"A": "coo", "B": "csr", "C": "csr"}, {"A": "dcsr", "B": "dcsr", "C": "csr"},
                      {"A": "csc", "B": "csc", "C": "csc"}, {"A": "csr", "B": "dense", "C": "csr"})),
    Case("add", "C[i,j] = A[i,j] + B[i,j]", {"A": "ij", "B": "ij"},
         lambda A, B: A + B, frozenset("AB"),
         pattern=lambda A, B: A | B,
         format_sets=({"A": "csr", "B": "csr", "C": "csr"}, {"A": "csr", "B": "csr"},
                      {"A": "coo", "B": "csr", "C": "csr"}, {"A": "dcsr", "B": "dcsr", "C": "csr"},
                      {"A": "csc", "B": "csc", "C": "csc"})),
    Case("sub_scaled", "C[i,j] = A[i,j] - 2*B[i,j]", {"A": "ij", "B": "ij"},
         lambda A, B: A - 2 * B, frozenset("AB"),
         pattern=lambda A, B: A | B,
         format_sets=({"A": "csr", "B": "csr", "C": "csr"}, {"A": "csr", "B": "csr"},
                      {"A": "coo", "B": "dcsr", "C": "csr"}, {"A": "csc", "B": "csc", "C": "csc"})),
    Case("transposed_spmv", "y[j] = A[i,j]*x[i]", {"A": "ij", "x": "i"},
         lambda A, x: ein("ij,i->j", A, x), frozenset("A"),
         format_sets=({"A": "csr"}, {"A": "csc"}, {"A": "coo"}, {"A": "dcsr"}, {"A": "dense"})),
    Case("scalar", "s = A[i,j]*x[i]*y[j]", {"A": "ij", "x": "i", "y": "j"},
         lambda A, x, y: ein("ij,i,j->", A, x, y), frozenset("A"),
         format_sets=({"A": "csr"}, {"A": "csc"}, {"A": "coo"}, {"A": "dcsr"}, {"A": "dense"})),
    Case("ttv", "y[i] = T[i,j,k]*w[j]*v[k]", {"T": "ijk", "w": "j", "v": "k"},
         lambda T, w, v: ein("ijk,j,k->i", T, w, v), frozenset("T"),
         format_sets=({"T": "csf"}, {"T": "coo"}, {"T": "dss"}, {"T": "sdd"}, {"T": "sds"},
                      {"T": "dense"})),
    Case("ttm", "C[i,l] = T[i,j,k]*M[j,k,l]", {"T": "ijk", "M": "jkl"},
         lambda T, M: ein("ijk,jkl->il", T, M), frozenset("TM"),
         format_sets=({"T": "csf"}, {"T": "coo"}, {"T": "dss"}, {"T": "sdd"},
                      {"T": "csf", "M": "sss"}, {"T": "dss", "C": "ds"})),
    Case("neg_const", "y[i] = -2*A[i,j]*x[j]", {"A": "ij", "x": "j"},
         lambda A, x: -2 * ein("ij,j->i", A, x), frozenset("A"),
         format_sets=({"A": "csr"}, {"A": "coo"}, {"A": "csc"}, {"A": "dense"})),
    Case("neg_paren_consts", "y[i] = -(A[i,j]*x[j]) * 0.5 + 3*b[i] - -b[i]",
         {"A": "ij", "x": "j", "b": "i"},
         lambda A, x, b: -0.5 * ein("ij,j->i", A, x) + 4 * b, frozenset("A"),
         format_sets=({"A": "csr"}, {"A": "coo"}, {"A": "dense"})),
    Case("dense_only", "C[i,j] = A[i,k]*B[k,j] + D[i,j]", {"A": "ik", "B": "kj", "D": "ij"},
         lambda A, B, D: ein("ik,kj->ij", A, B) + D,
         format_sets=({},)),
    Case("mixed", "C[i,j] = A[i,j]*(B[i,j] + D[i,j])", {"A": "ij", "B": "ij", "D": "ij"},
         lambda A, B, D: A * (B + D), frozenset("AB"),
         pattern=lambda A, B, D: A,
         format_sets=({"A": "csr", "B": "csr"}, {"A": "csr", "B": "csr", "C": "csr"},
                      {"A": "dense", "B": "csr"}, {"A": "coo", "B": "csr", "C": "csr"},
                      {"A": "csr", "B": "coo", "D": "dense"})),
]


def fmt_id(formats: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(formats.items())) or "all-dense"


PARAMS = [pytest.param(case, fmts, id=f"{case.id}[{fmt_id(fmts)}]")
          for case in CASES for fmts in case.format_sets]


def make_operands(case: Case) -> dict[str, np.ndarray]:
    """Dense float64 copies of every operand, fixed-seed."""
    out = {}
    for name, ix in case.operands.items():
        shape = tuple(EXTENT[c] for c in ix)
        density = 0.35 if name in case.sparse_data else 1.0
        out[name] = sparse_array(f"{case.id}-{name}", shape, density)
    return out


def as_input(a: np.ndarray, fmt: str):
    """Hand 2-d sparse operands over as scipy CSR, n-d sparse ones as spc.Tensor
    in their format, dense ones as numpy."""
    if fmt == "dense":
        return a
    if a.ndim == 2:
        return sp.csr_matrix(a)
    return spc.tensor(a, fmt)


@pytest.mark.parametrize("case, formats", PARAMS)
def test_expression_matches_einsum(compiled, case, formats):
    dense = make_operands(case)
    kernel = compiled(case.expr, formats=formats, dtype="float64")
    inputs = {n: as_input(a, formats.get(n, "dense")) for n, a in dense.items()}
    out = kernel(**inputs)
    expected = case.reference(**dense)
    out_name = case.expr.split("[")[0].split("=")[0].strip()
    out_fmt = formats.get(out_name, "dense")
    if out_fmt == "dense":
        if expected.ndim == 0:
            assert isinstance(out, np.generic), f"scalar output came back as {type(out)}"
        else:
            assert isinstance(out, np.ndarray), f"dense output came back as {type(out)}"
    else:
        scipy_in = any(sp.issparse(x) for x in inputs.values())
        want = sp.spmatrix if scipy_in and expected.ndim == 2 else spc.Tensor
        assert isinstance(out, want), f"sparse output came back as {type(out)}"
        if case.pattern is not None:
            stored = {n: stored_set(a, formats.get(n, "dense")) for n, a in dense.items()}
            assert pattern_of(out) == case.pattern(**stored)
    assert out.dtype == np.float64
    assert_allclose(out, expected, np.float64)


@pytest.mark.parametrize("family", ["numpy", "spc.Tensor"])
@pytest.mark.parametrize("fmt", ["csf", "coo", "dss", "sdd"])
def test_three_tensor_input_family(compiled, fmt, family):
    """A 3-tensor given densely or already in its format gives the same result."""
    case = next(c for c in CASES if c.id == "ttv")
    dense = make_operands(case)
    T = dense["T"] if family == "numpy" else spc.tensor(dense["T"], fmt)
    y = compiled(case.expr, formats={"T": fmt}, dtype="float64")(T=T, w=dense["w"], v=dense["v"])
    assert isinstance(y, np.ndarray)
    assert_allclose(y, case.reference(**dense), np.float64)


@pytest.mark.parametrize("expr, formats, expected", [
    pytest.param("C[i,j] = A[i,j]*B[i,j]", {"A": "csr", "B": "csc", "C": "csr"},
                 lambda a, b, x, y: a * b, id="mul-csr-csc"),
    pytest.param("C[i,j] = A[i,j]*B[i,j]", {"A": "coo", "B": "coo", "C": "coo"},
                 lambda a, b, x, y: a * b, id="mul-coo-out"),
    pytest.param("S[i,j] = A[i,j]*X[i,k]*Y[j,k]", {"A": "csr", "S": "csc"},
                 lambda a, b, x, y: a * (x @ y.T), id="sddmm-csr-to-csc"),
])
def test_combinations_once_refused_compute_through_copies(expr, formats, expected):
    """Combinations spc refused before issue 13 part 3 read an operand through a
    copy, or compute the output in a format the kernels build and convert it."""
    k = spc.compile(expr, formats=formats, dtype="float64")
    assert k.copies or k.plan.output is not None
    a, b = sparse_array("once-a", (7, 6), 0.4), sparse_array("once-b", (7, 6), 0.4)
    x, y = sparse_array("once-x", (7, 3), 1.0), sparse_array("once-y", (6, 3), 1.0)
    operands = {"A": a, "B": b, "X": x, "Y": y}
    out = k(**{n: operands[n] for n in k.input_names})
    fmt = formats.get(expr[0])
    if fmt in ("coo", "csc"):
        assert isinstance(out, spc.Tensor) and out.format.name == fmt
    assert_allclose(out, expected(a, b, x, y), np.float64)


# ---------------------------------------------------------------- threads

BIG_EXTENT = {"i": 2000, "j": 1500, "k": 40, "l": 8}
BIG_EXTENT_3D = {"i": 200, "j": 60, "k": 50, "l": 8}
THREAD_PARAMS = [
    pytest.param("mul", {"A": "csr", "B": "csr", "C": "csr"}, id="mul[csr]"),
    pytest.param("add", {"A": "csr", "B": "csr", "C": "csr"}, id="add[csr]"),
    pytest.param("add", {"A": "dcsr", "B": "csr"}, id="add[dcsr,csr->dense]"),
    pytest.param("spmv_plus_b", {"A": "csr"}, id="spmv_plus_b[csr]"),
    pytest.param("transposed_spmv", {"A": "csr"}, id="transposed_spmv[csr]"),
    pytest.param("scalar", {"A": "csr"}, id="scalar[csr]"),
    pytest.param("sddmm", {"A": "coo", "S": "csr"}, id="sddmm[coo->csr]"),
    pytest.param("mixed", {"A": "csr", "B": "csr", "C": "csr"}, id="mixed[csr]"),
    pytest.param("ttv", {"T": "csf"}, id="ttv[csf]"),
    pytest.param("ttm", {"T": "dss"}, id="ttm[dss]"),
]


@pytest.mark.parametrize("case_id, formats", THREAD_PARAMS)
def test_expression_threads_match_one_thread(compiled, case_id, formats):
    """On operands big enough to run in parallel, the default thread count and
    4 threads give the result of one thread (and of numpy)."""
    case = next(c for c in CASES if c.id == case_id)
    extent = BIG_EXTENT_3D if any(len(ix) == 3 for ix in case.operands.values()) else BIG_EXTENT
    dense = {}
    for name, ix in case.operands.items():
        density = 0.05 if name in case.sparse_data else 1.0
        if len(ix) == 3:
            density = 0.3 if name in case.sparse_data else 1.0
        dense[name] = sparse_array(f"big-{case.id}-{name}", tuple(extent[c] for c in ix), density)
    inputs = {n: as_input(a, formats.get(n, "dense")) for n, a in dense.items()}
    results = [compiled(case.expr, formats=formats, dtype="float64",
                        schedule=spc.Schedule(threads=t) if t else None)(**inputs)
               for t in (1, None, 4)]
    expected = case.reference(**dense)
    assert_allclose(results[0], expected, np.float64)
    for r in results[1:]:
        assert_allclose(r, results[0], np.float64)
        out_name = case.expr.split("[")[0].split("=")[0].strip()
        if formats.get(out_name, "dense") != "dense":
            assert pattern_of(r) == pattern_of(results[0])


def test_sparse_vector_output_is_not_run_row_parallel():
    """Every row appends to the one segment of a sparse-vector output, so its
    counting kernel must not be split across threads (a data race)."""
    import scipy.sparse as sp
    k = spc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr", "y": "sparse"},
                    dtype="float64")
    assert "@parallel" not in k.ir
    A = sp.random(3000, 3000, density=0.01, format="csr", random_state=0)
    x = np.random.default_rng(0).standard_normal(3000)
    y = k(A=A, x=x)
    np.testing.assert_allclose(y.to_numpy(), A @ x, rtol=1e-12, atol=1e-12)
