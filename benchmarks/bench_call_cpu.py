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
CASES = (("spmv", 1), ("spmm", 32), ("spmm", 128), ("sddmm", 32), ("sddmm", 128))
TINY = "tiny-64x64-5pct"


# -- the worker side -------------------------------------------------------------------------
def latency(fn, *, calls: int, min_time: float, warmup_s: float = 0.05) -> dict:
    """p50, p99, mean and max of ``fn()`` timed call by call (seconds;
    ``common.call_times``)."""
    a = np.array(common.call_times(fn, min_repeats=calls, min_time=min_time,
                                   warmup_s=warmup_s))
    return {"p50_s": float(np.median(a)), "p99_s": float(np.percentile(a, 99)),
            "mean_s": float(a.mean()), "max_s": float(a.max()), "calls": len(a)}


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
            rec.update(latency(fn, calls=req["calls"], min_time=req["min_time"]))
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


def run_all(workers, mats, cases, scratch: Path, calls, min_time, load: str) -> list[dict]:
    out = []
    for k, (name, family, loader) in enumerate(mats):
        A = loader()
        ops = sorted({op for op, _ in cases})
        ns = sorted({n for op, n in cases if op != "spmv"})
        npz, all_cases = common.write_cases(name, A, ops, ns, scratch)
        wanted = [c for c in all_cases if (c["op"], c["n"]) in cases]
        req = {"matrix": name, "npz": npz, "cases": wanted, "calls": calls, "min_time": min_time}
        order = list(workers)[k % len(workers):] + list(workers)[:k % len(workers)]
        for s in order:
            for r in workers[s].run(req, timeout=600):
                r.update(family=family, load=load, nnz=int(A.nnz), shape=list(A.shape))
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


def spmv_ratios(records) -> tuple[str, float]:
    """Per matrix: best of scipy/torch p50 over spc's p50 (quiet SpMV); the geomean."""
    by = {}
    for r in records:
        if r.get("status") == "ok" and r["op"] == "spmv" and r["load"] == "corpus":
            by.setdefault(r["matrix"], {})[r["system"]] = r["p50_s"]
    ratios = {m: min(v.get("scipy", math.inf), v.get("torch", math.inf)) / v["spc"]
              for m, v in by.items() if "spc" in v}
    g = common.geomean(ratios.values())
    worst = sorted(ratios.items(), key=lambda kv: kv[1])[:5]
    text = (f"SpMV, spc vs best of scipy/torch (p50, quiet): geomean {g:.2f}x over "
            f"{len(ratios)} matrices; lowest: " + ", ".join(f"{m} {x:.2f}x" for m, x in worst))
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
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            records += run_all(workers, mats, CASES, scratch, args.calls, args.min_time, "quiet")
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
                                   min(0.2, args.min_time), "corpus")
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
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
