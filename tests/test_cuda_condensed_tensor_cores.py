"""Unstructured SpMM on tensor cores on the GPU (passes/tensorize_chunks.py):
condensed(16,16) SpMM in float16 and bfloat16 and condensed(16,8) as tf32 through
mma.sync tiles whose B rows are gathered through the chunks' column ids, against a
float64 reference computed from the same inputs; sizes no multiple of the tile (16
rows, 16 or 8 columns of k, 8 output columns), empty windows, a dense row, nnz = 0,
empty dimensions, every tile width; and the scalar kernels (SpMV, SDDMM) with the
operand in this format."""
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

cupy_or_skip_module()
from cuda_env import gpu  # noqa: E402
from matrices import MATRICES, MATRIX_IDS, assert_allclose  # noqa: E402
from test_cuda_formats import KERNELS, _host  # noqa: E402
from test_cuda_nm_tensor_cores import _dense, _rel  # noqa: E402

TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 2e-3}   # f32: tf32
NP = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
SHAPES = [(96, 128, 64), (37, 45, 70), (40, 33, 1), (16, 16, 8), (130, 66, 130),
          (512, 512, 256), (64, 5, 24), (0, 16, 8), (16, 0, 8), (33, 17, 0)]


def _condensed(m, k, density, seed, fmt, tdtype):
    """(A as a condensed spc tensor, A as float64 of its stored values)."""
    rng = np.random.default_rng(seed)
    dense = rng.uniform(-1, 1, (m, k)) * (rng.random((m, k)) < density)
    if m > 40:
        dense[16:32] = 0                                   # an empty window
        dense[35] = rng.uniform(-1, 1, k)                  # a dense row
    t = spc.tensor(sp.csr_matrix(dense), fmt, dtype=NP[tdtype])
    return t, np.asarray(t.to_numpy(), dtype=np.float64)




@pytest.mark.parametrize("tile_cols", [8, 64])
@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_condensed_spmm_on_tensor_cores_matches_float64(shape, tdtype, tile_cols):
    m, kdim, n = shape
    t, A = _condensed(m, kdim, 0.1, seed=m + n, fmt="condensed(16,16)", tdtype=tdtype)
    B = _dense((kdim, n), tdtype, n)
    k = spc.compile("spmm", fmt="condensed(16,16)", target="cuda", tile_cols=tile_cols)
    got = k(k.prepare(t, name="A"), B)
    assert k.specialize(NP[tdtype]).schedule.tensor_cores is True
    assert got.dtype == tdtype and tuple(got.shape) == (m, n)
    assert _rel(got, A @ B.double().cpu().numpy()) <= TOLERANCE[tdtype]


@pytest.mark.parametrize("shape", SHAPES[:7], ids=str)
def test_condensed_spmm_as_tf32_matches_float64(shape):
    m, kdim, n = shape
    t, A = _condensed(m, kdim, 0.1, seed=m + 2 * n, fmt="condensed(16,8)",
                      tdtype=torch.float32)
    B = _dense((kdim, n), torch.float32, n)
    k = spc.compile("spmm", fmt="condensed(16,8)", target="cuda", dtype="float32", tf32=True)
    assert k.schedule.tf32 is True and k.schedule.tensor_cores is True
    got = k(k.prepare(t, name="A"), B)
    assert _rel(got, A @ B.double().cpu().numpy()) <= TOLERANCE[torch.float32]


def test_padding_never_reads_an_unkept_b_row():
    """B rows that no window keeps are infinite: a padding slot must not read
    them (its product would be NaN)."""
    A = sp.random(50, 40, density=0.05, random_state=3, format="lil")
    A[:, 7] = 0
    t = spc.tensor(sp.csr_matrix(A), "condensed(16,16)", dtype="float16")
    assert (t.arrays[1]["crd"] < 0).any() and not (t.arrays[1]["crd"] == 7).any()
    B = _dense((40, 24), torch.float16, 1)
    B[7] = float("inf")
    k = spc.compile("spmm", fmt="condensed(16,16)", target="cuda", dtype="float16")
    got = k(t, B)
    Bh = B.double().cpu().numpy()
    Bh[7] = 0.0
    assert torch.isfinite(got).all()
    assert _rel(got, np.asarray(t.to_numpy(), dtype=np.float64) @ Bh) <= \
        TOLERANCE[torch.float16]


@pytest.mark.parametrize("fmt", ["condensed(16,16)", "condensed(16,8)", "condensed(4,3)"])
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_named_kernels_with_a_condensed_operand_match_scipy(kernel, matrix, fmt):
    """float32: the scalar kernels (SpMV, SDDMM, SpMM without tf32)."""
    A = matrix.build(np.float32)
    ops = kernel.operands(A, "float32")
    out = gpu(kernel.name, fmt=fmt, dtype="float32")(A, *ops)
    assert out.shape == kernel.out_shape(A)
    assert_allclose(_host(out), kernel.reference(A, ops), "float32")
