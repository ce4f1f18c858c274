"""CPU SpMM with and without N panels (``Schedule(tile={"j": T})``, issue 9 part 4),
or SDDMM with its reduction in panels (``--op sddmm``: ``tile={"k": T}``), with
numba prange, scipy and torch (MKL) anchors, each system in its own process.

    python benchmarks/bench_tile_cpu.py [--op spmm] [--matrices SUBSTR ...] [--n 256 1024]
        [--tiles 0 64 128 256] [--threads 1 2] [--systems spc numba scipy torch]
        [--min-time 0.1]

Matrices: corpus entries (``common.entries``) whose path contains one of
``--matrices`` (default: an rn50 layer with K = 4608, a transformer FFN layer and
the pubmed graph).  Per system and thread count the driver starts one worker
(``--worker``), which loads each matrix, checks its first result against
float64 scipy (relative error < 1e-3) and then times calls with
``common.time_calls`` (median over ``--min-time`` seconds; two rounds, forward
and backward over the variants, keeping each one's faster median, as the first
timed after a change of case measured up to 2x slow); spc's worker times
each panel size of ``--tiles`` (0: no panels, spc's default schedule).  scipy
runs on one thread only; for SDDMM its column is numpy on the sampled rows
(``A.data * einsum(X[r], Y[c])``, as in bench_schedules_cpu.py) and torch's is
``sampled_addmm`` scaled by A's values.  Prints one row per case (milliseconds) and the ratios
best other system / spc's best, numba / spc's best and no panels / best panels.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import entries, load, time_calls  # noqa: E402

MATRICES = ("rn50/random_pruning/0.9/bottleneck_2_block_group4_1_1",
            "transformer/magnitude_pruning/0.8/body_decoder_layer_0_ffn_conv1_",
            "graphs/pubmed")


def _picked(substrings) -> list:
    out = [e for e in entries() if any(s in e.path for s in substrings)]
    if not out:
        raise SystemExit(f"no corpus matrix matches {substrings}")
    return out


def _callables(system: str, threads: int, tiles, op: str = "spmm"):
    """(variant name, make(A, *dense) -> fn) for ``system`` on ``threads`` threads."""
    index = {"spmm": "j", "sddmm": "k"}[op]
    if system == "spc":
        import spc
        out = []
        for t in tiles:
            k = spc.compile(op, fmt="csr", threads=threads,
                            **({"tile": {index: t}} if t else {}))
            out.append((f"spc-{index}{t}" if t else "spc", lambda A, *d, k=k: (
                lambda p=k.prepare(A): (lambda: k(p, *d)))()))
        return out
    if op == "sddmm":
        return _sddmm_callables(system, threads)
    if system == "numba":
        import numba
        from systems_cpu import _NUMBA_KERNELS
        import systems_cpu
        systems_cpu.prange = numba.prange
        numba.set_num_threads(threads)
        f = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)(
            _NUMBA_KERNELS["spmm"])
        return [("numba", lambda A, B: (lambda: f(A.indptr, A.indices, A.data, B)))]
    if system == "torch":
        import torch
        torch.set_num_threads(threads)

        def make(A, B):
            At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr), torch.from_numpy(A.indices),
                                         torch.from_numpy(A.data), size=A.shape)
            Bt = torch.from_numpy(B)
            return lambda: (At @ Bt).numpy()
        return [("torch", make)]
    return [("scipy", lambda A, B: (lambda: A @ B))]


def _sddmm_callables(system: str, threads: int):
    if system == "numba":
        import numba
        from systems_cpu import _NUMBA_KERNELS
        import systems_cpu
        systems_cpu.prange = numba.prange
        numba.set_num_threads(threads)
        f = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)(
            _NUMBA_KERNELS["sddmm"])
        return [("numba", lambda A, X, Y: (lambda: f(A.indptr, A.indices, A.data, X, Y)))]
    if system == "torch":
        import torch
        torch.set_num_threads(threads)

        def make(A, X, Y):
            At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr), torch.from_numpy(A.indices),
                                         torch.from_numpy(A.data), size=A.shape)
            Xt, Yt, vals = torch.from_numpy(X), torch.from_numpy(Y), At.values()

            def call():
                S = torch.sparse.sampled_addmm(At, Xt, Yt.T, beta=0.0, alpha=1.0)
                return S.values().mul_(vals).numpy()
            return call
        return [("torch", make)]

    def numpy_sampled(A, X, Y):
        r, c = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr)), A.indices
        return lambda: A.data * np.einsum("ij,ij->i", X[r], Y[c])
    return [("scipy", numpy_sampled)]


def _values(out) -> np.ndarray:
    """SDDMM's result values (spc gives a pattern tensor or scipy matrix)."""
    if hasattr(out, "vals"):
        return np.asarray(out.vals)
    return np.asarray(out.data if hasattr(out, "indptr") else out)


