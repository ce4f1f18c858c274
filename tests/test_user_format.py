"""The user-defined format of the tutorial (docs/formats.md): SELL-C-sigma,
defined in examples/sell_c_sigma.py with no edits inside spc.

Its levels' conversions (pack, the direct CSR conversion, unpack, validate),
SpMM and other kernels over it on the CPU against scipy on the shared test
matrices (0 rows, 0 columns, no nonzeros, empty rows, one dense row, shapes
that are not a multiple of C), the example script run as a user runs it, the
CUDA source rendered and compiled with ``nvcc -arch=sm_90 -cubin`` (skipped
only without nvcc), and the kernels on a GPU (marked ``cuda``; skipped
without CuPy and a GPU).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from matrices import MATRICES, MATRIX_IDS, assert_allclose, dense_operand

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "sell_c_sigma.py"


def _load_example():
    """The example as a module (it registers "sell" and "sell(8,64)" on import)."""
    if "sell_c_sigma" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sell_c_sigma", EXAMPLE)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["sell_c_sigma"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["sell_c_sigma"]


sell = _load_example()

# (C, sigma): no slicing at all, sigma not a multiple of C (and C odd), the
# example's default, and one slice per warp
PARAMS = [(1, 1), (3, 5), (8, 64), (32, 32)]
PARAM_IDS = [f"sell{c}-{s}" for c, s in PARAMS]
_KERNELS: dict = {}


def kernel(name, C, sigma, dtype="float64", **kw):
    """spc.compile for sell(C, sigma), memoized for the module."""
    key = (name, C, sigma, dtype, repr(sorted(kw.items())))
    if key not in _KERNELS:
        formats = kw.pop("formats", None)
        if formats is None:
            _KERNELS[key] = spc.compile(name, fmt=sell.sell(C, sigma), dtype=dtype, **kw)
        else:
            _KERNELS[key] = spc.compile(name, formats=formats, dtype=dtype, **kw)
    return _KERNELS[key]


def arrays_equal(s, t) -> bool:
    return (s.format == t.format and s.shape == t.shape
            and all(set(a) == set(b) and all(np.array_equal(a[n], b[n]) for n in a)
                    for a, b in zip(s.arrays, t.arrays))
            and np.array_equal(s.vals, t.vals))


# ---------------------------------------------------------------------------
# Storage: conversions in and out, the layout, validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("C,sigma", PARAMS, ids=PARAM_IDS)
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
def test_conversions_round_trip(matrix, C, sigma):
    A = matrix.build(np.float64)
    fmt = sell.sell(C, sigma)
    direct = sell.to_sell(A, C, sigma)                 # straight from CSR (validated)
    packed = spc.tensor(A, fmt)                        # through coordinates and pack
    packed.validate()
    assert arrays_equal(direct, packed)
    np.testing.assert_array_equal(direct.to_numpy(), A.toarray())
    assert (direct.to_scipy() != A).nnz == 0
    np.testing.assert_array_equal(spc.tensor(direct, "csr").to_numpy(), A.toarray())
    np.testing.assert_array_equal(spc.tensor(A.toarray(), fmt).to_numpy(), A.toarray())
    R = A.shape[0]
    assert len(direct.arrays[0]["perm"]) == -(-R // C) * C
    assert direct.nnz >= A.nnz and direct.nnz % C == 0


def test_layout_of_a_small_matrix():
    """Rows sorted by length inside windows of sigma, slices padded to their
    longest row, each row's columns contiguous (row-major slices)."""
    dense = np.zeros((5, 6))
    for r, cols in {0: [1], 1: [0, 2, 5], 2: [], 3: [3, 4], 4: [0, 1, 2, 3]}.items():
        dense[r, cols] = 10 * r + np.arange(1, len(cols) + 1)
    t = sell.to_sell(sp.csr_matrix(dense), C=2, sigma=4)
    # window 0 = rows 0..3 by length: 1 (3), 3 (2), 0 (1), 2 (0); window 1 = row 4
    np.testing.assert_array_equal(t.arrays[0]["perm"], [1, 3, 0, 2, 4, -1])
    # slice widths 3, 1, 4: sptr counts C = 2 rows per slice
    np.testing.assert_array_equal(t.arrays[1]["sptr"], [0, 6, 8, 16])
    np.testing.assert_array_equal(
        t.arrays[1]["crd"], [0, 2, 5, 3, 4, -1, 1, -1, 0, 1, 2, 3, -1, -1, -1, -1])
    np.testing.assert_array_equal(t.vals[:6], [11, 12, 13, 31, 32, 0])
    assert sell.padding_overhead(t, 10) == pytest.approx(0.6)


def test_sorting_reduces_padding():
    from spc.demo import example_matrix
    A = example_matrix(500, 400, 0.02)
    unsorted, windows, fully = (sell.to_sell(A, 8, s) for s in (1, 64, 512))
    assert fully.nnz <= windows.nnz <= unsorted.nnz
    assert windows.nnz < spc.tensor(A, "ell").nnz


