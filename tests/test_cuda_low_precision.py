"""float16 and bfloat16 on the GPU: named kernels over the formats and the
operand families that hold them (torch CUDA tensors; CuPy arrays for float16,
as CuPy has no bfloat16), on the fast path and the general path, against a
float64 reference computed from the same 16-bit inputs."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for torch", allow_module_level=True)
from cuda_env import cupy_or_skip_module  # noqa: E402

cupy = cupy_or_skip_module()

TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
FORMATS = ["csr", "csc", "coo", "dcsr", "dense", "bsr(2,2)", "ell", "dia", "nm(2,4)", "hyb"]


def _matrix(tdtype, shape=(96, 64), density=0.2, seed=3):
    a = sp.random(*shape, density=density, format="lil", random_state=seed, dtype=np.float64)
    a[2, :] = 0
    a[5, :] = np.linspace(0.5, 1.5, shape[1])
    a = a.tocsr()
    a.data = torch.tensor(a.data).to(tdtype).double().numpy()
    a.eliminate_zeros()
    return a


def _dense(shape, tdtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1).to(tdtype).cuda()


def _err(out, ref) -> float:
    if isinstance(out, (spc.Tensor, spc.SumTensor)):
        out = out.to_numpy()
    if isinstance(out, torch.Tensor):
        out = (out.to_dense() if out.layout != torch.strided else out).double().cpu().numpy()
    out = np.asarray(out, dtype=np.float64)
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_torch_csr_in_16_bits_takes_the_fast_path(kernel, tdtype, general_path_counter):
    A64 = _matrix(tdtype)
    A = torch.tensor(A64.toarray()).to(tdtype).cuda().to_sparse_csr()
    k = spc.compile(kernel, target="cuda")
    if kernel == "spmv":
        x = _dense(A64.shape[1], tdtype, 1)
        ops, ref = (A, x), A64 @ x.double().cpu().numpy()
    elif kernel == "spmm":
        B = _dense((A64.shape[1], 33), tdtype, 2)
        ops, ref = (A, B), A64 @ B.double().cpu().numpy()
    else:
        X, Y = _dense((A64.shape[0], 16), tdtype, 3), _dense((A64.shape[1], 16), tdtype, 4)
        ops = (A, X, Y)
        ref = A64.multiply(X.double().cpu().numpy() @ Y.double().cpu().numpy().T).toarray()
    for _ in range(3):
        out = k(*ops)
        assert out.dtype is tdtype and out.is_cuda
        assert _err(out, ref) <= TOLERANCE[tdtype]
    assert len(general_path_counter) <= 1   # the first call builds the fast path's feeds


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_formats_in_16_bits(kernel, fmt, tdtype):
    """Prepared operands of every format (the general path), spc's results."""
    A64 = _matrix(tdtype)
    if fmt.startswith("nm"):
        A64 = sp.csr_matrix(spc.prune.nm(A64, 2, 4))
    np_dtype = "float16" if tdtype is torch.float16 else "bfloat16"
    k = spc.compile(kernel, fmt=fmt, target="cuda")
    A = spc.tensor(A64, fmt, dtype=np_dtype)
    if fmt != "hyb":                     # sum formats are split per call, not prepared
        A = k.prepare(A, name="A")
    if kernel == "spmv":
        x = _dense(A64.shape[1], tdtype, 1)
        out, ref = k(A, x), A64 @ x.double().cpu().numpy()
    elif kernel == "spmm":
        B = _dense((A64.shape[1], 9), tdtype, 2)
        out, ref = k(A, B), A64 @ B.double().cpu().numpy()
    else:
        X, Y = _dense((A64.shape[0], 8), tdtype, 3), _dense((A64.shape[1], 8), tdtype, 4)
        out = k(A, X, Y)
        ref = A64.multiply(X.double().cpu().numpy() @ Y.double().cpu().numpy().T).toarray()
    assert _err(out, ref) <= TOLERANCE[tdtype]


@pytest.mark.parametrize("schedule", [{}, {"split_rows": 4}, {"parallel": False}],
                         ids=["default", "split", "one-warp"])
def test_cupy_float16_and_widened_outputs(schedule):
    """CuPy float16 arrays; split rows add atomically, so their output is held in
    float32 and rounded once (passes/widen_outputs)."""
    A64 = _matrix(torch.float16)
    A = spc.tensor(A64, "csr", dtype="float16")        # cupyx.scipy.sparse holds no float16
    B = cupy.asarray(np.random.default_rng(0).uniform(-1, 1, (A64.shape[1], 40)).astype(np.float16))
    k = spc.compile("spmm", target="cuda", **schedule)
    out = k(A, B)
    assert out.dtype == np.float16
    assert _err(cupy.asnumpy(out), A64 @ cupy.asnumpy(B).astype(np.float64)) <= 2e-3


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16], ids=str)
def test_long_sums_accumulate_in_float32_on_the_gpu(tdtype):
    n = 4097
    A = torch.ones(1, n, dtype=tdtype, device="cuda")
    x = torch.full((n,), 2.0 ** -12, dtype=tdtype, device="cuda")
    x[0] = 1.0
    for fmt, As in (("csr", A.to_sparse_csr()), ("csc", A.to_sparse_csc()),
                    ("coo", A.to_sparse_coo())):
        for schedule in ({}, {"split_rows": 64}):
            if schedule and fmt != "csr":
                continue
            y = spc.compile("spmv", fmt=fmt, target="cuda", **schedule)(As, x)
            assert float(y[0]) == 2.0, (fmt, schedule)


@pytest.mark.parametrize("tdtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n", [8, 33, 64, 130, 1024])
def test_spmm_in_16_bits_at_every_width(tdtype, n):
    """SpMM with ``unroll`` columns per lane (wide) and one (narrow), at widths
    that are and are not multiples of the unroll (N = 130: rows alternate
    between 16-byte aligned and not)."""
    A64 = _matrix(tdtype, shape=(300, 257), density=0.05)
    A = torch.tensor(A64.toarray()).to(tdtype).cuda().to_sparse_csr()
    B = _dense((257, n), tdtype, 5)
    ref = A64 @ B.double().cpu().numpy()
    tol = TOLERANCE.get(tdtype, 1e-5)
    for wide in (True, False):
        out = spc.compile("spmm", target="cuda", wide=wide)(A, B)
        assert out.dtype is tdtype
        assert _err(out, ref) <= tol, wide


@pytest.mark.parametrize("tdtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_accumulate_float64_on_the_gpu(tdtype):
    """accumulate="float64": sums in float64 (warp sums and registers), scatter and
    split outputs held in float64 and rounded once."""
    n = 1 << 14
    A = torch.ones(1, n, dtype=tdtype, device="cuda")
    small = 2.0 ** -25 if tdtype is torch.float32 else 2.0 ** -12
    x = torch.full((n,), small, dtype=tdtype, device="cuda")
    x[0] = 1.0
    want = torch.tensor(1 + (n - 1) * small, dtype=torch.float64).to(tdtype)
    for fmt, As in (("csr", A.to_sparse_csr()), ("csc", A.to_sparse_csc()),
                    ("coo", A.to_sparse_coo())):
        for schedule in ({}, {"split_rows": 64}):
            if schedule and fmt != "csr":
                continue
            y = spc.compile("spmv", fmt=fmt, target="cuda", accumulate="float64",
                            **schedule)(As, x)
            assert y.dtype is tdtype and y[0].item() == want.item(), (fmt, schedule)
