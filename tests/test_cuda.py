"""The differential suite on the GPU (target="cuda") against scipy / numpy, plus
interop (CuPy, cupyx.scipy.sparse, torch), streams, validation and the
deterministic mode.  Marked ``cuda``; skipped without CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from matrices import MATRICES, MATRIX_IDS, assert_allclose, dense_operand, pattern_of, to_dense

pytestmark = pytest.mark.cuda

from cuda_env import cupy_or_skip_module, gpu  # noqa: E402

cupy = cupy_or_skip_module()

import cupyx.scipy.sparse as cpsp  # noqa: E402

from test_expressions import CASES as EXPRESSION_CASES, as_input, make_operands  # noqa: E402
from test_named_kernels import KernelCase  # noqa: E402

FORMATS = ["csr", "csc", "coo", "dcsr", "dense"]
KERNELS = ([KernelCase("spmv")] + [KernelCase("spmm", n) for n in (1, 7, 32, 33, 128)]
           + [KernelCase("sddmm", k) for k in (1, 5, 32, 40)])


def torch_or_skip():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    return torch


# ---------------------------------------------------------------------------
# The differential suite: named kernels over formats, matrices and dtypes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_named_kernel_matches_scipy_on_gpu(kernel, fmt, matrix, dtype):
    if dtype == "float64" and kernel.width not in (None, 7, 5):
        pytest.skip("float64 runs one width per kernel")
    A = matrix.build(dtype)
    ops = kernel.operands(A, dtype)
    out = gpu(kernel.name, fmt=fmt, dtype=dtype)(A, *ops)
    expected = kernel.reference(A, ops)
    if kernel.name == "sddmm" and fmt != "dense":
        assert sp.issparse(out), f"sddmm({fmt}) on scipy returned {type(out)}"
        assert pattern_of(out) == pattern_of(A)
    else:
        assert isinstance(out, np.ndarray), f"host input gave {type(out)}"
    assert out.shape == kernel.out_shape(A)
    assert out.dtype == np.dtype(dtype)
    assert_allclose(out, expected, dtype)


EXPR_PARAMS = [pytest.param(case, fmts, id=f"{case.id}[{','.join(f'{k}={v}' for k, v in sorted(fmts.items()))}]")
               for case in EXPRESSION_CASES for fmts in case.format_sets]


@pytest.mark.parametrize("case, formats", EXPR_PARAMS)
def test_expression_matches_einsum_on_gpu(case, formats):
    dense = make_operands(case)
    inputs = {n: as_input(a, formats.get(n, "dense")) for n, a in dense.items()}
    try:
        kernel = gpu(case.expr, formats=formats, dtype="float64")
    except spc.UnsupportedError as err:
        pytest.skip(f"unsupported: {err}")
    out = kernel(**inputs)
    expected = case.reference(**dense)
    out_name = case.expr.split("[")[0].split("=")[0].strip()
    if formats.get(out_name, "dense") != "dense" and case.pattern is not None:
        from test_expressions import stored_set
        stored = {n: stored_set(a, formats.get(n, "dense")) for n, a in dense.items()}
        assert pattern_of(out) == case.pattern(**stored)
    assert_allclose(out, expected, np.float64)


@pytest.mark.parametrize("expr, formats", [
    ("y[j] = A[i,j]*x[i]", {"A": "csr"}),
    ("s = A[i,j]*x[i]*y[j]", {"A": "csr"}),
    ("C[i,j] = A[i,j]+B[i,j]", {"A": "csr", "B": "csr", "C": "csr"}),
])
@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
def test_issue_expressions_on_gpu(expr, formats, deterministic, matrix):
    A = matrix.build(np.float32)
    m, n = A.shape
    inputs = {"A": A}
    if "B[i,j]" in expr:
        inputs["B"] = sp.random(m, n, density=0.3, format="csr", dtype=np.float32,
                                random_state=1)
    if "x[i]" in expr:
        inputs["x"] = dense_operand(f"x{m}", (m,), np.float32)
    if "*y[j]" in expr:
        inputs["y"] = dense_operand(f"y{n}", (n,), np.float32)
    out = gpu(expr, formats=formats, deterministic=deterministic)(**inputs)
    A64 = A.astype(np.float64)
    if expr.startswith("y"):
        want = A64.T @ inputs["x"].astype(np.float64)
    elif expr.startswith("s"):
        want = inputs["x"].astype(np.float64) @ (A64 @ inputs["y"].astype(np.float64))
        assert isinstance(out, np.generic)
    else:
        want = (A64 + inputs["B"].astype(np.float64)).toarray()
        assert pattern_of(out) == pattern_of(A + inputs["B"]) | pattern_of(A) | pattern_of(
            inputs["B"])
    assert_allclose(out, want, np.float32)


def test_random_expressions_on_gpu():
    """The hypothesis suite's problems, run on the GPU."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, assume, given, settings
    from test_hypothesis import problems, reference

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(problems())
    def check(p):
        try:
            out = spc.compile(p.expr, formats=p.formats, dtype=p.dtype, target="cuda")(**p.inputs)
        except spc.UnsupportedError:
            assume(False)
        expected = reference(p)
        scale = reference(p, absolute=True)
        got = to_dense(out)
        assert got.shape == expected.shape
        rtol = 1e-4 if p.dtype == "float32" else 1e-10
        np.testing.assert_allclose(got, expected, rtol=rtol,
                                   atol=rtol * (1 + scale.max(initial=0)))

    del hypothesis
    check()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", [dict(flat=False, split=1), dict(flat=False, split=3),
                                  dict(flat=True)], ids=["rows", "rows-split3", "flat"])
