"""The steady-state GPU call path on torch CUDA tensors (runtime/torch_fast.py):
same results as the general path, validation remembered per storage and redone
after an in-place change, no synchronization (CUDA-graph capture), and the
general path for whatever it does not cover."""
from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

import spc

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for torch", allow_module_level=True)
from cuda_env import cupy_or_skip_module, fast_path_matrix as _matrix  # noqa: E402

cupy_or_skip_module()

DEV = "cuda"


def _torch_sparse(A, layout, index_dtype, dtype):
    M = A.tocsr() if layout == "csr" else A.tocsc()
    pos, crd = (torch.tensor(M.indptr, dtype=index_dtype, device=DEV),
                torch.tensor(M.indices, dtype=index_dtype, device=DEV))
    vals = torch.tensor(M.data, dtype=dtype, device=DEV)
    make = torch.sparse_csr_tensor if layout == "csr" else torch.sparse_csc_tensor
    return make(pos, crd, vals, A.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("layout", ["csr", "csc"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_fast_path_matches_reference(kernel, layout, index_dtype, dtype, general_path_counter):
    A = _matrix()
    At = _torch_sparse(A, layout, index_dtype, dtype)
    rng = np.random.default_rng(1)
    name = "float32" if dtype == torch.float32 else "float64"
    k = spc.compile(kernel, fmt=layout, target="cuda", dtype=name)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    m, n = A.shape
    if kernel == "spmv":
        x = rng.standard_normal(n)
        got = k(At, torch.tensor(x, dtype=dtype, device=DEV))
        want = A @ x
    elif kernel == "spmm":
        B = rng.standard_normal((n, 33))
        got = k(At, torch.tensor(B, dtype=dtype, device=DEV))
        want = A @ B
    else:
        X, Y = rng.standard_normal((m, 16)), rng.standard_normal((n, 16))
        got = k(At, torch.tensor(X, dtype=dtype, device=DEV), torch.tensor(Y, dtype=dtype,
                                                                          device=DEV))
        assert got.layout == (torch.sparse_csr if layout == "csr" else torch.sparse_csc)
        got = got.to_dense()
        want = A.multiply(X @ Y.T).toarray()
    assert isinstance(got, torch.Tensor) and got.is_cuda
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=tol, atol=tol)
    assert general_path_counter == []          # the fast path served the call


def test_in_place_mutation_is_checked_again(general_path_counter):
    A = _matrix()
    At = _torch_sparse(A, "csr", torch.int32, torch.float32)
    B = torch.ones(A.shape[1], 8, device=DEV)
    k = spc.compile("spmm", fmt="csr", target="cuda")
    k(At, B)
    k(At, B)
    assert general_path_counter == []
    At.col_indices()[3] = A.shape[1] + 5          # out of range, in place
    with pytest.raises(spc.InputError, match="A"):
        k(At, B)


def test_in_place_row_pointer_change_is_checked_again(general_path_counter):
    A = _matrix()
    At = _torch_sparse(A, "csr", torch.int32, torch.float32)
    x = torch.ones(A.shape[1], device=DEV)
    k = spc.compile("spmv", fmt="csr", target="cuda")
    k(At, x)
    k(At, x)
    assert general_path_counter == []
    At.crow_indices()[5] = A.nnz + 7               # past the end, in place
    with pytest.raises(spc.InputError, match="A"):
        k(At, x)


def test_values_written_in_place_are_read_anew(general_path_counter):
    """Writing values in place bumps the tensor's one version counter: the
    next call reads the storage again (and gives the new product)."""
    A = _matrix()
    At = _torch_sparse(A, "csr", torch.int32, torch.float32)
    x = torch.ones(A.shape[1], device=DEV)
    k = spc.compile("spmv", fmt="csr", target="cuda")
    k(At, x)
    At.values().mul_(3)
    At.mul_(2)
    got = k(At, x).cpu().numpy()
    np.testing.assert_allclose(got, 6 * (A @ np.ones(A.shape[1])), rtol=1e-5)
    assert general_path_counter == []


def test_inference_tensors_are_checked_at_every_call(general_path_counter):
    """A tensor made under torch.inference_mode has no version counter, so
    nothing can tell that it changed: such calls take the general path, which
    checks the storage each time (and never reads ``_version``)."""
    A = _matrix()
    k = spc.compile("spmv", fmt="csr", target="cuda")
    with torch.inference_mode():
        At = _torch_sparse(A, "csr", torch.int32, torch.float32)
        x = torch.ones(A.shape[1], device=DEV)
        np.testing.assert_allclose(k(At, x).cpu().numpy(), A @ np.ones(A.shape[1]), rtol=1e-5)
        At.col_indices()[3] = A.shape[1] + 5      # in place, unseen by any counter
        with pytest.raises(spc.InputError, match="A"):
            k(At, x)
    assert general_path_counter                  # these calls went the general way


def test_a_typed_kernel_follows_the_operands_type_through_its_fast_path(general_path_counter):
    """spc.compile's kernel goes straight to the last specialization's fast
    path; operands of another value type are dispatched to theirs, and back."""
    A = _matrix()
    k = spc.compile("spmv", fmt="csr", target="cuda")
    for dt in (torch.float32, torch.float64, torch.float32, torch.float64):
        At = _torch_sparse(A, "csr", torch.int32, dt)
        x = torch.arange(A.shape[1], device=DEV, dtype=dt) / 7
        k(At, x)
        y = k(At, x)
        assert y.dtype is dt
        np.testing.assert_allclose(y.cpu().numpy(), A @ (np.arange(A.shape[1]) / 7),
                                   rtol=1e-5 if dt is torch.float32 else 1e-12)
    assert general_path_counter == []


def test_reused_memory_is_checked_again():
    """A new tensor at the address of a freed, validated one is checked anew."""
    k = spc.compile("spmv", fmt="csr", target="cuda")
    A = _matrix()
    x = torch.ones(A.shape[1], device=DEV)
    for _ in range(3):
        At = _torch_sparse(A, "csr", torch.int32, torch.float32)
        k(At, x)
        del At
    bad = A.copy()
    bad.indices[0] = A.shape[1] + 1
    Bt = _torch_sparse(bad, "csr", torch.int32, torch.float32)
    with pytest.raises(spc.InputError):
        k(Bt, x)


def test_duplicates_are_summed_as_scipy_does():
    indptr = np.array([0, 3, 3, 4])
    indices = np.array([2, 2, 0, 1])
    data = np.array([1.0, 2.0, 4.0, 8.0])
    A = sp.csr_matrix((data, indices, indptr), shape=(3, 3))
    At = torch.sparse_csr_tensor(torch.tensor(indptr, device=DEV), torch.tensor(indices,
                                 device=DEV), torch.tensor(data, device=DEV), (3, 3))
    x = np.array([1.0, 10.0, 100.0])
    for expr in ("y[i] = A[i,j]*x[j]", "Y[i,j] = A[i,j]"):
        k = spc.compile(expr, formats={"A": "csr"}, target="cuda", dtype="float64")
        if expr.startswith("y"):
            got, want = k(At, torch.tensor(x, device=DEV)), A @ x
        else:
            got, want = k(At), A.toarray()
        np.testing.assert_allclose(got.cpu().numpy(), want)


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="torch cannot capture a CUDA graph without its caching allocator "
                           "(cudaMalloc is not permitted while a stream captures), which "
                           "benchmarks/sanitize_gpu.py turns off")
def test_cuda_graph_capture_and_replay():
    A = _matrix()
    At = _torch_sparse(A, "csr", torch.int32, torch.float32)
    B = torch.randn(A.shape[1], 64, device=DEV)
    k = spc.compile("spmm", fmt="csr", target="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        k(At, B)                               # warm-up: builds, validates, loads
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        C = k(At, B)
    B.copy_(torch.randn_like(B))
    graph.replay()
    torch.cuda.synchronize()
    want = A.astype(np.float32) @ B.cpu().numpy()
    np.testing.assert_allclose(C.cpu().numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1",
                    reason="torch cannot capture a CUDA graph without its caching allocator")
def test_a_call_by_tensor_name_takes_the_fast_path_and_is_captured(general_path_counter):
    """``k(A=A, B=B, b=b)`` (how expressions are called) takes the fast path as a
    positional call does: validation remembered, no synchronization, so it is
    captured in a CUDA graph (it validated on every call, with a device-to-host
    copy, before)."""
    A = _matrix()
    At = _torch_sparse(A, "csr", torch.int32, torch.float32)
    B = torch.randn(A.shape[1], 40, device=DEV)
    b = torch.randn(40, device=DEV)
    k = spc.compile("C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])", formats={"A": "csr"},
                    target="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        k(A=At, B=B, b=b)                      # warm-up: builds, validates, loads
        k(b=b, A=At, B=B)
    torch.cuda.current_stream().wait_stream(side)
    general = len(general_path_counter)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        C = k(b=b, B=B, A=At)
    assert len(general_path_counter) == general
    B.copy_(torch.randn_like(B))
    graph.replay()
    torch.cuda.synchronize()
    want = np.maximum(A.astype(np.float32) @ B.cpu().numpy() + b.cpu().numpy(), 0)
    np.testing.assert_allclose(C.cpu().numpy(), want, rtol=1e-4, atol=1e-4)


def test_other_operands_take_the_general_path(general_path_counter):
    A = _matrix()
    k = spc.compile("spmm", fmt="csr", target="cuda")
    B = torch.ones(A.shape[1], 4, device=DEV)
    At = _torch_sparse(A, "csr", torch.int32, torch.float32)
    k(At, B.t().contiguous().t())              # a non-contiguous dense operand
    k(At.to_sparse_coo(), B)                   # another layout
    assert len(general_path_counter) == 2


def test_shape_mismatch_is_explained():
    A = _matrix()
    k = spc.compile("spmm", fmt="csr", target="cuda")
    At = _torch_sparse(A, "csr", torch.int32, torch.float32)
    with pytest.raises(spc.ShapeError):
        k(At, torch.ones(A.shape[1] + 1, 4, device=DEV))


@pytest.mark.parametrize("family", ["torch", "cupy"])
def test_gpu_out_of_memory_is_a_resource_error_and_leaks_nothing(family):
    k = spc.compile("C[i,j] = x[i]*y[j]", target="cuda")
    if family == "torch":
        x = torch.ones(2**22, device=DEV)
    else:
        import cupy
        x = cupy.ones(2**22, dtype=np.float32)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with pytest.raises(spc.ResourceError, match="out of memory"):
        k(x, x)                                 # 2**44 floats: 64 TiB
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
    small = x[:3]
    out = k(small, small)
    np.testing.assert_allclose(np.asarray(out.tolist()), np.ones((3, 3)))


def test_uncoalesced_torch_coo_on_the_gpu_is_summed():
    k = spc.compile("Z = D[l,n]", formats={"D": "csr"}, dtype="float64", target="cuda")
    D = torch.sparse_coo_tensor([[0, 0], [0, 0]], torch.tensor([0.75, 0.25], dtype=torch.float64),
                                (1, 1)).cuda()
    assert float(k(D=D)) == 1.0


def test_sparse_device_result_reads_back():
    import cupy
    k = spc.compile("Z[m] = C[m]", formats={"Z": "csf"}, dtype="float64", target="cuda")
    out = k(C=cupy.asarray(np.array([0.0, 2.0, 0.0, 3.0])))
    np.testing.assert_array_equal(out.to_numpy(), [0.0, 2.0, 0.0, 3.0])


@pytest.mark.parametrize("schedule", [dict(split_rows=8), dict(split_rows=True),
                                      dict(reorder_rows="length")])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_fast_path_feeds_inspector_arrays(kernel, index_dtype, schedule, general_path_counter,
                                          monkeypatch):
    """Kernels reading inspector arrays (row pieces, row orders) take the fast path
    on torch tensors: the inspector runs once per tensor storage, and once again
    after an in-place change (torch bumps the version counter its index tensors
    share with its values: the same rule as validation)."""
    from spc.runtime import inspectors
    runs = []
    real = inspectors.compute

    def counting(inspector, t):
        runs.append(inspector)
        return real(inspector, t)
    monkeypatch.setattr(inspectors, "compute", counting)
    A = _matrix()
    At = _torch_sparse(A, "csr", index_dtype, torch.float64)
    rng = np.random.default_rng(2)
    m, n = A.shape
    if kernel == "spmv":
        ops, want = (rng.standard_normal(n),), lambda M: M @ ops[0]
    elif kernel == "spmm":
        ops, want = (rng.standard_normal((n, 40)),), lambda M: M @ ops[0]
    else:
        ops = (rng.standard_normal((m, 8)), rng.standard_normal((n, 8)))
        want = lambda M: M.multiply(ops[0] @ ops[1].T).toarray()  # noqa: E731
    dense = [torch.tensor(x, device=DEV) for x in ops]
    k = spc.compile(kernel, fmt="csr", target="cuda", dtype="float64", **schedule)
    for _ in range(3):
        got = k(At, *dense)
        got = got.to_dense() if got.layout != torch.strided else got
        np.testing.assert_allclose(got.cpu().numpy(), want(A), rtol=1e-10, atol=1e-10)
    assert general_path_counter == []
    first = len(runs)
    assert first in (1, 3)                        # a permutation, or a piece's three arrays
    At.values()[:] = 2 * At.values()
    for _ in range(2):
        got = k(At, *dense)
        got = got.to_dense() if got.layout != torch.strided else got
        np.testing.assert_allclose(got.cpu().numpy(), want(2 * A), rtol=1e-10, atol=1e-10)
    assert len(runs) == 2 * first and general_path_counter == []


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
def test_unzeroed_outputs_are_fully_written(kernel, general, general_path_counter):
    """Kernels that store every output entry once (Kernel.overwrites) get their
    output unzeroed: NaN left in freed memory the caching allocator hands back
    must never reach a result."""
    A = _matrix()
    k = spc.compile(kernel, fmt="csr", target="cuda")
    assert k.lowered_kernels()[0].overwrites        # else this tests nothing
    tA = _torch_sparse(A, "csr", torch.int32, torch.float32)
    rng = np.random.default_rng(5)
    if kernel == "spmv":
        ops = (torch.tensor(rng.standard_normal(A.shape[1]), dtype=torch.float32, device=DEV),)
        expect = A @ ops[0].double().cpu().numpy()
    elif kernel == "spmm":
        ops = (torch.tensor(rng.standard_normal((A.shape[1], 40)), dtype=torch.float32,
                            device=DEV),)
        expect = A @ ops[0].double().cpu().numpy()
    else:
        X = rng.standard_normal((A.shape[0], 16))
        Y = rng.standard_normal((A.shape[1], 16))
        ops = tuple(torch.tensor(a, dtype=torch.float32, device=DEV) for a in (X, Y))
        expect = A.multiply(X @ Y.T).toarray()
    if general:     # strided views: the fast path takes contiguous dense operands only
        ops = tuple(torch.stack([o, o], -1)[..., 0] for o in ops)
    for _ in range(3):
        for n in (A.shape[0], A.shape[0] * 40, A.nnz, 1 << 16):
            torch.full((n,), float("nan"), device=DEV)      # freed at once, NaN left behind
        out = k(tA, *ops)
        got = out.to_dense() if out.layout != torch.strided else out
        np.testing.assert_allclose(got.double().cpu().numpy(), expect, rtol=1e-4, atol=1e-4)
    assert bool(general_path_counter) is general


@pytest.mark.parametrize("kernel, layout", [("spmv", "csr"), ("spmm", "csr"), ("spmm", "csc"),
                                            ("sddmm", "csr")])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_the_specialized_call_matches_the_generic_walk(kernel, layout, index_dtype,
                                                       general_path_counter):
    """After the first build the call runs straight-line code written for the
    kernel (runtime/torch_specialize.py); it gives the generic walk's results."""
    A = _matrix()
    k = spc.compile(kernel, fmt=layout, target="cuda")
    tA = _torch_sparse(A, layout, index_dtype, torch.float32)
    rng = np.random.default_rng(9)
    if kernel == "sddmm":
        ops = (torch.tensor(rng.standard_normal((A.shape[0], 8)), dtype=torch.float32,
                            device=DEV),
               torch.tensor(rng.standard_normal((A.shape[1], 8)), dtype=torch.float32,
                            device=DEV))
    else:
        shape = (A.shape[1],) if kernel == "spmv" else (A.shape[1], 24)
        ops = (torch.tensor(rng.standard_normal(shape), dtype=torch.float32, device=DEV),)
    first = k(tA, *ops)
    path = k._device_fast.torch
    assert path.call is not path.generic and "def call" in path.call.source
    fast, generic = k(tA, *ops), path.generic((tA,) + ops, True)
    dense = (lambda t: t.to_dense()) if kernel == "sddmm" else (lambda t: t)
    exact = layout == "csr"          # csc SpMM adds atomically: the order, and last bits, vary
    for out in (first, fast):
        torch.testing.assert_close(dense(out), dense(generic), rtol=0 if exact else 1e-5,
                                   atol=0 if exact else 1e-5)
    assert general_path_counter == []
