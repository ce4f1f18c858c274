"""CPU call latency: fixed cost per call, p50 and p99 on real matrices, quiet and
with one competing busy process, for spc, scipy and torch (float32).

    cd /work/main && PYTHONPATH=. python benchmarks/bench_call_cpu.py
    PYTHONPATH=. python benchmarks/bench_call_cpu.py --per-family 1 --spmv-corpus

Each system is timed in its own worker process (systems_cpu.py's systems,
worker_protocol.py's protocol).  A case is timed call by call after a warm-up;
p50 and p99 are over every call (at least --calls calls and --min-time
seconds).  "fixed" is the p50 of SpMV/SpMM/SDDMM on a 64x64 matrix at 5%
density: what a call costs beyond its arithmetic.  The "loaded" run repeats
everything while ``python -c "while True: pass"`` runs (on 2 cores it takes
half the machine).  With --spmv-corpus SpMV is also timed (p50, quiet) on
every corpus matrix against the best of scipy and torch.

The issue's bar (issue 8): fixed <= 5 us; loaded p50 <= 1.5x quiet p50; loaded
p99 <= 1.2x torch's loaded p99; SpMV >= 1.0x the best of scipy and torch.

Fairness.  Every system is timed the same way: its own process, call by call,
p50 of the calls.  A quiet case is timed again (up to --retries times) while
other processes used more than --max-external-load cores during it, keeping
the least disturbed attempt, and each record says how loaded the machine was
(``external_load``, cores): on 2 shared cores a neighbour's job makes torch's
two OpenMP threads wait for a time slice (a p50 of 4-8 ms where a free core
gives 10-60 us), and spc's pool then runs the call on one thread, so unguarded
figures compare the neighbours' schedules, not the systems.  Figures timed by
hand differ from these for two reasons measured here (2026-11-29, rn50 256x64,
8,192 entries): a loop's mean includes torch's stalls (tiny 64x64: mean 19 us,
p50 4.0 us), and torch with int64 indices is slower than with scipy's int32
(tiny: 7.0 against 4.0 us p50); the torch worker uses int32, its fastest.
--baseline DIR adds a second spc worker ("spc@base") from another checkout,
timed in the same run, matrix by matrix, so a change is measured against the
code before it under the same load.
Writes results.json into --out and prints a table.  Without the corpus
(/work/shared/data) fixed-seed synthetic matrices stand in.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402
import worker_protocol  # noqa: E402

SYSTEMS = ("spc", "scipy", "torch")
BASELINE = "spc@base"      # spc from another checkout (--baseline)
CASES = (("spmv", 1), ("spmm", 32), ("spmm", 128), ("sddmm", 32), ("sddmm", 128))
TINY = "tiny-64x64-5pct"


# -- the worker side -------------------------------------------------------------------------
def latency(fn, *, calls: int, min_time: float, warmup_s: float = 0.05,
            max_external_load: float = math.inf, retries: int = 0) -> dict:
    """p50, p99, mean and max of ``fn()`` timed call by call (seconds;
    ``common.call_times``), and the cores other processes used meanwhile
    (``external_load``).  Timed again, up to ``retries`` times, while that
    exceeds ``max_external_load``; the least disturbed attempt is kept."""
    best = None
    for attempt in range(1 + retries):
        b0, o0, t0 = common.machine_busy_ns(), common.process_cpu_ns(), time.perf_counter()
        a = np.array(common.call_times(fn, min_repeats=calls, min_time=min_time,
                                       warmup_s=warmup_s))
        wall = time.perf_counter() - t0
        other = (common.machine_busy_ns() - b0) - (common.process_cpu_ns() - o0)
        rec = {"p50_s": float(np.median(a)), "p99_s": float(np.percentile(a, 99)),
               "mean_s": float(a.mean()), "max_s": float(a.max()), "calls": len(a),
               "external_load": max(0.0, other / (wall * 1e9)), "attempts": attempt + 1}
        if best is None or rec["external_load"] < best["external_load"]:
            best = {**rec, "attempts": attempt + 1}
        if rec["external_load"] <= max_external_load:
            break
        time.sleep(0.1)
    best["attempts"] = attempt + 1
    return best


def run_case(system, A, case: dict, req: dict, budget: list) -> dict:
    """Check one case's first result, then time its latency distribution."""
    import systems_cpu
    rec = {"op": case["op"], "n": case["n"], "system": system.name}
    try:
        rec, fn, to_numpy, ref = systems_cpu.prepare_case(system, A, case)
        if fn is None:
            return rec
        err = common.rel_error(to_numpy(fn()), ref)
        if not err < common.REL_TOL:
            return {**rec, "status": "fail", "message": f"relative error {err:.3g}"}
        import gc
        gc.collect()
        gc.disable()
        try:
            rec.update(latency(fn, calls=req["calls"], min_time=req["min_time"],
                               max_external_load=req.get("max_external_load", math.inf),
                               retries=req.get("retries", 0)))
        finally:
            gc.enable()
        rec["status"] = "ok"
        return rec
    except Exception as err:  # noqa: BLE001 - a failure is a result
        return {**rec, "status": "error", "message": f"{type(err).__name__}: {err}"[:2000]}


