"""The ``out=`` argument: the dense result written into the caller's array, which
the call returns; every misfit (format, family, shape, dtype, layout,
writability, memory shared with an operand) refused with spc.OutputError
before the kernel runs.  Both CPU call paths (the specialized fast call and the
general path) are exercised; the GPU tests need CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc

from matrices import MATRICES, dense_operand

N = 6


def operands(kernel: str, A, dtype):
    m, k = A.shape
    if kernel == "spmv":
        return [dense_operand("x", (k,), dtype)]
    return [dense_operand("B", (k, N), dtype)]


def call(k, path: str, A, dense, out):
    """``k`` called through the fast path (scipy csr, positional) or the general
    one (the same operands as coo, converted per call)."""
    if path == "general":
        A = A.tocoo()
    return k(A, *dense, out=out)


@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm"])
@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_out_receives_the_result(case, kernel, dtype, path):
    """Whatever ``out`` held before (NaN here), it ends up holding the result,
    and the call returns ``out`` itself."""
    k = spc.compile(kernel, fmt="csr")
    A = case.build(dtype)
    dense = operands(kernel, A, dtype)
    expected = k(A, *dense)
    out = np.full(expected.shape, np.nan, dtype=dtype)
    result = call(k, path, A, dense, out)
    assert result is out
    np.testing.assert_array_equal(out, expected)


def test_out_of_a_sum_split_into_kernels():
    """A sum the lowerer splits into kernels (the second adds into the output the
    first wrote): both write into ``out``."""
    k = spc.compile("y[i] = A[i,j]*x[j] + b[i]", formats={"A": "csr"})
    assert len(k.lowered_kernels()) == 2
    A = MATRICES[0].build(np.float64)
    x, b = dense_operand("x", (A.shape[1],), np.float64), dense_operand("b", (A.shape[0],), np.float64)
    out = np.full(A.shape[0], 5.0)
    assert k(A=A, x=x, b=b, out=out) is out
    np.testing.assert_allclose(out, A @ x + b, rtol=1e-12)


def test_scalar_out():
    k = spc.compile("s = A[i,j]*x[i]*y[j]", formats={"A": "csr"})
    A = MATRICES[0].build(np.float64)
    x, y = dense_operand("x", (A.shape[0],), np.float64), dense_operand("y", (A.shape[1],), np.float64)
    out = np.empty(())
    assert k(A=A, x=x, y=y, out=out) is out
    np.testing.assert_allclose(out, x @ (A @ y), rtol=1e-12)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_float16_out(fmt):
    """16-bit values: csr SpMM stores float16 into ``out`` directly; csc adds into
    a float32 output, rounded once at the end and copied into ``out``."""
    k = spc.compile("spmm", fmt=fmt, dtype="float16")
    A = spc.tensor(MATRICES[0].build(np.float32), fmt, dtype=np.float16)
    B = dense_operand("B", (A.shape[1], N), np.float16)
    out = np.full((A.shape[0], N), np.nan, np.float16)
    assert k(A, B, out=out) is out
    np.testing.assert_array_equal(out, k(A, B))


def test_torch_cpu_out():
    torch = pytest.importorskip("torch")
    k = spc.compile("spmv", fmt="csr", dtype="float32")
    A = MATRICES[0].build(np.float32)
    x = dense_operand("x", (A.shape[1],), np.float32)
    out = torch.full((A.shape[0],), float("nan"))
    assert k(A, x, out=out) is out
    np.testing.assert_allclose(out.numpy(), A @ x, rtol=1e-5)


def test_a_tensor_named_out_is_an_operand():
    k = spc.compile("y[i] = out[i,j]*x[j]", formats={"out": "csr"})
    A = MATRICES[0].build(np.float64)
    x = dense_operand("x", (A.shape[1],), np.float64)
    np.testing.assert_allclose(k(out=A, x=x), A @ x, rtol=1e-12)


A40 = MATRICES[0].build(np.float32)          # 40 x 40
X40 = dense_operand("x", (40,), np.float32)


def _readonly():
    a = np.zeros(40, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize("out, message", [
    (np.zeros(39, np.float32), "out= has shape (39,); the result y has shape (40,)"),
    (np.zeros((40, 1), np.float32), "has shape (40, 1)"),
    (np.zeros(40, np.float64), "out= holds float64; the result y is float32"),
    (np.zeros(80, np.float32)[::2], "must be C-contiguous"),
    (_readonly(), "out= is read-only"),
    ([0.0] * 40, "out= must be a numpy array or a CPU torch tensor"),
    (X40, "shares memory with operand x"),
], ids=["shape", "rank", "dtype", "strided", "readonly", "list", "alias"])
def test_out_misfits_are_refused(path, out, message):
    k = spc.compile("spmv", fmt="csr", dtype="float32")
    before = np.array(out, copy=True)
    with pytest.raises(spc.OutputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(k, path, A40, [X40], out)
    np.testing.assert_array_equal(np.asarray(out), before)     # nothing was written


def test_out_sharing_the_matrix_values_is_refused():
    """``out`` over the sparse operand's values: the kernel would read what it wrote."""
    A = sp.csr_matrix(np.eye(40, dtype=np.float32))           # 40 stored values
    with pytest.raises(spc.OutputError, match="shares memory with operand A"):
        spc.compile("spmv", fmt="csr")(A, X40, out=A.data)


