"""Sparse attention on the GPU: spc's ``attention`` program against torch's sparse
path, dense SDPA with a boolean mask, and FlexAttention with a block mask.

    python benchmarks/bench_attention_gpu.py [--lengths 2048,4096,8192] [--d 64]
                                             [--dtype float32] [--no-flex] [--reps 20]

``spc`` is the default (the scores in memory between two kernels,
``fuse="rows"``); ``spc-fused`` is ``fuse=True`` (one kernel, the scores
recomputed in each of the row's loops).
Masks: BigBird-like blocks of 64 (a window of 3 block diagonals, 2 global block
columns and rows, 3 random blocks per block row) and a sliding window
|i - j| <= 128.  Every system's output is checked against a float64 dense
masked softmax before it is timed; times are medians of CUDA-event-timed
calls (the caller's view, default settings), one head.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402


# spc: the default (fuse="rows": the scores kernel, then one kernel for the
# softmax and the product); spc-fused: fuse=True (one kernel, scores recomputed, never stored)
COLUMNS = ("spc", "spc-fused", "torch.sparse", "sdpa-mask", "flex")


def bigbird(L: int, block: int = 64, seed: int = 0) -> np.ndarray:
    nb = L // block
    rng = np.random.default_rng(seed)
    keep = np.zeros((nb, nb), dtype=bool)
    for r in range(nb):
        keep[r, max(0, r - 1):r + 2] = True
        keep[r, rng.choice(nb, size=min(3, nb), replace=False)] = True
    keep[:, :2] = True
    keep[:2, :] = True
    return np.kron(keep, np.ones((block, block), dtype=bool))


def window(L: int, w: int = 128) -> np.ndarray:
    idx = np.arange(L)
    return np.abs(idx[:, None] - idx[None, :]) <= w


def timed(torch, fn, reps: int) -> float:
    """Median seconds of one call between CUDA events, after one warm-up call."""
    return statistics.median(common.cuda_event_times(torch, fn, reps, warmup=1))


def profile(torch, fn, calls: int = 5) -> None:
    """Print the device time per call of each kernel ``fn`` launches, and its host time."""
    import time
    from torch.profiler import ProfilerActivity, profile as prof
    fn()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        host = (time.perf_counter() - t) / calls
        torch.cuda.synchronize()
    rows = sorted(((e.key, e.device_time_total / calls) for e in p.key_averages()
                   if e.device_time_total > 0), key=lambda r: -r[1])
    print(f"    spc host {host * 1e3:.3f} ms/call; device per call: " + "; ".join(
        f"{k[:40]} {us:.1f} us" for k, us in rows[:8]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="2048,4096,8192")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="also print spc's kernels' device times per call (torch.profiler)")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    import spc
    dev, dt = "cuda", getattr(torch, args.dtype)
    att = spc.compile("attention", fmt="csr", target="cuda")          # the default
    att_fused = spc.compile("attention", fmt="csr", target="cuda", fuse=True)   # one kernel
    flex = None
    if not args.no_flex:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            flex = torch.compile(flex_attention)
        except Exception as err:  # noqa: BLE001 - FlexAttention is optional
            print(f"(no FlexAttention: {type(err).__name__}: {err})")
    print(f"{'mask':9s} {'L':>5s} {'density':>7s}  " + "  ".join(
        f"{s:>12s}" for s in COLUMNS) + "   (ms, caller view: CUDA events, median; error)")
    for L in [int(x) for x in args.lengths.split(",")]:
        for name, mask in (("bigbird", bigbird(L)), ("window", window(L))):
            g = torch.Generator(device=dev).manual_seed(0)
            Q, K, V = (torch.randn(L, args.d, device=dev, generator=g, dtype=dt)
                       for _ in range(3))
            scale = 1 / math.sqrt(args.d)
            mask_t = torch.from_numpy(mask).to(dev)
            rows, cols = np.nonzero(mask)
            crow = torch.from_numpy(np.concatenate(([0], np.cumsum(mask.sum(1))))).to(dev)
            A = torch.sparse_csr_tensor(crow.int(), torch.from_numpy(cols).int().to(dev),
                                        torch.ones(len(cols), device=dev, dtype=dt), (L, L))
            S = (Q.double() @ K.double().T) * scale
            S = S.masked_fill(~mask_t, float("-inf"))
            ref = torch.softmax(S, dim=1).nan_to_num(0.0) @ V.double()

            def torch_sparse():
                s = torch.sparse.sampled_addmm(A, Q, K.T, beta=0.0, alpha=scale)
                p = torch.sparse.softmax(s.to_sparse_coo(), dim=1)
                return torch.sparse.mm(p, V)

            systems = {"spc": lambda: att(A, Q, K, V, scale),
                       "spc-fused": lambda: att_fused(A, Q, K, V, scale),
                       "torch.sparse": torch_sparse,
                       "sdpa-mask": lambda: F.scaled_dot_product_attention(
                           Q[None, None], K[None, None], V[None, None], attn_mask=mask_t,
                           scale=scale)[0, 0]}
            if flex is not None:
                def mask_mod(b, h, q, kv, m=mask_t):
                    return m[q, kv]
                try:
                    bm = create_block_mask(mask_mod, None, None, L, L, device=dev)
                    systems["flex"] = lambda: flex(Q[None, None], K[None, None], V[None, None],
                                                   block_mask=bm, scale=scale)[0, 0]
                except Exception as err:  # noqa: BLE001
                    print(f"(flex failed: {type(err).__name__}: {str(err)[:200]})")
            cells = []
            for s in COLUMNS:
                fn = systems.get(s)
                if fn is None:
                    cells.append(f"{'-':>12s}")
                    continue
                try:
                    out = fn()
                    err = float((out.double() - ref).abs().max())
                    t = timed(torch, fn, args.reps)
                    cells.append(f"{t * 1e3:7.3f}/{err:.0e}")
                except Exception as e:  # noqa: BLE001 - report and go on
                    cells.append(f"{'fail':>12s}")
                    print(f"  {s}: {type(e).__name__}: {str(e)[:300]}")
            print(f"{name:9s} {L:5d} {mask.mean():7.3f}  " + "  ".join(cells), flush=True)
            if args.profile:
                profile(torch, systems["spc"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
