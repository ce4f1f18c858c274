"""SpGEMM on the GPU (target="cuda") against scipy: a warp per row, each row's
table (sized by its products) in the warp's shared memory or the output's slots
(passes/workspaces_gpu.py).  Marked ``cuda``; skipped without CuPy and a GPU."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

from cuda_env import cupy_or_skip_module, gpu  # noqa: E402

cupy = cupy_or_skip_module()

from matrices import MATRICES, from_mask, random_mask, rng_for  # noqa: E402
from test_spgemm import CSR3, SPGEMM, assert_canonical_product, right_operand  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_spgemm_matches_scipy_on_the_gpu(case, dtype):
    a = case.build(dtype)
    b = right_operand(a, f"{case.id}-B", 23, 0.2, dtype)
    c = gpu(SPGEMM, formats=CSR3, dtype=np.dtype(dtype).name)(a, b)
    assert_canonical_product(c, a @ b, dtype)


def test_cancellation_on_the_gpu():
    import scipy.sparse as sp
    a = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    b = sp.csr_matrix(np.array([[2.0, 0.0], [-2.0, 5.0], [np.nan, 0.0]]))
    c = gpu(SPGEMM, formats=CSR3, dtype="float64")(a, b)
    assert np.array_equal(c.indptr, (a @ b).indptr)


def test_masked_and_larger_on_the_gpu():
    rng = rng_for("gpu-masked")
    a = from_mask(random_mask(rng, (700, 300), 0.03), rng, np.float32)
    b = from_mask(random_mask(rng, (300, 900), 0.03), rng, np.float32)
    m = from_mask(random_mask(rng, (700, 900), 0.05), rng, np.float32)
    c = gpu("C[i,j] = M[i,j]*A[i,k]*B[k,j]", formats={**CSR3, "M": "csr"},
            dtype="float32")(m, a, b)
    assert_canonical_product(c, m.multiply(a @ b).tocsr(), np.float32)
    assert_canonical_product(gpu(SPGEMM, formats=CSR3, dtype="float32")(a, b), a @ b,
                             np.float32)


def test_torch_cuda_csr_operands():
    """torch CUDA CSR in, torch out (arrays allocated through torch's allocator);
    a cancelling entry is dropped (the rows are packed on the device)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    import scipy.sparse as sp
    a = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    b = sp.csr_matrix(np.array([[2.0, 0.0], [-2.0, 5.0], [3.0, 0.0]]))
    ta = torch.tensor(a.toarray(), device="cuda").to_sparse_csr()
    tb = torch.tensor(b.toarray(), device="cuda").to_sparse_csr()
    c = gpu(SPGEMM, formats=CSR3, dtype="float64")(ta, tb)
    assert c.is_cuda and c.layout == torch.sparse_csr
    assert c.values().numel() == (a @ b).nnz
    np.testing.assert_allclose(c.to_dense().cpu().numpy(), (a @ b).toarray())


# Every mapping and table kind of passes/workspaces_gpu on the device: a warp per
# row (lanes claiming slots by compare-and-swap) or one thread for every row
# (parallel=False); hashed tables (collisions, insertion sort up to 16 entries,
# merge sort beyond) and direct ones (the slots in order); tables in the warp's
# shared memory (up to 512 float32 or 256 float64 slots) and in the output's slots.
SCHEDULES = [pytest.param(None, id="warp-per-row"),
             pytest.param({"deterministic": True}, id="thread-per-row"),
             pytest.param({"parallel": False}, id="one-thread")]


def _spgemm(dtype, schedule):
    import spc
    kw = {} if schedule is None else {"schedule": spc.Schedule(**schedule)}
    return gpu(SPGEMM, formats=CSR3, dtype=np.dtype(dtype).name, **kw)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("cols, density", [(64, 0.02), (700, 0.05), (700, 0.5), (5, 0.5),
                                           (5000, 0.02)],
                         ids=["hashed-short", "hashed-merge-sorted", "direct", "direct-narrow",
                              "hashed-global"])
def test_every_table_kind_on_the_gpu(cols, density, schedule):
    rng = rng_for(f"gpu-tables-{cols}-{density}")
    a = from_mask(random_mask(rng, (60, 12), 0.4), rng, np.float64)
    b = from_mask(random_mask(rng, (12, cols), density), rng, np.float64)
    assert_canonical_product(_spgemm(np.float64, schedule)(a, b), a @ b, np.float64)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_colliding_keys_on_the_gpu(schedule):
    """Keys 0, 16, 32, 48 share slot 0 of a 16-slot table, 15 and 31 slot 15
    (its probe wraps): lanes race for the same slots."""
    import scipy.sparse as sp
    b = np.zeros((3, 64))
    b[0, [0, 16, 15]] = [1.0, 2.0, 3.0]
    b[1, [32, 48, 31]] = [4.0, 5.0, 6.0]
    b[2, [0, 63]] = [7.0, 8.0]
    a = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [2.0, 0.0, 3.0]]))
    b = sp.csr_matrix(b)
    assert_canonical_product(_spgemm(np.float64, schedule)(a, b), a @ b, np.float64)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_power_law_rows_on_the_gpu(schedule):
    """Hub rows with thousands of products (many lanes adding into one slot at
    once) beside rows with none: A @ A of a power-law graph."""
    rng = rng_for("gpu-power-law")
    n = 3000
    degrees = np.minimum((rng.pareto(1.2, n) * 3).astype(int) + 1, n)
    rows = np.repeat(np.arange(n), degrees)
    cols = rng.integers(0, n, rows.size)
    import scipy.sparse as sp
    a = sp.csr_matrix((rng.uniform(-1, 1, rows.size), (rows, cols)), shape=(n, n))
    a.sum_duplicates()
    a.sort_indices()
    assert_canonical_product(_spgemm(np.float32, schedule)(a.astype(np.float32),
                                                            a.astype(np.float32)),
                             (a @ a).astype(np.float32), np.float32)


def test_deterministic_results_are_identical_bit_for_bit():
    rng = rng_for("gpu-deterministic")
    a = from_mask(random_mask(rng, (400, 300), 0.05), rng, np.float32)
    k = _spgemm(np.float32, {"deterministic": True})
    first, second = k(a, a.T.tocsr()), k(a, a.T.tocsr())
    assert np.array_equal(first.data, second.data)
    assert_canonical_product(first, a @ a.T.tocsr(), np.float32)


@pytest.mark.parametrize("expr, formats", [
    pytest.param("C[i,j] = A[i,k]*B[k,j]", {"A": "csc", "B": "csc", "C": "csc"}, id="csc"),
    pytest.param("C[i,j] = A[i,k]*B[k,j] + D[i,j]", {**CSR3, "D": "csr"}, id="ab-plus-d")])
def test_other_workspace_kernels_on_the_gpu(expr, formats):
    rng = rng_for(f"gpu-other-{expr}")
    a = from_mask(random_mask(rng, (80, 50), 0.1), rng, np.float64)
    b = from_mask(random_mask(rng, (50, 90), 0.1), rng, np.float64)
    d = from_mask(random_mask(rng, (80, 90), 0.05), rng, np.float64)
    k = gpu(expr, formats=formats, dtype="float64")
    args = {"A": a, "B": b, "D": d}
    got = k(*(args[n] for n in k.input_names))
    expected = a @ b + (d if "D" in formats else 0)
    np.testing.assert_allclose(got.toarray(), np.asarray(expected.todense()), rtol=1e-12,
                               atol=1e-12)
