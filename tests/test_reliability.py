"""Regression tests for failures found by probing spc off the happy path (issue 10):
each used to give a non-spc exception or the wrong behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc import config
from spc.formats.format import resolve_format
from spc.formats.levels import Compressed


@pytest.mark.parametrize("a,b", [("ell(4)", "ell(8)"), ("nm(2,4)", "nm(1,4)"),
                                 ("bsr(2,2)", "bsr(4,4)"), ("ell", "ell(8)")])
def test_parametric_formats_differ_by_their_parameters(a, b):
    fa, fb = resolve_format(a, 2), resolve_format(b, 2)
    assert fa != fb
    assert len({fa, fb}) == 2


@pytest.mark.parametrize("name", ["csr", "ell(4)", "nm(2,4)", "bsr(2,2)", "dia"])
def test_equal_parameters_give_equal_formats(name):
    assert resolve_format(name, 2) == resolve_format(name, 2)
    assert hash(resolve_format(name, 2)) == hash(resolve_format(name, 2))


def test_levels_compare_by_uniqueness():
    assert Compressed(unique=False) != Compressed()
    assert Compressed() == Compressed(unique=True)


def test_bad_thread_count_is_an_spc_error(monkeypatch):
    monkeypatch.setenv("SPC_NUM_THREADS", "abc")
    with pytest.raises(spc.SpcError, match="SPC_NUM_THREADS"):
        config.num_threads()


@pytest.mark.parametrize("name", ["self", "validate", "args", "kwargs"])
def test_any_tensor_name_can_be_passed_by_keyword(name):
    k = spc.compile(f"y[i] = A[i,j]*{name}[j]", formats={"A": "csr"}, dtype="float64")
    A = sp.random(5, 4, density=0.5, format="csr", random_state=1)
    x = np.arange(4.0)
    np.testing.assert_allclose(k(A=A, **{name: x}), A @ x)


def test_validate_keyword_still_works():
    k = spc.compile("spmv", fmt="csr", dtype="float64")
    A = sp.random(5, 4, density=0.5, format="csr", random_state=1)
    np.testing.assert_allclose(k(A, np.ones(4), validate=False), A @ np.ones(4))


def test_blocked_operand_into_a_sparse_output_reads_a_csr_copy():
    """Refused before issue 13 part 3 (a blocked operand splits the output's index)."""
    k = spc.compile("C[i,j] = A[i,j]", formats={"A": "bsr(4,1)", "C": "csr"}, dtype="float64")
    assert [c.format.name for c in k.copies] == ["csr"]
    a = sp.random(9, 7, density=0.3, format="csr", random_state=4)
    np.testing.assert_allclose(k(A=a).toarray(), a.toarray())


@pytest.mark.parametrize("a,x,y", [
    (np.inf, [1.0, -2.0], [1.0, 1.0]),      # inf * (1 - 2) = -inf, not inf - 2 inf = nan
    (-np.inf, [3.0, 1.0], [1.0, -1.0]),
    (2.0, [np.inf, 1.0], [1.0, 0.0]),
    (np.nan, [1.0, 1.0], [1.0, 1.0]),
])
def test_sddmm_propagates_inf_and_nan_as_scipy_does(a, x, y):
    A = sp.csr_matrix(np.array([[a]]))
    X, Y = np.array([x]), np.array([y])
    want = A.multiply(X @ Y.T).toarray()
    got = spc.compile("sddmm", fmt="csr", dtype="float64")(A, X, Y).toarray()
    np.testing.assert_array_equal(got, want)


def _hyb_operands(family):
    rng = np.random.default_rng(2)
    A = sp.random(7, 6, density=0.5, format="csr", random_state=4)
    X, Y = rng.standard_normal((7, 3)), rng.standard_normal((6, 3))
    want = A.multiply(X @ Y.T).toarray()
    if family == "scipy-dense-side":
        return (A, sp.csr_matrix(X), Y), want
    torch = pytest.importorskip("torch")
    return (torch.tensor(A.toarray()).to_sparse_csr(), torch.tensor(X), torch.tensor(Y)), want


@pytest.mark.parametrize("family", ["scipy-dense-side", "torch"])
def test_hyb_sddmm_returns_the_operands_family(family):
    args, want = _hyb_operands(family)
    out = spc.compile("sddmm", fmt="hyb", dtype="float64")(*args)
    dense = out.toarray() if sp.issparse(out) else out.to_dense().numpy()
    np.testing.assert_allclose(dense, want, rtol=1e-12, atol=1e-12)


# -- limits ----------------------------------------------------------------------------------

def test_out_of_memory_is_a_resource_error():
    k = spc.compile("C[i,j] = x[i]*y[j]", dtype="float64")
    x = np.ones(2**24)                      # a 2**48-entry output
    with pytest.raises(spc.ResourceError, match="out of memory"):
        k(x, x)
    np.testing.assert_allclose(k(np.ones(3), np.arange(2.0)), np.outer(np.ones(3), np.arange(2.0)))


@pytest.mark.parametrize("module,name,message,resource", [
    ("torch", "AcceleratorError", "CUDA error: out of memory", True),
    ("cupy_backends.cuda.api.runtime", "CUDARuntimeError",
     "cudaErrorMemoryAllocation: out of memory", True),
    ("torch", "AcceleratorError", "CUDA error: an illegal memory access", False),
    ("mylib", "Error", "out of memory", False)])
def test_framework_cuda_out_of_memory_errors_are_resource_errors(module, name, message, resource):
    """torch and CuPy without their caching allocators report a failed cudaMalloc as a
    CUDA error, not as OutOfMemoryError; it is still a ResourceError."""
    from spc.runtime.compiled import out_of_memory
    err = type(name, (RuntimeError,), {"__module__": module})(message)
    got = out_of_memory(err, "k")
    assert isinstance(got, spc.ResourceError) if resource else got is None


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_one_row_holding_every_nonzero(kernel):
    m, n = 50, 20_000
    rows = np.full(n, 17)
    A = sp.csr_matrix((np.linspace(-1, 1, n), (rows, np.arange(n))), shape=(m, n))
    rng = np.random.default_rng(0)
    k = spc.compile(kernel, fmt="csr", dtype="float64")
    if kernel == "spmv":
        x = rng.standard_normal(n)
        np.testing.assert_allclose(k(A, x), A @ x, rtol=1e-10, atol=1e-10)
    elif kernel == "spmm":
        B = rng.standard_normal((n, 3))
        np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-10, atol=1e-10)
    else:
        X, Y = rng.standard_normal((m, 2)), rng.standard_normal((n, 2))
        np.testing.assert_allclose(k(A, X, Y).toarray(), A.multiply(X @ Y.T).toarray(),
                                   rtol=1e-10, atol=1e-10)


