"""CPU SpMV, SpMM and SDDMM (float32) on the real-matrix corpus: spc side by side
with scipy.sparse, torch.sparse CSR (MKL), numpy dense and a numba prange kernel.

    cd /work/main && PYTHONPATH=. python benchmarks/bench_cpu.py --quick
    PYTHONPATH=. python benchmarks/bench_cpu.py --ops spmm --n 32 128

Every system runs in its own worker process (their OpenMP runtimes stall each
other in one process); the driver loads each matrix once, writes the dense
inputs and a float64 reference to a scratch dir, and asks the workers in turn
(the order rotates from matrix to matrix).  A worker checks its first result
(relative error < 1e-3) and only then times: warm-up, then the median of call
by call timings, at least 5 repeats and at least --min-time seconds in all.
Writes results.json, summary.md and (with matplotlib) gflops.png into --out; prints
the summary, which names the plot only when it was written.
See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's spc, as the workers'
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from worker_protocol import start_workers  # noqa: E402

def CASE_FIELDS(case: dict) -> dict:
    """What identifies a case in a worker's answers."""
    return {"op": case["op"], "n": case["n"]}
from common import FAMILIES, FAMILY_LABEL, OPS  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_SYSTEMS = ("spc", "scipy", "torch", "numpy", "numba")
BASELINE_EXCLUDE = {"spc", "spc-nv"}        # never "the best other system"


# -- workers -------------------------------------------------------------------------------------
def quiesce(pids, window: float = 0.005, busy: float = 0.1, limit: float = 1.0) -> float:
    """Wait until the threads of ``pids`` (this process: all but the main thread)
    use less than ``busy`` of a core over ``window`` seconds, at most ``limit``
    seconds.  BLAS and OpenMP pools spin after their last call (OpenBLAS for
    ~0.1 s), which would steal a core from the next system's timing."""
    if not Path("/proc/self/task").is_dir():
        time.sleep(0.1)
        return 0.1
    me, main_tid = os.getpid(), threading_main_tid()
    t0 = time.perf_counter()
    while True:
        before = sum(common.process_cpu_ns(p, main_tid if p == me else None) for p in pids)
        time.sleep(window)
        after = sum(common.process_cpu_ns(p, main_tid if p == me else None) for p in pids)
        waited = time.perf_counter() - t0
        if after - before < busy * window * 1e9 or waited > limit:
            return waited


def wait_for_quiet_machine(own_pids, threshold: float, limit: float) -> float:
    """Wait (at most ``limit`` s) until processes not ours use < ``threshold`` cores."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        b0, o0, w0 = common.machine_busy_ns(), sum(common.process_cpu_ns(p) for p in own_pids), time.perf_counter()
        time.sleep(0.5)
        b1, o1 = common.machine_busy_ns(), sum(common.process_cpu_ns(p) for p in own_pids)
        if ((b1 - b0) - (o1 - o0)) / ((time.perf_counter() - w0) * 1e9) < threshold:
            break
    return time.perf_counter() - t0


def threading_main_tid() -> int:
    import threading
    return threading.main_thread().native_id


# -- one matrix ----------------------------------------------------------------------------------
def prepare_matrix(entry, ops, ns, scratch: Path, min_time, min_repeats,
                   max_external_load=0.15, retries=2) -> dict:
    """Load, write the CSR arrays, each case's inputs and its float64 reference."""
    A = common.load(entry)
    npz, cases = common.write_cases(entry.name, A, ops, ns, scratch)
    return {"matrix": entry.name, "npz": str(npz), "cases": cases,
            "min_time": min_time, "min_repeats": min_repeats,
            "max_external_load": max_external_load, "retries": retries}


def clear_scratch(scratch: Path):
    for p in scratch.iterdir():
        p.unlink()


