"""Pruning a model's ``nn.Linear`` layers, and the three ways to run the pruned weights.

A *pattern* is the keyword arguments of ``spc.torch.prune`` (``sparsity=0.9``,
``n_m=(2, 4)``, ``block=(16, 16), sparsity=0.5``).  For one pattern, every linear of
the encoder is pruned by one of ``METHODS``: ``"magnitude"`` (``spc.torch.prune``: the
largest weights kept, nothing changed) or ``"calibrated"``
(``spc.torch.prune_calibrated``: layer by layer on the calibration sentences, masks
chosen and kept weights and biases refitted, see ``prune_model``).  ``sparsify``
returns a copy of the model whose linears are one of:

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
import torch.nn.functional as F
from torch import Tensor, nn

import spc.torch
from spc.torch import PrunedLinear

PATTERNS = {
    "50%": {"sparsity": 0.5},
    "70%": {"sparsity": 0.7},
    "90%": {"sparsity": 0.9},
    "2:4": {"n_m": (2, 4)},
    "16x16 blocks, 50%": {"block": (16, 16), "sparsity": 0.5},
    "16x16 blocks, 90%": {"block": (16, 16), "sparsity": 0.9},
}
VARIANTS = ("masked", "spc", "torch.sparse")
METHODS = ("calibrated", "magnitude")


def spc_format(pattern: dict, choice: str) -> str:
    """The format ``SparseLinear`` computes in: ``choice`` itself, or for ``"auto"`` the
    one that fits the pattern (``bsr(r,c)`` for blocks, ``nm(n,m)`` for N:M, csr)."""
    if choice != "auto":
        return choice
    if "block" in pattern:
        return "bsr({},{})".format(*pattern["block"])
    if "n_m" in pattern:
        return "nm({},{})".format(*pattern["n_m"])
    return "csr"


def torch_layout(pattern: dict, device: torch.device, dtype: torch.dtype) -> str:
    """The torch.sparse layout tried first for ``pattern``: ``"semi-structured"`` for 2:4 on
    CUDA in 16-bit types (torch's 2:4 kernels), ``"bsr"`` for blocks, else ``"csr"``."""
    if pattern.get("n_m") == (2, 4) and device.type == "cuda" and \
            dtype in (torch.float16, torch.bfloat16):
        return "semi-structured"
    return "bsr" if "block" in pattern else "csr"


class TorchSparseLinear(nn.Module):
    """``y = x @ W.T + bias`` with W a torch sparse tensor: ``torch.sparse.mm(W, x.T)``
    for CSR and BSR; ``F.linear`` for torch's semi-structured 2:4 tensor (its
    documented use).  ``layout`` says which one runs: where torch refuses the
    preferred layout for this device and type (BSR or 2:4 kernels missing), the
    weight is held as CSR instead."""

    def __init__(self, weight: Tensor, bias: Tensor | None, layout: str,
                 block: tuple[int, int] | None = None):
        super().__init__()
        self.bias = bias
        self.layout, self.weight = "csr", weight.to_sparse_csr()
        if layout != "csr":
            try:
                self.layout, self.weight = layout, self._convert(weight, layout, block)
                with torch.no_grad():          # batch x tokens x features, odd sizes
                    self(torch.zeros(2, 13, weight.shape[1], device=weight.device,
                                     dtype=weight.dtype))
            except (RuntimeError, NotImplementedError, TypeError, ValueError) as refused:
                self.refused = f"{layout}: {str(refused).splitlines()[0][:80]}"
                self.layout, self.weight = "csr", weight.to_sparse_csr()

    @staticmethod
    def _convert(weight: Tensor, layout: str, block):
        if layout == "semi-structured":
            return torch.sparse.to_sparse_semi_structured(weight)
        if layout == "bsr":
            return weight.to_sparse_bsr(block)
        return weight.to_sparse_csr()

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "semi-structured":
            return F.linear(x, self.weight, self.bias)
        y = torch.sparse.mm(self.weight, x.reshape(-1, x.shape[-1]).t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


def magnitude_pruned(linear: nn.Linear, pattern: dict) -> PrunedLinear:
    """``linear``'s weight zeroed outside ``spc.torch.prune``'s mask; the bias kept."""
    mask = spc.torch.prune(linear.weight, **pattern)
    return PrunedLinear(linear.weight.detach() * mask,
                        None if linear.bias is None else linear.bias.detach(), mask)


def prune_model(model: nn.Module, pattern: dict, method: str = "magnitude",
                calibrate=None, log=None) -> dict[str, PrunedLinear]:
    """Every ``nn.Linear`` of ``model`` pruned by ``method`` (one of ``METHODS``), by
    ``named_modules`` name.  ``"calibrated"`` needs ``calibrate(model)`` (see
    ``calibration.py``) and uses ``spc.torch.prune_calibrated``'s defaults (SparseGPT),
    with each layer's ``attn_out`` and ``ffn_out`` also cancelling the error of the
    residual stream they are added to (``MiniLM.residual_sums``)."""
    if method == "magnitude":
        return {n: magnitude_pruned(m, pattern) for n, m in model.named_modules()
                if isinstance(m, nn.Linear)}
    if method != "calibrated":
        raise ValueError(f"unknown pruning method {method!r}; one of {METHODS}")
    residual = model.residual_sums() if hasattr(model, "residual_sums") else None
    return spc.torch.prune_calibrated(model, calibrate, residual_into=residual, log=log,
                                      **pattern)


def sparse_linear(pruned: PrunedLinear, variant: str, pattern: dict,
                  fmt: str = "csr") -> nn.Module:
    """The pruned linear run as ``variant`` (one of ``VARIANTS``; spc's with the weight
    in ``fmt``, storing exactly the mask's entries)."""
    w = pruned.weight.detach()
    if variant == "masked":
        out = nn.Linear(w.shape[1], w.shape[0], bias=pruned.bias is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out.weight.copy_(w)
            if pruned.bias is not None:
                out.bias.copy_(pruned.bias)
        return out
    if variant == "spc":
        return spc.torch.SparseLinear.from_pruned(pruned, fmt=fmt)
    if variant == "torch.sparse":
        layout = torch_layout(pattern, w.device, w.dtype)
        return TorchSparseLinear(w, pruned.bias, layout, pattern.get("block"))
    raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")


def sparsify(model: nn.Module, variant: str, pattern: dict, fmt: str = "csr",
             pruned: dict[str, PrunedLinear] | None = None) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by ``sparse_linear`` of its
    ``pruned`` entry (by ``named_modules`` name; default: ``prune_model`` by magnitude)."""
    pruned = pruned if pruned is not None else prune_model(model, pattern)
    model = copy.deepcopy(model)
    targets = [(name, child) for name, child in model.named_modules()
               if isinstance(child, nn.Linear)]
    for name, child in targets:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr,
                sparse_linear(pruned[name], variant, pattern, fmt))
    return model


def torch_sparse_layout(model: nn.Module) -> str:
    """The layouts the ``TorchSparseLinear`` modules of ``model`` run, and why torch
    refused the one tried first, if it did."""
    mods = [m for m in model.modules() if isinstance(m, TorchSparseLinear)]
    layouts = sorted({m.layout for m in mods})
    refused = sorted({m.refused for m in mods if hasattr(m, "refused")})
    return "/".join(layouts) + (f" (refused {'; '.join(refused)})" if refused else "")
