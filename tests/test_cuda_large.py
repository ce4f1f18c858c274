"""Index arithmetic past 2**31 on a real GPU (issue 10, limits): a banded matrix
holding more than 2**31 stored positions, in CSR (through torch) and DIA (spc
Tensor over CuPy arrays), and an SpMM whose dense output has more than 2**31
entries.  Each case needs 12-50 GiB of device memory and skips when the GPU has
less free.  Marked ``cuda``; skipped without CuPy and a GPU.

The band is regular so the reference is cheap and exact in float64: row ``i``
holds columns ``i .. i + BAND - 1`` with value ``(p % 7) + 1`` at CSR position
``p = i * BAND + d``; a position computed in 32 bits would wrap past row
2**31 / BAND and read the wrong value, the wrong column, or fault.
"""
from __future__ import annotations

import pytest

import spc
from spc.formats.format import resolve_format

pytestmark = pytest.mark.cuda

from cuda_env import cupy_or_skip_module  # noqa: E402

cupy = cupy_or_skip_module()
torch = pytest.importorskip("torch")

BAND = 17
ROWS = 2**27                      # 2**27 * 17 = 2.28e9 positions > 2**31
GiB = 2**30


def _need(gib: float):
    """Skip unless the GPU has ``gib`` GiB free (after releasing cached blocks)."""
    torch.cuda.empty_cache()
    cupy.get_default_memory_pool().free_all_blocks()
    free, _ = torch.cuda.mem_get_info()
    if free < gib * GiB:
        pytest.skip(f"needs {gib} GiB of free GPU memory, {free / GiB:.0f} GiB free")


def _band_values(rows: int, dtype) -> "torch.Tensor":
    """The CSR values of the band: (p % 7) + 1 at position p (exact in fp32)."""
    vals = torch.empty(rows * BAND, dtype=dtype, device="cuda")
    chunk = 2**28
    for start in range(0, vals.numel(), chunk):
        stop = min(start + chunk, vals.numel())
        vals[start:stop] = (torch.arange(start, stop, device="cuda") % 7 + 1).to(dtype)
    return vals


def _band_spmv_reference(rows: int, x: "torch.Tensor") -> "torch.Tensor":
    """y[i] = sum_d ((i * BAND + d) % 7 + 1) * x[i + d], in float64."""
    i = torch.arange(rows, device="cuda", dtype=torch.int64)
    y = torch.zeros(rows, dtype=torch.float64, device="cuda")
    x64 = x.double()
    for d in range(BAND):
        y += ((i * BAND + d) % 7 + 1).double() * x64[d:d + rows]
    return y


def _sample_rows(rows: int):
    """Rows on both sides of the 32-bit wrap, the first and the last."""
    wrap = 2**31 // BAND
    return torch.tensor(sorted({0, 1, wrap - 1, wrap, wrap + 1, rows // 2, rows - 2, rows - 1}),
                        device="cuda")


def test_csr_spmv_and_sddmm_past_2_to_the_31_positions():
    _need(60)
    n = ROWS
    crow = torch.arange(0, (n + 1) * BAND, BAND, dtype=torch.int64, device="cuda")
    col = (torch.arange(n, device="cuda", dtype=torch.int64)[:, None]
           + torch.arange(BAND, device="cuda", dtype=torch.int64)[None, :]).reshape(-1)
    vals = _band_values(n, torch.float32)
    A = torch.sparse_csr_tensor(crow, col, vals, (n, n + BAND - 1))
    assert vals.numel() > 2**31

    x = torch.rand(n + BAND - 1, device="cuda")
    y = spc.compile("spmv", fmt="csr", target="cuda", dtype="float32")(A, x)
    want = _band_spmv_reference(n, x)
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5)
    del y, want

    R = 2
    X = torch.rand(n, R, device="cuda")
    Y = torch.rand(n + BAND - 1, R, device="cuda")
    C = spc.compile("sddmm", fmt="csr", target="cuda", dtype="float32")(A, X, Y)
    got = C.values()
    assert got.numel() == vals.numel()
    rows = _sample_rows(n)
    p = (rows[:, None] * BAND + torch.arange(BAND, device="cuda")[None, :]).reshape(-1)
    r, c = p // BAND, col[p]
    want = vals[p].double() * (X[r].double() * Y[c].double()).sum(1)
    torch.testing.assert_close(got[p].double(), want, rtol=1e-5, atol=1e-6)


def test_dia_spmv_past_2_to_the_31_positions():
    _need(30)
    n = ROWS
    offsets = cupy.arange(BAND, dtype=cupy.int32)
    vals = cupy.asarray(_band_values(n, torch.float32))  # slot i*BAND + d: diagonal d
    A = spc.Tensor((n, n + BAND - 1), resolve_format("dia", 2), [{}, {"offsets": offsets}], vals,
                   validate=False)
    x = torch.rand(n + BAND - 1, device="cuda")
    y = spc.compile("spmv", fmt="dia", target="cuda", dtype="float32")(A, cupy.asarray(x))
    want = _band_spmv_reference(n, x)
    torch.testing.assert_close(torch.as_tensor(y, device="cuda").double(), want, rtol=1e-5,
                               atol=1e-5)


def test_spmm_dense_output_past_2_to_the_31_entries():
    _need(40)
    m, k, n = 2**22, 4096, 640                         # the output: 2.7e9 entries
    rows = torch.arange(m, device="cuda", dtype=torch.int64)
    A = torch.sparse_csr_tensor(torch.arange(m + 1, device="cuda", dtype=torch.int64),
                                rows % k, (rows % 3 + 1).float(), (m, k))
    B = torch.rand(k, n, device="cuda")
    out = spc.compile("spmm", fmt="csr", target="cuda", dtype="float32")(A, B)
    assert out.shape == (m, n) and out.numel() > 2**31
    for start in range(0, m, 2**19):                   # compare in 1.3 GB slices
        r = rows[start:start + 2**19]
        want = (r % 3 + 1).float()[:, None] * B[r % k]
        torch.testing.assert_close(out[start:start + 2**19], want)
