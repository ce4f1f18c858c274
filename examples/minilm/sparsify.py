"""Pruning a model's ``nn.Linear`` layers, and the three ways to run the pruned weights.

A *pattern* is the keyword arguments of ``spc.torch.prune`` (``sparsity=0.9``,
``n_m=(2, 4)``, ``block=(16, 16), sparsity=0.5``).  For one pattern, every
linear of the encoder gets the same magnitude mask, and ``sparsify`` returns a
copy of the model whose linears are one of:

* ``"masked"``: ``nn.Linear`` with the pruned entries set to zero (the pruned
  model, computed densely: what the sparse variants must reproduce);
* ``"spc"``: ``spc.torch.SparseLinear`` (the weight's kept entries, through spc's
  generated kernels);
* ``"torch.sparse"``: ``TorchSparseLinear``, the same weight as a torch sparse
  tensor in the layout torch offers for the pattern (see ``torch_layout``).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

import spc.torch

PATTERNS = {
    "50%": {"sparsity": 0.5},
    "70%": {"sparsity": 0.7},
    "90%": {"sparsity": 0.9},
    "2:4": {"n_m": (2, 4)},
    "16x16 blocks, 50%": {"block": (16, 16), "sparsity": 0.5},
    "16x16 blocks, 90%": {"block": (16, 16), "sparsity": 0.9},
}
VARIANTS = ("masked", "spc", "torch.sparse")


def torch_layout(pattern: dict, device: torch.device, dtype: torch.dtype) -> str:
    """The torch.sparse layout used for ``pattern``: ``"semi-structured"`` for 2:4 on
    CUDA in 16-bit types (torch's 2:4 kernels), ``"bsr"`` for blocks, else ``"csr"``."""
    if pattern.get("n_m") == (2, 4) and device.type == "cuda" and \
            dtype in (torch.float16, torch.bfloat16):
        return "semi-structured"
    return "bsr" if "block" in pattern else "csr"


class TorchSparseLinear(nn.Module):
    """``y = x @ W.T + bias`` with W a torch sparse tensor: ``torch.sparse.mm(W, x.T)``
    for CSR and BSR; ``W @ x.T`` through torch's semi-structured 2:4 tensor."""

    def __init__(self, weight: Tensor, bias: Tensor | None, layout: str,
                 block: tuple[int, int] | None = None):
        super().__init__()
        self.layout = layout
        if layout == "semi-structured":
            self.weight = torch.sparse.to_sparse_semi_structured(weight)
        elif layout == "bsr":
            self.weight = weight.to_sparse_bsr(block)
        else:
            self.weight = weight.to_sparse_csr()
        self.bias = bias

    def forward(self, x: Tensor) -> Tensor:
        cols = x.reshape(-1, x.shape[-1]).t()
        if self.layout == "semi-structured":
            y = (self.weight @ cols.contiguous()).t()
        else:
            y = torch.sparse.mm(self.weight, cols).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


def masked_linear(linear: nn.Linear, pattern: dict) -> nn.Linear:
    """A copy of ``linear`` whose weight is zero outside ``spc.torch.prune``'s mask."""
    out = copy.deepcopy(linear)
    with torch.no_grad():
        out.weight.mul_(spc.torch.prune(linear.weight, **pattern))
    return out


def sparse_linear(linear: nn.Linear, variant: str, pattern: dict) -> nn.Module:
    """``linear`` pruned by ``pattern``, run as ``variant`` (one of ``VARIANTS``)."""
    if variant == "masked":
        return masked_linear(linear, pattern)
    if variant == "spc":
        return spc.torch.SparseLinear.from_dense(linear, **pattern)
    if variant == "torch.sparse":
        w = linear.weight.detach()
        layout = torch_layout(pattern, w.device, w.dtype)
        pruned = masked_linear(linear, pattern).weight.detach()
        bias = None if linear.bias is None else linear.bias.detach()
        return TorchSparseLinear(pruned, bias, layout, pattern.get("block"))
    raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")


def sparsify(model: nn.Module, variant: str, pattern: dict) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by ``sparse_linear``."""
    model = copy.deepcopy(model)
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, nn.Linear)]
    for parent, name, child in targets:
        setattr(parent, name, sparse_linear(child, variant, pattern))
    return model