def worker(args) -> None:
    import warnings
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    variants = _callables(args.worker, args.threads, args.tiles, args.op)
    for e in _picked(args.matrices):
        A = load(e)
        for n in args.n:
            if args.op == "spmm":
                dense = (rng.standard_normal((A.shape[1], n)).astype(np.float32),)
                ref = A.astype(np.float64) @ dense[0].astype(np.float64)
            else:
                dense = (rng.standard_normal((A.shape[0], n)).astype(np.float32),
                         rng.standard_normal((A.shape[1], n)).astype(np.float32))
                r = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
                ref = A.data * np.einsum("ij,ij->i", dense[0][r].astype(np.float64),
                                         dense[1][A.indices].astype(np.float64))
            fns = {}
            for name, make in variants:
                fn = fns[name] = make(A, *dense)
                got = np.asarray(fn()) if args.op == "spmm" else _values(fn())
                err = np.linalg.norm(got - ref) / (np.linalg.norm(ref) or 1.0)
                if err > 1e-3:
                    raise SystemExit(f"WRONG {name} {e.name} n={n}: {err:.2e}")
            # two rounds, forward then backward, keeping each variant's faster median:
            # whichever runs first after a change of case measures slow (up to 2x here)
            best: dict[str, float] = {}
            for order in (list(fns), list(fns)[::-1]):
                for name in order:
                    t = time_calls(fns[name], min_time=args.min_time)["median_s"]
                    best[name] = min(t, best.get(name, t))
            for name, t in best.items():
                print(json.dumps({"matrix": e.name, "n": n, "variant": name,
                                  "threads": args.threads, "s": t}), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--op", default="spmm", choices=("spmm", "sddmm"))
    ap.add_argument("--matrices", nargs="+", default=list(MATRICES))
    ap.add_argument("--n", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--tiles", type=int, nargs="+", default=[0, 64, 128, 256])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--systems", nargs="+", default=["spc", "numba", "scipy", "torch"])
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        worker(args)
        return 0
    rows = []
    for system in args.systems:
        for threads in ([1] if system == "scipy" else args.threads):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                       NUMBA_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            cmd = [sys.executable, __file__, "--worker", system, "--threads", str(threads),
                   "--op", args.op,
                   "--min-time", str(args.min_time), "--matrices", *args.matrices,
                   "--n", *map(str, args.n), "--tiles", *map(str, args.tiles)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                print(done.stdout + done.stderr)
                return 1
            rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    print(f"# {args.op}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores, ms per call (median); x: other / spc's best")
    names = list(dict.fromkeys(r["variant"] for r in rows))
    print(f"{'matrix':34s} {'n':>5s} {'thr':>3s} " + " ".join(f"{v:>9s}" for v in names)
          + "  best-spc  xbest  xnumba  xpanels")
    for key in dict.fromkeys((r["matrix"], r["n"], r["threads"]) for r in rows):
        t = {r["variant"]: r["s"] for r in rows if (r["matrix"], r["n"], r["threads"]) == key}
        if key[2] != 1:                        # scipy's one thread anchors every row
            t.update({r["variant"]: r["s"] for r in rows if r["variant"] == "scipy"
                      and (r["matrix"], r["n"]) == key[:2]})
        spc_t = {v: s for v, s in t.items() if v.startswith("spc")}
        if not spc_t:
            continue
        best = min(spc_t, key=spc_t.get)
        others = [s for v, s in t.items() if not v.startswith("spc")]
        panels = [s for v, s in spc_t.items() if v != "spc"]
        print(f"{key[0][:34]:34s} {key[1]:5d} {key[2]:3d} "
              + " ".join(f"{t[v]*1e3:9.2f}" if v in t else f"{'':9s}" for v in names)
              + f"  {best:>8s} {min(others) / spc_t[best] if others else float('nan'):6.2f}"
              + f" {t['numba'] / spc_t[best] if 'numba' in t else float('nan'):7.2f}"
              + f" {spc_t['spc'] / min(panels) if panels and 'spc' in spc_t else math.nan:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
