"""spc.tune on the GPU (CUDA-event timing, CuPy operands); skipped without a GPU."""
import numpy as np
import pytest
import scipy.sparse as sp

from cuda_env import cupy_or_skip_module

import spc

pytestmark = pytest.mark.cuda
cupy = cupy_or_skip_module()


@pytest.mark.parametrize("kernel", ["spmm", "sddmm"])
def test_tune_on_the_gpu_is_correct(kernel):
    A = sp.random(300, 200, density=0.05, format="csr", dtype=np.float32, random_state=0)
    rng = np.random.default_rng(0)
    if kernel == "spmm":
        dense = (cupy.asarray(rng.standard_normal((200, 32)).astype(np.float32)),)
    else:
        dense = (cupy.asarray(rng.standard_normal((300, 32)).astype(np.float32)),
                 cupy.asarray(rng.standard_normal((200, 32)).astype(np.float32)))
    k = spc.tune(kernel, A, *dense, target="cuda", budget_s=10, database=False)
    assert k.report.chosen.time > 0
    out = k(A, *dense)
    if kernel == "spmm":
        np.testing.assert_allclose(cupy.asnumpy(out), A @ cupy.asnumpy(dense[0]),
                                   rtol=1e-4, atol=1e-4)
    else:
        X, Y = (cupy.asnumpy(d) for d in dense)
        r = np.repeat(np.arange(300), np.diff(A.indptr))
        got = out.get() if hasattr(out, "get") else out
        got = sp.csr_matrix(got.to_scipy() if hasattr(got, "to_scipy") else got)
        np.testing.assert_allclose(np.asarray(got[r, A.indices]).ravel(),
                                   A.data * np.einsum("ij,ij->i", X[r], Y[A.indices]),
                                   rtol=1e-4, atol=1e-5)
