"""SpGEMM on the GPU (target="cuda") against scipy: a thread per chunk of rows,
workspaces in global scratch.  Marked ``cuda``; skipped without CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

from cuda_env import cupy_or_skip_module, gpu  # noqa: E402

cupy = cupy_or_skip_module()

from matrices import MATRICES, from_mask, random_mask, rng_for  # noqa: E402
from test_spgemm import CSR3, SPGEMM, assert_canonical_product, right_operand  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_spgemm_matches_scipy_on_the_gpu(case, dtype):
    a = case.build(dtype)
    b = right_operand(a, f"{case.id}-B", 23, 0.2, dtype)
    c = gpu(SPGEMM, formats=CSR3, dtype=np.dtype(dtype).name)(a, b)
    assert_canonical_product(c, a @ b, dtype)


def test_cancellation_on_the_gpu():
    import scipy.sparse as sp
    a = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    b = sp.csr_matrix(np.array([[2.0, 0.0], [-2.0, 5.0], [np.nan, 0.0]]))
    c = gpu(SPGEMM, formats=CSR3, dtype="float64")(a, b)
    assert np.array_equal(c.indptr, (a @ b).indptr)


def test_masked_and_larger_on_the_gpu():
    rng = rng_for("gpu-masked")
    a = from_mask(random_mask(rng, (700, 300), 0.03), rng, np.float32)
    b = from_mask(random_mask(rng, (300, 900), 0.03), rng, np.float32)
    m = from_mask(random_mask(rng, (700, 900), 0.05), rng, np.float32)
    c = gpu("C[i,j] = M[i,j]*A[i,k]*B[k,j]", formats={**CSR3, "M": "csr"},
            dtype="float32")(m, a, b)
    assert_canonical_product(c, m.multiply(a @ b).tocsr(), np.float32)
    assert_canonical_product(gpu(SPGEMM, formats=CSR3, dtype="float32")(a, b), a @ b,
                             np.float32)


def test_torch_cuda_csr_operands():
    """torch CUDA CSR in, torch out (scratch allocated through torch's allocator);
    a cancelling entry is dropped (the rows are packed on the device)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    import scipy.sparse as sp
    a = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    b = sp.csr_matrix(np.array([[2.0, 0.0], [-2.0, 5.0], [3.0, 0.0]]))
    ta = torch.tensor(a.toarray(), device="cuda").to_sparse_csr()
    tb = torch.tensor(b.toarray(), device="cuda").to_sparse_csr()
    c = gpu(SPGEMM, formats=CSR3, dtype="float64")(ta, tb)
    assert c.is_cuda and c.layout == torch.sparse_csr
    assert c.values().numel() == (a @ b).nnz
    np.testing.assert_allclose(c.to_dense().cpu().numpy(), (a @ b).toarray())