def test_very_wide_dense_operand():
    A = sp.random(40, 30, density=0.2, format="csr", random_state=2)
    B = np.random.default_rng(1).standard_normal((30, 20_001))
    k = spc.compile("spmm", fmt="csr", dtype="float64")
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-10, atol=1e-10)


def test_cpu_positions_are_64_bit():
    """Index arrays may be int32, but position and offset arithmetic is int64 (an
    M*N dense output past 2**31 entries is addressed correctly)."""
    src = spc.compile("spmm", fmt="csr").source
    assert "mul nsw i64" in src or "mul i64" in src
    assert "mul i32" not in src and "mul nsw i32" not in src


class _FakeLauncher:
    """What RawLaunch needs of a CudaLauncher, recording which variant it asks for."""
    name = "fake"
    kinds = [True, False]
    size_names = ["size_i"]

    class plan:
        lane_buffer = None
        items_buffer = None
        threads = 128

    def __init__(self):
        self.asked = []
        self._grids = {}

    from spc.codegen.cuda import CudaLauncher
    configure = CudaLauncher.configure       # the real launch decision
    settle = CudaLauncher.settle

    def grid(self, sizes, device_id, span, items):
        return sizes["size_i"] // 4 + 1, (), 0

    def function(self, device_id, narrow, group):
        self.asked.append(narrow)

        class F:
            ptr = 0
        return F()


@pytest.mark.parametrize("size,length,narrow", [(100, 1000, True), (2**31 + 5, 10, False),
                                                (10, 2**31 + 5, False), (2**30, 1, False)])
def test_gpu_launch_takes_64_bit_arithmetic_past_2_to_the_30(monkeypatch, size, length, narrow):
    import ctypes

    from spc.runtime import cuda_launch
    u = ctypes.c_uint                      # a stand-in of cuLaunchKernel's type, returning 0
    driver = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, u, u, u, u, u, u, u,
                              ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
        lambda *a: 0)
    monkeypatch.setattr(cuda_launch, "_driver",
                        lambda: ctypes.cast(driver, ctypes.c_void_p).value)
    fake = _FakeLauncher()
    cuda_launch.RawLaunch(fake).launch([123, size], [length], [size], 0, 0)
    assert fake.asked == [narrow]


class _DeviceArray:
    """Stands for a CuPy array: no implicit conversion to numpy, ``get()`` copies."""
    __cuda_array_interface__ = {}

    def __init__(self, a):
        self._a = a
        self.dtype, self.shape, self.ndim, self.size = a.dtype, a.shape, a.ndim, a.size

    def __len__(self):
        return len(self._a)

    def get(self):
        return self._a.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


def test_a_device_resident_result_converts_to_host_types():
    """A CUDA kernel's sparse result holds CuPy arrays; its conversions copy to the host."""
    A = sp.random(6, 5, density=0.4, format="csr", random_state=8)
    t = spc.tensor(A, "csr")
    dev = spc.Tensor(t.shape, t.format,
                     [{k: _DeviceArray(a) for k, a in lv.items()} for lv in t.arrays],
                     _DeviceArray(t.vals), validate=False)
    np.testing.assert_array_equal(dev.to_numpy(), A.toarray())
    np.testing.assert_array_equal(dev.to_scipy().toarray(), A.toarray())
    coords, vals = dev.to_coo()
    assert len(vals) == A.nnz


def test_construction_messages_use_the_users_names():
    with pytest.raises(spc.UnsupportedError, match=r"in do \(format csr\)"):
        spc.compile("y[i,j] = do[i,j]*2", formats={"do": "csr", "y": "csr"},
                    schedule=spc.Schedule(order=("j", "i")))
