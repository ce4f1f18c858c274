"""The steady-state GPU call path on CuPy arrays and cupyx matrices
(runtime/cupy_fast.py): the general path's results, a storage check on every
call (an in-place change is seen at the next call), the general path for what
it does not take (malformed, unsorted where the kernel needs sorted, other
layouts)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc

pytestmark = pytest.mark.cuda
from cuda_env import cupy_or_skip_module, fast_path_matrix as _matrix  # noqa: E402

cp = cupy_or_skip_module()
import cupyx.scipy.sparse as cpsp  # noqa: E402


def _operands(kernel, A, dtype, layout="csr"):
    M = A.tocsr() if layout == "csr" else A.tocsc()
    dA = (cpsp.csr_matrix if layout == "csr" else cpsp.csc_matrix)(M.astype(dtype))
    rng = np.random.default_rng(3)
    if kernel == "sddmm":
        return dA, (cp.asarray(rng.standard_normal((A.shape[0], 8)).astype(dtype)),
                    cp.asarray(rng.standard_normal((A.shape[1], 8)).astype(dtype)))
    shape = (A.shape[1],) if kernel == "spmv" else (A.shape[1], 24)
    return dA, (cp.asarray(rng.standard_normal(shape).astype(dtype)),)


def _dense(x):
    return cp.asnumpy(x.toarray() if cpsp.issparse(x) else x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["csr", "csc"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_fast_path_gives_the_general_paths_results(kernel, layout, dtype,
                                                   general_path_counter):
    if kernel == "sddmm" and layout == "csc":
        pytest.skip("sddmm's output takes the mask's pattern: csc is covered by csr's")
    A = _matrix()
    dA, ops = _operands(kernel, A, dtype, layout)
    k = spc.compile(kernel, fmt=layout, target="cuda")
    got = k(dA, *ops)
    assert general_path_counter == []
    assert type(got) is (type(dA) if kernel == "sddmm" else cp.ndarray)
    if kernel == "sddmm":                         # the mask's index arrays, new values
        assert got.indices.data.ptr == dA.indices.data.ptr
        assert got.data.data.ptr != dA.data.data.ptr
    want = k.specialize(np.dtype(dtype).name).run(
        k.specialize(np.dtype(dtype).name).bind((dA,) + ops, {}), True)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(_dense(got), _dense(want), rtol=rtol, atol=rtol)


def test_an_index_written_in_place_is_seen_at_the_next_call(general_path_counter):
    A = _matrix()
    dA, (x,) = _operands("spmv", A, np.float32)
    k = spc.compile("spmv", target="cuda")
    k(dA, x)
    assert general_path_counter == []
    dA.indices[5] = A.shape[1] + 40              # out of range, written on the device
    with pytest.raises(spc.InputError):
        k(dA, x)
    assert general_path_counter                   # the general path explained it


def test_unsorted_rows_take_the_general_path_where_the_kernel_needs_them_sorted(
        general_path_counter):
    A = _matrix()
    M = A.astype(np.float32)
    row = slice(M.indptr[7], M.indptr[8])          # the dense row, reversed
    M.indices[row] = M.indices[row][::-1].copy()
    M.data[row] = M.data[row][::-1].copy()
    dA = cpsp.csr_matrix((cp.asarray(M.data), cp.asarray(M.indices), cp.asarray(M.indptr)),
                         shape=M.shape)
    x = cp.asarray(np.random.default_rng(1).standard_normal((A.shape[1], 8)).astype(np.float32))
    Y = cp.asarray(np.random.default_rng(2).standard_normal((A.shape[0], 8)).astype(np.float32))
    sddmm = spc.compile("sddmm", target="cuda")
    got = sddmm(dA, Y, x)
    want = M.multiply(cp.asnumpy(Y) @ cp.asnumpy(x).T)
    np.testing.assert_allclose(_dense(got), want.toarray(), rtol=1e-5, atol=1e-5)
    spmm = spc.compile("spmm", target="cuda")
    np.testing.assert_allclose(cp.asnumpy(spmm(dA, x)), M @ cp.asnumpy(x), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (6, 4)])
def test_edge_shapes_and_no_entries(shape, general_path_counter):
    A = sp.csr_matrix(shape, dtype=np.float32)
    dA = cpsp.csr_matrix(A)
    x = cp.ones(shape[1], dtype=cp.float32)
    got = spc.compile("spmv", target="cuda")(dA, x)
    np.testing.assert_array_equal(cp.asnumpy(got), np.zeros(shape[0], np.float32))