# -- summaries -----------------------------------------------------------------------------------
def _fmt(x, digits=None):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if digits is not None:
        return f"{x:.{digits}f}"
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def aggregate(records, systems, families, max_external_load=0.15):
    """Medians per (op, n, system, family), spc speedups per (op, n, family).
    The worst matrices listed are taken among cases timed without external load
    when there are any (a disturbed timing makes a spurious worst case)."""
    ok = [r for r in records if r["status"] == "ok"]
    groups = defaultdict(list)
    for r in ok:
        groups[(r["op"], r["n"], r["system"], r["family"])].append(r)
    medians = {}
    for key, rs in groups.items():
        medians["|".join(map(str, key))] = {
            "gflops": statistics.median(r["gflops"] for r in rs),
            "floor_frac": statistics.median(r["floor_frac"] for r in rs),
            "count": len(rs)}
    counts = defaultdict(lambda: defaultdict(int))
    for r in records:
        counts["|".join(map(str, (r["op"], r["n"], r["system"], r["family"])))][r["status"]] += 1
    by_case = defaultdict(dict)
    for r in ok:
        by_case[(r["op"], r["n"], r["matrix"], r["family"])][r["system"]] = r
    speed = {}
    for op_n_fam in sorted({(k[0], k[1], k[3]) for k in by_case}, key=str):
        op, n, fam = op_n_fam
        ratios, rows = [], []
        for (o, nn, m, f), by_sys in by_case.items():
            if (o, nn, f) != op_n_fam or "spc" not in by_sys:
                continue
            others = {s: r for s, r in by_sys.items() if s not in BASELINE_EXCLUDE}
            if not others:
                continue
            best_sys, best = max(others.items(), key=lambda kv: kv[1]["gflops"])
            ratio = by_sys["spc"]["gflops"] / best["gflops"]
            ratios.append(ratio)
            noisy = max(by_sys["spc"].get("external_load", 0.0),
                        best.get("external_load", 0.0)) >= max_external_load
            rows.append({"matrix": m, "ratio": ratio, "best": best_sys,
                         "spc_gflops": by_sys["spc"]["gflops"], "best_gflops": best["gflops"],
                         "nnz": by_sys["spc"]["nnz"], "noisy": noisy})
        if not ratios:
            continue
        rows.sort(key=lambda x: (x["noisy"], x["ratio"]))
        clean = [x for x in rows if not x["noisy"]]
        best_count = defaultdict(int)
        for x in rows:
            best_count[x["best"]] += 1
        speed[f"{op}|{n}|{fam}"] = {
            "geomean": common.geomean(ratios), "count": len(ratios),
            "wins": sum(1 for x in ratios if x > 1),
            "best_other": max(best_count, key=best_count.get),
            "best_other_counts": dict(best_count),
            "noisy": len(rows) - len(clean),
            "worst": rows[:3], "best": max(rows, key=lambda x: x["ratio"])}
    return {"medians": medians, "status_counts": {k: dict(v) for k, v in counts.items()},
            "speedup": speed}


