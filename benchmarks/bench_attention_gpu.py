"""Sparse attention on the GPU: spc's ``attention`` program against torch's sparse
path, dense SDPA with a boolean mask, and FlexAttention with a block mask.

    python benchmarks/bench_attention_gpu.py [--lengths 2048,4096,8192] [--d 64]
                                             [--dtype float32] [--no-flex] [--reps 20]
                                             [--heads 1]

``spc`` is the default (the scores in memory between two kernels,
``fuse="rows"``); ``spc-fused`` is ``fuse=True`` (one kernel, the scores
computed where read, never stored).  Both walk each row's entries once
(``passes/online_softmax``: running max and sum).
Masks: BigBird-like blocks of 64 (a window of 3 block diagonals, 2 global block
columns and rows, 3 random blocks per block row) and a sliding window
|i - j| <= 128.  Every system's output is checked against a float64 dense
masked softmax before it is timed; times are medians of CUDA-event-timed
calls (the caller's view, default settings).  ``--heads`` H (1 to 16) heads share
the mask: with H > 1 the operands are (H, L, d), spc runs every head in one call
(one kernel per statement, warps over (head, row) pairs), ``spc-per-head`` makes
H single-head calls, ``spc-dds`` is one call of the heads program with the scores
stored per head as dds and assembled (the layout before the scores became a
batch of the mask's pattern, ``formats.batched``; still the CPU's), ``torch.sparse`` loops over the heads (its sampled product
and softmax take one CSR matrix per call), SDPA and FlexAttention take the heads
batched, (1, H, L, d).
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
# softmax and the product, one walk per row); spc-fused: fuse=True (one kernel, each score
# computed once, never stored)
COLUMNS = ("spc", "spc-fused", "spc-per-head", "spc-dds", "torch.sparse", "sdpa-mask", "flex")


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
    ap.add_argument("--heads", type=int, default=1, help="heads sharing the mask (1 to 16)")
    ap.add_argument("--profile", action="store_true",
                    help="also print spc's kernels' device times per call (torch.profiler)")
    args = ap.parse_args(argv)
    if not 1 <= args.heads <= 16:
        ap.error("--heads takes 1 to 16")
    H = args.heads
    import torch
    import torch.nn.functional as F

    import spc
    dev, dt = "cuda", getattr(torch, args.dtype)
    att = spc.compile("attention", fmt="csr", target="cuda")          # the default
    att_fused = spc.compile("attention", fmt="csr", target="cuda", fuse=True)   # one kernel
    dds_programs: dict = {}

    def dds_heads(scale: float):
        """The heads program with the scores stored per head as dds (assembled)."""
        if scale not in dds_programs:
            from spc.api import HEADS_PROGRAMS
            dds_programs[scale] = spc.compile(
                HEADS_PROGRAMS["attention"][0].format(scale=repr(float(scale))),
                formats={"A": "csr", "S": "dds"}, target="cuda")
        return dds_programs[scale]
    flex = None
    if not args.no_flex:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            flex = torch.compile(flex_attention)
        except Exception as err:  # noqa: BLE001 - FlexAttention is optional
            print(f"(no FlexAttention: {type(err).__name__}: {err})")
    print(f"heads: {H}")
    print(f"{'mask':9s} {'L':>5s} {'density':>7s}  " + "  ".join(
        f"{s:>12s}" for s in COLUMNS) + "   (ms, caller view: CUDA events, median; error)")
    for L in [int(x) for x in args.lengths.split(",")]:
        for name, mask in (("bigbird", bigbird(L)), ("window", window(L))):
            g = torch.Generator(device=dev).manual_seed(0)
            shape = (L, args.d) if H == 1 else (H, L, args.d)
            Q, K, V = (torch.randn(*shape, device=dev, generator=g, dtype=dt)
                       for _ in range(3))
            batched = [x.reshape(1, H, L, args.d) for x in (Q, K, V)]
            scale = 1 / math.sqrt(args.d)
            mask_t = torch.from_numpy(mask).to(dev)
            rows, cols = np.nonzero(mask)
            crow = torch.from_numpy(np.concatenate(([0], np.cumsum(mask.sum(1))))).to(dev)
            A = torch.sparse_csr_tensor(crow.int(), torch.from_numpy(cols).int().to(dev),
                                        torch.ones(len(cols), device=dev, dtype=dt), (L, L))
            S = (Q.double() @ K.double().transpose(-1, -2)) * scale
            S = S.masked_fill(~mask_t, float("-inf"))
            ref = torch.softmax(S, dim=-1).nan_to_num(0.0) @ V.double()

            def one_head(q, k, v):
                s = torch.sparse.sampled_addmm(A, q, k.T, beta=0.0, alpha=scale)
                p = torch.sparse.softmax(s.to_sparse_coo(), dim=1)
                return torch.sparse.mm(p, v)

            def torch_sparse():
                if H == 1:
                    return one_head(Q, K, V)
                return torch.stack([one_head(Q[h], K[h], V[h]) for h in range(H)])

            systems = {"spc": lambda: att(A, Q, K, V, scale),
                       "spc-fused": lambda: att_fused(A, Q, K, V, scale),
                       "torch.sparse": torch_sparse,
                       "sdpa-mask": lambda: F.scaled_dot_product_attention(
                           *batched, attn_mask=mask_t, scale=scale).reshape(ref.shape)}
            if H > 1:
                systems["spc-per-head"] = lambda: torch.stack(
                    [att(A, Q[h], K[h], V[h], scale) for h in range(H)])
                systems["spc-dds"] = lambda: dds_heads(scale)(A=A, Q=Q, K=K, V=V)
            if flex is not None:
                def mask_mod(b, h, q, kv, m=mask_t):
                    return m[q, kv]
                try:
                    bm = create_block_mask(mask_mod, None, None, L, L, device=dev)
                    systems["flex"] = lambda: flex(*batched, block_mask=bm,
                                                   scale=scale).reshape(ref.shape)
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
                if H > 1:
                    print("  spc-dds:")
                    profile(torch, systems["spc-dds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
