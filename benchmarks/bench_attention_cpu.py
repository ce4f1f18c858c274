"""Sparse attention on the CPU: spc's ``attention`` program against torch's sparse
path and dense ``scaled_dot_product_attention`` with a boolean mask.

    python benchmarks/bench_attention_cpu.py [--lengths 1024,2048] [--d 64] [--reps 5]
                                             [--heads 1]

Masks as in ``bench_attention_gpu.py`` (BigBird-like blocks of 64, a sliding
window |i - j| <= 128), float32, ``--heads`` heads (1 to 16) sharing the mask.
Every system's output is checked against a float64 dense masked softmax (per
head) before it is timed; times are medians of ``--reps`` calls after one
warm-up call (the caller's view, default settings).  ``spc`` is the default
(the scores stored between two kernels, ``fuse="rows"``); ``spc-fused`` is one
kernel, the scores computed where read (``fuse=True``); both walk each row's entries
once (``passes/online_softmax``: running max and sum).  With one head the
operands are (L, d); with H > 1 they are (H, L, d) and spc runs every head in
one call (one kernel per statement), ``spc-per-head`` makes H single-head calls
of the default program, ``spc-batched`` one call with the scores a batch of the
mask's pattern (``formats.batched``, the GPU's layout; the CPU stores them per
head as dds), ``torch.sparse`` loops over the heads (its sampled
product and softmax take one CSR matrix per call) and ``sdpa-mask`` takes the
heads batched, (1, H, L, d).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402
from bench_attention_gpu import bigbird, window  # noqa: E402

COLUMNS = ("spc", "spc-fused", "spc-per-head", "spc-batched", "torch.sparse", "sdpa-mask")


def reference(mask: np.ndarray, Q, K, V, scale: float) -> np.ndarray:
    """The float64 dense masked softmax of one head (rows without entries: 0)."""
    S = (Q.astype(np.float64) @ K.T.astype(np.float64)) * scale
    S = np.where(mask, S, -np.inf)
    m = S.max(1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    E = np.where(mask, np.exp(S - m), 0.0)
    return (E / np.maximum(E.sum(1, keepdims=True), 1e-300)) @ V.astype(np.float64)


def timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls timed call by call, after one warm-up call."""
    return statistics.median(common.call_times(fn, min_repeats=reps, warmup=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1024,2048")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--heads", type=int, default=1, help="heads sharing the mask (1 to 16)")
    args = ap.parse_args(argv)
    if not 1 <= args.heads <= 16:
        ap.error("--heads takes 1 to 16")
    H = args.heads
    import spc
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    att = spc.compile("attention", fmt="csr")
    att_fused = spc.compile("attention", fmt="csr", fuse=True)
    from spc.api import HEADS_PROGRAMS
    from spc.formats.format import batched, resolve_format

    def batched_heads(scale: float):
        """The heads program with the scores a batch of the mask's pattern (the GPU's
        layout, formats.batched) instead of the CPU's dds."""
        return spc.compile(HEADS_PROGRAMS["attention"][0].format(scale=repr(float(scale))),
                           formats={"A": "csr", "S": batched(resolve_format("csr", 2))})
    print(f"heads: {H}")
    print(f"{'mask':9s} {'L':>5s} {'density':>7s}  " + "  ".join(f"{s:>14s}" for s in COLUMNS)
          + "   (ms / max error)")
    for L in [int(x) for x in args.lengths.split(",")]:
        for name, mask in (("bigbird", bigbird(L)), ("window", window(L))):
            rng = np.random.default_rng(0)
            shape = (L, args.d) if H == 1 else (H, L, args.d)
            Q, K, V = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
            scale = 1 / math.sqrt(args.d)
            A = sp.csr_matrix(mask.astype(np.float32))
            ref = reference(mask, Q, K, V, scale) if H == 1 else np.stack(
                [reference(mask, Q[h], K[h], V[h], scale) for h in range(H)])
            systems = {"spc": lambda: att(A, Q, K, V, scale),
                       "spc-fused": lambda: att_fused(A, Q, K, V, scale)}
            if H > 1:
                systems["spc-per-head"] = lambda: np.stack(
                    [att(A, Q[h], K[h], V[h], scale) for h in range(H)])
                batched_scores = batched_heads(scale)
                systems["spc-batched"] = lambda: batched_scores(A=A, Q=Q, K=K, V=V)
            if torch is not None:
                Qt, Kt, Vt = (torch.from_numpy(x) for x in (Q, K, V))
                At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr).long(),
                                             torch.from_numpy(A.indices).long(),
                                             torch.from_numpy(A.data), (L, L))
                mt = torch.from_numpy(mask)

                def one_head(q, k, v):
                    s = torch.sparse.sampled_addmm(At, q, k.T, beta=0.0, alpha=scale)
                    p = torch.sparse.softmax(s.to_sparse_coo(), dim=1)
                    return torch.sparse.mm(p, v)

                def torch_sparse():
                    if H == 1:
                        return one_head(Qt, Kt, Vt)
                    return torch.stack([one_head(Qt[h], Kt[h], Vt[h]) for h in range(H)])

                systems["torch.sparse"] = torch_sparse
                systems["sdpa-mask"] = lambda: F.scaled_dot_product_attention(
                    Qt.reshape(1, H, L, args.d), Kt.reshape(1, H, L, args.d),
                    Vt.reshape(1, H, L, args.d), attn_mask=mt,
                    scale=scale).reshape(ref.shape)
            cells = []
            for s in COLUMNS:
                fn = systems.get(s)
                if fn is None:
                    cells.append(f"{'-':>14s}")
                    continue
                try:
                    out = fn()
                    out = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
                    err = float(np.abs(out.astype(np.float64) - ref).max())
                    cells.append(f"{timed(fn, args.reps) * 1e3:8.2f}/{err:.0e}")
                except Exception as e:  # noqa: BLE001 - report and go on
                    cells.append(f"{'fail':>14s}")
                    print(f"  {s}: {type(e).__name__}: {str(e)[:200]}")
            print(f"{name:9s} {L:5d} {mask.mean():7.3f}  " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
