"""GPU benchmark of schedule passes (issue 9): each pass's effect, and the best
schedule of a small sweep, against cuSPARSE, in kernel time.

    python benchmarks/bench_schedules_gpu.py [--data DIR] [--per-family 4] [--ns 32,128]

Per matrix and case (SpMM at each N, SDDMM at K = 32) it times, in one process and
one profiler session per case: cuSPARSE through torch (``torch.sparse.mm``,
``torch.sparse.sampled_addmm``), spc's default schedule, and every schedule of the
sweep (``reorder_rows`` "none" / "length" / "similarity" x the launch knobs where the kernel has
them; ``split_rows`` in ``SPLITS`` x a few launch knobs).  Device time: the GPU time of one call's kernels and memsets, from
torch.profiler.  spc's operands are prepared once (``k.prepare``) and called with
``validate=False``; every result is checked against float64 scipy first.

Output: one row per case (times in microseconds, ratios cuSPARSE / spc), the
the time per call a caller sees with default settings (validation on, the torch
tensor passed as is) for cuSPARSE, spc's default and ``split_rows=True``, the
best schedule's name, and per family the geometric means of cuSPARSE/default,
default/reorder_rows="length", default/(best split_rows schedule) and cuSPARSE/best.
"""
from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402
from bench_gpu import device_times, pick  # noqa: E402
from common import DEFAULT_DATA, entries, load  # noqa: E402

REL_TOL = 1e-3


def sweep(kernel: str) -> list:
    """The schedules tried: reorder_rows x the launch knobs spc would otherwise pick."""
    import spc
    out = []
    for how in ("none", "length", "similarity"):
        base = spc.Schedule(reorder_rows=how)
        if kernel == "spmm":
            out += [base, base.replace(wide=True), base.replace(wide=False)]
        else:
            out += [base] + [base.replace(group=g, split=s) for g in (4, 8, 16, 32)
                             for s in (1, 2)]
            if how == "none":
                out += [base.replace(group=g, flat=True) for g in (4, 8, 16)]
    for k in SPLITS:
        base = spc.Schedule(split_rows=k)
        if kernel == "spmm":
            out += [base, base.replace(wide=True), base.replace(wide=False)]
        else:
            out += [base] + [base.replace(group=g, split=1) for g in (8, 32)]
    return out


SPLITS = (True, 32, 128, 512)      # split_rows values swept


def name_of(s) -> str:
    text = ", ".join(f"{k}={v}" for k, v in s.knobs().items()
                     if (k, v) != ("reorder_rows", "none"))
    return text or "default"


def case_inputs(torch, kernel, A, n, rng):
    m, k = A.shape
    if kernel == "spmm":
        B = rng.standard_normal((k, n)).astype(np.float32)
        return (torch.tensor(B, device="cuda"),), A.astype(np.float64) @ B.astype(np.float64)
    X = rng.standard_normal((m, n)).astype(np.float32)
    Y = rng.standard_normal((k, n)).astype(np.float32)
    ref = A.astype(np.float64).multiply(X.astype(np.float64) @ Y.astype(np.float64).T)
    return (torch.tensor(X, device="cuda"), torch.tensor(Y, device="cuda")), ref.tocsr()


def host(torch, out):
    import scipy.sparse as sp
    if isinstance(out, torch.Tensor):
        if out.layout == torch.sparse_csr:
            return sp.csr_matrix((out.values().cpu().numpy(), out.col_indices().cpu().numpy(),
                                  out.crow_indices().cpu().numpy()), shape=tuple(out.shape))
        return out.cpu().numpy()
    from spc.runtime.device import DeviceOperands
    t = DeviceOperands.get().to_host(out)
    return t.to_scipy() if hasattr(t, "to_scipy") else t


def rel_err(got, ref) -> float:
    if hasattr(ref, "toarray"):
        got = got.tocsr() if hasattr(got, "tocsr") else got
        d = (got - ref).data if hasattr(got, "data") else got - ref.toarray()
        den = np.linalg.norm(ref.data) or 1.0
        return float(np.linalg.norm(d) / den)
    return float(np.linalg.norm(got - ref) / (np.linalg.norm(ref) or 1.0))


