"""The deep-learning formats (bsr, ell, dia, nm, hyb) on the CPU, differential
against scipy/numpy exactly like CSR: named kernels over the synthetic edge-case
matrices and both dtypes, general expressions (merges of padded and blocked
levels), random inputs (hypothesis), and the errors a user meets."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spc
from spc.formats.format import resolve_format
from matrices import MATRICES, MATRIX_IDS, assert_allclose, dense_operand, from_mask, rng_for
from test_named_kernels import KernelCase

FORMATS = ["bsr(1,4)", "bsr(4,4)", "bsr(3,5)", "bsr(16,16)", "ell", "dia",
           "nm(2,4)", "nm(1,4)", "nm(2,8)", "nm(4,16)", "hyb", "hyb(1)"]
KERNELS = [KernelCase("spmv"), KernelCase("spmm", 7), KernelCase("spmm", 32),
           KernelCase("sddmm", 5)]


def nm_prune(A: sp.csr_matrix, n: int, m: int) -> sp.csr_matrix:
    """Keep the first n stored entries of every group of m columns of each row."""
    coo = A.tocoo()
    order = np.lexsort((coo.col, coo.row))
    r, c, v = coo.row[order], coo.col[order], coo.data[order]
    key = r.astype(np.int64) * (A.shape[1] // m + 1) + c // m
    start = np.ones(len(key), dtype=bool)
    start[1:] = key[1:] != key[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(key)), 0)) if len(key) else key
    keep = (np.arange(len(key)) - first) < n
    return sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=A.shape)


def matrix_for(fmt: str, case, dtype) -> sp.csr_matrix:
    A = case.build(dtype)
    if fmt.startswith("nm"):
        n, m = (int(x) for x in fmt[3:-1].split(","))
        A = nm_prune(A, n, m)
    return A


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_named_kernel_matches_scipy(compiled, kernel, fmt, matrix, dtype):
    A = matrix_for(fmt, matrix, dtype)
    ops = kernel.operands(A, dtype)
    k = compiled(kernel.name, fmt=fmt, dtype=dtype)
    expected = kernel.reference(A, ops)
    for operand in (A, spc.tensor(A, fmt)):           # scipy in, and pre-converted
        out = k(operand, *ops)
        assert out.shape == kernel.out_shape(A)
        assert out.dtype == np.dtype(dtype)
        assert_allclose(out, expected, dtype)


@pytest.mark.parametrize("fmt", ["bsr(4,4)", "ell", "dia", "nm(2,4)", "hyb"])
def test_sddmm_keeps_the_operand_format_and_pattern(fmt):
    A = matrix_for(fmt, MATRICES[0], np.float64)
    t = spc.tensor(A, fmt)
    X, Y = dense_operand("X", (A.shape[0], 3)), dense_operand("Y", (A.shape[1], 3))
    out = spc.compile("sddmm", fmt=fmt, dtype="float64")(t, X, Y)
    assert str(out.format) == str(t.format)
    assert_allclose(out.to_numpy(), A.multiply(X @ Y.T).toarray())
    if fmt != "hyb":
        assert out.nnz == t.nnz          # the operand's storage, padding included


# --------------------------------------------------------------------- general expressions

EXPRESSIONS = [
    # (expression, formats, operand kinds): "S" sparse matrix, "v" vector, "M" dense matrix
    ("C[i,j] = A[i,j] + B[i,j]", {"A": "ell", "B": "csr", "C": "csr"}, "SS"),
    ("C[i,j] = A[i,j] + B[i,j]", {"A": "dia", "B": "nm(4,4)"}, "SS"),
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "ell", "B": "dia", "C": "csr"}, "SS"),
    ("C[i,j] = A[i,j] - B[i,j]", {"A": "bsr(2,3)", "B": "bsr(2,3)"}, "SS"),
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "bsr(4,4)", "B": "bsr(4,4)"}, "SS"),
    ("C[i,j] = A[i,j] + B[i,j]", {"A": "hyb", "B": "csr"}, "SS"),
    ("y[i] = A[i,j] * x[j] + b[i]", {"A": "bsr(3,2)"}, "Svv"),
    ("y[i] = A[i,j] * x[j] + b[i]", {"A": "dia"}, "Svv"),
    ("y[j] = A[i,j] * x[i]", {"A": "ell"}, "Sv"),
    ("y[j] = A[i,j] * x[i]", {"A": "bsr(2,2)"}, "Sv"),
    ("y[j] = A[i,j] * x[i]", {"A": "hyb"}, "Sv"),
    ("s = A[i,j] * x[i] * y[j]", {"A": "nm(4,4)"}, "Svv"),
    ("s = A[i,j] * x[i] * y[j]", {"A": "bsr(5,3)"}, "Svv"),
    ("y[i] = A[i,j]", {"A": "dia"}, "S"),
    ("C[i,j] = 2 * A[i,k] * B[k,j]", {"A": "ell"}, "SM"),
    ("C[i,j] = A[i,k] * B[k,j] + D[i,j]", {"A": "bsr(4,4)"}, "SMM"),
    ("C[i,j] = -A[i,j]", {"A": "nm(4,4)", "C": "nm(4,4)"}, "S"),
]


def _operands(expr, kinds, A_shape, seed):
    """Operands (by name, in order of appearance) shaped for A's shape."""
    from spc.frontend.parser import parse
    assign = parse(expr)
    names = list(dict.fromkeys(a.tensor for a in assign.accesses()))
    size = {}
    first = next(a for a in assign.accesses() if a.tensor == names[0])
    for ix, n in zip(first.indices, A_shape):
        size[ix] = n
    for a in assign.accesses():
        for ix in a.indices:
            size.setdefault(ix, 6)
    rng = rng_for(f"{expr}-{seed}")
    ops = {}
    for name, kind in zip(names, kinds):
        acc = next(a for a in assign.accesses() if a.tensor == name)
        shape = tuple(size[ix] for ix in acc.indices)
        if kind == "S":
            ops[name] = from_mask(rng.random(shape) < 0.3, rng, np.float64)
        else:
            ops[name] = rng.uniform(-1, 1, shape)
    return assign, ops


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@pytest.mark.parametrize("shape", [(9, 10), (0, 4), (16, 16)], ids=str)
@pytest.mark.parametrize("expr, formats, kinds", EXPRESSIONS,
                         ids=[f"{e}-{sorted(f.values())}" for e, f, _ in EXPRESSIONS])