@pytest.mark.parametrize("group", [1, 2, 4, 8, 16, 32])
def test_sddmm_every_lane_group_and_split(group, mode, dtype):
    """Every lane-group size, split and enumeration the launcher may pick (forced
    here), with reduction lengths that take the 16-byte vector path (k % 4 == 0),
    the scalar path (k = 5, 130: rows of X and Y not all aligned) or both."""
    rng = np.random.default_rng(group)
    A = sp.random(70, 50, density=0.2, format="lil", dtype=dtype, random_state=group)
    A[3, :] = 1.0                      # a long row
    A[5:45, :] = 0.0                   # more than 32 empty rows in a row
    A[60, :] = 0.0
    A = A.tocsr()
    A.eliminate_zeros()
    k = gpu("sddmm", fmt="csr", dtype=dtype, group=group, **mode)
    for width in (1, 5, 32, 40, 130):
        X = rng.uniform(-1, 1, (70, width)).astype(dtype)
        Y = rng.uniform(-1, 1, (50, width)).astype(dtype)
        out = k(A, X, Y)
        want = A.multiply(X.astype(np.float64) @ Y.T.astype(np.float64))
        assert pattern_of(out) == pattern_of(A)
        assert_allclose(out.toarray(), want.toarray(), dtype)


# ---------------------------------------------------------------------------
# Interop: CuPy, cupyx.scipy.sparse, torch
# ---------------------------------------------------------------------------

def _csr(m=50, n=40, density=0.2, seed=0, dtype=np.float32):
    return sp.random(m, n, density=density, format="csr", dtype=dtype, random_state=seed)


