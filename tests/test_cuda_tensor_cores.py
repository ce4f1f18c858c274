"""Tensor cores on the GPU (passes/tensorize.py): BSR SpMM in float16 and
bfloat16 through mma.sync tiles, against a float64 reference computed from the
same 16-bit inputs, over block shapes, sizes that are no multiple of the block
or the tile, empty block rows, nnz = 0, and every tile width."""
from __future__ import annotations

import numpy as np
import pytest

import spc
from spc.ir.interp import to_tf32

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for torch", allow_module_level=True)
from cuda_env import cupy_or_skip_module  # noqa: E402

cupy_or_skip_module()

TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 2e-3}  # fp32: tf32
DTYPES = [torch.float16, torch.bfloat16]


def _block_sparse(m, k, block, density, seed, tdtype):
    """A dense torch matrix on the GPU whose nonzeros fill ``density`` of its
    ``block`` blocks, with block row 1 empty where there is one."""
    rng = np.random.default_rng(seed)
    r, c = block
    mask = rng.random((-(-m // r), -(-k // c))) < density
    if mask.shape[0] > 2:
        mask[1] = False
    dense = np.kron(mask, np.ones(block))[:m, :k] * rng.uniform(-1, 1, (m, k))
    return torch.tensor(dense).to(tdtype).cuda()


def _ref(A, B):
    return A.double().cpu().numpy() @ B.double().cpu().numpy()


def _rel(out, ref) -> float:
    out = out.double().cpu().numpy() if isinstance(out, torch.Tensor) else out
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("tdtype", DTYPES + [torch.float32], ids=str)
@pytest.mark.parametrize("block", [(16, 16), (16, 32), (32, 16), (32, 32)], ids=str)
@pytest.mark.parametrize("shape", [(96, 80, 64), (37, 50, 70), (40, 33, 1), (16, 16, 8),
                                   (130, 66, 130)], ids=str)
def test_bsr_spmm_on_tensor_cores_matches_float64(block, shape, tdtype):
    m, kdim, n = shape
    A = _block_sparse(m, kdim, block, 0.4, seed=m + n, tdtype=tdtype)
    B = (torch.rand((kdim, n), generator=torch.Generator().manual_seed(n)) * 2 - 1) \
        .to(tdtype).cuda()
    fmt = f"bsr({block[0]},{block[1]})"
    k = spc.compile("spmm", fmt=fmt, target="cuda", tf32=tdtype is torch.float32)
    whole = m % block[0] == 0 and kdim % block[1] == 0     # torch's bsr needs whole blocks
    got = k(A.to_sparse_bsr(block) if whole else A.to_sparse_csr(), B)
    assert k.schedule.tensor_cores is True
    assert got.dtype == tdtype
    assert _rel(got, _ref(A, B)) <= TOLERANCE[tdtype]


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
@pytest.mark.parametrize("tile_cols", [8, 16, 32, 64, 128, 256])
def test_every_tile_width_gives_the_same_product(tile_cols, tdtype):
    A = _block_sparse(64, 96, (16, 16), 0.3, seed=1, tdtype=tdtype)
    B = (torch.rand((96, 200), generator=torch.Generator().manual_seed(2)) * 2 - 1) \
        .to(tdtype).cuda()
    k = spc.compile("spmm", fmt="bsr(16,16)", target="cuda", tile_cols=tile_cols)
    got = k(A.to_sparse_bsr((16, 16)), B)
    assert k.schedule.tile_cols == tile_cols
    assert _rel(got, _ref(A, B)) <= TOLERANCE[tdtype]


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
def test_tensor_cores_agree_with_the_scalar_kernel(tdtype):
    A = _block_sparse(128, 128, (16, 16), 0.25, seed=4, tdtype=tdtype)
    B = (torch.rand((128, 96), generator=torch.Generator().manual_seed(5)) * 2 - 1) \
        .to(tdtype).cuda()
    on = spc.compile("spmm", fmt="bsr(16,16)", target="cuda")(A.to_sparse_bsr((16, 16)), B)
    off = spc.compile("spmm", fmt="bsr(16,16)", target="cuda", tensor_cores=False)(
        A.to_sparse_bsr((16, 16)), B)
    ref = _ref(A, B)
    assert _rel(on, ref) <= TOLERANCE[tdtype] and _rel(off, ref) <= TOLERANCE[tdtype]
    # both sum in float32 and round once: they differ by at most a rounding or two
    assert _rel(on, off.double().cpu().numpy()) <= 2 * TOLERANCE[tdtype]


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(48, 32, 0), (0, 32, 16), (48, 0, 16), (48, 32, 16)],
                         ids=str)
def test_empty_operands(shape, tdtype):
    m, kdim, n = shape
    A = torch.zeros((m, kdim), dtype=tdtype, device="cuda")     # nnz = 0
    B = torch.ones((kdim, n), dtype=tdtype, device="cuda")
    k = spc.compile("spmm", fmt="bsr(16,16)", target="cuda")
    got = k(A.to_sparse_csr(), B)
    assert tuple(got.shape) == (m, n)
    assert not got.any()


def test_a_prepared_operand_and_repeated_calls_give_identical_bits():
    A = _block_sparse(256, 256, (16, 16), 0.2, seed=7, tdtype=torch.float16)
    B = (torch.rand((256, 128), generator=torch.Generator().manual_seed(8)) * 2 - 1) \
        .half().cuda()
    k = spc.compile("spmm", fmt="bsr(16,16)", target="cuda")
    p = k.prepare(A.to_sparse_bsr((16, 16)))
    first = k(p, B, validate=False)
    for _ in range(3):
        assert torch.equal(k(p, B, validate=False), first)      # no atomics: deterministic
    assert _rel(first, _ref(A, B)) <= TOLERANCE[torch.float16]


_FRAGMENT_KERNEL = r"""
extern "C" __global__ void fragment_mma(const unsigned* a, const unsigned* b, float* d, int bf) {
    const int lane = threadIdx.x;
    unsigned ra[4], rb[2];
    float acc[4] = {0.5f, -0.25f, 1.0f, 0.0f};
    for (int q = 0; q < 4; ++q) ra[q] = a[lane * 4 + q];
    for (int q = 0; q < 2; ++q) rb[q] = b[lane * 2 + q];
    if (bf == 2) spc_mma_1688_tf32(acc, ra, rb);
    else if (bf) spc_mma_16816<true>(acc, ra, rb); else spc_mma_16816<false>(acc, ra, rb);
    for (int q = 0; q < 4; ++q) d[lane * 4 + q] = acc[q];
}
"""


@pytest.mark.parametrize("tdtype", DTYPES + [torch.float32], ids=str)
def test_the_shuffle_fallback_computes_what_the_instruction_does(tmp_path, tdtype):
    """spc_mma_16816 and spc_mma_1688_tf32 (float32) before sm_80 (PTX for
    compute_75, compiled by the driver for this GPU, so __CUDA_ARCH__ is 750) and on
    tensor cores (this GPU's own code), on the same random fragments, against numpy
    through the documented layouts."""
    import subprocess
    from cuda_env import NVCC
    import cupy
    from spc.codegen.cuda import header_text
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    src = tmp_path / "frag.cu"
    src.write_text(header_text() + _FRAGMENT_KERNEL)
    major, minor = torch.cuda.get_device_capability()
    tf32 = tdtype is torch.float32
    depth = 8 if tf32 else 16
    g = torch.Generator().manual_seed(3)
    vals = (torch.rand((2, 16, depth), generator=g) * 2 - 1).to(tdtype)    # A, then B^T
    if tf32:                                   # inputs tf32 already: no rounding to model
        vals = torch.tensor(to_tf32(vals.numpy()))
        bits = vals.numpy().view(np.uint32)
    else:
        bits = vals.view(torch.int16).numpy().view(np.uint16).astype(np.uint32)
    A, Bt = bits[0], bits[1]
    lane = np.arange(32)
    g_, t_ = lane // 4, lane % 4
    if tf32:
        a = np.stack([A[g_, t_], A[g_ + 8, t_], A[g_, t_ + 4], A[g_ + 8, t_ + 4]], 1)
        b = np.stack([Bt[g_, t_], Bt[g_, t_ + 4]], 1)                   # (k, n) = Bt[n, k]
    else:
        pair = lambda m, r, c: m[r, c] | (m[r, c + 1] << 16)            # noqa: E731
        a = np.stack([pair(A, g_, 2 * t_), pair(A, g_ + 8, 2 * t_),
                      pair(A, g_, 2 * t_ + 8), pair(A, g_ + 8, 2 * t_ + 8)], 1)
        b = np.stack([pair(Bt, g_, 2 * t_), pair(Bt, g_, 2 * t_ + 8)], 1)
    ref = vals[0].double().numpy() @ vals[1].double().numpy()[:8].T        # 16 x 8
    want = np.stack([ref[g_, 2 * t_], ref[g_, 2 * t_ + 1],
                     ref[g_ + 8, 2 * t_], ref[g_ + 8, 2 * t_ + 1]], 1) \
        + np.array([0.5, -0.25, 1.0, 0.0])
    results = []
    for arch in ("compute_75", f"compute_{major}{minor}"):
        ptx = tmp_path / f"{arch}.ptx"
        subprocess.run([NVCC, f"-arch={arch}", "-ptx", "-o", str(ptx), str(src)], check=True)
        fn = cupy.RawModule(path=str(ptx)).get_function("fragment_mma")
        d = cupy.zeros(128, dtype=cupy.float32)
        fn((1,), (32,), (cupy.asarray(a.astype(np.uint32).ravel()),
                         cupy.asarray(b.astype(np.uint32).ravel()), d,
                         np.int32(2 if tf32 else tdtype is torch.bfloat16)))
        results.append(cupy.asnumpy(d).reshape(32, 4))
        np.testing.assert_allclose(results[-1], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-5)


def _stored(out) -> np.ndarray:
    """A sampled result (torch sparse, or an spc Tensor) as a dense float64 array."""
    if isinstance(out, torch.Tensor):
        return (out.to_dense() if out.layout != torch.strided else out).double().cpu().numpy()
    return np.asarray(out.to_numpy(), dtype=np.float64)


@pytest.mark.parametrize("tdtype", DTYPES + [torch.float32], ids=str)
@pytest.mark.parametrize("block", [(16, 16), (32, 16), (16, 8), (8, 16)], ids=str)
@pytest.mark.parametrize("shape", [(96, 80, 64), (37, 50, 70), (40, 33, 1), (64, 64, 8)],
                         ids=str)
def test_bsr_sddmm_on_tensor_cores_matches_float64(block, shape, tdtype):
    m, n, kdim = shape
    mask = _block_sparse(m, n, block, 0.4, seed=m + kdim, tdtype=tdtype)
    g = torch.Generator().manual_seed(kdim)
    X, Y = ((torch.rand((r, kdim), generator=g) * 2 - 1).to(tdtype).cuda() for r in (m, n))
    k = spc.compile("sddmm", fmt=f"bsr({block[0]},{block[1]})", target="cuda",
                    tf32=tdtype is torch.float32)
    whole = m % block[0] == 0 and n % block[1] == 0
    got = k(mask.to_sparse_bsr(block) if whole else mask.to_sparse_csr(), X, Y)
    assert k.schedule.tensor_cores is True
    m64 = mask.double().cpu().numpy()
    ref = m64 * (X.double().cpu().numpy() @ Y.double().cpu().numpy().T) * (m64 != 0)
    assert _rel(_stored(got), ref) <= TOLERANCE[tdtype]
