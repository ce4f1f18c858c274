"""CPU sweep over ``spc.schedule_space`` (issue 9, item 6): per matrix and op,
every legal schedule of the CSR kernel is timed and the best is compared with
spc's default schedule and with scipy, in one process.

    python benchmarks/bench_space_cpu.py [--data DIR] [--per-family 2] [--n 32]
        [--ops spmv,spmm,sddmm] [--plot space_cpu.png]

Matrices: ``common.quick_pick`` (the 10/50/90% nnz quantiles of each family).
Each schedule's kernel is compiled, its operand prepared once (``k.prepare``:
inspectors run there), its result checked against float64 scipy, then timed
with ``common.time_calls`` (median of calls over ``--min-time`` seconds).
Schedules that would change results from run to run (``deterministic=False``)
are swept too: the check allows float reassociation.  SDDMM's scipy anchor is
numpy on the sampled rows, as in bench_schedules_cpu.py.

Prints one row per case (microseconds; the best schedule's knobs), per family
and op the geometric means of default / best and scipy / best, and with
``--plot`` (needs matplotlib) a bar chart of best / default per case.
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


def case(op: str, A, n: int, rng):
    """(operands after A, float64 reference, scipy's call) of ``op`` on ``A``."""
    m, k = A.shape
    if op == "spmv":
        x = rng.standard_normal(k).astype(np.float32)
        return (x,), A.astype(np.float64) @ x, (lambda: A @ x)
    if op == "spmm":
        B = rng.standard_normal((k, n)).astype(np.float32)
        return (B,), A.astype(np.float64) @ B, (lambda: A @ B)
    X = rng.standard_normal((m, n)).astype(np.float32)
    Y = rng.standard_normal((k, n)).astype(np.float32)
    r, c = np.repeat(np.arange(m), np.diff(A.indptr)), A.indices
    sampled = (X[r].astype(np.float64) * Y[c].astype(np.float64)).sum(1)
    ref = sp.csr_matrix((A.data * sampled, A.indices, A.indptr), shape=A.shape)
    return (X, Y), ref, (lambda: A.data * np.einsum("ij,ij->i", X[r], Y[c]))


def rel_err(out, ref) -> float:
    if hasattr(ref, "data") and hasattr(out, "vals"):       # SDDMM: compare the values
        got, want = np.asarray(out.vals), ref.data
    else:
        got, want = np.asarray(out), ref
    return float(np.linalg.norm(got - want) / (np.linalg.norm(want) or 1.0))


def knobs(s) -> str:
    shown = {k: v for k, v in s.knobs().items() if k != "order"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "default"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-family", type=int, default=2)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--ops", default="spmv,spmm,sddmm")
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    import spc
    rng = np.random.default_rng(0)
    ops = args.ops.split(",")
    spaces = {op: spc.schedule_space(op, fmt="csr") for op in ops}
    print(f"# {datetime.date.today()} cpu ({os.cpu_count()} cores); us per call; schedules: "
          + ", ".join(f"{op} {len(s)}" for op, s in spaces.items()))
    print(f"{'family':17s} {'matrix':28s} {'op':8s} {'scipy':>9s} {'default':>9s} {'best':>9s} "
          f"{'dflt/best':>9s}  best schedule")
    rows = []
    for e in quick_pick(entries(args.data), args.per_family):
        A = load(e).astype(np.float32)
        for op in ops:
            operands, ref, anchor = case(op, A, args.n, rng)
            times = {}
            for s in spaces[op]:
                k = spc.compile(op, fmt="csr", schedule=s)
                p = k.prepare(A)
                err = rel_err(k(p, *operands), ref)
                if err > 1e-3:
                    print(f"WRONG {e.name} {op} {s}: {err:.2e}")
                    return 1
                times[s] = time_calls(lambda: k(p, *operands),
                                      min_time=args.min_time)["median_s"]
            default = times[spaces[op][0]]
            best = min(times, key=times.get)
            scipy_t = time_calls(anchor, min_time=args.min_time)["median_s"]
            label = f"{op}{args.n if op != 'spmv' else ''}"
            rows.append(dict(family=e.family, matrix=Path(e.path).name.split(".")[0][:28],
                             op=label, scipy=scipy_t, default=default, best=times[best],
                             best_name=knobs(best)))
            r = rows[-1]
            print(f"{r['family']:17s} {r['matrix']:28s} {label:8s} {scipy_t*1e6:9.1f} "
                  f"{default*1e6:9.1f} {times[best]*1e6:9.1f} {default/times[best]:9.2f}  "
                  f"{r['best_name']}", flush=True)
    g = statistics.geometric_mean
    print("\n# geometric means per family and op: default / best, scipy / best")
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["family"], r["op"]), []).append(r)
    for (fam, op), rs in sorted(groups.items()):
        print(f"{fam:17s} {op:8s} n={len(rs):2d}  dflt/best {g([r['default']/r['best'] for r in rs]):5.2f}"
              f"  scipy/best {g([r['scipy']/r['best'] for r in rs]):5.2f}")
    if args.plot is not None:
        why_not = plot(rows, args.plot)
        print(f"# wrote {args.plot}" if why_not is None else f"# no plot: {why_not}")
    return 0


def plot(rows, path: Path) -> str | None:
    """Bars of default / best schedule per case, saved at ``path``; None when
    written, else why not (``spc.plots.save_figure``)."""
    from spc.plots import save_figure

    def draw(fig):
        ax = fig.subplots()
        labels = [f"{r['op']} {r['matrix'][:16]}" for r in rows]
        ax.bar(range(len(rows)), [r["default"] / r["best"] for r in rows], color="tab:blue")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=75, ha="right", fontsize=7)
        ax.set_ylabel("default time / best schedule's")
        ax.set_title("CPU: the best schedule of spc.schedule_space against the default")
        fig.tight_layout()

    return save_figure(path, draw, figsize=(max(6.0, 0.35 * len(rows)), 3.6))


if __name__ == "__main__":
    sys.exit(main())