def case_fields(case: dict) -> dict:
    return {"op": case["op"], "n": case["n"]}


def worker_main(argv) -> None:
    import systems_cpu
    root = os.environ.get("SPC_BENCH_ROOT")
    if root:                       # the --baseline worker: spc from that checkout
        sys.path.insert(0, root)
    worker_protocol.main(argv, __doc__, SYSTEMS, systems_cpu.make_system, run_case, case_fields)


# -- the driver ------------------------------------------------------------------------------------
def matrices(per_family: int, spmv_corpus: bool):
    """(name, family, loader) for the timed matrices and, separately, the SpMV corpus."""
    rng_tiny = sp.random(64, 64, density=0.05, format="csr", dtype=np.float32, random_state=0)
    tiny = [(TINY, "tiny", lambda: rng_tiny)]
    try:
        es = common.entries()
    except (OSError, FileNotFoundError):
        es = []
    if not es:                                   # no corpus: fixed-seed stand-ins
        synth = [(f"synthetic-{m}x{k}-{d}", "synthetic",
                  (lambda m=m, k=k, d=d: sp.random(m, k, density=d, format="csr",
                                                   dtype=np.float32, random_state=m)))
                 for m, k, d in ((512, 512, 0.1), (2048, 2048, 0.01), (10000, 10000, 0.0005))]
        return tiny + synth, synth if spmv_corpus else []
    loaded = [(e.name, e.family, (lambda e=e: common.load(e)))
              for e in common.quick_pick(es, per_family) if e.nnz <= 2_000_000]
    corpus = [(e.name, e.family, (lambda e=e: common.load(e))) for e in es] if spmv_corpus else []
    return tiny + loaded, corpus


def spawn_busy():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_all(workers, mats, cases, scratch: Path, calls, min_time, load: str,
            guard: dict | None = None) -> list[dict]:
    """Records of every case on every matrix for every worker, the workers
    taking turns first; ``guard``: the request's max_external_load and
    retries (quiet runs)."""
    out = []
    for k, (name, family, loader) in enumerate(mats):
        A = loader()
        ops = sorted({op for op, _ in cases})
        ns = sorted({n for op, n in cases if op != "spmv"})
        npz, all_cases = common.write_cases(name, A, ops, ns, scratch)
        wanted = [c for c in all_cases if (c["op"], c["n"]) in cases]
        req = {"matrix": name, "npz": npz, "cases": wanted, "calls": calls, "min_time": min_time,
               **(guard or {})}
        order = list(workers)[k % len(workers):] + list(workers)[:k % len(workers)]
        for s in order:
            for r in workers[s].run(req, timeout=600):
                r.update(family=family, load=load, nnz=int(A.nnz), shape=list(A.shape),
                         system=s)
                out.append(r)
        for p in scratch.iterdir():
            p.unlink()
        print(f"  [{load}] {name} ({A.shape[0]}x{A.shape[1]}, nnz {A.nnz})", flush=True)
    return out


