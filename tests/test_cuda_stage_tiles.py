"""Staged tensor-core tiles on the GPU (passes/stage_tiles.py): BSR SpMM and SDDMM
with their operand tiles copied into shared memory (16-byte moves where rows are
aligned, elements where they are not; ldmatrix fragments) give the same bits as
the same tiles read from global memory, and match a float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import spc

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for torch", allow_module_level=True)
from cuda_env import cupy_or_skip_module  # noqa: E402

cupy_or_skip_module()

TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 2e-3}


def _block_sparse(m, k, block, density, seed, tdtype):
    rng = np.random.default_rng(seed)
    mask = rng.random((-(-m // block[0]), -(-k // block[1]))) < density
    dense = np.kron(mask, np.ones(block))[:m, :k] * rng.uniform(-1, 1, (m, k))
    return torch.tensor(dense).to(tdtype).cuda()


def _dense(rows, cols, seed, tdtype):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((rows, cols), generator=g) * 2 - 1).to(tdtype).cuda()


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("block", [(16, 16), (32, 32)], ids=str)
# n = 64 and 128: B's rows 16-byte aligned (moves); n = 70: not (element copies)
@pytest.mark.parametrize("shape", [(128, 96, 64), (96, 64, 128), (64, 96, 70)], ids=str)
def test_staged_spmm_gives_the_unstaged_bits(block, shape, tdtype):
    m, kdim, n = shape
    A = _block_sparse(m, kdim, block, 0.5, seed=m + n, tdtype=tdtype).to_sparse_bsr(block)
    B = _dense(kdim, n, n, tdtype)
    fmt = f"bsr({block[0]},{block[1]})"
    tf32 = tdtype is torch.float32
    staged = spc.compile("spmm", fmt=fmt, target="cuda", tf32=tf32)
    plain = spc.compile("spmm", fmt=fmt, target="cuda", tf32=tf32, stage_tiles=False)
    got, want = staged(A, B), plain(A, B)
    assert staged.schedule.stage_tiles is True and plain.schedule.stage_tiles is False
    assert torch.equal(got, want)
    ref = A.to_dense().double().cpu().numpy() @ B.double().cpu().numpy()
    err = np.abs(got.double().cpu().numpy() - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err <= TOLERANCE[tdtype]


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kdim", [64, 40], ids=str)      # 40: rows of X 80 bytes apart
def test_staged_sddmm_gives_the_unstaged_bits(kdim, tdtype):
    m, n = 96, 80
    A = _block_sparse(m, n, (16, 16), 0.5, seed=kdim, tdtype=tdtype).to_sparse_bsr((16, 16))
    X, Y = _dense(m, kdim, 1, tdtype), _dense(n, kdim, 2, tdtype)
    staged = spc.compile("sddmm", fmt="bsr(16,16)", target="cuda")
    plain = spc.compile("sddmm", fmt="bsr(16,16)", target="cuda", stage_tiles=False)
    got, want = staged(A, X, Y), plain(A, X, Y)
    assert staged.schedule.stage_tiles is True
    got, want = got.on_host().to_numpy(), want.on_host().to_numpy()      # spc Tensors
    assert got.tobytes() == want.tobytes()
    dense = A.to_dense().double().cpu().numpy()
    ref = dense * (X.double().cpu().numpy() @ Y.double().cpu().numpy().T)
    err = np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max()
    assert err <= TOLERANCE[tdtype]
