"""Bad input raises the right ``spc.SpcError`` subclass, naming the operand and the problem.

Malformed sparse input is exercised in a forked child process (see
``run_isolated``): code that trusts malformed index arrays may read out of
bounds and crash, and a crash must show up as one failing test, not as the
end of the whole test session.
"""
from __future__ import annotations

import os
import pickle
import re
import select
import signal
import time

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats.format import resolve_format

RNG_SEED = 20240611


def caret_line(span: tuple[int, int]) -> str:
    return "    " + " " * span[0] + "^" * (span[1] - span[0])


def names(message: str, word: str) -> bool:
    """True when ``word`` appears in ``message`` as a whole word."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", message) is not None


@pytest.fixture(scope="module")
def spmv():
    return spc.compile("spmv", fmt="csr")


def small_csr(dtype=np.float32) -> sp.csr_matrix:
    dense = np.array([[1, 0, 2], [0, 0, 3], [4, 5, 0]], dtype=dtype)
    return sp.csr_matrix(dense)


# ---------------------------------------------------------------------- compile time


def test_unknown_kernel_name():
    with pytest.raises(spc.KernelNameError) as info:
        spc.compile("spmvv")
    err = info.value
    assert isinstance(err, spc.SpcError) and isinstance(err, ValueError)
    assert "'spmvv'" in str(err)
    for known in ("spmv", "spmm", "sddmm"):
        assert names(str(err), known), f"the message should list {known}: {err}"


@pytest.mark.parametrize("call", [
    pytest.param(lambda: spc.compile("spmv", fmt="xyz"), id="named-kernel-fmt"),
    pytest.param(lambda: spc.compile("y[i] = A[i,j]*x[j]", formats={"A": "xyz"}), id="expr-formats"),
])
def test_unknown_format(call):
    with pytest.raises(spc.FormatError) as info:
        call()
    err = info.value
    assert isinstance(err, ValueError)
    assert "'xyz'" in str(err)
    assert names(str(err), "A"), f"the message should name tensor A: {err}"
    assert "csr" in str(err), "the message should list the known formats"


def test_formats_names_a_tensor_not_in_the_expression():
    with pytest.raises(spc.FormatError) as info:
        spc.compile("y[i] = A[i,j]*x[j]", formats={"Q": "csr"})
    assert names(str(info.value), "Q")


def test_fmt_keyword_with_an_expression_is_a_format_error():
    with pytest.raises(spc.FormatError):
        spc.compile("y[i] = A[i,j]*x[j]", fmt="csr")


@pytest.mark.parametrize("formats, tensor", [
    pytest.param({"x": "csr"}, "x", id="csr-for-vector"),
    pytest.param({"x": "csc"}, "x", id="csc-for-vector"),
    pytest.param({"A": "dss"}, "A", id="3-levels-for-matrix"),
    pytest.param({"A": "s"}, "A", id="1-level-for-matrix"),
    pytest.param({"x": spc.Format((spc.Dense(), spc.Compressed()), (0, 1), "mycsr")}, "x",
                 id="Format-object-of-rank-2-for-vector"),
])
def test_format_of_the_wrong_rank(formats, tensor):
    with pytest.raises(spc.FormatError) as info:
        spc.compile("y[i] = A[i,j]*x[j]", formats=formats)
    msg = str(info.value)
    assert names(msg, tensor), f"the message should name tensor {tensor}: {msg!r}"
    assert re.search(r"rank|\d-d|levels", msg), msg


@pytest.mark.parametrize("src, bad", [
    pytest.param("y[i] = A[i,j] * ", "end", id="dangling-operator"),
    pytest.param("y[i] = A[i,,j]", ",", id="empty-index"),
    pytest.param("y[i] = A[i,j] $ x[j]", "$", id="bad-character"),
    pytest.param("y[i] A[i,j]", "A", id="missing-equals"),
    pytest.param("y[i] = (A[i,j] * x[j]", "end", id="unclosed-paren"),
])
def test_syntax_error_has_a_caret(src, bad):
    with pytest.raises(spc.ParseError) as info:
        spc.compile(src)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.source == src
    start, end = err.span
    assert 0 <= start < end
    if bad == "end":
        assert start >= len(src.rstrip()) - 1
    else:
        assert src[start:end] == bad
    lines = str(err).splitlines()
    assert lines[-2] == "    " + src
    assert lines[-1] == caret_line(err.span)


def test_output_index_not_on_the_right():
    src = "y[i,k] = A[i,j]*x[j]"
    with pytest.raises(spc.ParseError) as info:
        spc.compile(src)
    err = info.value
    assert src[err.span[0]:err.span[1]] == "k"
    assert "'k'" in err.message
    assert str(err).splitlines()[-1] == caret_line(err.span)


# ---------------------------------------------------------------------- call time: shapes


def test_index_with_two_sizes_is_a_shape_error_with_caret(spmv):
    with pytest.raises(spc.ShapeError) as info:
        spmv(small_csr(), np.ones(4, np.float32))
    err = info.value
    assert isinstance(err, ValueError)
    src = err.source
    assert src is not None and err.span is not None
    assert src[err.span[0]:err.span[1]] == "j"
    msg = err.message
    assert "'j'" in msg and "4" in msg and "3" in msg
    assert names(msg, "x") and names(msg, "A")
    assert str(err).splitlines()[-1] == caret_line(err.span)


def test_shape_error_in_an_expression_kernel():
    k = spc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"})
    with pytest.raises(spc.ShapeError) as info:
        k(A=small_csr(), B=np.ones((5, 2), np.float32))
    err = info.value
    assert err.source[err.span[0]:err.span[1]] == "k"
    assert names(err.message, "B") and names(err.message, "A")


@pytest.mark.parametrize("args, operand, rank", [
    pytest.param(lambda: (small_csr(), np.ones((3, 1), np.float32)), "x", 2, id="matrix-for-vector"),
    pytest.param(lambda: (np.ones(3, np.float32), np.ones(3, np.float32)), "A", 1, id="vector-for-matrix"),
    pytest.param(lambda: (small_csr(), np.float32(1.0)), "x", 0, id="scalar-for-vector"),
])
def test_operand_of_the_wrong_rank(spmv, args, operand, rank):
    with pytest.raises(spc.ShapeError) as info:
        spmv(*args())
    err = info.value
    assert names(err.message, operand)
    assert f"rank {rank}" in err.message
    assert err.source[err.span[0]:err.span[1]].startswith(operand + "[")


# ---------------------------------------------------------------------- call time: binding


def test_too_many_operands(spmv):
    x = np.ones(3, np.float32)
    with pytest.raises(spc.InputError) as info:
        spmv(small_csr(), x, x)
    assert "2" in str(info.value) and "3" in str(info.value)


def test_missing_operand(spmv):
    with pytest.raises(spc.InputError) as info:
        spmv(small_csr())
    assert names(str(info.value), "x")


def test_unknown_operand_name():
    k = spc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"})
    with pytest.raises(spc.InputError) as info:
        k(A=small_csr(), z=np.ones(3, np.float32))
    assert "'z'" in str(info.value)


def test_operand_given_twice(spmv):
    x = np.ones(3, np.float32)
    with pytest.raises(spc.InputError) as info:
        spmv(small_csr(), x, A=small_csr())
    assert "'A'" in str(info.value)


# ---------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("x, what", [
    pytest.param(lambda: np.array(["a", "b", "c"]), "<U1", id="str"),
    pytest.param(lambda: np.array([object(), 1, 2], dtype=object), "object", id="object"),
    pytest.param(lambda: np.ones(3, np.complex64), "complex64", id="complex64"),
    pytest.param(lambda: np.ones(3, np.complex128), "complex128", id="complex128"),
])
def test_non_numeric_or_complex_dense_operand(spmv, x, what):
    with pytest.raises(spc.DTypeError) as info:
        spmv(small_csr(), x())
    err = info.value
    assert isinstance(err, TypeError)
    assert names(str(err), "x") and what in str(err)


@pytest.mark.parametrize("fmt", ["csr", "coo"])
def test_complex_sparse_operand(fmt):
    k = spc.compile("spmv", fmt=fmt)
    with pytest.raises(spc.DTypeError) as info:
        k(small_csr(np.complex64), np.ones(3, np.float32))
    assert names(str(info.value), "A") and "complex64" in str(info.value)


@pytest.mark.parametrize("dtype", ["int32", "complex64", np.float128 if hasattr(np, "float128") else "float128", "bogus"])
def test_compile_with_an_unusable_dtype(dtype):
    with pytest.raises(spc.DTypeError) as info:
        spc.compile("spmv", dtype=dtype)
    assert isinstance(info.value, TypeError)


# ---------------------------------------------------------------------- malformed scipy CSR


def run_isolated(fn, timeout: float = 60.0):
    """Run ``fn()`` in a forked child.

    Ensures: ("ok", None, None) when it returned, ("raised", class, message)
    when it raised, ("crashed", signal name, None) when the child died, and
    ("hung", None, None) when it did not finish within ``timeout`` seconds.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child
        os.close(read_fd)
        try:
            fn()
            result = ("ok", None, None)
        except BaseException as err:               # report everything, including crashes of spc
            result = ("raised", type(err), str(err))
        try:
            payload = pickle.dumps(result)
        except Exception:
            payload = pickle.dumps(("raised", RuntimeError, repr(result)))
        with os.fdopen(write_fd, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd, "rb") as f:
        while True:
            ready, _, _ = select.select([f], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return ("hung", None, None)
            chunk = os.read(f.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ("crashed", signal.Signals(os.WTERMSIG(status)).name, None)
    return pickle.loads(data)


def raw_csr(indptr, indices, data, shape=(3, 3)) -> sp.csr_matrix:
    """A scipy CSR matrix holding exactly these arrays (scipy's checks bypassed)."""
    m = sp.csr_matrix(shape, dtype=np.float32)
    m.indptr = np.asarray(indptr, dtype=np.int32)
    m.indices = np.asarray(indices, dtype=np.int32)
    m.data = np.asarray(data, dtype=np.float32)
    return m


MALFORMED_CSR = {
    # id: (indptr, indices, data, words the message must contain)
    "indptr-decreasing": ([0, 2, 1, 3], [0, 1, 2], [1, 2, 3], "decreas"),
    "indptr0-nonzero": ([1, 2, 2, 3], [0, 1, 2], [1, 2, 3], "start"),
    "indptr-end-below-nnz": ([0, 1, 2, 2], [0, 1, 2], [1, 2, 3], "3"),
    "indptr-end-above-nnz": ([0, 1, 2, 4], [0, 1, 2], [1, 2, 3], "4"),
    "col-negative": ([0, 1, 2, 3], [0, -1, 2], [1, 2, 3], "-1"),
    "col-too-large": ([0, 1, 2, 3], [0, 3, 2], [1, 2, 3], "range"),
    "indptr-too-short": ([0, 1, 3], [0, 1, 2], [1, 2, 3], "length"),
    # a view one entry short, whose next int32 in memory (3) equals nnz: a check that
    # reads indptr[nrows] past the end would find nothing wrong
    "indptr-too-short-view": (np.array([0, 1, 2, 3], np.int32)[:3], [0, 1, 2], [1, 2, 3], "length"),
    "indptr-too-long": ([0, 1, 2, 3, 3], [0, 1, 2], [1, 2, 3], "length"),
    "data-too-short": ([0, 1, 2, 3], [0, 1, 2], [1, 2], "values"),
}

# the sparse operand's format; a dense format densifies the scipy input
KERNEL_FORMATS = ["csr", "csc", "coo", "dcsr", "dense"]


def spmv_kernel(fmt: str):
    return spc.compile("y[i] = A[i,j] * x[j]", formats={"A": fmt})


@pytest.fixture(scope="module")
def spmv_by_format():
    return {fmt: spmv_kernel(fmt) for fmt in KERNEL_FORMATS}


@pytest.mark.parametrize("fmt", KERNEL_FORMATS)
@pytest.mark.parametrize("case", list(MALFORMED_CSR))
def test_malformed_scipy_csr_is_an_input_error(spmv_by_format, case, fmt):
    indptr, indices, data, word = MALFORMED_CSR[case]
    k = spmv_by_format[fmt]
    outcome, cls, msg = run_isolated(
        lambda: k(A=raw_csr(indptr, indices, data), x=np.ones(3, np.float32)))
    assert outcome != "crashed", f"spc crashed ({cls}) on a malformed CSR operand"
    assert outcome == "raised", "spc computed a result from a malformed CSR operand"
    assert issubclass(cls, spc.InputError), f"expected InputError, got {cls.__name__}: {msg}"
    assert "operand A" in msg, msg
    assert word in msg, msg


@pytest.mark.parametrize("case", list(MALFORMED_CSR))
def test_malformed_scipy_csr_positional_call(spmv_by_format, case):
    """Positional numpy/scipy operands of the kernel's dtype may take a faster call path."""
    indptr, indices, data, word = MALFORMED_CSR[case]
    k = spmv_by_format["csr"]
    outcome, cls, msg = run_isolated(lambda: k(raw_csr(indptr, indices, data),
                                               np.ones(3, np.float32)))
    assert outcome == "raised", f"{outcome} ({cls}) on a malformed CSR operand"
    assert issubclass(cls, spc.InputError), f"expected InputError, got {cls.__name__}: {msg}"
    assert "operand A" in msg and word in msg, msg


@pytest.mark.parametrize("case", list(MALFORMED_CSR))
def test_malformed_scipy_csr_to_spc_tensor(case):
    indptr, indices, data, word = MALFORMED_CSR[case]
    outcome, cls, msg = run_isolated(lambda: spc.tensor(raw_csr(indptr, indices, data)))
    assert outcome == "raised" and issubclass(cls, spc.InputError), (outcome, cls, msg)
    assert word in msg


UNCANONICAL_CSR = {
    "unsorted": ([0, 2, 3, 5], [2, 0, 1, 1, 0], [1, 2, 3, 4, 5]),
    "duplicates": ([0, 2, 3, 5], [0, 0, 1, 1, 1], [1, 2, 3, 4, 5]),
    "unsorted-and-duplicates": ([0, 3, 3, 6], [2, 0, 2, 1, 0, 1], [1, 2, 3, 4, 5, 6]),
}


@pytest.mark.parametrize("fmt", KERNEL_FORMATS)
@pytest.mark.parametrize("case", list(UNCANONICAL_CSR))
def test_uncanonical_scipy_csr_is_canonicalized(spmv_by_format, case, fmt):
    indptr, indices, data = UNCANONICAL_CSR[case]
    A = raw_csr(indptr, indices, data)
    before = (A.indptr.copy(), A.indices.copy(), A.data.copy())
    x = np.array([1.0, 10.0, 100.0], np.float32)
    y = spmv_by_format[fmt](A=A, x=x)
    np.testing.assert_allclose(y, A @ x, rtol=1e-6)
    for old, new in zip(before, (A.indptr, A.indices, A.data)):
        np.testing.assert_array_equal(old, new, err_msg="spc modified the caller's matrix")


@pytest.mark.parametrize("case", list(UNCANONICAL_CSR))
def test_uncanonical_scipy_csr_positional_call(spmv_by_format, case):
    indptr, indices, data = UNCANONICAL_CSR[case]
    A = raw_csr(indptr, indices, data)
    x = np.array([1.0, 10.0, 100.0], np.float32)
    np.testing.assert_allclose(spmv_by_format["csr"](A, x), A @ x, rtol=1e-6)


@pytest.mark.parametrize("case", list(UNCANONICAL_CSR))
def test_uncanonical_scipy_csr_in_a_sparse_output_kernel(case):
    indptr, indices, data = UNCANONICAL_CSR[case]
    A = raw_csr(indptr, indices, data)
    B = sp.csr_matrix(np.eye(3, dtype=np.float32))
    k = spc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"})
    C = k(A=A, B=B)
    np.testing.assert_allclose(C.toarray(), (A + B).toarray(), rtol=1e-6)


# ---------------------------------------------------------------------- raw spc.Tensor


CSR_FORMAT = resolve_format("csr", 2)
COO_FORMAT = resolve_format("coo", 2)
DCSR_FORMAT = resolve_format("dcsr", 2)
I32 = np.int32


def arr(*values, dtype=I32):
    return np.array(values, dtype=dtype)


GOOD_CSR = ([{}, {"pos": arr(0, 1, 2, 3), "crd": arr(0, 1, 2)}], np.ones(3, np.float32))

MALFORMED_TENSORS = {
    # id: (format, level arrays, values, error class, words in message)
    "pos-decreasing": (CSR_FORMAT, [{}, {"pos": arr(0, 2, 1, 3), "crd": arr(0, 1, 2)}],
                       np.ones(3, np.float32), spc.InputError, "decreas"),
    "pos0-nonzero": (CSR_FORMAT, [{}, {"pos": arr(1, 1, 2, 3), "crd": arr(0, 1, 2)}],
                     np.ones(3, np.float32), spc.InputError, "start"),
    "pos-end-mismatch": (CSR_FORMAT, [{}, {"pos": arr(0, 1, 2, 2), "crd": arr(0, 1, 2)}],
                         np.ones(3, np.float32), spc.InputError, "coordinates"),
    "pos-wrong-length": (CSR_FORMAT, [{}, {"pos": arr(0, 1, 3), "crd": arr(0, 1, 2)}],
                         np.ones(3, np.float32), spc.InputError, "length"),
    "pos-2d": (CSR_FORMAT, [{}, {"pos": np.zeros((4, 1), I32), "crd": arr()}],
               np.ones(0, np.float32), spc.InputError, "1-d"),
    "crd-negative": (CSR_FORMAT, [{}, {"pos": arr(0, 1, 2, 3), "crd": arr(0, -1, 2)}],
                     np.ones(3, np.float32), spc.InputError, "range"),
    "crd-too-large": (CSR_FORMAT, [{}, {"pos": arr(0, 1, 2, 3), "crd": arr(0, 7, 2)}],
                      np.ones(3, np.float32), spc.InputError, "range"),
    "crd-unsorted": (CSR_FORMAT, [{}, {"pos": arr(0, 2, 2, 3), "crd": arr(1, 0, 2)}],
                     np.ones(3, np.float32), spc.InputError, "unsorted"),
    "crd-duplicate": (CSR_FORMAT, [{}, {"pos": arr(0, 2, 2, 3), "crd": arr(1, 1, 2)}],
                      np.ones(3, np.float32), spc.InputError, "duplicate"),
    "crd-missing": (CSR_FORMAT, [{}, {"pos": arr(0, 1, 2, 3)}],
                    np.ones(3, np.float32), spc.InputError, "crd"),
    "vals-too-long": (CSR_FORMAT, GOOD_CSR[0], np.ones(4, np.float32), spc.InputError, "values"),
    "vals-2d": (CSR_FORMAT, GOOD_CSR[0], np.ones((3, 1), np.float32), spc.InputError, "values"),
    "vals-a-list": (CSR_FORMAT, GOOD_CSR[0], [1.0, 2.0, 3.0], spc.InputError, "values"),
    "too-few-level-dicts": (CSR_FORMAT, [{}], np.ones(3, np.float32), spc.InputError, "level"),
    "too-many-level-dicts": (CSR_FORMAT, GOOD_CSR[0] + [{}], np.ones(3, np.float32),
                             spc.InputError, "level"),
    "coo-duplicate-entry": (COO_FORMAT, [{"pos": arr(0, 3), "crd": arr(0, 0, 1)},
                                         {"crd": arr(1, 1, 0)}],
                            np.ones(3, np.float32), spc.InputError, "duplicate"),
    "coo-unsorted-entry": (COO_FORMAT, [{"pos": arr(0, 3), "crd": arr(0, 1, 0)},
                                        {"crd": arr(1, 1, 2)}],
                           np.ones(3, np.float32), spc.InputError, "unsorted"),
    "coo-singleton-length": (COO_FORMAT, [{"pos": arr(0, 3), "crd": arr(0, 1, 2)},
                                          {"crd": arr(1, 1)}],
                             np.ones(3, np.float32), spc.InputError, "coordinates"),
    "dcsr-root-pos-length": (DCSR_FORMAT, [{"pos": arr(0, 1, 2), "crd": arr(0, 1)},
                                           {"pos": arr(0, 1, 2), "crd": arr(0, 1)}],
                             np.ones(2, np.float32), spc.InputError, "length"),
    # dtype problems are DTypeErrors (also TypeErrors)
    "index-float": (CSR_FORMAT, [{}, {"pos": arr(0, 1, 2, 3, dtype=np.float32),
                                      "crd": arr(0, 1, 2)}],
                    np.ones(3, np.float32), spc.DTypeError, "int32"),
    "index-mixed-widths": (CSR_FORMAT, [{}, {"pos": arr(0, 1, 2, 3, dtype=np.int64),
                                             "crd": arr(0, 1, 2)}],
                           np.ones(3, np.float32), spc.DTypeError, "mix"),
    "vals-int": (CSR_FORMAT, GOOD_CSR[0], np.ones(3, np.int32), spc.DTypeError, "int32"),
    "vals-complex": (CSR_FORMAT, GOOD_CSR[0], np.ones(3, np.complex64), spc.DTypeError, "complex"),
}


@pytest.mark.parametrize("case", list(MALFORMED_TENSORS))
def test_raw_tensor_construction_rejects_malformed_arrays(case):
    fmt, arrays, vals, cls, word = MALFORMED_TENSORS[case]
    outcome, raised, msg = run_isolated(lambda: spc.Tensor((3, 3), fmt, arrays, vals))
    assert outcome == "raised", f"{case}: {outcome} ({raised})"
    assert issubclass(raised, cls), f"expected {cls.__name__}, got {raised.__name__}: {msg}"
    assert word in msg, msg


def test_raw_tensor_with_a_shape_of_the_wrong_rank():
    arrays, vals = GOOD_CSR
    with pytest.raises(spc.ShapeError):
        spc.Tensor((3, 3, 1), CSR_FORMAT, arrays, vals)


def test_raw_tensor_well_formed_is_accepted_and_usable(spmv):
    arrays, vals = GOOD_CSR
    t = spc.Tensor((3, 3), CSR_FORMAT, arrays, vals)
    np.testing.assert_array_equal(t.to_numpy(), np.eye(3, dtype=np.float32))
    y = spmv(t, np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(y, [1, 2, 3])


def test_malformed_tensor_built_without_validation_is_rejected_at_call(spmv):
    bad = spc.Tensor((3, 3), CSR_FORMAT, [{}, {"pos": arr(0, 2, 1, 3), "crd": arr(0, 1, 2)}],
                     np.ones(3, np.float32), validate=False)
    outcome, cls, msg = run_isolated(lambda: spmv(bad, np.ones(3, np.float32)))
    assert outcome == "raised" and issubclass(cls, spc.InputError), (outcome, cls, msg)
    assert "operand A" in msg


# ---------------------------------------------------------------------- validate=False, int64


def random_csr(m, n, density, seed, dtype=np.float32) -> sp.csr_matrix:
    return sp.random(m, n, density=density, format="csr", dtype=dtype,
                     random_state=np.random.default_rng(seed))


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_validate_false_gives_the_same_result_on_valid_input(fmt):
    k = spc.compile("spmv", fmt=fmt)
    A = random_csr(40, 30, 0.2, RNG_SEED)
    x = np.random.default_rng(1).random(30).astype(np.float32)
    np.testing.assert_array_equal(k(A, x, validate=False), k(A, x))
    np.testing.assert_allclose(k(A, x), A @ x, rtol=1e-5)


def test_validate_false_on_spc_tensor_input():
    A = random_csr(25, 20, 0.3, RNG_SEED + 1)
    t = spc.tensor(A, "csr", validate=False)
    np.testing.assert_array_equal(t.to_numpy(), A.toarray())


@pytest.mark.parametrize("kernel, fmt", [
    ("spmv", "csr"), ("spmv", "csc"), ("spmv", "coo"), ("spmm", "csr"), ("sddmm", "csr"),
])
def test_int64_index_arrays_work(kernel, fmt):
    A = random_csr(30, 20, 0.25, RNG_SEED + 2).asformat(fmt if fmt != "coo" else "csr")
    A.indices = A.indices.astype(np.int64)
    A.indptr = A.indptr.astype(np.int64)
    rng = np.random.default_rng(3)
    k = spc.compile(kernel, fmt=fmt)
    if kernel == "spmv":
        x = rng.random(20).astype(np.float32)
        np.testing.assert_allclose(k(A, x), A @ x, rtol=1e-5)
    elif kernel == "spmm":
        B = rng.random((20, 4)).astype(np.float32)
        np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-5)
    else:
        X = rng.random((30, 5)).astype(np.float32)
        Y = rng.random((20, 5)).astype(np.float32)
        S = k(A, X, Y)
        expect = A.multiply(X @ Y.T).toarray()
        np.testing.assert_allclose(S.toarray(), expect, rtol=1e-5)


# ---------------------------------------------------------------------- validation cost
#
# Not timed.  Each input below is large enough (millions of entries) that a
# quadratic check would not finish within the session; a linear one takes a
# few tens of milliseconds.


BIG_NNZ = 2_000_000


def big_csr(unsorted: bool) -> sp.csr_matrix:
    rows = 1000
    per_row = BIG_NNZ // rows
    ncols = 4 * per_row
    indptr = np.arange(rows + 1, dtype=np.int32) * per_row
    cols = np.tile(np.arange(0, ncols, 4, dtype=np.int32), rows)
    if unsorted:
        cols = cols.reshape(rows, per_row)[:, ::-1].reshape(-1).copy()
    m = sp.csr_matrix((rows, ncols), dtype=np.float32)
    m.indptr, m.indices, m.data = indptr, cols, np.ones(BIG_NNZ, np.float32)
    return m


@pytest.mark.parametrize("fmt", ["csr", "coo"])
def test_validation_of_a_large_matrix_is_not_quadratic(fmt):
    t = spc.tensor(big_csr(unsorted=False), fmt)
    t.validate()                                  # the coo check sorts/compares all entries
    assert t.nnz == BIG_NNZ


def test_canonicalizing_a_large_unsorted_matrix_is_not_quadratic():
    t = spc.tensor(big_csr(unsorted=True), "csr")
    assert t.nnz == BIG_NNZ
    crd = t.arrays[1]["crd"]
    assert np.all(crd[1:1000] > crd[:999])


@pytest.mark.parametrize("dtype, expect", [
    pytest.param("float32", np.float32, id="str-float32"),
    pytest.param("float64", np.float64, id="str-float64"),
    pytest.param(np.dtype(np.float32), np.float32, id="np.dtype-float32"),
    pytest.param(np.float32, np.float32, id="np.float32-type"),
    pytest.param(np.float64, np.float64, id="np.float64-type"),
])
def test_compile_accepts_every_spelling_of_a_float_dtype(dtype, expect):
    k = spc.compile("spmv", fmt="csr", dtype=dtype)
    y = k(small_csr(expect), np.ones(3, expect))
    assert y.dtype == expect