def test_index_width_follows_the_padded_size(monkeypatch):
    """sptr holds positions, which padding can push past int32 while the number
    of nonzeros fits: spc.tensor packs in int64 and narrows only what fits;
    to_sell widens itself (simulated with a small limit)."""
    A = MATRICES[-1].build(np.float64)
    assert spc.tensor(A, sell.sell(8, 64)).index_dtype == np.int32
    monkeypatch.setattr(sell, "INT32_MAX", 100)
    t = sell.to_sell(A, 8, 64)
    assert t.index_dtype == np.int64
    np.testing.assert_array_equal(t.to_numpy(), A.toarray())


def _malformed():
    good = sell.to_sell(sp.csr_matrix(np.array([[1.0, 0, 2], [0, 3, 0], [4, 5, 6]])), 2, 2)
    # perm [0, 1, 2, -1]; slices of widths 2 and 3: sptr [0, 4, 10]
    assert good.arrays[1]["crd"].tolist() == [0, 2, 1, -1, 0, 1, 2, -1, -1, -1]

    def with_(level, name, value):
        arrays = [dict(a) for a in good.arrays]
        arrays[level][name] = np.asarray(value, dtype=np.int32)
        return arrays
    return good, [
        (with_(0, "perm", [0, 0, 2, -1]), "every row once"),
        (with_(0, "perm", [0, 1, 2]), "row slots"),
        (with_(0, "perm", [0, 1, 3, -1]), "out of range"),
        (with_(1, "sptr", [0, 5, 10]), "multiple of C"),
        (with_(1, "sptr", [0, 4, 8]), "slice pointers"),
        (with_(1, "sptr", [0, 4]), "length 2, expected 3"),
        (with_(1, "crd", [2, 0, 1, -1, 0, 1, 2, -1, -1, -1]), "ascend"),
        (with_(1, "crd", [0, 2, -1, 1, 0, 1, 2, -1, -1, -1]), "ascend"),
        (with_(1, "crd", [0, 2, 1, -1, 0, 1, 2, -1, -1, 7]), "out of range"),
    ]


def test_malformed_storage_is_rejected():
    good, cases = _malformed()
    good.validate()
    for arrays, message in cases:
        with pytest.raises(spc.InputError, match=message):
            spc.Tensor(good.shape, good.format, arrays, good.vals)
    # an operand is checked before any generated code runs
    spmm = kernel("spmm", 2, 2)
    bad = spc.Tensor(good.shape, good.format, cases[0][0], good.vals, validate=False)
    with pytest.raises(spc.InputError, match="operand A"):
        spmm(bad, np.ones((3, 2)))


def test_registered_names_and_format_identity():
    assert "sell" in spc.format_names() and "sell(8,64)" in spc.format_names()
    A = MATRICES[0].build(np.float64)
    assert spc.tensor(A, "sell").format == sell.sell(8, 64)
    assert sell.sell(8, 64) != sell.sell(8, 32) != sell.sell(4, 32)
    with pytest.raises(spc.FormatError, match="2-d"):
        spc.tensor(np.ones(3), "sell")
    with pytest.raises(spc.FormatError):
        sell.sell(0, 4)
    # a tensor already in the kernel's format is used as it is
    t = sell.to_sell(A, 8, 64)
    assert spc.tensor(t, sell.sell(8, 64)) is t


# ---------------------------------------------------------------------------
# Kernels on the CPU against scipy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("C,sigma", PARAMS, ids=PARAM_IDS)
@pytest.mark.parametrize("matrix", MATRICES, ids=MATRIX_IDS)
def test_spmm_matches_scipy(matrix, C, sigma):
    A = matrix.build(np.float64)
    B = dense_operand(f"B-{matrix.id}", (A.shape[1], 5))
    want = A @ B
    spmm = kernel("spmm", C, sigma)
    assert_allclose(spmm(sell.to_sell(A, C, sigma), B), want, np.float64)   # converted once
    assert_allclose(spmm(A, B), want, np.float64)                           # scipy in
    assert_allclose(spmm(A, B, validate=False), want, np.float64)


def test_spmm_float32_and_named_format():
    from spc.demo import example_matrix
    A = example_matrix(300, 200, 0.03)
    B = dense_operand("B32", (200, 33), np.float32)
    want = A.astype(np.float64) @ B.astype(np.float64)
    assert_allclose(spc.compile("spmm", fmt="sell")(A, B), want, np.float32)
    assert_allclose(kernel("spmm", 8, 64, "float32")(sell.to_sell(A), B), want, np.float32)


@pytest.mark.parametrize("matrix", [m for m in MATRICES if m.id in (
    "square_40x40", "rows0_0x9", "nnz0_12x15", "empty_rows_30x25", "dense_row_40x50",
    "power_law_200x150")], ids=str)