def call_time(torch, fn, reps: int = 50) -> float:
    """Seconds per call as a caller sees them: ``reps`` back-to-back calls on
    torch tensors after a warm-up, then one synchronization (median of 3)."""
    return statistics.median(common.burst_times(fn, calls=reps, bursts=3, warmup=1,
                                                sync=torch.cuda.synchronize))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-family", type=int, default=4)
    ap.add_argument("--ns", default="32,128")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    import torch
    import spc
    ns = [int(x) for x in args.ns.split(",")]
    chosen = pick(entries(args.data), args.per_family)
    rng = np.random.default_rng(0)
    print(f"# {datetime.date.today()} {torch.cuda.get_device_name()} torch {torch.__version__}; "
          f"device us per call; x = cuSPARSE / spc")
    print(f"{'family':12s} {'matrix':28s} {'op':9s} {'cusp':>8s} {'default':>8s} {'length':>8s} "
          f"{'similar':>8s} {'auto':>8s} {'split':>8s} {'best':>8s} {'x dflt':>7s} {'x best':>7s}  best schedule")
    rows = []
    for e in chosen:
        A = load(e)
        tA = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices),
                                     torch.tensor(A.data), A.shape).cuda()
        for kernel, n in [("spmm", n) for n in ns] + [("sddmm", 32)]:
            ops, ref = case_inputs(torch, kernel, A, n, rng)
            labelled, checks, calls_on_torch = [], {}, {}
            if kernel == "spmm":
                labelled.append(("cusparse", lambda: torch.sparse.mm(tA, ops[0])))
            else:
                labelled.append(("cusparse", lambda: torch.sparse.sampled_addmm(
                    tA, ops[0], ops[1].T, beta=0.0)))
            for s in sweep(kernel):
                try:
                    k = spc.compile(kernel, fmt="csr", target="cuda", schedule=s)
                except spc.ScheduleError:
                    continue
                p = k.prepare(tA)
                out = k(p, *ops, validate=False)
                if name_of(s) in ("default", "split_rows=True"):
                    calls_on_torch[name_of(s)] = lambda k=k: k(tA, *ops)
                checks[name_of(s)] = rel_err(host(torch, out), ref)
                if checks[name_of(s)] > REL_TOL:
                    continue
                labelled.append((name_of(s), lambda k=k, p=p: k(p, *ops, validate=False)))
            dev = device_times(torch, labelled, args.reps)
            calls = {"cusparse": call_time(torch, labelled[0][1])}
            calls.update({lab: call_time(torch, fn) for lab, fn in calls_on_torch.items()})
            spc_times = {lab: t for lab, t in dev.items() if lab != "cusparse" and t == t}
            best = min(spc_times, key=spc_times.get)
            row = dict(family=e.family, matrix=Path(e.path).name.split(".")[0][:28],
                       op=f"{kernel}{n}", cusparse=dev["cusparse"],
                       default=dev.get("default", math.nan),
                       length=dev.get("reorder_rows=length", math.nan),
                       similarity=dev.get("reorder_rows=similarity", math.nan),
                       split=min((t for lab, t in spc_times.items() if "split_rows" in lab),
                                 default=math.nan),
                       auto=dev.get("split_rows=True", math.nan),
                       call_cusparse=calls["cusparse"], call_default=calls.get("default", math.nan),
                       call_auto=calls.get("split_rows=True", math.nan),
                       best=spc_times[best], best_name=best,
                       wrong=[lab for lab, err in checks.items() if err > REL_TOL])
            rows.append(row)
            print(f"{row['family']:12s} {row['matrix']:28s} {row['op']:9s} "
                  f"{row['cusparse']*1e6:8.1f} {row['default']*1e6:8.1f} {row['length']*1e6:8.1f} "
                  f"{row['similarity']*1e6:8.1f} {row['auto']*1e6:8.1f} {row['split']*1e6:8.1f} "
                  f"{row['best']*1e6:8.1f} {row['cusparse']/row['default']:7.2f} "
                  f"{row['cusparse']/row['best']:7.2f}  "
                  f"call {row['call_cusparse']*1e6:6.1f} {row['call_default']*1e6:6.1f} "
                  f"{row['call_auto']*1e6:6.1f}  {best}"
                  + (f"  WRONG: {row['wrong']}" if row["wrong"] else ""), flush=True)
    print("\n# geometric means per family and op: cuSPARSE/default, default/length, "
          "default/similarity, default/split, default/auto split, cuSPARSE/best; "
          "per call as a caller sees it: cuSPARSE / auto split")
    groups = {}
    for r in rows:
        groups.setdefault((r["family"], r["op"]), []).append(r)
    g = statistics.geometric_mean
    for (fam, op), rs in sorted(groups.items()):
        print(f"{fam:16s} {op:8s} n={len(rs):2d}  x dflt {g([r['cusparse']/r['default'] for r in rs]):5.2f}"
              f"  dflt/length {g([r['default']/r['length'] for r in rs]):5.2f}"
              f"  dflt/similar {g([r['default']/r['similarity'] for r in rs]):5.2f}"
              f"  dflt/split {g([r['default']/r['split'] for r in rs]):5.2f}"
              f"  dflt/auto {g([r['default']/r['auto'] for r in rs]):5.2f}"
              f"  call cusp/auto {g([r['call_cusparse']/r['call_auto'] for r in rs]):5.2f}"
              f"  x best {g([r['cusparse']/r['best'] for r in rs]):5.2f}")
    wrong = sum(bool(r["wrong"]) for r in rows)
    print(f"\n{len(rows)} cases, {wrong} with a wrong schedule")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
