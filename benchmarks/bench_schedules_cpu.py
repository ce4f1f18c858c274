"""CPU benchmark of schedule passes (issue 9): the effect of ``reorder_rows`` and
``split_rows`` on spc's CPU kernels, with scipy in the same run as the anchor.

    python benchmarks/bench_schedules_cpu.py [--data DIR] [--per-family 3] [--n 32]

Per matrix (``common.quick_pick``: the 10/50/90% nnz quantiles of each family) and
op (SpMV; SpMM and SDDMM at ``--n``), it times scipy (for SDDMM numpy on the
sampled rows, ``A.data * einsum(X[r], Y[c])``) and spc under each schedule of
``VARIANTS`` (the row orderings "none", "length", "similarity"; rows split into
pieces chosen from the matrix, "split", or of 32 nonzeros, "split32",
atomics allowed; "panels", ``tile`` per op: SpMV's rows in panels of 256, SpMM's
N in panels of 128 above the rows, SDDMM's reduction in panels of 64), operands prepared once (``k.prepare``: positional calls with a prepared
Tensor keep the CPU fast path), default validation, the median of calls over ``--min-time`` seconds each (``common.time_calls``).
All in one process: the ratios between spc's schedules are the point (bench_cpu.py
runs each system in its own process for the comparisons with torch and numba).
Every result is checked against float64 scipy first.

Prints one row per case (microseconds; "x" = scipy / spc) and per family and op
the geometric means of default/length and default/similarity.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import DEFAULT_DATA, entries, load, quick_pick, time_calls  # noqa: E402

VARIANTS = {"none": {}, "length": dict(reorder_rows="length"),
            "similarity": dict(reorder_rows="similarity"),
            "split": dict(split_rows=True, deterministic=False),
            "split32": dict(split_rows=32, deterministic=False),
            # panels (passes/tile.py): SpMV row panels of 256 rows, SpMM's N panels of
            # 128 columns above the rows, SDDMM's reduction in panels of 64
            "panels": lambda op: dict(tile={"spmv": {"i": 256}, "spmm": {"j": 128},
                                            "sddmm": {"k": 64}}[op])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-family", type=int, default=3)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--min-time", type=float, default=0.2)
    args = ap.parse_args(argv)
    import spc
    rng = np.random.default_rng(0)
    print(f"# {datetime.date.today()} cpu ({os.cpu_count()} cores); us per call; "
          f"x = scipy / spc default")
    print(f"{'family':17s} {'matrix':28s} {'op':9s} {'scipy':>8s} "
          + " ".join(f"{o:>10s}" for o in VARIANTS) + f" {'x':>6s}  inspect ms")
    rows = []
    for e in quick_pick(entries(args.data), args.per_family):
        A = load(e)
        m, k = A.shape
        for op in ("spmv", "spmm", "sddmm"):
            if op == "spmv":
                ops = (rng.standard_normal(k).astype(np.float32),)
                ref, base = A.astype(np.float64) @ ops[0], (lambda: A @ ops[0])
            elif op == "spmm":
                ops = (rng.standard_normal((k, args.n)).astype(np.float32),)
                ref, base = A.astype(np.float64) @ ops[0], (lambda: A @ ops[0])
            else:
                X = rng.standard_normal((m, args.n)).astype(np.float32)
                Y = rng.standard_normal((k, args.n)).astype(np.float32)
                ops = (X, Y)
                r, c = np.repeat(np.arange(m), np.diff(A.indptr)), A.indices
                sampled = (X[r].astype(np.float64) * Y[c].astype(np.float64)).sum(1)
                ref = sp.csr_matrix((A.data * sampled, A.indices, A.indptr), shape=A.shape)
                base = (lambda: A.data * np.einsum("ij,ij->i", X[r], Y[c]))   # sampled, sparse
            times, inspect = {"scipy": time_calls(base, min_time=args.min_time)["median_s"]}, {}
            for how, knobs in VARIANTS.items():
                kern = spc.compile(op, fmt="csr", **(knobs(op) if callable(knobs) else knobs))
                p = kern.prepare(A)
                inspect[how] = p.inspect_seconds
                out = kern(p, *ops)
                if op == "sddmm":           # the pattern of A: compare the values
                    got, want = np.asarray(out.vals), ref.data
                else:
                    got, want = out, ref
                err = np.linalg.norm(got - want) / (np.linalg.norm(want) or 1.0)
                if err > 1e-3:
                    print(f"WRONG {e.name} {op} {how}: {err:.2e}")
                    return 1
                times[how] = time_calls(lambda: kern(p, *ops), min_time=args.min_time)["median_s"]
            label = f"{op}{args.n if op != 'spmv' else ''}"
            rows.append((e.family, label, times))
            print(f"{e.family:17s} {Path(e.path).name.split('.')[0][:28]:28s} {label:9s} "
                  f"{times['scipy']*1e6:8.1f} "
                  + " ".join(f"{times[o]*1e6:10.1f}" for o in VARIANTS)
                  + f" {times['scipy']/times['none']:6.2f}  "
                  + " / ".join(f"{inspect[o]*1e3:.2f}" for o in list(VARIANTS)[1:]), flush=True)
    print("\n# geometric means: default / each variant (> 1: the variant is faster)")
    g = statistics.geometric_mean
    groups = {}
    for fam, op, t in rows:
        groups.setdefault((fam, op), []).append(t)
    for (fam, op), ts in sorted(groups.items()):
        print(f"{fam:17s} {op:8s} n={len(ts):2d}  "
              + "  ".join(f"dflt/{o} {g([t['none']/t[o] for t in ts]):5.2f}"
                          for o in list(VARIANTS)[1:])
              + f"  scipy/dflt {g([t['scipy']/t['none'] for t in ts]):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