def summarize(records) -> str:
    ok = {(r["load"], r["matrix"], r["op"], r["n"], r["system"]): r
          for r in records if r.get("status") == "ok"}
    lines = ["| kernel | matrix | system | fixed/p50 quiet us | p99 quiet us | p50 loaded us "
             "| p99 loaded us | loaded/quiet p50 | p99 vs torch loaded |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(m, op, n) for (_, m, op, n, _) in ok}, key=lambda t: (t[0] != TINY, t))
    for m, op, n in keys:
        for s in SYSTEMS:
            q, ld = ok.get(("quiet", m, op, n, s)), ok.get(("loaded", m, op, n, s))
            tl = ok.get(("loaded", m, op, n, "torch"))
            if q is None and ld is None:
                continue

            def us(r, f):
                return f"{r[f] * 1e6:.1f}" if r else "–"
            ratio = f"{ld['p50_s'] / q['p50_s']:.2f}" if q and ld else "–"
            vs = f"{ld['p99_s'] / tl['p99_s']:.2f}" if ld and tl else "–"
            kern = op if op == "spmv" else f"{op} N={n}"
            lines.append(f"| {kern} | {m} | {s} | {us(q, 'p50_s')} | {us(q, 'p99_s')} | "
                         f"{us(ld, 'p50_s')} | {us(ld, 'p99_s')} | {ratio} | {vs} |")
    return "\n".join(lines)


def spmv_ratios(records, system: str = "spc") -> tuple[str, float]:
    """Per matrix: best of scipy/torch p50 over ``system``'s p50 (quiet SpMV); the
    geomean over all matrices and per family, and the median external load."""
    by, family, load = {}, {}, []
    for r in records:
        if r.get("status") == "ok" and r["op"] == "spmv" and r["load"] == "corpus":
            by.setdefault(r["matrix"], {})[r["system"]] = r["p50_s"]
            family[r["matrix"]] = r["family"]
            load.append(r.get("external_load", 0.0))
    ratios = {m: min(v.get("scipy", math.inf), v.get("torch", math.inf)) / v[system]
              for m, v in by.items() if system in v}
    if not ratios:
        return f"SpMV: no {system} records", math.nan
    g = common.geomean(ratios.values())
    worst = sorted(ratios.items(), key=lambda kv: kv[1])[:5]
    fams = sorted(set(family[m] for m in ratios))
    per = ", ".join(f"{f} {common.geomean(x for m, x in ratios.items() if family[m] == f):.2f}x"
                    for f in fams)
    text = (f"SpMV, {system} vs best of scipy/torch (p50, quiet): geomean {g:.2f}x over "
            f"{len(ratios)} matrices ({per}; median external load "
            f"{float(np.median(load)):.2f} cores); lowest: "
            + ", ".join(f"{m} {x:.2f}x" for m, x in worst))
    return text, g


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--system" in argv:
        worker_main(argv)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "results" / "call_cpu"))
    ap.add_argument("--per-family", type=int, default=1, help="real matrices per family")
    ap.add_argument("--calls", type=int, default=2000, help="at least this many calls a case")
    ap.add_argument("--min-time", type=float, default=0.5, help="at least this long a case (s)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--no-loaded", action="store_true", help="skip the busy-process run")
    ap.add_argument("--spmv-corpus", action="store_true", help="SpMV on every corpus matrix")
    ap.add_argument("--baseline", help="another spc checkout, timed too as 'spc@base'")
    ap.add_argument("--max-external-load", type=float, default=0.15,
                    help="time a quiet case again while other processes used more cores")
    ap.add_argument("--retries", type=int, default=2, help="at most this many times again")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mats, corpus = matrices(args.per_family, args.spmv_corpus)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    workers: dict = {}
    records: list[dict] = []
    busy = None
    try:
        worker_protocol.start_workers(args.systems, out, env, Path(__file__), case_fields,
                                      HERE.parent, workers)
        if args.baseline:
            base = Path(args.baseline).resolve()
            (out / "baseline").mkdir(exist_ok=True)
            # this script's worker (the same timing), importing that checkout's spc
            workers[BASELINE] = worker_protocol.Worker(
                "spc", out / "baseline", {**env, "SPC_BENCH_ROOT": str(base)},
                Path(__file__), case_fields, HERE.parent)
            print(f"  worker {BASELINE}: {base} {workers[BASELINE].info}", flush=True)
        guard = {"max_external_load": args.max_external_load, "retries": args.retries}
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            records += run_all(workers, mats, CASES, scratch, args.calls, args.min_time, "quiet",
                               guard)
            if not args.no_loaded:
                busy = spawn_busy()
                time.sleep(0.2)
                records += run_all(workers, mats, CASES, scratch, args.calls, args.min_time,
                                   "loaded")
                busy.kill()
                busy.wait()
                busy = None
            if corpus:
                records += run_all(workers, corpus, (("spmv", 1),), scratch, 200,
                                   min(0.2, args.min_time), "corpus", guard)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        for w in workers.values():
            w.close()
    table = summarize([r for r in records if r["load"] != "corpus"])
    print(table)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "commit": common.spc_tree_hash(),
              "info": {s: w.info for s, w in workers.items()}, "records": records,
              "table": table}
    if corpus:
        text, g = spmv_ratios(records)
        print(text)
        result["spmv_vs_best"] = g
        if args.baseline:
            text, gb = spmv_ratios(records, BASELINE)
            print(text)
            result["spmv_vs_best_baseline"] = gb
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
