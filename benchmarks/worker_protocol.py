"""Both sides of the CPU benchmarks' worker-process protocol, shared by
``systems_cpu.py`` (bench_cpu.py) and ``formats_workers.py`` (bench_formats.py).

A worker times one system in its own process.  ``--serve`` answers JSON
requests on stdin (one line each: a matrix in an .npz and its cases), writing
one JSON record per case and a ``done`` line per request; ``--case-file``
runs requests from a file.  Each module supplies ``make_system(name)`` and
``run_case(system, A, case, req, budget)``; ``case_fields(case)`` names the
fields that identify a case in an error record.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def check_and_time(rec: dict, call, fn, to_numpy, ref, case: dict, req: dict, budget: list,
                   rel_error, rel_tol: float, time_guarded) -> dict:
    """Check ``call()`` against ``ref``, then time ``fn``: ``rec`` completed with
    the first call's time, the relative error, and the timing (or status fail)."""
    import gc
    import time as _time
    t = _time.perf_counter()
    out = call()
    rec["first_call_s"] = _time.perf_counter() - t
    err = rel_error(to_numpy(out), ref)
    rec["rel_err"] = err
    del out
    if not err < rel_tol:
        return {**rec, "status": "fail",
                "message": f"relative error {err:.3g} >= {rel_tol:g}; not timed"}
    gc.collect()
    gc.disable()
    try:
        timing = time_guarded(fn, min_time=req.get("min_time", 0.2),
                              min_repeats=req.get("min_repeats", 5),
                              max_external_load=req.get("max_external_load", 0.15),
                              retries=req.get("retries", 2), retry_budget_s=budget[0])
        budget[0] = max(0.0, budget[0] - timing["retry_s"])
    finally:
        gc.enable()
    rec.update(timing)
    rec["status"] = "ok"
    rec["gflops"] = case["flops"] / timing["median_s"] / 1e9
    return rec


def load_matrix(npz: str) -> sp.csr_matrix:
    z = np.load(npz)
    return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))


def run_request(system, req: dict, emit, run_case, case_fields) -> None:
    """Run every case of ``req`` on ``system``, emitting one record per case."""
    try:
        A = load_matrix(req["npz"])
    except Exception as err:  # noqa: BLE001 - every case gets the error, the worker lives on
        for case in req["cases"]:
            emit({**case_fields(case), "system": system.name, "matrix": req["matrix"],
                  "status": "error",
                  "message": f"loading {req['npz']}: {type(err).__name__}: {err}"})
        return
    system.forget_matrix()
    budget = [req.get("retry_budget_s", 60.0)]
    for case in req["cases"]:
        rec = run_case(system, A, case, req, budget)
        rec["matrix"] = req["matrix"]
        emit(rec)
    system.forget_matrix()


def serve(name: str, make_system, run_case, case_fields) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                      # library chatter on stdout goes to stderr instead

    def emit(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        system = make_system(name)
    except Exception as err:  # noqa: BLE001
        emit({"ready": False, "error": f"{type(err).__name__}: {err}",
              "traceback": traceback.format_exc()[-4000:]})
        return
    emit({"ready": True, "system": name, "pid": os.getpid(), "info": system.info()})
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("quit"):
            break
        run_request(system, req, emit, run_case, case_fields)
        emit({"done": True, "matrix": req["matrix"], "info": system.info()})


def main(argv, doc: str, systems, make_system, run_case, case_fields) -> None:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--system", required=True, choices=systems)
    ap.add_argument("--serve", action="store_true", help="answer JSON requests on stdin")
    ap.add_argument("--case-file", help="a JSON request or list of requests")
    ap.add_argument("--out", help="where --case-file results go (JSON); default stdout")
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.system, make_system, run_case, case_fields)
        return
    if not args.case_file:
        ap.error("give --serve or --case-file")
    reqs = json.loads(Path(args.case_file).read_text())
    if isinstance(reqs, dict):
        reqs = [reqs]
    system = make_system(args.system)
    results = []
    for req in reqs:
        run_request(system, req, results.append, run_case, case_fields)
    text = json.dumps({"system": args.system, "info": system.info(), "results": results},
                      indent=1)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


# -- the driver's side ----------------------------------------------------------------------

class Worker:
    """One system's process (``script --system <system> --serve``), answering
    JSON requests over pipes.  ``case_fields(case)`` gives the fields that
    identify a case: its key among the answers, and its error record."""

    def __init__(self, system: str, log_dir: Path, env: dict, script: Path, case_fields,
                 cwd: Path):
        self.system = system
        self.script, self.case_fields, self.cwd = script, case_fields, cwd
        self.log_path = log_dir / f"worker_{system}.log"
        self.env = env
        self.info: dict = {}
        self.restarts = 0
        self.proc = None
        self.start()

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), "--system", self.system, "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
            env=self.env, cwd=str(self.cwd))
        log.close()
        self._buf = ""
        hello = self.read(timeout=300)
        if hello is None or not hello.get("ready"):
            msg = (hello or {}).get("error", "no answer")
            raise RuntimeError(f"worker {self.system} did not start: {msg} "
                               f"(see {self.log_path})")
        self.info = hello.get("info", {})

    def read(self, timeout: float):
        """The next JSON line, or None on timeout or a dead worker."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout
        while True:
            if "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                if line.strip():
                    return json.loads(line)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd.fileno(), 1 << 16).decode()
            if not chunk:
                return None                     # EOF: the worker died
            self._buf += chunk

    def run(self, request: dict, timeout: float) -> list[dict]:
        """Results for every case of ``request``; cases it never answered (a
        crash or a timeout) come back as errors and the worker is restarted."""
        results = []
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                break
            if msg.get("done"):
                self.info = msg.get("info", self.info)
                return results
            results.append(msg)
        # crashed or timed out
        try:
            self.proc.wait(timeout=2 if time.monotonic() < deadline else 0.1)
        except subprocess.TimeoutExpired:
            pass
        alive = self.proc.poll() is None
        why = (f"timed out after {timeout:.0f} s" if alive
               else f"worker crashed (exit {self.proc.returncode})")
        answered = [{k: r.get(k) for k in self.case_fields(case)} for r in results
                    for case in request["cases"][:1]]
        for case in request["cases"]:
            fields = self.case_fields(case)
            if fields not in answered:
                results.append({**fields, "system": self.system, "matrix": request["matrix"],
                                "status": "error", "message": why})
        self.kill()
        self.restarts += 1
        self.start()
        return results

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.kill()


def start_workers(systems, log_dir: Path, env: dict, script: Path, case_fields, cwd: Path,
                  workers: dict) -> None:
    """Start one Worker per system into ``workers`` (filled as they start, so the
    caller can close those that did when a later one fails), printing each."""
    for s in systems:
        t = time.perf_counter()
        workers[s] = Worker(s, log_dir, env, script, case_fields, cwd)
        print(f"  worker {s}: ready in {time.perf_counter() - t:.1f} s {workers[s].info}",
              flush=True)