def summary_markdown(agg, meta, systems, families, op_ns) -> str:
    fams = [f for f in FAMILIES if f in families] + [f for f in families if f not in FAMILIES]
    flabel = " / ".join(FAMILY_LABEL.get(f, f) for f in fams)
    med = agg["medians"]

    def cell(op, n, s, field, scale=1.0, digits=None):
        vals = []
        for f in fams:
            m = med.get(f"{op}|{n}|{s}|{f}")
            vals.append(_fmt(m[field] * scale, digits) if m else "–")
        return " / ".join(vals)

    lines = [f"# spc CPU benchmark, {meta['date']}", "",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
             f"copy bandwidth {meta['bandwidth']['GBs']:.1f} GB/s (numpy copy, read + write, "
             f"best of 1 and {meta['bandwidth']['threads']} processes); float32; "
             f"{meta['matrices']} matrices ({', '.join(f'{FAMILY_LABEL.get(f, f)} {c}' for f, c in meta['per_family'].items())}); "
             f"corpus via {meta['corpus_source']}; spc at git {meta['git']}, sources "
             f"{meta['spc_sources']}.", "",
             f"## Median GFLOP/s ({flabel})", "",
             "| op | N | " + " | ".join(systems) + " |",
             "|---|---|" + "---|" * len(systems)]
    for op, n in op_ns:
        lines.append(f"| {op} | {n} | " + " | ".join(cell(op, n, s, "gflops") for s in systems)
                     + " |")
    lines += ["", f"## Median fraction of the memory-bandwidth floor, % ({flabel})", "",
              "Floor: bytes that must move once (values, indices, row pointers, dense inputs, "
              "output) / copy bandwidth; 100% = at the floor (above 100% is possible when the "
              "data stays in cache).", "",
              "| op | N | " + " | ".join(systems) + " |",
              "|---|---|" + "---|" * len(systems)]
    for op, n in op_ns:
        lines.append(f"| {op} | {n} | "
                     + " | ".join(cell(op, n, s, "floor_frac", 100.0) for s in systems) + " |")
    lines += ["", "## spc over the best other system per matrix (geometric mean of GFLOP/s "
              "ratios; >1 = spc faster)", "",
              "| op | N | family | geomean | spc wins | most often best other | worst matrix "
              "(spc / best) | timed under load |", "|---|---|---|---|---|---|---|---|"]
    for op, n in op_ns:
        for f in fams:
            sp_ = agg["speedup"].get(f"{op}|{n}|{f}")
            if not sp_:
                continue
            w = sp_["worst"][0]
            lines.append(f"| {op} | {n} | {FAMILY_LABEL.get(f, f)} | {sp_['geomean']:.2f}x | "
                         f"{sp_['wins']}/{sp_['count']} | {sp_['best_other']} | "
                         f"{w['matrix']} (nnz {w['nnz']}): {w['ratio']:.2f}x vs {w['best']} "
                         f"({_fmt(w['spc_gflops'])} vs {_fmt(w['best_gflops'])})"
                         f"{' (under load)' if w['noisy'] else ''} | {sp_['noisy']} |")
    bad = defaultdict(lambda: defaultdict(int))
    for key, c in agg["status_counts"].items():
        op, n, s, f = key.split("|")
        for st in ("fail", "error", "skip"):
            if c.get(st):
                bad[(s, st)][f"{op} N={n}"] += c[st]
    if bad:
        lines += ["", "## Not timed", ""]
        reasons = meta.get("skip_reasons", {})
        for s in dict.fromkeys(s for s, _ in sorted(bad)):
            for (s2, st), where in sorted(bad.items()):
                if s2 == s:
                    lines.append(f"- {s}: {st} in "
                                 + ", ".join(f"{k} ({v})" for k, v in where.items()))
            for msg in reasons.get(s, []):
                lines.append(f"  - {msg}")
    noisy = meta.get("noisy_cases", 0)
    if noisy:
        lines += ["", f"Note: {noisy} of {meta['timed_cases']} timed cases ran while other "
                  f"processes used more than {meta['args']['max_external_load']} cores even after "
                  f"up to {meta['args']['retries']} retries (median external load over all timed "
                  f"cases {meta['external_load_median']:.2f} cores; records carry "
                  f"`external_load`). The machine is shared: treat those as pessimistic."]
    lines += ["", f"Timing: median of call-by-call wall time after warm-up, >= "
              f"{meta['args']['min_repeats']} repeats and >= {meta['args']['min_time']} s per "
              f"case; each system in its own process; results checked against float64 scipy "
              f"(rel. error < {common.REL_TOL:g}) before timing. FLOPs: SpMM/SDDMM 2*nnz*N, "
              f"SpMV 2*nnz. Total wall time {meta['wall_s'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def plot(agg, systems, families, op_ns, path: Path) -> str | None:
    """Bars of median GFLOP/s per family, a panel per (op, N), saved at ``path``;
    None when written, else why not (``spc.plots.save_figure``)."""
    from spc.plots import save_figure          # noqa: PLC0415
    fams = [f for f in FAMILIES if f in families]
    panels = len(op_ns)
    cols = max(1, min(3, panels))
    rows = max(1, math.ceil(panels / cols))

    def draw(fig):
        import matplotlib                      # noqa: PLC0415
        axes = fig.subplots(rows, cols, squeeze=False)
        width = 0.8 / max(1, len(systems))
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for idx, (op, n) in enumerate(op_ns):
            ax = axes[idx // cols][idx % cols]
            for j, s in enumerate(systems):
                vals = [agg["medians"].get(f"{op}|{n}|{s}|{f}", {}).get("gflops", 0.0)
                        for f in fams]
                xs = [i + (j - (len(systems) - 1) / 2) * width for i in range(len(fams))]
                ax.bar(xs, vals, width, label=s, color=colors[j % len(colors)],
                       edgecolor="black" if s == "spc" else None, linewidth=0.8)
            ax.set_xticks(range(len(fams)))
            ax.set_xticklabels([FAMILY_LABEL.get(f, f) for f in fams], fontsize=8)
            ax.set_title(f"{op}, N={n}" if op != "spmv" else "spmv")
            ax.set_ylabel("median GFLOP/s")
            ax.grid(axis="y", alpha=0.3)
        for idx in range(panels, rows * cols):
            axes[idx // cols][idx % cols].axis("off")
        axes[0][0].legend(fontsize=7, ncol=2)
        fig.suptitle("CPU float32, median GFLOP/s per family (higher is better)", fontsize=10)
        fig.tight_layout()

    return save_figure(path, draw, figsize=(5.2 * cols, 3.6 * rows))


# -- main ----------------------------------------------------------------------------------------
def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), "")
        simd = [f for f in ("avx512f", "avx2", "fma") if f" {f}" in flags]
    except OSError:
        simd = []
    return {"cpu": cpu, "cores": os.cpu_count(), "simd": simd, "python": platform.python_version(),
            "platform": platform.platform()}


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.REPO,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "spc"], cwd=common.REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty(spc/)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=common.DEFAULT_DATA,
                    help="corpus dir with MANIFEST.tsv (default: $SPC_DATA_DIR or ../shared/data)")
    ap.add_argument("--families", nargs="+", default=None,
                    help="dlmc-transformer (transformer), dlmc-rn50 (rn50), graph (graphs)")
    ap.add_argument("--max-nnz", type=int, default=None, help="skip larger matrices")
    ap.add_argument("--matrices", nargs="+", default=None,
                    help="only matrices whose name contains one of these strings")
    ap.add_argument("--n", type=int, nargs="+", default=[32, 128, 1024],
                    help="dense widths for SpMM / SDDMM (SpMV is always N=1)")
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--systems", nargs="+", default=list(DEFAULT_SYSTEMS),
                    choices=("spc", "spc-nv", "scipy", "torch", "numpy", "numba"),
                    help="spc-nv: spc called with validate=False (not a baseline)")
    ap.add_argument("--quick", action="store_true",
                    help="3 matrices per family (10/50/90%% nnz quantiles)")
    ap.add_argument("--out", type=Path, default=common.REPO / "bench_out")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds of timed calls per case")
    ap.add_argument("--min-repeats", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds a worker may take for one matrix before it is restarted")
    ap.add_argument("--max-external-load", type=float, default=0.15,
                    help="time a case again when processes not ours used more than this many "
                         "cores while it was timed (the machine is shared)")
    ap.add_argument("--retries", type=int, default=2,
                    help="how many times to time a case again under external load")
    ap.add_argument("--retry-budget", type=float, default=120.0,
                    help="seconds all retries (and pauses before them) may take in all, "
                         "shared between the systems")
    ap.add_argument("--resummarize", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only redo summary.md, results.json aggregates and gflops.png of an "
                         "earlier run into --out")
    ap.add_argument("--bandwidth", type=float, default=None,
                    help="copy bandwidth in GB/s (default: measure)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.resummarize:
        resummarize(args.resummarize, args.out)
        return
    t_start = time.time()
    common.machine_load()          # starts psutil's CPU-use count for the run's record
    spc_hash = common.spc_tree_hash()
    es = common.entries(args.data, families=args.families, max_nnz=args.max_nnz)
    if args.matrices:
        es = [e for e in es if any(s in e.name for s in args.matrices)]
    if args.quick:
        es = common.quick_pick(es)
    if not es:
        sys.exit("no matrices selected")
    systems = list(dict.fromkeys(args.systems))
    ns = sorted(set(args.n))
    op_ns = [(op, n) for op in OPS if op in args.ops for n in ([1] if op == "spmv" else ns)]
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("worker_*.log"):
        old.unlink()
    print(f"{len(es)} matrices, ops {args.ops}, N {ns}, systems {systems}; corpus via "
          f"{common.corpus_source()}", flush=True)

    if args.bandwidth:
        bw = {"GBs": args.bandwidth, "threads": os.cpu_count(), "given": True}
    else:
        wait_for_quiet_machine([os.getpid()], args.max_external_load, 10.0)
        bw = common.copy_bandwidth()
    print(f"copy bandwidth: {bw['GBs']:.1f} GB/s (read + write"
          + (f"; 1 thread {bw['single_thread_GBs']:.1f}, {bw['threads']} threads "
             f"{bw['multi_thread_GBs'] or 0:.1f})" if "single_thread_GBs" in bw else ")"),
          flush=True)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(common.REPO)] + [p for p in
                                         env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONWARNINGS", "ignore")
    scratch_root = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    scratch = Path(tempfile.mkdtemp(prefix="spc_bench_", dir=scratch_root))
    workers = {}
    records = []
    retry_used = defaultdict(float)
    retry_budget = args.retry_budget / max(1, len(systems))
    skip_reasons = defaultdict(set)
    bar = common.progress(len(es), desc="bench_cpu")
    try:
        start_workers(systems, args.out, env, HERE / "systems_cpu.py", CASE_FIELDS, common.REPO,
                      workers)
        for mi, entry in enumerate(es):
            t0 = time.perf_counter()
            req = prepare_matrix(entry, args.ops, ns, scratch, args.min_time, args.min_repeats,
                                 args.max_external_load, args.retries)
            t_prep = time.perf_counter() - t0
            order = systems[mi % len(systems):] + systems[:mi % len(systems)]
            by_case = defaultdict(dict)
            sys_time = {}
            for s in order:
                pids = [os.getpid()] + [w.proc.pid for w in workers.values()]
                quiesce(pids)         # no spinning pool (ours or the last system's) left
                req["retry_budget_s"] = max(0.0, retry_budget - retry_used[s])
                t_sys = time.perf_counter()
                results = workers[s].run(req, args.timeout)
                sys_time[s] = time.perf_counter() - t_sys
                retry_used[s] += sum(r.get("retry_s", 0.0) for r in results)
                for r in results:
                    case = next(c for c in req["cases"] if (c["op"], c["n"]) == (r["op"], r["n"]))
                    r.update(matrix=entry.name, family=entry.family, rows=entry.rows,
                             cols=entry.cols, nnz=entry.nnz, flops=case["flops"],
                             bytes=case["bytes"])
                    if r["status"] == "ok":
                        r["floor_frac"] = case["bytes"] / (bw["GBs"] * 1e9) / r["median_s"]
                    if r["status"] == "skip":
                        skip_reasons[s].add(r["message"].split(":")[0])
                    records.append(r)
                    by_case[(r["op"], r["n"])][s] = r
            clear_scratch(scratch)
            parts = []
            for (op, n), rs in by_case.items():
                vals = ",".join(f"{s}={_fmt(rs[s]['gflops'])}" if rs[s]["status"] == "ok"
                                else f"{s}={rs[s]['status'].upper()}"
                                for s in systems if s in rs)
                parts.append(f"{op}{'' if op == 'spmv' else n}[{vals}]")
            bar.write(f"[{mi + 1}/{len(es)}] {entry.family} {entry.name} {entry.rows}x{entry.cols} "
                      f"nnz={entry.nnz} ({time.perf_counter() - t0:.1f} s: prep {t_prep:.1f}, "
                      + ", ".join(f"{s} {sys_time[s]:.1f}" for s in systems) + ") "
                      + " ".join(parts))
            for r in records[-len(systems) * len(req["cases"]):]:
                if r["status"] in ("fail", "error"):
                    bar.write(f"    {r['system']} {r['op']} N={r['n']}: {r['status']}: "
                              f"{r.get('message', '')[:300]}")
            bar.update()
    finally:
        bar.close()
        for w in workers.values():
            w.close()
        shutil.rmtree(scratch, ignore_errors=True)

    families = [f for f in FAMILIES if any(e.family == f for e in es)]
    per_family = {f: sum(1 for e in es if e.family == f) for f in families}
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(), "bandwidth": bw, "git": git_rev(),
        "corpus_source": common.corpus_source(),
        "spc_sources": spc_hash if common.spc_tree_hash() == spc_hash
        else f"{spc_hash} (changed to {common.spc_tree_hash()} during the run)",
        "matrices": len(es), "per_family": per_family,
        "systems": {s: {"info": w.info, "restarts": w.restarts} for s, w in workers.items()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine_load": common.machine_load(), "wall_s": time.time() - t_start,
        "skip_reasons": {s: sorted(v) for s, v in skip_reasons.items()},
        "timed_cases": sum(1 for r in records if r["status"] == "ok"),
        "noisy_cases": sum(1 for r in records if r["status"] == "ok"
                           and r.get("external_load", 0) >= args.max_external_load),
        "external_load_median": (statistics.median(r.get("external_load", 0.0) for r in records
                                                   if r["status"] == "ok")
                                 if any(r["status"] == "ok" for r in records) else None),
        "retry_s": dict(retry_used),
    }
    report(records, meta, systems, families, op_ns, args.out)


def report(records, meta, systems, families, op_ns, out: Path) -> None:
    """Aggregate, write results.json, gflops.png (with matplotlib) and summary.md,
    print the summary.  summary.md names the plot only when it was written, else
    says why there is none."""
    from spc.plots import plot_line           # noqa: PLC0415
    agg = aggregate(records, systems, families, meta["args"]["max_external_load"])
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "gflops.png"
    why_not = plot(agg, systems, families, op_ns, figure)   # removes an earlier run's plot
    text = summary_markdown(agg, meta, systems, families, op_ns) + plot_line(figure, why_not) + "\n"
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "aggregate": agg, "records": records}, indent=1, default=str))
    (out / "summary.md").write_text(text)
    written = [out / "results.json", out / "summary.md"] + ([figure] if why_not is None else [])
    print()
    print(text)
    print("wrote " + ", ".join(str(p) for p in written))


def resummarize(path: Path, out: Path) -> None:
    """Redo the summary, table and plot of an earlier results.json."""
    data = json.loads(Path(path).read_text())
    meta, records = data["meta"], data["records"]
    systems = list(dict.fromkeys(meta["args"]["systems"]))
    families = [f for f in FAMILIES if f in meta["per_family"]]
    ns = sorted(set(meta["args"]["n"]))
    op_ns = [(op, n) for op in OPS if op in meta["args"]["ops"]
             for n in ([1] if op == "spmv" else ns)]
    meta.setdefault("spc_sources", "?")
    report(records, meta, systems, families, op_ns, out)


if __name__ == "__main__":
    main()
