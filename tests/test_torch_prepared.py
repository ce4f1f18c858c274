"""spc.torch's sparse operand prepared once per live CSR matrix (spc/torch/prepared.py)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from spc.torch import prune as st_prune  # noqa: E402
from spc.torch import spmm_csr, spmm_csr_as, spmm_t_csr  # noqa: E402
from spc.torch.prepared import prepared_matrix  # noqa: E402


def csr(seed=0, shape=(12, 9), density=0.3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(shape, generator=g, dtype=torch.float64)
    dense[torch.rand(shape, generator=g) > density] = 0
    dense[3] = 0                                                # an empty row
    m = dense.to(dtype).to_sparse_csr()
    return m.crow_indices().clone(), m.col_indices().clone(), m.values().clone(), dense


def test_same_tensors_reuse_one_matrix():
    crow, col, vals, _ = csr()
    assert prepared_matrix(crow, col, vals, 9) is prepared_matrix(crow, col, vals, 9)


def test_an_entry_goes_with_its_tensors():
    from spc.torch import prepared
    crow, col, vals, _ = csr()
    prepared_matrix(crow, col, vals, 9)
    key = (id(crow), id(col), id(vals), "csr")
    assert key in prepared._entries
    del vals
    assert key not in prepared._entries


def test_equal_copies_get_their_own_matrix():
    crow, col, vals, _ = csr()
    assert prepared_matrix(crow, col, vals, 9) is not prepared_matrix(crow, col, vals.clone(), 9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("op, transposed", [(spmm_csr, False), (spmm_t_csr, True)])
def test_products_match_dense(dtype, op, transposed):
    crow, col, vals, dense = csr(dtype=dtype)
    a = dense.to(dtype).to(torch.float64)
    d = torch.rand(12 if transposed else 9, 5, dtype=dtype)
    expected = (a.t() if transposed else a) @ d.to(torch.float64)
    tol = 1e-2 if dtype == torch.float16 else 1e-5
    for _ in range(2):                                          # built, then reused
        out = op(crow, col, vals, 9, d)
        assert out.dtype == dtype
        torch.testing.assert_close(out.to(torch.float64), expected, rtol=tol, atol=tol)


def test_values_changed_in_place_are_seen():
    crow, col, vals, dense = csr()
    b = torch.rand(9, 4)
    first = spmm_csr(crow, col, vals, 9, b)
    vals.mul_(2)
    torch.testing.assert_close(spmm_csr(crow, col, vals, 9, b), 2 * first)


def test_pattern_changed_in_place_is_seen():
    crow, col, vals, dense = csr()
    b = torch.rand(9, 4)
    spmm_csr(crow, col, vals, 9, b)
    col.copy_((col + 1) % 9)                 # unsorted within rows now; still in bounds
    moved = torch.sparse_csr_tensor(crow, col, vals, (12, 9)).to_dense()
    torch.testing.assert_close(spmm_csr(crow, col, vals, 9, b), moved @ b)


def test_bfloat16_takes_the_general_path():
    crow, col, vals, dense = csr(dtype=torch.bfloat16)
    assert prepared_matrix(crow, col, vals, 9) is None
    b = torch.rand(9, 4, dtype=torch.bfloat16)
    out = spmm_csr(crow, col, vals, 9, b)
    expected = dense.to(torch.bfloat16).float() @ b.float()
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


def test_mixed_value_types_take_the_general_path():
    crow, col, vals, dense = csr()
    b = torch.rand(9, 4, dtype=torch.float64)
    out = spmm_csr(crow, col, vals, 9, b)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, dense.float().double() @ b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reuses_one_sparse_tensor_and_matches_dense():
    crow, col, vals, dense = (t.cuda() for t in csr())
    assert prepared_matrix(crow, col, vals, 9) is prepared_matrix(crow, col, vals, 9)
    b = torch.rand(9, 4, device="cuda")
    for _ in range(2):
        torch.testing.assert_close(spmm_csr(crow, col, vals, 9, b), dense.float() @ b)
    vals.mul_(2)
    torch.testing.assert_close(spmm_csr(crow, col, vals, 9, b), 2 * dense.float() @ b)


@pytest.mark.parametrize("fmt", ["bsr(2,3)", "ell", "nm(1,3)"])
def test_other_formats_are_converted_once_and_follow_the_values(fmt):
    crow, col, vals, dense = csr()
    if fmt == "nm(1,3)":                      # one entry per group of 3 columns
        dense = torch.zeros(12, 9, dtype=torch.float64)
        dense[:, ::3] = torch.arange(1.0, 37.0).reshape(12, 3)
        m = dense.float().to_sparse_csr()
        crow, col, vals = m.crow_indices(), m.col_indices(), m.values().clone()
    matrix = prepared_matrix(crow, col, vals, 9, fmt)
    assert matrix is prepared_matrix(crow, col, vals, 9, fmt)
    assert matrix is not prepared_matrix(crow, col, vals, 9)
    b = torch.rand(9, 4)
    torch.testing.assert_close(spmm_csr_as(crow, col, vals, 9, b, fmt), dense.float() @ b)
    vals.mul_(-1)
    torch.testing.assert_close(spmm_csr_as(crow, col, vals, 9, b, fmt), -dense.float() @ b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_sparse_linear_bsr_blocks(dtype):
    from spc.torch import SparseLinear
    lin = torch.nn.Linear(64, 32).cuda().to(dtype)
    layer = SparseLinear.from_dense(lin, block=(16, 16), sparsity=0.5, fmt="bsr(16,16)")
    assert prepared_matrix(layer.crow, layer.col, layer.vals, 64, "bsr(16,16)").layout == \
        torch.sparse_bsr
    x = torch.randn(40, 64, device="cuda", dtype=dtype)
    w = lin.weight.detach() * st_prune(lin.weight, block=(16, 16), sparsity=0.5)
    tol = 1e-2 if dtype == torch.float16 else 1e-4
    torch.testing.assert_close(layer(x).float(), (x @ w.t() + lin.bias).float(), rtol=tol,
                               atol=tol)
