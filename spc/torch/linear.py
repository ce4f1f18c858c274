"""``SparseLinear``: a drop-in ``nn.Linear`` whose weight is sparse, held as CSR arrays.

    layer = spc.torch.SparseLinear.from_dense(nn.Linear(512, 256), sparsity=0.9)
    layer = spc.torch.SparseLinear.from_dense(linear, n_m=(2, 4))       # 2 of every 4
    layer = spc.torch.SparseLinear.from_dense(linear, block=(16, 16), sparsity=0.75)

The weight's pattern (``crow``, ``col``) is a pair of buffers and its values
(``vals``) a parameter, so ``state_dict`` holds all three, ``.to(device)`` moves
them, training updates the kept values, and ``torch.compile(fullgraph=True)``
compiles the forward (``torch.ops.spc.spmm_csr``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..formats.composite import resolve_sum_format
from ..formats.format import resolve_format
from .ops import direct_call_ok, spmm_csr, spmm_csr_as, spmm_direct

PAD_COLUMNS = 16      # the CPU forward pads the batch (SpMM columns) to a multiple of this


def prune(weight: Tensor, *, sparsity: float | None = None, n_m: tuple[int, int] | None = None,
          block: tuple[int, int] | None = None) -> Tensor:
    """A boolean mask of the entries of ``weight`` (out x in) to keep, by magnitude:
    ``n_m=(n, m)``: the n largest of every m consecutive inputs of each output
    (``in`` a multiple of m); ``block=(r, c)``: the blocks of largest norm,
    ``1 - sparsity`` of them (the shape a multiple of the block); else the
    ``1 - sparsity`` largest entries.  Ties keep the lower index."""
    w = weight.detach().abs()
    out_f, in_f = w.shape
    if n_m is not None:
        if sparsity is not None or block is not None:
            raise ValueError("prune: n_m fixes the sparsity; give no sparsity or block")
        n, m = n_m
        if not 0 < n <= m or in_f % m:
            raise ValueError(f"prune: n_m=({n}, {m}) needs 0 < n <= m and in_features "
                             f"({in_f}) a multiple of m")
        groups = w.reshape(out_f, in_f // m, m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(2, groups.topk(n, dim=2).indices, True)
        return keep.reshape(out_f, in_f)
    if sparsity is None or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"prune: sparsity must be in [0, 1), not {sparsity!r}")
    if block is not None:
        r, c = block
        if out_f % r or in_f % c:
            raise ValueError(f"prune: the weight's shape {tuple(w.shape)} is not a multiple "
                             f"of the block {block}")
        norms = w.reshape(out_f // r, r, in_f // c, c).pow(2).sum(dim=(1, 3))
        keep = _largest(norms, 1.0 - sparsity)
        return keep.repeat_interleave(r, 0).repeat_interleave(c, 1)
    return _largest(w, 1.0 - sparsity)


def _largest(x: Tensor, fraction: float) -> Tensor:
    count = max(1, round(fraction * x.numel())) if x.numel() else 0
    keep = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
    keep[x.flatten().topk(count).indices] = True
    return keep.reshape(x.shape)


class SparseLinear(nn.Module):
    """``y = x @ W.T + bias`` with W (``out_features`` x ``in_features``) sparse: CSR
    arrays ``crow``, ``col`` (buffers) and ``vals`` (a parameter).  The forward runs
    spc's SpMM with W in ``fmt`` (``"csr"``, or any spc format: ``"bsr(16,16)"``,
    ``"nm(2,4)"``, ``"ell"``..., converted from the arrays once while they are
    unchanged); the arrays, the state_dict and the gradients stay CSR's."""

    def __init__(self, in_features: int, out_features: int, crow: Tensor, col: Tensor,
                 vals: Tensor, bias: Tensor | None = None, *, fmt: str = "csr"):
        super().__init__()
        if resolve_sum_format(fmt) is None:
            resolve_format(fmt, 2, what="SparseLinear's weight")   # FormatError if unknown
        self.fmt = fmt
        if crow.shape != (out_features + 1,) or col.shape != vals.shape:
            raise ValueError(f"SparseLinear: crow must have out_features + 1 = "
                             f"{out_features + 1} entries and col as many as vals")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("crow", crow.clone())
        self.register_buffer("col", col.clone())
        self.vals = nn.Parameter(vals.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, sparsity: float | None = None,
                   n_m: tuple[int, int] | None = None, block: tuple[int, int] | None = None,
                   fmt: str = "csr") -> "SparseLinear":
        """``linear`` with its weight pruned by magnitude (see ``prune``); bias kept;
        same device and dtype; the forward in ``fmt``."""
        w = linear.weight.detach()
        mask = prune(w, sparsity=sparsity, n_m=n_m, block=block)
        return cls.from_mask(w, mask, linear.bias, fmt=fmt)

    @classmethod
    def from_mask(cls, weight: Tensor, mask: Tensor, bias: Tensor | None = None, *,
                  fmt: str = "csr") -> "SparseLinear":
        """The linear of an already pruned ``weight`` (out x in): exactly the entries
        where the boolean ``mask`` is True are stored (a kept entry that is zero stays
        stored, so the pattern is the mask's, e.g. whole blocks or N:M groups); ``bias``
        as given; the forward in ``fmt``.  ``from_pruned(p)`` takes a
        ``prune_calibrated`` result."""
        w = weight.detach()
        if mask.shape != w.shape or mask.dtype != torch.bool:
            raise ValueError(f"SparseLinear.from_mask: the mask must be a boolean tensor "
                             f"of the weight's shape {tuple(w.shape)}, not {mask.dtype} "
                             f"{tuple(mask.shape)}")
        rows, cols = mask.to(w.device).nonzero(as_tuple=True)   # row-major: CSR order
        crow = torch.zeros(w.shape[0] + 1, dtype=torch.int64, device=w.device)
        crow[1:] = torch.bincount(rows, minlength=w.shape[0]).cumsum(0)
        return cls(w.shape[1], w.shape[0], crow, cols, w[rows, cols], bias, fmt=fmt)

    @classmethod
    def from_pruned(cls, pruned, *, fmt: str = "csr") -> "SparseLinear":
        """The linear of a ``spc.torch.PrunedLinear`` (``weight``, ``bias``, ``mask``), as
        ``from_mask``."""
        return cls.from_mask(pruned.weight, pruned.mask, pruned.bias, fmt=fmt)

    @property
    def nnz(self) -> int:
        return self.vals.numel()

    def weight(self) -> Tensor:
        """The weight as a torch sparse CSR tensor (sharing this module's arrays)."""
        return torch.sparse_csr_tensor(self.crow, self.col, self.vals,
                                       (self.out_features, self.in_features))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        cols = x.reshape(-1, self.in_features).t()                     # in x batch
        n = cols.shape[1]
        # spc's CPU SpMM sums B's columns in register tiles of 256, 128, ..., 2, 1
        # columns, each walking A's row once: 9 to 15 columns take 2 to 4 walks where
        # 16 take one (a 1536 x 384 weight at 50%: 405-790 us against 220 us for 16,
        # one thread, 2026-11-29); so the batch is padded with zero columns to a
        # multiple of PAD_COLUMNS there
        padded = -(-n // PAD_COLUMNS) * PAD_COLUMNS if x.device.type == "cpu" else n
        cols = F.pad(cols, (0, padded - n)) if padded != n else cols.contiguous()
        if direct_call_ok(x, self.vals):    # inference: no operator machinery
            y = spmm_direct(self.crow, self.col, self.vals, self.in_features, cols, self.fmt)
        elif self.fmt == "csr":
            y = spmm_csr(self.crow, self.col, self.vals, self.in_features, cols)
        else:
            y = spmm_csr_as(self.crow, self.col, self.vals, self.in_features, cols, self.fmt)
        y = y[:, :n].t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.nnz}, bias={self.bias is not None}, fmt={self.fmt!r}")


__all__ = ["SparseLinear", "prune"]