def test_other_kernels_match_scipy(matrix):
    C, sigma = 3, 5
    A = matrix.build(np.float64)
    R, N = A.shape
    x, y = dense_operand("x", N), dense_operand("y", R)
    X, Y = dense_operand("X", (R, 4)), dense_operand("Y", (N, 4))
    S = sell.to_sell(A, C, sigma)
    assert_allclose(kernel("spmv", C, sigma)(S, x), A @ x, np.float64)
    f = {"A": sell.sell(C, sigma)}
    assert_allclose(kernel("y[j] = A[i,j] * x[i]", C, sigma, formats=f)(A=S, x=y), A.T @ y,
                    np.float64)
    # SDDMM: the output takes the pattern (and the format) of A
    out = kernel("sddmm", C, sigma)(S, X, Y)
    assert isinstance(out, spc.Tensor) and out.format == S.format
    assert_allclose(out, A.multiply(X @ Y.T), np.float64)
    assert_allclose(kernel("sddmm", C, sigma)(A, X, Y), A.multiply(X @ Y.T), np.float64)


def test_merge_over_unordered_rows_reads_a_csr_copy():
    """sell's row level is not ordered: merging it with another operand's rows
    would need ascending coordinates, so spc reads sell through a csr copy
    (refused before issue 13 part 3) instead of merging wrongly."""
    assert sell is not None          # (importing the example registers "sell")
    k = spc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "sell", "B": "csr"},
                    dtype="float64")
    assert [(c.source, c.format.name) for c in k.copies] == [("A", "csr")]
    a = sp.random(20, 9, density=0.3, format="csr", random_state=6)
    b = sp.random(20, 9, density=0.3, format="csr", random_state=7)
    assert_allclose(k(A=spc.tensor(a, "sell"), B=b), (a + b).toarray(), np.float64)


# ---------------------------------------------------------------------------
# The example as a user runs it
# ---------------------------------------------------------------------------

def test_example_script_runs_from_the_repo_root():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, "examples/sell_c_sigma.py"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "padding overhead" in r.stdout and "cpu  spmm" in r.stdout
    assert r.stdout.rstrip().endswith("ok")


# ---------------------------------------------------------------------------
# CUDA: the rendered source compiles with nvcc (no GPU needed)
# ---------------------------------------------------------------------------

from cuda_env import NVCC, nvcc_many  # noqa: E402


def test_cuda_source_compiles_with_nvcc():
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    kernels = [spc.compile(name, fmt=sell.sell(8, 64), target="cuda", arch="sm_90", dtype=dt)
               for name, dt in (("spmm", "float32"), ("spmm", "float64"), ("sddmm", "float32"))]
    for k in kernels:
        assert "A0_perm" in k.source and "A1_sptr" in k.source and "@gpu_" in k.ir
    for (code, log), k in zip(nvcc_many([k.source for k in kernels]), kernels):
        assert code == 0, f"nvcc failed for {k.name}:\n{log}"


# ---------------------------------------------------------------------------
# CUDA: on a GPU
# ---------------------------------------------------------------------------

def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as err:  # noqa: BLE001 - no driver, no device
        pytest.skip(f"no usable CUDA device: {err}")
    return cupy


@pytest.mark.cuda
@pytest.mark.parametrize("C,sigma", [(3, 5), (32, 32)], ids=["sell3-5", "sell32-32"])
def test_kernels_on_gpu_match_scipy(C, sigma):
    cupy = _cupy_or_skip()
    fmt = sell.sell(C, sigma)
    spmm = spc.compile("spmm", fmt=fmt, target="cuda", dtype="float64")
    sddmm = spc.compile("sddmm", fmt=fmt, target="cuda", dtype="float64")
    for matrix in MATRICES:
        A = matrix.build(np.float64)
        R, N = A.shape
        B, X, Y = (dense_operand(f"{n}-{matrix.id}", s)
                   for n, s in (("B", (N, 40)), ("X", (R, 7)), ("Y", (N, 7))))
        want = A @ B
        S = sell.to_sell(A, C, sigma)
        assert_allclose(spmm(A, B), want, np.float64)                  # host in, host out
        assert_allclose(spmm(S, B), want, np.float64)
        out = spmm(S, cupy.asarray(B))                                 # cupy in, cupy out
        assert isinstance(out, cupy.ndarray)
        assert_allclose(cupy.asnumpy(out), want, np.float64)
        # an spc Tensor whose arrays live on the device is used in place
        dev = spc.Tensor(S.shape, S.format,
                         [{k: cupy.asarray(v) for k, v in lv.items()} for lv in S.arrays],
                         cupy.asarray(S.vals), validate=False)
        assert_allclose(cupy.asnumpy(spmm(dev, cupy.asarray(B))), want, np.float64)
        got = sddmm(S, X, Y)
        assert_allclose(got, A.multiply(X @ Y.T), np.float64)
