"""CPU SpMM time against the number of dense columns N, spc beside scipy: shows how
the register tiles (passes/register_tile.py) handle N that is not a multiple of 8.

    python benchmarks/bench_spmm_columns_cpu.py [--rows 1536] [--cols 384] [--density 0.5]
                                                [--ns 1,3,8,9,12,15,16,17,31,32,100,128]
                                                [--threads 1] [--repeats 7]

Each result is checked against scipy before it is timed (median of repeats of 20
calls each; each system in this one process: compare ratios within a run).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402


def timed(fn, repeats: int, calls: int = 20) -> float:
    """Median seconds per call over ``repeats`` bursts of ``calls`` calls, after a warm-up call."""
    return statistics.median(common.burst_times(fn, calls=calls, bursts=repeats, warmup=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1536)
    ap.add_argument("--cols", type=int, default=384)
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--ns", default="1,3,8,9,12,15,16,17,31,32,100,128")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    import scipy.sparse as sp

    import spc
    rng = np.random.default_rng(0)
    A = sp.random(args.rows, args.cols, density=args.density, format="csr", random_state=0,
                  dtype=np.float32)
    k = spc.compile("spmm", fmt="csr", threads=args.threads)
    print(f"{args.rows} x {args.cols} at {args.density:.0%}, {A.nnz} stored, "
          f"{args.threads} thread(s); microseconds per call")
    print(f"{'N':>5s} {'spc':>10s} {'scipy':>10s} {'scipy/spc':>10s}")
    for n in (int(x) for x in args.ns.split(",")):
        B = rng.standard_normal((args.cols, n)).astype(np.float32)
        np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-4, atol=1e-4)
        t_spc, t_sp = timed(lambda: k(A, B), args.repeats), timed(lambda: A @ B, args.repeats)
        print(f"{n:5d} {t_spc * 1e6:10.1f} {t_sp * 1e6:10.1f} {t_sp / t_spc:10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