def test_expression_matches_einsum(expr, formats, kinds, shape):
    assign, ops = _operands(expr, kinds, shape, 1)
    dense = {n: _dense(x) for n, x in ops.items()}
    args = {}
    for n, x in ops.items():
        fmt = formats.get(n)
        if fmt and fmt.startswith("nm"):
            x = sp.csr_matrix(x)        # nm(4,4) takes anything: every group has <= 4
        args[n] = x
    k = spc.compile(expr, formats=formats, dtype="float64")
    out = k(**args)
    # the reference: numpy einsum over each additive term
    spec = {"C[i,j] = A[i,j] + B[i,j]": lambda d: d["A"] + d["B"],
            "C[i,j] = A[i,j] * B[i,j]": lambda d: d["A"] * d["B"],
            "C[i,j] = A[i,j] - B[i,j]": lambda d: d["A"] - d["B"],
            "y[i] = A[i,j] * x[j] + b[i]": lambda d: d["A"] @ d["x"] + d["b"],
            "y[j] = A[i,j] * x[i]": lambda d: d["A"].T @ d["x"],
            "s = A[i,j] * x[i] * y[j]": lambda d: d["x"] @ d["A"] @ d["y"],
            "y[i] = A[i,j]": lambda d: d["A"].sum(axis=1),
            "C[i,j] = 2 * A[i,k] * B[k,j]": lambda d: 2 * d["A"] @ d["B"],
            "C[i,j] = A[i,k] * B[k,j] + D[i,j]": lambda d: d["A"] @ d["B"] + d["D"],
            "C[i,j] = -A[i,j]": lambda d: -d["A"]}[expr]
    got = out.to_numpy() if hasattr(out, "to_numpy") else _dense(out)
    assert_allclose(got, spec(dense))


@pytest.mark.parametrize("formats", [
    {"A": "bsr(2,2)", "B": "csr"},
    {"A": "bsr(2,2)", "B": "bsr(4,4)"},
    {"A": "bsr(2,2)", "B": "bsr(2,2)", "C": "bsr(2,2)"},
])
def test_blocked_and_unblocked_iteration_of_one_index_reads_copies(formats):
    """Refused before issue 13 part 3: a blocked operand beside an unblocked one
    (or other blocks) over one index is read through a csr copy; a bsr output is
    computed in csr and converted."""
    k = spc.compile("C[i,j] = A[i,j] + B[i,j]", formats=formats, dtype="float64")
    assert k.copies
    a = dense_operand("blk-a", (6, 8)) * (dense_operand("blk-ma", (6, 8)) > 0.3)
    b = dense_operand("blk-b", (6, 8)) * (dense_operand("blk-mb", (6, 8)) > 0.3)
    out = k(A=spc.tensor(a, formats["A"]), B=spc.tensor(b, formats["B"]))
    if "C" in formats:
        assert isinstance(out, spc.Tensor) and out.format.name == "bsr(2,2)"
    assert_allclose(out, a + b, np.float64)


