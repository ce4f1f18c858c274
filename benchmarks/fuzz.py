"""Differential fuzzing of spc against a float64 numpy reference (issue 10).

Random programs (orders 0-3, sums, differences, products, constants, unary
minus, parentheses, repeated tensors, names that are C/CUDA keywords, macros or
look like spc's own) x formats (every built-in and the user format "sell" of
examples/sell_c_sigma.py) x schedules x operand families (scipy canonical,
unsorted, duplicates, explicit zeros; numpy C/F/strided/transposed; torch; spc
tensors) x shapes (0 x n, 1 x 1, empty rows, one dense row, nnz = 0) x dtypes,
each in a worker process (crashes and hangs are attributed), deterministic from
``--seed``.  A share of programs (``--pattern-rate``, 15% by default) read an operand's
pattern: ``stored(A[i,j])``, ``max``/``min``/``sum(j, e)`` reductions and epilogues, and
programs of two or three statements; their reference is the stored-entry semantics of
the operands as handed over (``fuzz/pattern.py``), with the FormatError expected where a
conversion would fill a pattern the result reads.

    python benchmarks/fuzz.py --cases 2000 --jobs 2 --seed 1 --json out.json
    python benchmarks/fuzz.py --cuda-render --cases 500     # render + nvcc -cubin, no GPU
    python benchmarks/fuzz.py --cuda-run --cases 2000       # on a GPU (CuPy or torch CUDA)
    python benchmarks/fuzz.py --replay out.json --minimize  # shrink recorded failures

Outcomes: OK; refused (an spc.SpcError other than CompileError: a valid program
spc declines, by exception type and stage); failures by kind (wrong-answer,
wrong-shape, wrong-dtype, bad-result, exception, compile-error, nvcc, crash, hang).
The JSON holds every failure with its case (a reproducer: ``--replay``).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz.gen import gen_case  # noqa: E402
from fuzz.pool import Pool  # noqa: E402


def signature(res: dict) -> str:
    """Failures that are probably the same bug share a signature."""
    msg = re.sub(r"'[^']*'", "'_'", res.get("message", ""))
    msg = re.sub(r"\bk[0-9a-f]{8}\w*", "KERNEL", msg)
    msg = re.sub(r"[-+]?\d+(\.\d*)?(e[-+]?\d+)?", "N", msg)
    if res["kind"] == "wrong-answer":
        msg = ""
    return f"{res['kind']}|{res.get('stage', '')}|{res.get('error', '')}|{msg[:120]}"


def refusal_reason(res: dict) -> str:
    msg = re.sub(r"'[^']*'", "'_'", res.get("message", ""))
    msg = re.sub(r"\([^()]*\)", "(_)", msg)
    return f"{res['kind']}: {msg[:100]}"


def summarize(results: list, wall: float, label: str) -> str:
    counts = collections.Counter(r["outcome"] for _, r in results)
    refused = collections.Counter(r["kind"] for _, r in results if r["outcome"] == "refused")
    failed = collections.Counter(r["kind"] for _, r in results if r["outcome"] == "failure")
    sigs = collections.Counter(signature(r) for _, r in results if r["outcome"] == "failure")
    lines = [f"== {label}: {len(results)} cases in {wall:.0f} s "
             f"({len(results) / max(wall, 1e-9):.1f}/s)",
             f"   OK        {counts['ok']:7d}"]
    oks = collections.Counter(r["kind"] for _, r in results if r["outcome"] == "ok")
    lines += [f"      {n:7d}  {k}" for k, n in oks.most_common() if k != "ok"]
    lines += [f"   refused   {counts['refused']:7d}"]
    lines += [f"      {n:7d}  {k}" for k, n in refused.most_common()]
    lines.append(f"   FAILURES  {counts['failure']:7d}")
    lines += [f"      {n:7d}  {k}" for k, n in failed.most_common()]
    if counts["harness"]:
        lines.append(f"   harness   {counts['harness']:7d}  (fuzzer bugs, not spc's)")
    if sigs:
        lines.append("   distinct failure signatures:")
        lines += [f"      {n:7d}  {s}" for s, n in sigs.most_common(40)]
    return "\n".join(lines)


def merge(paths) -> str:
    """The summaries of several runs' JSONs, added up per mode."""
    per_mode: dict = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        s = data["summary"]
        m = per_mode.setdefault(s["mode"], collections.defaultdict(collections.Counter))
        for key in ("cases", "ok", "refused", "failures", "harness", "seconds"):
            m["totals"][key] += s[key]
        m["refused"].update(s["refused_by_reason"])
        m["failed"].update(s["failures_by_kind"])
        m["signatures"].update(f["signature"] for f in data["failures"])
    lines = []
    for mode, m in per_mode.items():
        t = m["totals"]
        lines.append(f"== {mode}: {t['cases']} cases, {t['ok']} OK, {t['refused']} refused, "
                     f"{t['failures']} failures, {t['harness']} harness ({t['seconds']:.0f} s)")
        lines += [f"   refused {n:7d}  {k}" for k, n in m["refused"].most_common()]
        lines += [f"   FAILED  {n:7d}  {k}" for k, n in m["failed"].most_common()]
        lines += [f"   sig     {n:7d}  {k}" for k, n in m["signatures"].most_common()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    ap.add_argument("--weird", type=float, default=0.15, help="rate of keyword/macro/spc-like names")
    ap.add_argument("--pattern-rate", type=float, default=None,
                    help="share of programs that read an operand's pattern (stored, max/min/sum "
                         "reductions, several statements); default gen.PATTERN_RATE")
    ap.add_argument("--json", type=Path, help="write the summary and every failure here")
    ap.add_argument("--cuda-render", action="store_true", help="render CUDA C and nvcc -cubin it")
    ap.add_argument("--cuda-run", action="store_true", help="run on a GPU (CuPy or torch CUDA)")
    ap.add_argument("--batch", type=int, default=24, help="kernels per nvcc call (--cuda-render)")
    ap.add_argument("--replay", type=Path, help="rerun the failures recorded in this JSON")
    ap.add_argument("--minimize", action="store_true", help="shrink one failure per signature")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--in-process", action="store_true",
                    help="run the cases in this process, without workers (for compute-sanitizer)")
    ap.add_argument("--merge", type=Path, nargs="+", help="add up the summaries of these JSONs")
    args = ap.parse_args(argv)

    if args.merge:
        print(merge(args.merge))
        return 0
    mode = "cuda-render" if args.cuda_render else "cuda-run" if args.cuda_run else "cpu"
    target = "cpu" if mode == "cpu" else "cuda"
    if args.replay:
        cases = [f["case"] for f in json.loads(args.replay.read_text())["failures"]]
    else:
        variants = 1 if mode == "cuda-render" else 4     # a program's variants differ in data only
        rate = {} if args.pattern_rate is None else {"pattern_rate": args.pattern_rate}
        cases = (gen_case(args.seed, n, target=target, weird=args.weird, variants=variants,
                          **rate)
                 for n in range(args.start, args.start + args.cases))
    if mode == "cuda-run":
        from fuzz.cuda import gpu_available
        why = gpu_available()
        if why:
            print(f"--cuda-run needs a GPU: {why}", file=sys.stderr)
            return 2
    env = {"SPC_NO_DISK_CACHE": "1", "SPC_NUM_THREADS": "2"}
    t0 = time.time()
    results = []
    if mode == "cuda-render":
        from fuzz.cuda import render_batches
        stream = render_batches(cases, jobs=args.jobs, batch=args.batch, timeout=args.timeout,
                                env=env)
    elif args.in_process:
        from fuzz.pool import run_inline
        stream = run_inline(cases, env, mode)
    else:
        stream = Pool(args.jobs, args.timeout, env=env, mode=mode).run(cases)
    for case, res in stream:
        results.append((case, res))
        if res["outcome"] in ("failure", "harness") and not args.quiet:
            print(f"[{case['id']}] {res['kind']}: {res.get('error', '')} {res.get('message', '')[:200]}"
                  f"\n    {case['expr']}  formats={case['formats']}", flush=True)
        if not args.quiet and len(results) % 500 == 0:
            print(f"... {len(results)} cases, {time.time() - t0:.0f} s", flush=True)
    wall = time.time() - t0
    label = f"{mode} seed={args.seed} cases {args.start}..{args.start + len(results) - 1}"
    print(summarize(results, wall, label))
    failures = [{"case": c, "result": r, "signature": signature(r)} for c, r in results
                if r["outcome"] in ("failure", "harness")]
    minimized = []
    if args.minimize:
        from fuzz.minimize import minimize, reproducer
        done = set()
        for f in failures:
            if f["signature"] in done:
                continue
            done.add(f["signature"])
            small, res = minimize(f["case"], f["result"], mode=mode, timeout=args.timeout)
            text = reproducer(small, res)
            minimized.append({"signature": f["signature"], "case": small, "result": res,
                              "reproducer": text,
                              "count": sum(g["signature"] == f["signature"] for g in failures)})
            print(f"\n--- minimized: {f['signature']}\n{text}", flush=True)
    if args.json:
        counts = collections.Counter(r["outcome"] for _, r in results)
        summary = {
            "mode": mode, "seed": args.seed, "start": args.start, "cases": len(results),
            "seconds": round(wall, 1), "ok": counts["ok"], "refused": counts["refused"],
            "failures": counts["failure"], "harness": counts["harness"],
            "refused_by_reason": collections.Counter(
                r["kind"] for _, r in results if r["outcome"] == "refused"),
            "refused_messages": dict(collections.Counter(
                refusal_reason(r) for _, r in results if r["outcome"] == "refused"
            ).most_common(40)),
            "failures_by_kind": collections.Counter(
                r["kind"] for _, r in results if r["outcome"] == "failure"),
        }
        args.json.write_text(json.dumps({"summary": summary, "failures": failures,
                                         "minimized": minimized}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
