"""One layer's calibrated pruning: choose a mask and refit the kept weights so that the
layer's output on calibration inputs changes as little as possible.

The layer is ``y = W x`` with ``x`` augmented by a constant 1 (the bias is W's last
column and is never pruned).  The statistics are ``H = sum x xᵀ`` over the inputs the
layer sees in the already pruned model and ``C = sum x tᵀ`` against the outputs ``t`` it
should give there (the dense model's output of the layer, possibly plus a correction, see
``calibrated.py``), so the loss of a weight ``w`` (one output row, target ``t_o``) is

    sum (w·x - t_o)² + damp·||w - w0||²  =  (w - w*)ᵀ Hd (w - w*) + const,
    Hd = H + damp·I,   w* = Hd⁻¹ (C_o + damp·w0)

(``w0`` the dense row, ``w*`` the best dense row for the pruned inputs).  Both methods
minimize that quadratic under the pattern:

* ``"sparsegpt"`` (Frantar and Alistarh, 2023): columns left to right in chunks; the
  mask of a chunk is chosen by ``w²/[Hd⁻¹]ᵢᵢ`` when the sweep reaches it, and each
  pruned weight's error is pushed onto the columns not yet visited (the OBS update);
* ``"wanda"`` (Sun et al., 2023, scores ``|w|·sqrt(Hᵢᵢ)``) followed by the exact
  minimizer on the kept entries of each row: ``Hd[S,S] w_S = (Hd w*)[S]``.

Patterns (as ``spc.torch.prune``'s keywords): ``sparsity=s``: each output row keeps
``in - round(s·in)`` inputs; ``n_m=(n, m)``: n of every m consecutive inputs of each
row; ``block=(r, c), sparsity=s``: each band of r rows keeps whole r x c blocks,
``in/c - round(s·in/c)`` of them.  The counts per row (or band) are exact, so every
row is equally sparse.  With ``balance="layer"`` (unstructured only) the count is exact
for the layer instead, ``round(s·out·in)``, and rows differ: SparseGPT's own rule, which
keeps more of the rows that matter more (each 128-column chunk prunes its share of the
whole layer's count).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError

METHODS = ("sparsegpt", "wanda")
BALANCES = ("row", "layer")
CHUNK = 128          # SparseGPT's column chunk (rounded up to whole N:M groups or blocks)


def check_pattern(shape: tuple[int, int], *, sparsity=None, n_m=None, block=None,
                  balance: str = "row") -> None:
    """Raise ``InputError`` naming the problem unless the pattern fits an out x in weight."""
    out_f, in_f = shape
    if balance not in BALANCES:
        raise InputError(f"calibrated pruning: balance must be one of {BALANCES}, "
                         f"not {balance!r}")
    if balance == "layer" and (n_m is not None or block is not None):
        raise InputError("calibrated pruning: balance='layer' is for unstructured "
                         "sparsity; N:M and block patterns fix the count per row or band")
    if n_m is not None:
        if sparsity is not None or block is not None:
            raise InputError("calibrated pruning: n_m fixes the sparsity; give no sparsity "
                             "or block")
        n, m = n_m
        if not 0 < n <= m or in_f % m:
            raise InputError(f"calibrated pruning: n_m=({n}, {m}) needs 0 < n <= m and "
                             f"in_features ({in_f}) a multiple of m")
        return
    if sparsity is None or not 0.0 <= sparsity < 1.0:
        raise InputError(f"calibrated pruning: sparsity must be in [0, 1), not {sparsity!r}")
    if block is not None:
        r, c = block
        if r < 1 or c < 1 or out_f % r or in_f % c:
            raise InputError(f"calibrated pruning: the weight's shape {tuple(shape)} is not "
                             f"a multiple of the block {tuple(block)}")


def choose_pruned(score: Tensor, first_col: int, in_f: int, *, sparsity=None, n_m=None,
                  block=None, balance: str = "row") -> Tensor:
    """The entries to prune (True) of the columns ``first_col .. first_col + width`` of an
    out x in_f weight, from ``score`` (out x width, low = prune first).

    Requires: the pattern fits (``check_pattern``); ``first_col`` and ``width`` are
    multiples of m (N:M) or of the block width.  Ensures: over any split of the columns
    into such slices, each row (N:M, unstructured) or band of block rows prunes exactly
    the count the pattern gives, or with ``balance="layer"`` the whole weight does; ties
    prune the lower column (then the lower row, for "layer")."""
    out_f, width = score.shape
    if balance == "layer":
        lo, hi = first_col * out_f, (first_col + width) * out_f
        count = round(sparsity * hi) - round(sparsity * lo)   # telescopes to round(s·out·in)
        pruned = torch.zeros(out_f * width, dtype=torch.bool, device=score.device)
        pruned[_lowest(score.T.reshape(-1), count)] = True
        return pruned.reshape(width, out_f).T
    if n_m is not None:
        n, m = n_m
        groups = score.reshape(out_f, width // m, m)
        pruned = torch.zeros_like(groups, dtype=torch.bool)
        pruned.scatter_(2, _lowest(groups, m - n), True)
        return pruned.reshape(out_f, width)
    r, c = block if block is not None else (1, 1)
    tiles = score.reshape(out_f // r, r, width // c, c).sum(dim=(1, 3))
    lo, hi = first_col // c, (first_col + width) // c
    count = round(sparsity * hi) - round(sparsity * lo)       # telescopes to round(s·in/c)
    pruned = torch.zeros_like(tiles, dtype=torch.bool)
    if count:
        pruned.scatter_(1, _lowest(tiles, count), True)
    return pruned.repeat_interleave(r, 0).repeat_interleave(c, 1)


def _lowest(x: Tensor, k: int) -> Tensor:
    """Indices of the k smallest entries along the last dimension, ties to the lower index
    (a stable sort)."""
    return torch.sort(x, dim=-1, stable=True).indices[..., :k]


def damped(H: Tensor, damp: float) -> tuple[Tensor, float]:
    """``H + λI`` with ``λ = damp · mean(diag H)`` (at least 1e-8), and λ."""
    lam = max(damp * H.diagonal().mean().item(), 1e-8)
    return H + lam * torch.eye(H.shape[0], dtype=H.dtype, device=H.device), lam


def best_dense(W0: Tensor, Hd: Tensor, C: Tensor, lam: float) -> Tensor:
    """``w*`` for every row of ``W0`` (out x in+1, float64; ``C`` in+1 x out): the
    unpruned minimizer, ``Hd⁻¹ (C + λ W0ᵀ)`` column by column, as rows."""
    return torch.linalg.solve(Hd, C + lam * W0.T).T


def sparsegpt(Wstar: Tensor, Hd: Tensor, pattern: dict, *, bias: bool = True,
              chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """SparseGPT on ``Wstar`` (out x in+1, the last column the bias; out x in if not
    ``bias``) with Hessian ``Hd``.

    Ensures: the pruned weight (zero where pruned, bias column kept) and the keep mask of
    the ``in`` weight columns, in the pattern."""
    W = Wstar.clone()
    out_f, cols = W.shape
    in_f = cols - 1 if bias else cols
    # the upper Cholesky factor of Hd⁻¹: row i holds the OBS update of column i onto i..
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
    pruned = torch.zeros(out_f, in_f, dtype=torch.bool, device=W.device)
    step = pattern["n_m"][1] if pattern.get("n_m") else None
    unit = step or (pattern["block"][1] if pattern.get("block") else 1)
    chunk = -(-chunk // unit) * unit                  # whole groups or blocks per chunk
    for c0 in range(0, cols, chunk):
        c1 = min(c0 + chunk, cols)
        W1, U1 = W[:, c0:c1].clone(), U[c0:c1, c0:c1]
        err = torch.zeros_like(W1)
        for i in range(c1 - c0):
            col = c0 + i
            if col < in_f and (col - c0) % (step or chunk) == 0:
                width = min(step or chunk, in_f - col)
                d = U1.diagonal()[i: i + width]
                pruned[:, col: col + width] = choose_pruned(
                    W1[:, i: i + width] ** 2 / d ** 2, col, in_f, **pattern)
            w = W1[:, i]
            q = w.masked_fill(pruned[:, col], 0.0) if col < in_f else w
            e = (w - q) / U1[i, i]
            W1[:, i:] -= e[:, None] * U1[i, i:][None, :]
            W1[:, i] = q
            err[:, i] = e
        W[:, c0:c1] = W1
        W[:, c1:] -= err @ U[c0:c1, c1:]
    return W, ~pruned


def wanda_refit(Wstar: Tensor, Hd: Tensor, H: Tensor, pattern: dict, *, bias: bool = True,
                rows_at_once: int = 64) -> tuple[Tensor, Tensor]:
    """Wanda's mask (``|w*|·sqrt(H_ii)``) and the exact minimizer on each row's kept
    entries.  Same contract as ``sparsegpt``."""
    out_f, cols = Wstar.shape
    in_f = cols - 1 if bias else cols
    norms = H.diagonal()[:in_f].clamp(min=0).sqrt()
    keep = ~choose_pruned(Wstar[:, :in_f].abs() * norms, 0, in_f, **pattern)
    keep_all = torch.cat([keep, torch.ones(out_f, cols - in_f, dtype=torch.bool,
                                           device=keep.device)], 1)
    target = Wstar @ Hd                                # row i: (Hd w*_i)ᵀ (Hd symmetric)
    W = torch.zeros_like(Wstar)
    counts = keep_all.sum(1)
    for k in counts.unique().tolist():                 # rows of one count solve together
        rows = (counts == k).nonzero()[:, 0]
        idx = keep_all[rows].nonzero()[:, 1].reshape(len(rows), k)
        for r0 in range(0, len(rows), rows_at_once):
            r, sel = rows[r0: r0 + rows_at_once], idx[r0: r0 + rows_at_once]
            A = Hd[sel[:, :, None], sel[:, None, :]]
            b = target[r].gather(1, sel)
            W[r] = W[r].scatter(1, sel, torch.linalg.solve(A, b))
    return W, keep


def prune_layer(W0: Tensor, H: Tensor, C: Tensor, *, bias: bool = True,
                method: str = "sparsegpt", damp: float = 0.01, **pattern) -> tuple[Tensor, Tensor]:
    """Calibrated pruning of one layer.

    Requires: ``W0`` out x in+1 (weight and bias column; out x in if not ``bias``),
    ``H`` (in+1 x in+1) and ``C`` (in+1 x out) as in the module docstring, all float64.
    Ensures: the pruned weight of W0's shape (zero outside the mask; the bias column
    refitted, never pruned) and the keep mask (out x in, exactly the pattern's counts,
    per row or band, or per layer for ``balance="layer"``)."""
    if method not in METHODS:
        raise InputError(f"calibrated pruning: method must be one of {METHODS}, "
                         f"not {method!r}")
    check_pattern((W0.shape[0], W0.shape[1] - bias), **pattern)
    Hd, lam = damped(H, damp)
    Wstar = best_dense(W0, Hd, C, lam)
    if method == "sparsegpt":
        return sparsegpt(Wstar, Hd, pattern, bias=bias)
    return wanda_refit(Wstar, Hd, H, pattern, bias=bias)
