"""spc kernels as torch operators: autograd, ``torch.compile`` and fake tensors.

    import spc.torch
    layer = spc.torch.SparseLinear.from_dense(linear, sparsity=0.9)   # a drop-in nn.Linear
    pruned = spc.torch.prune_calibrated(model, calibrate, sparsity=0.5)  # layer by layer,
    layer = spc.torch.SparseLinear.from_pruned(pruned["fc1"])          # on calibration data
    C = spc.torch.spmm(A, B)          # A: a torch sparse CSR (or COO) matrix, B dense
    S = spc.torch.sddmm(A, X, Y)      # A * (X @ Y.T) on A's pattern, a sparse CSR result

Both differentiate in A's values and in the dense operands (``A`` built with
``torch.sparse_csr_tensor(crow, col, vals)`` from ``vals`` that require grad).
Underneath are operators on a CSR matrix's arrays, registered with
``torch.library`` (``torch.ops.spc.spmm_csr`` and friends, see ``ops.py``) with
fake implementations, so that a module calling them compiles with
``torch.compile(fullgraph=True)`` (sparse tensors themselves do not pass through
``torch.compile``: hold the arrays, as ``SparseLinear``-style modules do).
"""
from __future__ import annotations

from .calibrated import PrunedLinear, prune_calibrated
from .linear import SparseLinear, prune
from .ops import sddmm_csr, spmm_csr, spmm_csr_as, spmm_t_csr


def _csr(A):
    """A torch sparse matrix as CSR (COO and CSC converted; CSR itself)."""
    import torch
    if A.layout == torch.sparse_csr:
        return A
    if A.layout in (torch.sparse_coo, torch.sparse_csc):
        return A.to_sparse_csr()
    raise TypeError(f"spc.torch: A must be a torch sparse CSR, CSC or COO matrix, "
                    f"not layout {A.layout}")


def spmm(A, B):
    """``A @ B``: A a torch sparse matrix (m x k), B a dense k x n tensor; a dense m x n
    result, differentiable in A's values and B."""
    A = _csr(A)
    return spmm_csr(A.crow_indices(), A.col_indices(), A.values(), A.shape[1], B)


def sddmm(A, X, Y):
    """``A * (X @ Y.T)`` on A's stored entries: A a torch sparse m x n matrix, X m x k,
    Y n x k; a sparse CSR result with A's pattern, differentiable in A's values, X
    and Y."""
    import torch
    A = _csr(A)
    vals = sddmm_csr(A.crow_indices(), A.col_indices(), A.values(), A.shape[1], X, Y)
    return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), vals, A.shape)


__all__ = ["PrunedLinear", "SparseLinear", "prune", "prune_calibrated", "sddmm", "sddmm_csr", "spmm", "spmm_csr", "spmm_csr_as",
           "spmm_t_csr"]
