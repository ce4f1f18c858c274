"""compute-sanitizer over spc's GPU tests and the fuzzer's CUDA cases (issue 10, item 4).

Runs every ``cuda``-marked test (split into shards) and fuzzer cases (in-process, so the
sanitizer sees every launch) under
each of memcheck, racecheck and initcheck, in parallel processes within a time budget, and
prints one row per tool: processes checked, tests passed/failed, fuzz cases run, and the
errors compute-sanitizer reported (the sum of every process's ``ERROR SUMMARY``).

Pool allocators hide out-of-bounds accesses inside their slabs, so the children run with
torch's caching allocator off (``PYTORCH_NO_CUDA_MEMORY_CACHING=1``) and CuPy's pool off
(a ``sitecustomize`` calling ``cupy.cuda.set_allocator(None)``): every buffer is its own
cudaMalloc, and memcheck sees its exact bounds.

    python benchmarks/sanitize_gpu.py --shards 4 --fuzz-shards 3 --fuzz-cases 400 --out san/
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("memcheck", "racecheck", "initcheck")
SITECUSTOMIZE = """\
try:
    import cupy
    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)
except Exception:
    pass
"""


def sanitizer() -> str:
    """The compute-sanitizer executable (PATH, then the CUDA toolkit's bin)."""
    found = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not Path(found).exists():
        sys.exit("compute-sanitizer not found")
    return found


def gpu_tests(exclude: list[str]) -> list[str]:
    """Node ids of every cuda-marked test, minus files named in ``exclude``."""
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda",
                        "tests/"], cwd=ROOT, capture_output=True, text=True)
    ids = [ln for ln in r.stdout.splitlines() if "::" in ln]
    return [i for i in ids if not any(i.startswith(e) for e in exclude)]


def jobs_for(args, tests: list[str]) -> list[tuple[str, str, list[str]]]:
    """(tool, label, command) per process to run."""
    tool_exe = sanitizer()
    jobs = []
    for tool in args.tools:
        pre = [tool_exe, "--tool", tool, "--target-processes", "all", "--print-limit", "50",
               "--report-api-errors", "no"]
        for s in range(args.shards):
            shard = tests[s::args.shards]
            if shard:
                jobs.append((tool, f"tests{s}", pre + [sys.executable, "-m", "pytest", "-q",
                                                       "-p", "no:cacheprovider"] + shard))
        for f in range(args.fuzz_shards if args.fuzz_cases else 0):
            jobs.append((tool, f"fuzz{f}", pre + [
                sys.executable, "benchmarks/fuzz.py", "--cuda-run", "--in-process",
                "--seed", str(args.fuzz_seed + TOOLS.index(tool)), "--start",
                str(f * args.fuzz_cases), "--cases", str(args.fuzz_cases)]))
    return jobs


FOREIGN = re.compile(r"at::|c10::|cub::|cutlass|cupy|thrust::|cusparse|cublas|nvjet|sm\d+_xmma",
                     re.IGNORECASE)


def reports(log: str) -> list[tuple[str, str]]:
    """(what, kernel) per device-side error compute-sanitizer printed in ``log``."""
    found = []
    lines = log.splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"========= (\S.*)$", line)
        if not m or m.group(1).startswith(("COMPUTE-SANITIZER", "ERROR SUMMARY", "RACECHECK",
                                            "Target application", "Program hit", "Saved host",
                                            "LEAK SUMMARY", "Error:")):
            continue
        at = lines[n + 1] if n + 1 < len(lines) else ""
        k = re.match(r"=========\s+at (.*?)(\+0x[0-9a-f]+)?( in .*)?$", at)
        if k:
            found.append((m.group(1), k.group(1)))
    return found


def parse(log: str) -> dict:
    """Errors (spc's generated kernels / everyone else's), processes, tests and fuzz
    cases from one job's log."""
    summaries = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", log)]
    hazards = [int(a) + int(b) for a, b in
               re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, (\d+) warnings?\)", log)]
    found = reports(log)
    foreign = sorted({k[:90] for _, k in found if FOREIGN.search(k)})
    spc_errors = sum(1 for _, k in found if not FOREIGN.search(k))
    passed = sum(int(n) for n in re.findall(r"(\d+) passed", log))
    failed = sum(int(n) for n in re.findall(r"(\d+) failed", log))
    fuzz = re.findall(r"cases (\d+)\.\.(\d+)", log)
    cases = sum(int(b) - int(a) + 1 for a, b in fuzz)
    fuzz_fail = sum(int(n) for n in re.findall(r"FAILURES\s+(\d+)", log))
    return {"errors": sum(summaries) + sum(hazards), "processes": len(summaries) + len(hazards),
            "spc_errors": spc_errors, "foreign": foreign, "passed": passed, "failed": failed,
            "cases": cases, "fuzz_failures": fuzz_fail}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--shards", type=int, default=4, help="test processes per tool")
    ap.add_argument("--fuzz-cases", type=int, default=400, help="fuzz cases per fuzz process")
    ap.add_argument("--fuzz-shards", type=int, default=2, help="fuzz processes per tool")
    ap.add_argument("--fuzz-seed", type=int, default=501)
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole run")
    ap.add_argument("--exclude", nargs="*", default=["tests/test_cuda_large.py"],
                    help="test files not to run (default: the 60 GiB large-position tests)")
    ap.add_argument("--out", type=Path, default=Path("sanitize_out"))
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep every job's log (default: only those with errors or failures)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix="spc-san-"))
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(site), str(ROOT), str(ROOT / "tests"),
                                           os.environ.get("PYTHONPATH", "")]))
    t0 = time.time()
    tests = gpu_tests(args.exclude)
    print(f"{len(tests)} cuda tests, {args.shards} shards per tool", flush=True)
    procs = []
    for tool, label, cmd in jobs_for(args, tests):
        log = open(args.out / f"{tool}-{label}.log", "w")
        procs.append((tool, label, log, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                                         stderr=subprocess.STDOUT,
                                                         start_new_session=True)))
    deadline = t0 + args.budget
    for tool, label, log, p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
            log.write("\n[sanitize_gpu] killed at the time budget\n")
        log.close()
    rows = {}
    print(f"\n{'tool':10s} {'job':8s} {'rc':>4s} {'procs':>5s} {'passed':>6s} {'failed':>6s} "
          f"{'fuzz':>5s} {'ffail':>5s} {'errors':>6s} {'in spc':>6s}")
    for tool, label, _, p in procs:
        path = args.out / f"{tool}-{label}.log"
        text = path.read_text(errors="replace")
        r = parse(text)
        killed = "killed at the time budget" in text
        rows.setdefault(tool, []).append(r)
        print(f"{tool:10s} {label:8s} {('kill' if killed else p.returncode):>4} {r['processes']:5d} "
              f"{r['passed']:6d} {r['failed']:6d} {r['cases']:5d} {r['fuzz_failures']:5d} "
              f"{r['errors']:6d} {r['spc_errors']:6d}")
        for k in r["foreign"]:
            print(f"{'':19s}reported in a kernel spc did not generate: {k}")
        if r["errors"] == 0 and r["failed"] == 0 and not killed and not args.keep_logs:
            path.unlink()
    print(f"\nwall {time.time() - t0:.0f} s")
    clean = all(r["spc_errors"] == 0 and r["failed"] == 0 for rs in rows.values() for r in rs)
    return 0 if clean else 1

if __name__ == "__main__":
    sys.exit(main())
