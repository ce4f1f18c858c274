"""Cases in worker processes: a segfault or a hang is caught and attributed to
the case that caused it, and the worker replaced."""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import time
from multiprocessing.connection import wait


WORKER_CANNOT_START = 3


def _worker(conn, env: dict, mode: str) -> None:
    os.environ.update(env)
    try:
        import spc  # noqa: F401
        from .execute import run_case
        runner = run_case
        if mode == "cuda-render":
            from .cuda import render_case
            runner = render_case
        elif mode == "cuda-run":
            from .cuda import run_case_gpu
            runner = run_case_gpu
    except Exception:  # noqa: BLE001 - the worker cannot start at all
        import traceback
        traceback.print_exc()
        os._exit(WORKER_CANNOT_START)
    try:
        while True:
            batch = conn.recv()
            if batch is None:
                return
            for case in batch:
                t0 = time.perf_counter()
                res = runner(case)
                res["seconds"] = round(time.perf_counter() - t0, 3)
                conn.send(res)
    except (EOFError, OSError):      # the parent went away
        return


def run_inline(cases, env: dict, mode: str):
    """(case, result) per case, run in this process one after another: no isolation
    from crashes or hangs, for tools that must watch every CUDA call in one process
    (compute-sanitizer does not follow the pool's spawned workers)."""
    os.environ.update(env)
    from .execute import run_case as runner
    if mode == "cuda-render":
        from .cuda import render_case as runner
    elif mode == "cuda-run":
        from .cuda import run_case_gpu as runner
    for case in cases:
        t0 = time.perf_counter()
        res = runner(case)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        yield case, res


class Pool:
    """``jobs`` workers; ``run(cases)`` yields (case, result) in completion order.

    Cases go to workers in groups of ``group`` consecutive ones (they share a
    program, so the worker's in-memory kernel cache serves all but the first)."""

    def __init__(self, jobs: int, timeout: float, env: dict | None = None,
                 mode: str = "cpu", recycle: int = 400, group: int = 4):
        self.ctx = mp.get_context("spawn")
        self.jobs, self.timeout, self.mode, self.recycle = jobs, timeout, mode, recycle
        self.env = dict(env or {})
        self.group = group
        self.workers = []

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child, self.env, self.mode), daemon=True)
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "case": None, "batch": [], "t0": 0.0, "done": 0}

    def _stop(self, w, kill: bool = False):
        try:
            if kill:
                w["proc"].kill()
            else:
                w["conn"].send(None)
        except (OSError, BrokenPipeError):
            pass
        w["proc"].join(5 if kill else 120)     # a clean exit under compute-sanitizer is slow
        if w["proc"].is_alive():
            w["proc"].kill()
            w["proc"].join(5)
        w["conn"].close()

    def run(self, cases):
        cases = iter(cases)
        self.workers = [self._start() for _ in range(self.jobs)]
        pending = True
        try:
            while True:
                for n, w in enumerate(self.workers):
                    if w["case"] is None and pending:
                        if w["done"] >= self.recycle:
                            self._stop(w)
                            w = self.workers[n] = self._start()
                        batch = [c for c in itertools.islice(cases, self.group)]
                        if not batch:
                            pending = False
                            continue
                        w["batch"] = batch[1:]
                        w["case"], w["t0"] = batch[0], time.monotonic()
                        w["conn"].send(batch)
                busy = [w for w in self.workers if w["case"] is not None]
                if not busy:
                    return
                ready = wait([w["conn"] for w in busy] + [w["proc"].sentinel for w in busy],
                             timeout=1.0)
                now = time.monotonic()
                for n, w in enumerate(self.workers):
                    if w["case"] is None:
                        continue
                    case = w["case"]
                    res = None
                    if w["conn"] in ready:
                        try:
                            res = w["conn"].recv()
                        except (EOFError, OSError):
                            res = None
                        if res is not None:
                            w["done"] += 1
                            w["case"] = w["batch"].pop(0) if w["batch"] else None
                            w["t0"] = time.monotonic()
                            yield case, res
                            continue
                    if w["proc"].sentinel in ready or not w["proc"].is_alive():
                        w["proc"].join(2)
                        code = w["proc"].exitcode
                        if code == WORKER_CANNOT_START:
                            raise RuntimeError("a fuzz worker cannot import spc (see above)")
                        res = {"outcome": "failure", "kind": "crash", "stage": "?",
                               "error": f"exit {code}", "message": f"worker died (exit code {code})"}
                    elif now - w["t0"] > self.timeout:
                        res = {"outcome": "failure", "kind": "hang", "stage": "?",
                               "error": "timeout", "message": f"no result after {self.timeout:.0f} s"}
                    if res is not None:
                        self._stop(w, kill=True)
                        rest = w["batch"]
                        w = self.workers[n] = self._start()
                        yield case, res
                        if rest:                       # the rest of the group, on a new worker
                            w["batch"] = rest[1:]
                            w["case"], w["t0"] = rest[0], time.monotonic()
                            w["conn"].send(rest)
        finally:
            for w in self.workers:
                self._stop(w, kill=w["case"] is not None)
