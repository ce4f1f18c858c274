"""Element-wise functions and division in index notation (issue 12, part 1):
``exp``, ``log``, ``sqrt``, ``abs``, ``relu``, ``max``, ``min`` and ``/``.

Their meaning is numpy's on the dense tensors: a function that is nonzero at
zero (``exp``, ``log``, a division by a sparse operand) has a value at every
coordinate, so it iterates the whole index space; one that is zero there
(``sqrt``, ``abs``, ``relu``, ``max``, ``min``) iterates its arguments' entries
only.  Checked here against numpy on the CPU for every sparse format, with
sparse outputs, duplicates and edge shapes; in the interpreter; compiled with
nvcc; and on a GPU (marked ``cuda``).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from test_interp import interpret, lower_expr

X = np.array([0.5, -1.0, 2.0, 0.0, 3.0])


def _matrix(seed=0, shape=(7, 5), density=0.35):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    vals = rng.uniform(0.1, 2.0, shape) * np.where(rng.random(shape) < 0.3, -1, 1)
    a = np.where(mask, vals, 0.0)
    a[2] = 0.0                                   # an empty row
    return a


# (expression, numpy on the dense operands A (7 x 5), B (7 x 5), x (5), b (7))
CASES = {
    "exp": ("C[i,j] = exp(A[i,j])", lambda A, B, x, b: np.exp(A)),
    "log1p": ("C[i,j] = log(abs(A[i,j]) + 1)", lambda A, B, x, b: np.log(abs(A) + 1)),
    "sqrt abs": ("C[i,j] = sqrt(abs(A[i,j])) * 2", lambda A, B, x, b: np.sqrt(abs(A)) * 2),
    "relu": ("C[i,j] = relu(A[i,j])", lambda A, B, x, b: np.maximum(A, 0)),
    "max of two": ("C[i,j] = max(A[i,j], B[i,j])", lambda A, B, x, b: np.maximum(A, B)),
    "min with constant": ("C[i,j] = min(A[i,j], 0.5)", lambda A, B, x, b: np.minimum(A, 0.5)),
    "scale by constant": ("C[i,j] = A[i,j] / 4", lambda A, B, x, b: A / 4),
    "divide by dense": ("C[i,j] = A[i,j] / x[j]", lambda A, B, x, b: A / x),
    "reduce exp": ("y[i] = exp(A[i,j]) + b[i]", lambda A, B, x, b: np.exp(A).sum(1) + b),
    "relu times vector": ("y[i] = relu(A[i,j] - 0.5) * x[j]",
                          lambda A, B, x, b: (np.maximum(A - 0.5, 0) * x).sum(1)),
    "function of a product": ("y[i] = sqrt(abs(A[i,j] * x[j]))",
                              lambda A, B, x, b: np.sqrt(abs(A * x)).sum(1)),
    "softplus-like": ("C[i,j] = log(exp(A[i,j]) + 1)", lambda A, B, x, b: np.log(np.exp(A) + 1)),
}
X5 = np.array([0.5, -1.0, 2.0, 1.5, 3.0])
B7 = np.arange(7.0)


def _operands(expr: str, fmt: str, dtype=np.float64, index=np.int32):
    A, B = _matrix(0), _matrix(1)
    ops = {}
    for name, dense in (("A", A), ("B", B)):
        if f"{name}[" in expr:
            ops[name] = spc.tensor(sp.csr_matrix(dense.astype(dtype)), fmt, dtype=dtype) \
                if fmt != "dense" else dense.astype(dtype)
    if "x[" in expr:
        ops["x"] = X5.astype(dtype)
    if "b[" in expr:
        ops["b"] = B7.astype(dtype)
    return ops, (A, B, X5, B7)


def _dense(out):
    if hasattr(out, "to_numpy"):
        return out.to_numpy()
    return out.toarray() if hasattr(out, "toarray") else np.asarray(out)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr", "dense"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_functions_match_numpy_on_the_cpu(case, fmt):
    expr, ref = CASES[case]
    ops, dense = _operands(expr, fmt)
    formats = {n: fmt for n in ("A", "B") if n in ops}
    k = spc.compile(expr, formats=formats, dtype="float64")
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(_dense(k(**ops)), ref(*dense), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["sqrt abs", "relu", "max of two", "exp"])
def test_sparse_outputs_hold_the_function_values(case):
    expr, ref = CASES[case]
    ops, dense = _operands(expr, "csr")
    formats = {n: "csr" for n in ops if n in ("A", "B")}
    k = spc.compile(expr, formats={**formats, "C": "csr"}, dtype="float64")
    out = k(**ops)
    np.testing.assert_allclose(out.to_numpy(), ref(*dense), rtol=1e-12)
    if case != "exp":            # zero where the operands are: no entry stored there
        assert out.nnz <= sum(t.nnz for t in ops.values())


def test_zero_preserving_functions_iterate_only_stored_entries():
    k = spc.compile("C[i,j] = sqrt(A[i,j])", formats={"A": "csr"})
    assert "for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1])" in k.ir     # A's entries only
    assert "for j in [0, size_j)" not in k.ir
    k = spc.compile("C[i,j] = exp(A[i,j])", formats={"A": "csr"})
    assert "for j in [0, size_j)" in k.ir                                # every coordinate


def test_duplicate_entries_are_summed_before_a_function():
    # sqrt(1 + 3) = 2, not sqrt(1) + sqrt(3): a kernel applying a function to
    # an operand's values needs canonical input, and canonicalizes it first
    A = sp.coo_matrix(([1.0, 3.0], ([0, 0], [1, 1])), shape=(2, 2)).tocsr()
    A.has_canonical_format = False
    k = spc.compile("y[i] = sqrt(A[i,j])", formats={"A": "csr"}, dtype="float64")
    np.testing.assert_allclose(k(A=A), [2.0, 0.0])
    assert "A" not in k.accepts_noncanonical


@pytest.mark.parametrize("shape", [(0, 5), (7, 0), (3, 4)])
def test_edge_shapes(shape):
    A = sp.csr_matrix(shape)
    k = spc.compile("C[i,j] = exp(A[i,j]) - 1", formats={"A": "csr"}, dtype="float64")
    np.testing.assert_array_equal(k(A=A), np.zeros(shape))


def test_float32_functions_compute_in_float32():
    A = sp.csr_matrix(_matrix(0).astype(np.float32))
    k = spc.compile("C[i,j] = exp(A[i,j])", formats={"A": "csr"})
    out = k(A=A)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.exp(A.toarray()), rtol=1e-6)


def test_log_of_zero_is_minus_infinity_as_numpy():
    k = spc.compile("C[i,j] = log(A[i,j])", formats={"A": "csr"}, dtype="float64")
    A = sp.csr_matrix(np.array([[0.0, 2.0]]))
    np.testing.assert_array_equal(k(A=A), [[-np.inf, np.log(2.0)]])


@pytest.mark.parametrize("text, message", [
    ("C[i] = foo(A[i])", "unknown function 'foo'"),
    ("C[i] = exp(A[i], A[i])", "exp() takes 1 argument, got 2"),
    ("C[i] = max(A[i])", "max() takes 2 arguments, got 1"),
])
def test_bad_calls_point_at_the_call(text, message):
    with pytest.raises(spc.ParseError, match=message.replace("(", r"\(").replace(")", r"\)")) \
            as err:
        spc.compile(text)
    assert "^" in str(err.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_interpreter_agrees_with_numpy(case):
    expr, ref = CASES[case]
    lowered = lower_expr(expr, {n: "csr" for n in ("A", "B") if f"{n}[" in expr})
    A, B = _matrix(0), _matrix(1)
    names = {"A": sp.csr_matrix(A), "B": sp.csr_matrix(B), "x": X5, "b": B7}
    ops = {n: v for n, v in names.items() if f"{n}[" in expr}
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(interpret(lowered, ops), ref(A, B, X5, B7), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_source_compiles_with_nvcc(dtype):
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    k = spc.compile("y[i] = exp(A[i,j]) + log(abs(A[i,j]) + 1) + sqrt(relu(A[i,j]))",
                    formats={"A": "csr"}, target="cuda", arch="sm_90", dtype=dtype)
    code, log = nvcc(k.source)
    assert code == 0, log
    assert ("expf(" in k.source) == (dtype == "float32")


@pytest.mark.cuda
@pytest.mark.parametrize("case", sorted(CASES))
def test_functions_match_numpy_on_the_gpu(case):
    from cuda_env import cupy_or_skip_module
    cupy_or_skip_module()
    expr, ref = CASES[case]
    ops, dense = _operands(expr, "csr")
    k = spc.compile(expr, formats={n: "csr" for n in ("A", "B") if n in ops}, target="cuda",
                    dtype="float64")
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(_dense(k(**ops)), ref(*dense), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text, want", [
    ("y[i] = abs(sum(j, H[i,j] * x[j]))", lambda A, x: np.abs(A @ x)),
    ("y[i,j] = relu(H[i,j] * x[j])", lambda A, x: np.maximum(A.toarray() * x, 0)),
    ("y[i] = max(j, H[i,j])", lambda A, x: np.array([A.getrow(i).data.max() if A.getrow(i).nnz
                                                     else 0.0 for i in range(A.shape[0])])),
])
def test_a_sum_format_operand_inside_a_function_is_read_whole(text, want):
    # hyb's parts are computed as separate terms: a function of the whole is not the sum
    # of the functions of the parts, so the operand is read through a csr copy (this
    # used to fail with a KeyError: fuzz seed 902)
    A = sp.random(9, 7, density=0.4, format="csr", random_state=8).tolil()
    A[2, :] = -1.5                                     # a full row, negative
    A = A.tocsr()
    x = np.arange(7.0) - 3
    k = spc.compile(text, formats={"H": "hyb"}, dtype="float64")
    got = k(A, x) if "x[" in text else k(A)
    np.testing.assert_allclose(got, want(A, x), rtol=1e-12, atol=1e-12)
    assert [c.source for c in k.copies] == ["H"]


def test_its_schedule_space_holds_explicit_orders_through_copies():
    """The space is not empty (fuzz seed 1102 cases 872-875 picked from an empty space),
    and since the copy planner knows a sum format cannot sit inside a function, an
    explicit order is served by a csr-like copy of H in that order: every schedule
    listed compiles and gives the answer."""
    space = spc.schedule_space("y[i,j] = relu(H[i,j] * x[j])", formats={"H": "hyb"})
    assert space and {s.order for s in space} >= {("i", "j"), ("j", "i")}
    H = sp.random(6, 5, density=0.5, format="csr", random_state=3)
    x = np.random.default_rng(1).uniform(-1, 1, 5)
    for s in space:
        k = spc.compile("y[i,j] = relu(H[i,j] * x[j])", formats={"H": "hyb"}, schedule=s)
        np.testing.assert_allclose(k(H, x), np.maximum(H.toarray() * x, 0))


def test_a_sum_format_output_of_dense_operands_compiles():
    """A hyb output is built by its parts' kernels: the SpGEMM-order check read
    the output format's mode order, which a sum format has not (fuzz seed 1102
    cases 1728-1729: AttributeError at compile)."""
    rng = np.random.default_rng(3)
    y, a = rng.random((3, 4, 5)), rng.random((5, 3, 4))
    k = spc.compile("s[q,n] = y[q,n,m]*A[m,q,n]*c", formats={"y": "ddd", "A": "ddd",
                                                           "s": "hyb(2)"}, dtype="float64")
    out = k(y, a, 2.0)
    got = sum(p.to_scipy("csr").toarray() for p in out.parts)
    np.testing.assert_allclose(got, np.einsum("qnm,mqn->qn", y, a) * 2.0, rtol=1e-14)