@pytest.mark.parametrize("layout", ["csr", "csc", "coo"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr"])
def test_cupy_inputs_give_cupy_outputs(fmt, layout):
    A = _csr()
    B = np.random.default_rng(1).uniform(-1, 1, (40, 16)).astype(np.float32)
    dA = getattr(cpsp, f"{layout}_matrix")(A.asformat(layout))
    out = gpu("spmm", fmt=fmt)(dA, cupy.asarray(B))
    assert isinstance(out, cupy.ndarray)
    assert_allclose(cupy.asnumpy(out), A @ B, np.float32)
    X = np.random.default_rng(3).uniform(-1, 1, (50, 8)).astype(np.float32)
    S = gpu("sddmm", fmt=fmt)(dA, cupy.asarray(X), cupy.asarray(np.ones((40, 8), np.float32)))
    if fmt in ("csr", "csc", "coo"):
        assert cpsp.issparse(S) and S.format == fmt
        assert_allclose(S.get().toarray(), A.multiply(X.sum(1, keepdims=True)).toarray(),
                        np.float32)
    else:
        assert isinstance(S, spc.Tensor)


@pytest.mark.parametrize("layout", ["strided", "sparse_csr", "sparse_csc", "sparse_coo"])
def test_torch_inputs_give_torch_outputs(layout):
    torch = torch_or_skip()
    A = _csr()
    B = np.random.default_rng(2).uniform(-1, 1, (40, 16)).astype(np.float32)
    tA = torch.from_numpy(A.toarray()).cuda()
    tA = {"strided": tA, "sparse_csr": tA.to_sparse_csr(), "sparse_csc": tA.to_sparse_csc(),
          "sparse_coo": tA.to_sparse_coo()}[layout]
    tB = torch.from_numpy(B).cuda()
    out = gpu("spmm", fmt="csr")(tA, tB)
    assert isinstance(out, torch.Tensor) and out.is_cuda
    assert_allclose(out.cpu().numpy(), A @ B, np.float32)
    X = np.random.default_rng(3).uniform(-1, 1, (50, 4)).astype(np.float32)
    S = gpu("sddmm", fmt="csr")(tA, torch.from_numpy(X).cuda(), torch.ones(40, 4, device="cuda"))
    assert isinstance(S, torch.Tensor) and S.layout == torch.sparse_csr
    assert_allclose(S.to_dense().cpu().numpy(), A.multiply(X.sum(1, keepdims=True)).toarray(),
                    np.float32)


@pytest.mark.parametrize("fmt", ["sparse", "dense"])
def test_torch_sparse_vectors_and_3d_coo_tensors_on_the_gpu(fmt):
    """A CUDA COO tensor that is not a matrix (a sparse vector, a 3-d tensor) is
    read as the CPU target reads it (through the host), not refused; the GPU
    fuzzer found 7% of its cases refused so (seed 5201)."""
    torch = torch_or_skip()
    rng = np.random.default_rng(7)
    v = np.where(rng.random(30) < 0.3, rng.uniform(-1, 1, 30), 0).astype(np.float32)
    w = rng.uniform(-1, 1, 30).astype(np.float32)
    k = spc.compile("y = x[i] * w[i]", formats={"x": fmt}, target="cuda")
    out = k(torch.from_numpy(v).cuda().to_sparse_coo(), torch.from_numpy(w).cuda())
    assert abs(float(out) - float(v @ w)) <= 1e-5 * max(1.0, abs(float(v @ w)))
    T = np.where(rng.random((4, 5, 6)) < 0.3, rng.uniform(-1, 1, (4, 5, 6)), 0).astype(np.float32)
    k3 = spc.compile("y[i] = T[i,j,l]", formats={"T": "coo" if fmt == "sparse" else "dense"},
                     target="cuda")
    out3 = k3(torch.from_numpy(T).cuda().to_sparse_coo())
    assert isinstance(out3, torch.Tensor) and out3.is_cuda
    assert_allclose(out3.cpu().numpy(), T.sum((1, 2)), np.float32)


def test_torch_cpu_inputs_stay_on_the_cpu():
    torch = torch_or_skip()
    A = _csr()
    x = torch.ones(40)
    out = gpu("spmv", fmt="csr")(torch.from_numpy(A.toarray()).to_sparse_csr(), x)
    assert isinstance(out, torch.Tensor) and not out.is_cuda
    assert_allclose(out.numpy(), A @ np.ones(40), np.float32)


def test_device_operands_are_not_copied():
    from spc.runtime.device import DeviceOperands
    torch = torch_or_skip()
    ops = DeviceOperands.get()
    k = gpu("spmm", fmt="csr")
    A = _csr()
    tA = torch.from_numpy(A.toarray()).cuda().to_sparse_csr()
    tB = torch.rand(40, 8, device="cuda")
    tA_t = ops.to_tensor(tA, "torch", k.formats["A"], np.dtype(np.float32), "A", True)
    assert tA_t.arrays[1]["pos"].data.ptr == tA.crow_indices().data_ptr()
    assert tA_t.arrays[1]["crd"].data.ptr == tA.col_indices().data_ptr()
    assert tA_t.vals.data.ptr == tA.values().data_ptr()
    tB_t = ops.to_tensor(tB, "torch", k.formats["B"], np.dtype(np.float32), "B", True)
    assert tB_t.vals.data.ptr == tB.data_ptr()
    dA = cpsp.csr_matrix(A)
    dA_t = ops.to_tensor(dA, "cupyx", k.formats["A"], np.dtype(np.float32), "A", True)
    assert dA_t.vals.data.ptr == dA.data.data.ptr
    assert dA_t.arrays[1]["crd"].data.ptr == dA.indices.data.ptr


def test_kernels_launch_on_the_torch_current_stream(monkeypatch):
    torch = torch_or_skip()
    from spc.codegen import cuda as cuda_mod
    from spc.runtime import cuda_launch
    seen = []
    original = cuda_mod.CudaLauncher.__call__
    original_raw = cuda_launch.RawLaunch.run

    def spy(self, buffers, sizes, nthreads=None, stream=None):
        seen.append(cupy.cuda.get_current_stream().ptr)
        return original(self, buffers, sizes, nthreads, stream)

    def spy_raw(self, values, sizes, longest, span, items, stream, device_id):
        seen.append(stream)              # the torch call path launches on this stream
        return original_raw(self, values, sizes, longest, span, items, stream, device_id)

    monkeypatch.setattr(cuda_mod.CudaLauncher, "__call__", spy)
    monkeypatch.setattr(cuda_launch.RawLaunch, "run", spy_raw)
    A = torch.from_numpy(_csr().toarray()).cuda().to_sparse_csr()
    B = torch.rand(40, 8, device="cuda")
    s = torch.cuda.Stream()
    k = gpu("spmm", fmt="csr")
    with torch.cuda.stream(s):
        out = k(A, B)               # the generic walk, then the specialized call
        out = k(A, B)
    s.synchronize()
    assert len(seen) >= 2 and all(p == s.cuda_stream for p in seen)
    torch.testing.assert_close(out, A.to_dense() @ B, rtol=1e-4, atol=1e-4)


def test_int64_torch_indices_run_the_int64_variant():
    torch = torch_or_skip()
    A = _csr()
    tA = torch.from_numpy(A.toarray()).cuda().to_sparse_csr()
    assert tA.crow_indices().dtype == torch.int64
    out = gpu("spmv", fmt="csr")(tA, torch.ones(40, device="cuda"))
    assert_allclose(out.cpu().numpy(), A @ np.ones(40), np.float32)


# ---------------------------------------------------------------------------
# Validation on the device
# ---------------------------------------------------------------------------

def test_malformed_device_csr_is_rejected():
    A = cpsp.csr_matrix(cupy.asarray(np.eye(4, dtype=np.float32)))
    bad = cpsp.csr_matrix((A.data, A.indices, cupy.asarray([0, 2, 1, 3, 4], dtype=np.int32)),
                          shape=(4, 4))
    with pytest.raises(spc.InputError, match="operand A"):
        gpu("spmv", fmt="csr")(bad, cupy.ones(4, dtype=np.float32))


def test_unsorted_device_csr_is_canonicalized():
    indptr = cupy.asarray([0, 3, 3], dtype=np.int32)
    indices = cupy.asarray([2, 0, 2], dtype=np.int32)        # unsorted, with a duplicate
    data = cupy.asarray([1.0, 2.0, 3.0], dtype=np.float32)
    A = cpsp.csr_matrix((data, indices, indptr), shape=(2, 3))
    out = gpu("spmv", fmt="csr")(A, cupy.asarray([1.0, 10.0, 100.0], dtype=np.float32))
    np.testing.assert_allclose(cupy.asnumpy(out), [402.0, 0.0])


def test_validate_false_trusts_the_input():
    A = _csr()
    out = gpu("spmv", fmt="csr")(cpsp.csr_matrix(A), cupy.ones(40, dtype=np.float32),
                                  validate=False)
    assert_allclose(cupy.asnumpy(out), A @ np.ones(40), np.float32)


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, kw", [
    ("s = A[i,j]*x[i]*y[j]", dict(formats={"A": "csr"})),
    ("y[j] = A[i,j]*x[i]", dict(formats={"A": "csr"})),
    ("spmv", dict(fmt="csc")),
    ("spmv", dict(fmt="csr")),
    ("spmm", dict(fmt="csr")),
    ("sddmm", dict(fmt="csr")),
])
def test_deterministic_mode_is_bit_identical(kernel, kw):
    A = sp.random(300, 200, density=0.05, format="csr", dtype=np.float32, random_state=3)
    rng = np.random.default_rng(4)
    if kernel.startswith("s ="):
        args = dict(A=A, x=rng.uniform(-1, 1, 300).astype(np.float32),
                    y=rng.uniform(-1, 1, 200).astype(np.float32))
    elif kernel.startswith("y[j]"):
        args = dict(A=A, x=rng.uniform(-1, 1, 300).astype(np.float32))
    elif kernel == "spmv":
        args = dict(A=A, x=rng.uniform(-1, 1, 200).astype(np.float32))
    elif kernel == "spmm":
        args = dict(A=A, B=rng.uniform(-1, 1, (200, 64)).astype(np.float32))
    else:
        args = dict(A=A, X=rng.uniform(-1, 1, (300, 16)).astype(np.float32),
                    Y=rng.uniform(-1, 1, (200, 16)).astype(np.float32))
    k = gpu(kernel, deterministic=True, **kw)
    assert "atomic" not in k.ir
    first = to_dense(k(**args))
    for _ in range(3):
        again = to_dense(k(**args))
        assert np.array_equal(first.view(np.uint32), again.view(np.uint32))


def test_empty_and_degenerate_shapes_with_device_inputs():
    for m, n in ((0, 5), (5, 0), (0, 0), (3, 4)):
        A = cpsp.csr_matrix((m, n), dtype=np.float32)
        y = gpu("spmv", fmt="csr")(A, cupy.ones(n, dtype=np.float32))
        assert y.shape == (m,) and not cupy.any(y)
        C = gpu("spmm", fmt="csr")(A, cupy.ones((n, 6), dtype=np.float32))
        assert C.shape == (m, 6) and not cupy.any(C)
