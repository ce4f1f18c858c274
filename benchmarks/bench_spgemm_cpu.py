"""SpGEMM on the CPU: spc vs scipy vs torch (CPU sparse CSR @ sparse CSR), side by side.

    python benchmarks/bench_spgemm_cpu.py [--max-nnz N] [--repeats R] [--threads T]

Cases from the corpus (``spc.corpus``; skipped when it is absent): graphs A @ A,
DLMC weights W @ Wᵀ (Wᵀ passed as a csr matrix, converted once outside the
timing).  Each system is warmed up once, then timed ``--repeats`` times; the
table shows median milliseconds and spc's speed-up over the best other system.
Every result is checked against scipy's (values, to float32 rounding) before it
is timed.  Inputs are float32.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common                   # noqa: E402
import spc                      # noqa: E402
from spc import corpus          # noqa: E402

SPGEMM = "C[i,j] = A[i,k]*B[k,j]"
CSR3 = {"A": "csr", "B": "csr", "C": "csr"}
DLMC_PICKS = ("transformer/magnitude_pruning/0.7/body_encoder_layer_0_ffn_conv2",
              "transformer/random_pruning/0.9/body_decoder_layer_0_ffn_conv1",
              "transformer/magnitude_pruning/0.7/body_encoder_layer_0_self_attention",
              "rn50/magnitude_pruning/0.8/bottleneck_2_block_group3_1_1",
              "rn50/random_pruning/0.9/bottleneck_2_block_group3_1_1",
              "rn50/magnitude_pruning/0.7/final_dense")


def median_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls, after a warm-up call (compiles, caches)."""
    return statistics.median(common.call_times(fn, min_repeats=repeats, warmup=1)) * 1e3


def cases(max_nnz: int):
    """(label, A, B) pairs: graphs A @ A, a few DLMC weights W @ Wᵀ."""
    if not corpus.available():
        return []
    out = []
    for e in corpus.entries(family="graph", max_nnz=max_nnz):
        a = corpus.load(e.path)
        out.append((f"graph {e.name.rsplit('/', 1)[-1].split('.')[0]} A@A", a, a))
    dlmc = [e for e in corpus.entries(max_nnz=max_nnz) if e.family.startswith("dlmc")]
    for pick in DLMC_PICKS:
        e = next((e for e in dlmc if pick in e.name), None)
        if e is not None:
            w = corpus.load(e.path)
            out.append((f"dlmc {pick.split('/')[0]} {e.rows}x{e.cols} W@Wt", w, w.T.tocsr()))
    return out


def torch_system():
    try:
        import torch
    except ImportError:
        return None

    def prepare(a):
        return torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(np.int64)),
                                       torch.from_numpy(a.indices.astype(np.int64)),
                                       torch.from_numpy(a.data), size=a.shape)

    def run(ta, tb):
        return ta @ tb

    def to_scipy(c):
        return sp.csr_matrix((c.values().numpy(), c.col_indices().numpy(),
                              c.crow_indices().numpy()), shape=tuple(c.shape))
    return torch, prepare, run, to_scipy


def close(c, ref) -> bool:
    diff = abs(sp.csr_matrix(c) - ref)
    scale = max(1.0, float(abs(ref).max()) if ref.nnz else 1.0)
    return (diff.max() if diff.nnz else 0.0) <= 1e-3 * scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-nnz", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    kernel = spc.compile(SPGEMM, formats=CSR3, dtype="float32",
                         schedule=spc.Schedule(threads=args.threads) if args.threads else None)
    tsys = torch_system()
    if tsys is not None and args.threads:
        tsys[0].set_num_threads(args.threads)
    print(f"# SpGEMM CPU, {platform.node()} {platform.processor() or platform.machine()}, "
          f"threads={kernel.schedule.threads}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"torch={tsys[0].__version__ if tsys else 'absent'}, scipy={scipy.__version__}")
    rows = cases(args.max_nnz)
    if not rows:
        print("corpus absent (spc.corpus.available() is False): nothing to time")
        return
    print(f"{'case':58s} {'nnz(A)':>9s} {'nnz(C)':>10s} {'spc ms':>9s} {'scipy ms':>9s} "
          f"{'torch ms':>9s} {'speedup':>8s}")
    ratios = []
    for label, a, b in rows:
        ref = a @ b
        c = kernel(a, b)
        if not close(c, ref):
            print(f"{label:58s} spc result differs from scipy: not timed")
            continue
        t_spc = median_ms(lambda: kernel(a, b), args.repeats)
        t_scipy = median_ms(lambda: a @ b, args.repeats)
        t_torch = math.nan
        if tsys is not None:
            _, prepare, run, to_scipy = tsys
            ta, tb = prepare(a), prepare(b)
            if close(to_scipy(run(ta, tb)), ref):
                t_torch = median_ms(lambda: run(ta, tb), args.repeats)
        best = min(t for t in (t_scipy, t_torch) if not math.isnan(t))
        ratios.append(best / t_spc)
        print(f"{label:58s} {a.nnz:9d} {ref.nnz:10d} {t_spc:9.2f} {t_scipy:9.2f} "
              f"{t_torch:9.2f} {best / t_spc:7.2f}x")
    if ratios:
        geo = statistics.geometric_mean(ratios)
        print(f"geometric mean speed-up of spc over the best of scipy and torch: {geo:.2f}x "
              f"({len(ratios)} cases)")


if __name__ == "__main__":
    main()