# --------------------------------------------------------------------- random inputs

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["bsr(1,4)", "bsr(2,2)", "bsr(4,3)", "ell", "dia", "nm(2,4)",
                            "nm(1,2)", "hyb", "hyb(2)"]),
       kernel=st.sampled_from(["spmv", "spmm", "sddmm"]),
       m=st.integers(0, 23), n=st.integers(0, 23), density=st.floats(0, 1),
       seed=st.integers(0, 2**31 - 1))
def test_random_inputs_match_scipy(compiled, fmt, kernel, m, n, density, seed):
    rng = np.random.default_rng(seed)
    A = from_mask(rng.random((m, n)) < density, rng, np.float64)
    if fmt.startswith("nm"):
        nn, mm = (int(x) for x in fmt[3:-1].split(","))
        A = nm_prune(A, nn, mm)
    k = compiled(kernel, fmt=fmt, dtype="float64")
    if kernel == "spmv":
        x = rng.uniform(-1, 1, n)
        assert_allclose(k(A, x), A @ x)
    elif kernel == "spmm":
        B = rng.uniform(-1, 1, (n, 3))
        assert_allclose(k(A, B), A @ B)
    else:
        X, Y = rng.uniform(-1, 1, (m, 4)), rng.uniform(-1, 1, (n, 4))
        assert_allclose(_dense(k(A, X, Y)) if sp.issparse(k(A, X, Y)) else k(A, X, Y).to_numpy(),
                        A.multiply(X @ Y.T).toarray() if A.nnz else np.zeros((m, n)))


# --------------------------------------------------------------------- storage and errors

def test_bsr_pads_explicitly_and_says_so():
    A = from_mask(rng_for("pad").random((10, 7)) < 0.4, rng_for("pad"), np.float64)
    t = spc.tensor(A, "bsr(4,4)")
    assert t.shape == (10, 7)
    assert t.padded_shape == (12, 8) and t.padding == (2, 1)
    assert_allclose(t.to_numpy(), A.toarray())
    coords, _ = t.to_coo()
    assert coords[0].max() < 10 and coords[1].max() < 7      # padding is not an entry


def test_storage_is_what_the_format_promises():
    A = sp.csr_matrix(np.eye(6) + np.eye(6, k=1))
    d = spc.tensor(A, "dia")
    assert d.arrays[1]["offsets"].tolist() == [0, 1] and d.nnz == 12
    e = spc.tensor(A, "ell")
    assert e.scalars("A")["A1_width"] == 2 and e.arrays[1]["crd"][-1] == -1
    n = spc.tensor(A, "nm(2,4)")
    assert n.arrays[1]["off"].dtype == np.int8 and n.nnz == 6 * 2 * 2
    h = spc.tensor(A, "hyb(1)")
    assert [p.nnz for p in h.parts] == [6, 5]
    assert h.nbytes == sum(p.nbytes for p in h.parts)


def test_non_nm_input_raises_and_names_the_pruning_helper():
    W = np.ones((3, 8))
    with pytest.raises(spc.InputError, match=r"spc\.prune\.nm\(W, 2, 4\)"):
        spc.tensor(W, "nm(2,4)")
    with pytest.raises(spc.InputError, match="not 2:4"):
        spc.compile("spmv", fmt="nm(2,4)")(sp.csr_matrix(W), np.ones(8))


def test_ell_with_a_given_width_rejects_longer_rows():
    W = np.ones((3, 8))
    with pytest.raises(spc.InputError, match="width is 4"):
        spc.tensor(W, "ell(4)")
    assert spc.tensor(W, "ell(10)").nnz == 30


def test_an_open_ell_width_reads_any_width_as_stored(monkeypatch):
    """A kernel of ``ell`` (width a run-time scalar) reads an ``ell(6)`` tensor, and
    hyb's ell part, without converting it on each call: hyb SpMM of the demo's
    matrix spent 12 of its 14 ms a call converting ell(28) into ell (2026-11-30)."""
    assert resolve_format("ell", 2).reads(resolve_format("ell(6)", 2))
    assert not resolve_format("ell(6)", 2).reads(resolve_format("ell(7)", 2))
    assert not resolve_format("ell(6)", 2).reads(resolve_format("ell", 2))
    assert not resolve_format("ell", 2).reads(resolve_format("csr", 2))
    A = sp.random(40, 30, density=0.1, format="csr", random_state=4, dtype=np.float64)
    A = sp.csr_matrix(A.toarray() * (np.arange(30) < 12))     # rows of at most 12 entries
    B = np.random.default_rng(4).standard_normal((30, 5))
    from spc.formats import convert
    conversions = []
    real = convert.coords_into

    def counting(*args, **kwargs):
        conversions.append(args[-1])
        return real(*args, **kwargs)
    monkeypatch.setattr(convert, "coords_into", counting)
    for fmt in ("ell(12)", "hyb"):
        t = spc.tensor(A, fmt)
        k = spc.compile("spmm", fmt="ell" if fmt == "ell(12)" else fmt, dtype="float64")
        conversions.clear()
        for _ in range(2):
            assert_allclose(k(t, B), A @ B, np.float64)
        assert conversions == [], fmt


