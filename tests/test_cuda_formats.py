"""The deep-learning formats (bsr, ell, dia, nm, hyb) on the GPU: the same
differential suite as tests/test_formats.py, with host and device inputs.
Marked ``cuda``; skipped without CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from matrices import MATRICES, MATRIX_IDS, assert_allclose, dense_operand

pytestmark = pytest.mark.cuda

from cuda_env import cupy_or_skip_module, gpu  # noqa: E402

cupy = cupy_or_skip_module()

from test_formats import EXPRESSIONS, FORMATS, _dense, _operands, matrix_for  # noqa: E402
from test_named_kernels import KernelCase  # noqa: E402

KERNELS = [KernelCase("spmv"), KernelCase("spmm", 7), KernelCase("spmm", 128),
           KernelCase("sddmm", 5), KernelCase("sddmm", 64)]


def _host(x):
    if hasattr(x, "parts"):
        return sum(_host(p) for p in x.parts)
    if isinstance(x, spc.Tensor):
        from spc.runtime.device import DeviceOperands
        return DeviceOperands.get().to_host(x).to_numpy()
    if hasattr(x, "get"):
        x = x.get()
    return _dense(x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_named_kernel_matches_scipy_on_gpu(kernel, fmt, matrix, dtype):
    if dtype == "float64" and kernel.width not in (None, 7, 5):
        pytest.skip("float64 runs one width per kernel")
    A = matrix_for(fmt, matrix, dtype)
    ops = kernel.operands(A, dtype)
    out = gpu(kernel.name, fmt=fmt, dtype=dtype)(A, *ops)
    assert out.shape == kernel.out_shape(A)
    assert_allclose(_host(out), kernel.reference(A, ops), dtype)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", ["spmv", "spmm"])
def test_device_inputs_give_device_outputs(kernel, fmt):
    A = matrix_for(fmt, MATRICES[-1], np.float32)       # the power-law matrix
    x = dense_operand("x", (A.shape[1],) if kernel == "spmv" else (A.shape[1], 40), np.float32)
    out = gpu(kernel, fmt=fmt)(cupy.asarray(A.toarray()) if fmt.startswith("nm") else
                               __import__("cupyx.scipy.sparse").scipy.sparse.csr_matrix(A),
                               cupy.asarray(x))
    assert isinstance(out, cupy.ndarray)
    assert_allclose(out.get(), A @ x, np.float32)


@pytest.mark.parametrize("shape", [(9, 10), (16, 16)], ids=str)
@pytest.mark.parametrize("expr, formats, kinds", EXPRESSIONS,
                         ids=[f"{e}-{sorted(f.values())}" for e, f, _ in EXPRESSIONS])
def test_expression_matches_einsum_on_gpu(expr, formats, kinds, shape):
    assign, ops = _operands(expr, kinds, shape, 1)
    dense = {n: _dense(x) for n, x in ops.items()}
    ref = spc.compile(expr, formats=formats, dtype="float64")(**ops)
    out = gpu(expr, formats=formats, dtype="float64")(**ops)
    want = ref.to_numpy() if hasattr(ref, "to_numpy") else _dense(ref)
    assert_allclose(_host(out), want)
    assert dense  # operands were built


def test_large_blocked_and_nm_matrices_on_gpu():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((1000, 1024)).astype(np.float32)
    mask = np.repeat(np.repeat(rng.random((1000 // 8 + 1, 1024 // 8)) < 0.2, 8, 0)[:1000], 8, 1)
    W_blk = np.where(mask, W, 0)
    B = rng.standard_normal((1024, 96)).astype(np.float32)
    for fmt in ["bsr(8,8)", "bsr(1,4)", "bsr(16,16)"]:
        t = spc.tensor(W_blk, fmt)
        assert_allclose(gpu("spmm", fmt=fmt)(t, B), W_blk.astype(np.float64) @ B, np.float32)
    keep = np.argsort(-np.abs(W.reshape(1000, 256, 4)), axis=2)[:, :, :2]
    W24 = np.zeros_like(W).reshape(1000, 256, 4)
    np.put_along_axis(W24, keep, np.take_along_axis(W.reshape(1000, 256, 4), keep, 2), 2)
    W24 = W24.reshape(1000, 1024)
    assert_allclose(gpu("spmm", fmt="nm(2,4)")(spc.tensor(W24, "nm(2,4)"), B),
                    W24.astype(np.float64) @ B, np.float32)
    assert sp.issparse(sp.csr_matrix(W24))
