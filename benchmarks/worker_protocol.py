"""The worker side of the CPU benchmarks' process protocol, shared by
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
import sys
import traceback
from pathlib import Path

import numpy as np
import scipy.sparse as sp


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