@pytest.mark.parametrize("fmt, level, arrays, match", [
    ("ell", 1, {"crd": np.array([0, -1, 1, 0], dtype=np.int32)}, "unsorted or duplicate"),
    ("ell", 1, {"crd": np.array([-1, 0, 0, 1], dtype=np.int32)}, "after padding"),
    ("ell", 1, {"crd": np.array([0, 9, 0, 1], dtype=np.int32)}, "out of range"),
    ("ell", 1, {"crd": np.array([0, 1, 0], dtype=np.int32)}, "whole number"),
    ("dia", 1, {"offsets": np.array([1, 0], dtype=np.int32)}, "strictly increasing"),
    ("nm(2,4)", 1, {"off": np.array([1, 0], dtype=np.int8)}, "expected 4"),
    ("nm(2,4)", 1, {"off": np.array([1, 0, 0, 1], dtype=np.int8)}, "ascend"),
    ("nm(2,4)", 1, {"off": np.array([0, 4, 0, 1], dtype=np.int8)}, r"\[0, 4\)"),
    ("nm(2,4)", 1, {"off": np.array([0, 1, 0, 1], dtype=np.int32)}, "int8"),
])
def test_malformed_storage_is_rejected(fmt, level, arrays, match):
    from spc.formats.format import resolve_format
    f = resolve_format(fmt, 2)
    good = spc.tensor(np.eye(2, 3), f)
    levels = [dict(a) for a in good.arrays]
    levels[level] = arrays
    nvals = {"ell": 4, "dia": 4, "nm(2,4)": 4}[fmt]
    with pytest.raises((spc.InputError, spc.DTypeError), match=match):
        spc.Tensor((2, 3), f, levels, np.ones(nvals))
    k = spc.compile("spmv", fmt=fmt)
    with pytest.raises((spc.InputError, spc.DTypeError), match=match):
        k(spc.Tensor((2, 3), f, levels, np.ones(nvals), validate=False), np.ones(3))


@pytest.mark.parametrize("spec, match", [
    ("bsr(0,4)", ">= 1"), ("bsr(4)", "2 integer"), ("nm(5,4)", "n <= m"), ("nm(2,x)", "integer"),
    ("ell(-1)", "unknown format|>= 0"), ("hyb(x)", "unknown format"),
])
def test_bad_format_specs_raise_format_errors(spec, match):
    with pytest.raises(spc.FormatError, match=match):
        spc.compile("spmv", fmt=spec)


def test_formats_reject_tensors_of_other_ranks():
    with pytest.raises(spc.FormatError, match="2-d"):
        spc.compile("y[i] = A[i] * x[i]", formats={"A": "bsr(2,2)"})
    with pytest.raises(spc.FormatError, match="rank"):
        spc.compile("y[i] = A[i] * x[i]", formats={"A": "hyb"})


def test_cpu_torch_operands_give_torch_results():
    torch = pytest.importorskip("torch")
    A = MATRICES[0].build(np.float32)
    tA = torch.from_numpy(A.toarray())
    x = torch.from_numpy(dense_operand("x", (A.shape[1],), np.float32))
    for fmt, operand in [("csr", tA), ("csr", tA.to_sparse_csr()), ("bsr(4,4)", tA.to_sparse_coo()),
                         ("ell", tA)]:
        y = spc.compile("spmv", fmt=fmt)(operand, x)
        assert isinstance(y, torch.Tensor)
        assert_allclose(y.numpy(), A @ x.numpy(), np.float32)
    S = spc.compile("sddmm", fmt="csr")(tA.to_sparse_csr(), torch.ones(A.shape[0], 2),
                                        torch.ones(A.shape[1], 2))
    assert isinstance(S, torch.Tensor) and S.layout == torch.sparse_csr
    assert_allclose(S.to_dense().numpy(), 2 * A.toarray(), np.float32)


def test_levels_refuse_places_they_cannot_fill():
    with pytest.raises(spc.FormatError, match="diagonal level"):
        spc.Format((spc.Compressed(), spc.Diagonal()), (0, 1))
    with pytest.raises(spc.FormatError, match="diagonal level"):
        spc.Format((spc.Diagonal(), spc.Dense()), (0, 1))
    assert spc.Format((spc.Dense(), spc.Diagonal()), (1, 0)).rank == 2   # a column-major dia
