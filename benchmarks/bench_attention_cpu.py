"""Sparse attention on the CPU: spc's ``attention`` program against torch's sparse
path and dense ``scaled_dot_product_attention`` with a boolean mask.

    python benchmarks/bench_attention_cpu.py [--lengths 1024,2048] [--d 64] [--reps 5]

Masks as in ``bench_attention_gpu.py`` (BigBird-like blocks of 64, a sliding
window |i - j| <= 128), one head, float32.  Every system's output is checked
against a float64 dense masked softmax before it is timed; times are medians
of ``--reps`` calls after one warm-up call (the caller's view, default
settings).  ``spc`` is the default (the scores stored between two kernels,
``fuse="rows"``); ``spc-fused`` is one kernel, the scores recomputed where
read (``fuse=True``).
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

COLUMNS = ("spc", "spc-fused", "torch.sparse", "sdpa-mask")


def timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls timed call by call, after one warm-up call."""
    return statistics.median(common.call_times(fn, min_repeats=reps, warmup=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1024,2048")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    import spc
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    att = spc.compile("attention", fmt="csr")
    att_fused = spc.compile("attention", fmt="csr", fuse=True)
    print(f"{'mask':9s} {'L':>5s} {'density':>7s}  " + "  ".join(f"{s:>14s}" for s in COLUMNS)
          + "   (ms / max error)")
    for L in [int(x) for x in args.lengths.split(",")]:
        for name, mask in (("bigbird", bigbird(L)), ("window", window(L))):
            rng = np.random.default_rng(0)
            Q, K, V = (rng.standard_normal((L, args.d)).astype(np.float32) for _ in range(3))
            scale = 1 / math.sqrt(args.d)
            A = sp.csr_matrix(mask.astype(np.float32))
            S = (Q.astype(np.float64) @ K.T.astype(np.float64)) * scale
            S = np.where(mask, S, -np.inf)
            m = S.max(1, keepdims=True)
            E = np.where(mask, np.exp(S - m), 0.0)
            ref = (E / E.sum(1, keepdims=True)) @ V.astype(np.float64)
            systems = {"spc": lambda: att(A, Q, K, V, scale),
                       "spc-fused": lambda: att_fused(A, Q, K, V, scale)}
            if torch is not None:
                Qt, Kt, Vt = (torch.from_numpy(x) for x in (Q, K, V))
                At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr).long(),
                                             torch.from_numpy(A.indices).long(),
                                             torch.from_numpy(A.data), (L, L))
                mt = torch.from_numpy(mask)

                def torch_sparse():
                    s = torch.sparse.sampled_addmm(At, Qt, Kt.T, beta=0.0, alpha=scale)
                    p = torch.sparse.softmax(s.to_sparse_coo(), dim=1)
                    return torch.sparse.mm(p, Vt)

                systems["torch.sparse"] = torch_sparse
                systems["sdpa-mask"] = lambda: F.scaled_dot_product_attention(
                    Qt[None, None], Kt[None, None], Vt[None, None], attn_mask=mt,
                    scale=scale)[0, 0]
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