def test_out_for_a_sparse_result_is_refused():
    k = spc.compile("sddmm", fmt="csr", dtype="float32")
    X = dense_operand("X", (40, 4), np.float32)
    with pytest.raises(spc.OutputError, match="out= is for dense results; S is stored as csr"):
        k(A40, X, X, out=np.zeros((40, 40), np.float32))


def test_out_with_validate_false_keeps_the_fast_path():
    k = spc.compile("spmv", fmt="csr", dtype="float32")
    out = np.empty(40, np.float32)
    assert k(A40, X40, out=out, validate=False) is out
    np.testing.assert_allclose(out, A40 @ X40, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("family", ["cupy", "torch"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm"])
def test_gpu_out_receives_the_result(kernel, family):
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    A = MATRICES[-1].build(np.float32)
    dense = operands(kernel, A, np.float32)
    k = spc.compile(kernel, fmt="csr", target="cuda")
    expected = A @ dense[0]
    if family == "torch":
        torch = pytest.importorskip("torch")
        As = torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)),
                                     torch.from_numpy(A.indices.astype(np.int64)),
                                     torch.from_numpy(A.data), size=A.shape).cuda()
        d = [torch.from_numpy(x).cuda() for x in dense]
        out = torch.full(expected.shape, float("nan"), device="cuda")
        assert k(As, *d, out=out) is out
        got = out.cpu().numpy()
    else:
        import cupyx.scipy.sparse as csp
        d = [cp.asarray(x) for x in dense]
        out = cp.full(expected.shape, cp.nan, dtype=cp.float32)
        assert k(csp.csr_matrix(A), *d, out=out) is out
        got = cp.asnumpy(out)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_gpu_out_misfits_are_refused():
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    k = spc.compile("spmv", fmt="csr", target="cuda")
    import cupyx.scipy.sparse as csp
    A, x = csp.csr_matrix(A40), cp.asarray(X40)
    with pytest.raises(spc.OutputError, match="must be a CuPy array or a CUDA torch tensor"):
        k(A, x, out=np.zeros(40, np.float32))
    with pytest.raises(spc.OutputError, match="shares memory with operand x"):
        k(A, x, out=x)
    with pytest.raises(spc.OutputError, match="has shape"):
        k(A, x, out=cp.zeros(41, cp.float32))


def test_out_is_refused_for_sum_formats():
    k = spc.compile("spmv", fmt="hyb", dtype="float32")
    with pytest.raises(spc.OutputError, match="sum formats"):
        k(A40, X40, out=np.zeros(40, np.float32))


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_torch_bfloat16_out(fmt):
    """A bfloat16 torch ``out`` (numpy cannot view it): the result is copied in."""
    torch = pytest.importorskip("torch")
    k = spc.compile("spmv", fmt=fmt, dtype="bfloat16")
    A = spc.tensor(MATRICES[0].build(np.float32), fmt, dtype="bfloat16")
    x = torch.from_numpy(dense_operand("x", (40,), np.float32)).to(torch.bfloat16)
    out = torch.full((40,), float("nan"), dtype=torch.bfloat16)
    assert k(A, x, out=out) is out
    expected = k(A, x)
    assert torch.equal(out, expected)
