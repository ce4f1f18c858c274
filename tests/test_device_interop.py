"""The CUDA target's operands beyond torch and CuPy: DLPack arrays of other
frameworks (a JAX array, say) read in place on the GPU or the host, and the
PerformanceWarning for a large host operand copied to the GPU on every call."""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from dlpack_only import DLPackOnly
from spc.runtime import device


@pytest.mark.parametrize("nbytes,warns", [(device.HOST_COPY_WARN_BYTES - 4, False),
                                          (device.HOST_COPY_WARN_BYTES, True)])
def test_a_host_copy_warns_from_the_threshold_on(nbytes, warns):
    t = SimpleNamespace(vals=np.zeros(nbytes // 4, np.float32),     # a Tensor's arrays
                        arrays=[{"pos": np.zeros(0, np.int32)}])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        device.warn_if_copied_large("A", t)
    hits = [w for w in seen if issubclass(w.category, spc.PerformanceWarning)]
    assert bool(hits) == warns
    if warns:
        assert "operand A" in str(hits[0].message) and "prepare" in str(hits[0].message)


@pytest.mark.cuda
class TestOnTheGPU:
    @pytest.fixture(autouse=True)
    def _cupy(self):
        from cuda_env import cupy_or_skip_module
        self.cp = cupy_or_skip_module()

    def _matrix(self):
        return sp.random(300, 200, density=0.05, format="csr", dtype=np.float32,
                         random_state=np.random.default_rng(1))

    def test_a_dlpack_array_on_the_gpu_is_read_in_place_and_the_result_is_cupy(self):
        cp = self.cp
        A = self._matrix()
        B = np.random.default_rng(2).standard_normal((200, 16)).astype(np.float32)
        k = spc.compile("spmm", fmt="csr", target="cuda", dtype="float32")
        C = k(A, DLPackOnly(cp.asarray(B)))
        assert isinstance(C, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(C), A @ B, rtol=1e-5, atol=1e-5)
        x = cp.asarray(B)
        assert device.DeviceOperands.get().from_dlpack(DLPackOnly(x)).data.ptr == x.data.ptr

    def test_a_dlpack_array_on_the_host_is_read_as_numpy(self):
        A = self._matrix()
        x = np.random.default_rng(3).standard_normal(200).astype(np.float32)
        y = spc.compile("spmv", fmt="csr", target="cuda", dtype="float32")(A, DLPackOnly(x))
        assert isinstance(y, np.ndarray)
        np.testing.assert_allclose(y, A @ x, rtol=1e-5, atol=1e-5)

    def test_a_large_host_operand_warns_and_device_or_prepared_ones_do_not(self):
        cp = self.cp
        n = device.HOST_COPY_WARN_BYTES // 4 // 64 + 1         # rows of a 64-wide float32 B
        A = sp.random(100, n, density=0.001, format="csr", dtype=np.float32,
                      random_state=np.random.default_rng(4))
        B = np.ones((n, 64), np.float32)
        k = spc.compile("spmm", fmt="csr", target="cuda", dtype="float32")
        with pytest.warns(spc.PerformanceWarning, match="operand B: .*MiB copied"):
            k(A, B)
        with warnings.catch_warnings():
            warnings.simplefilter("error", spc.PerformanceWarning)
            C = k(A, cp.asarray(B))
            k(k.prepare(A), cp.asarray(B))
        np.testing.assert_allclose(cp.asnumpy(C), A @ B, rtol=1e-4)
