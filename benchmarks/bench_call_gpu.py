"""The GPU call path as a torch user sees it: spc's default call (validation on)
on torch CUDA tensors against torch's own call (cuSPARSE), per kernel.

    python benchmarks/bench_call_gpu.py [--data DIR] [--per-family 3] [--ns 32,128]
                                        [--cold] [--cupy] [--out results.json]

Per case and system it reports:

* host: microseconds of host time per call, issuing 200 calls back to back
  without synchronizing (the GPU queue absorbs them);
* caller: CUDA events around one call, the stream idle before it (median);
* device: the call's GPU time (torch.profiler, kernels and memsets) per call;
* ratio: torch's caller time over spc's (>= 1: spc's call is cheaper).

Cases: a 512 x 512 matrix at 1% density and up to --per-family matrices per
corpus family.  Every spc result is checked against a float64 reference
before it is timed.  ``--cold`` also times, in fresh processes with empty
spc and CuPy caches, ``import spc`` and ``spc.compile`` to the first SpMM
result (torch imported and the tensors made beforehand).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402
from bench_gpu import caller_time, device_times, pick  # noqa: E402

ISSUE_CALLS = 200


def host_time(torch, fn, calls: int = ISSUE_CALLS) -> float:
    """Median seconds of host time per call over 5 bursts of ``calls`` unsynchronized calls."""
    return statistics.median(common.burst_times(fn, calls=calls, bursts=5,
                                                sync=torch.cuda.synchronize, sync_timed=False))


def systems(torch, spc, A, op: str, n: int, rng, cupy: bool = False):
    """(reference, {name: fn}) for one case; A is a scipy CSR matrix.  With
    ``cupy``, also "spc-cupy": spc's default call on the same data as a cupyx
    CSR matrix and CuPy arrays (zero-copy views of the torch tensors)."""
    ref, fns = _systems(torch, spc, A, op, n, rng)
    if cupy:
        import cupy as cp
        import cupyx.scipy.sparse as csp
        tA, *dense = fns.pop("_operands")
        cA = csp.csr_matrix((cp.from_dlpack(tA.values()), cp.from_dlpack(tA.col_indices()),
                             cp.from_dlpack(tA.crow_indices())), shape=tuple(tA.shape))
        cdense = [cp.from_dlpack(x.contiguous()) for x in dense]
        spc_k = fns.pop("_kernel")
        fns["spc-cupy"] = lambda: spc_k(cA, *cdense)
    fns.pop("_operands", None)
    fns.pop("_kernel", None)
    return ref, fns


def _systems(torch, spc, A, op: str, n: int, rng):
    dev = "cuda"
    f32 = torch.float32
    tA = torch.sparse_csr_tensor(torch.tensor(A.indptr, dtype=torch.int32, device=dev),
                                 torch.tensor(A.indices, dtype=torch.int32, device=dev),
                                 torch.tensor(A.data, dtype=f32, device=dev), A.shape)
    m, k = A.shape
    spc_k = spc.compile(op, fmt="csr", target="cuda")
    if op == "spmv":
        x = torch.tensor(rng.standard_normal(k), dtype=f32, device=dev)
        ref = A.astype(np.float64) @ x.cpu().double().numpy()
        return ref, {"torch": lambda: tA @ x,
                     "spc": lambda: spc_k(tA, x),
                     "spc-novalidate": lambda: spc_k(tA, x, validate=False),
                     "_operands": (tA, x), "_kernel": spc_k}
    if op == "spmm":
        B = torch.tensor(rng.standard_normal((k, n)), dtype=f32, device=dev)
        ref = A.astype(np.float64) @ B.cpu().double().numpy()
        return ref, {"torch": lambda: tA @ B,
                     "spc": lambda: spc_k(tA, B),
                     "spc-novalidate": lambda: spc_k(tA, B, validate=False),
                     "_operands": (tA, B), "_kernel": spc_k}
    # torch's sampled_addmm samples X @ Y^T on A's pattern, spc's SDDMM scales it by
    # A's values: with A's values all ones the two compute the same
    tA.values().fill_(1.0)
    A = A.copy()
    A.data[:] = 1.0
    X = torch.tensor(rng.standard_normal((m, n)), dtype=f32, device=dev)
    Y = torch.tensor(rng.standard_normal((k, n)), dtype=f32, device=dev)
    Yt = Y.t()
    ref = A.multiply(X.cpu().double().numpy() @ Y.cpu().double().numpy().T).toarray()
    return ref, {"torch": lambda: torch.sparse.sampled_addmm(tA, X, Yt, beta=0.0, alpha=1.0),
                 "spc": lambda: spc_k(tA, X, Y),
                 "spc-novalidate": lambda: spc_k(tA, X, Y, validate=False),
                 "_operands": (tA, X, Y), "_kernel": spc_k}


def check(torch, out, ref) -> float:
    if not isinstance(out, torch.Tensor):             # CuPy or cupyx
        out = torch.from_dlpack(out.toarray() if hasattr(out, "toarray") else out)
    got = out if out.layout is torch.strided else out.to_dense()
    got = got.double().cpu().numpy()
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


COLD = r"""
import os, sys, time
import numpy as np, torch, scipy.sparse as sp
A = sp.random(512, 512, density=0.01, format="csr", random_state=0, dtype=np.float32)
tA = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices),
                             torch.tensor(A.data), A.shape).to("cuda")
B = torch.ones(512, 32, device="cuda")
torch.cuda.synchronize()
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import spc
t1 = time.perf_counter()
k = spc.compile("spmm", fmt="csr", target="cuda")
C = k(tA, B)
torch.cuda.synchronize()
t2 = time.perf_counter()
err = float(abs(C.cpu().numpy() - A @ np.ones((512, 32), np.float32)).max())
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {err:.2e}")
"""


def cold_start(repeats: int = 2) -> list[dict]:
    out = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, SPC_CACHE_DIR=os.path.join(d, "spc"),
                       CUPY_CACHE_DIR=os.path.join(d, "cupy"), NUMBA_CACHE_DIR=os.path.join(d, "nb"))
            res = subprocess.run([sys.executable, "-c", COLD, str(REPO)], env=env,
                                 capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                out.append({"error": res.stderr[-2000:]})
                continue
            imp, first, err = res.stdout.split()[-3:]
            out.append({"import_s": float(imp), "compile_to_result_s": float(first),
                        "max_err": float(err)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--per-family", type=int, default=3)
    ap.add_argument("--ns", default="32,128")
    ap.add_argument("--ops", default="spmm,sddmm,spmv")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--cupy", action="store_true", help="also time spc on CuPy/cupyx operands")
    ap.add_argument("--out", default="bench_call_gpu.json")
    args = ap.parse_args(argv)
    import scipy.sparse as sp
    import torch

    import spc
    from common import entries, load

    rng = np.random.default_rng(0)
    cases = [("synthetic-512-1%", "synthetic",
              sp.random(512, 512, density=0.01, format="csr", random_state=0, dtype=np.float32))]
    data = Path(args.data)
    if data.is_dir() and args.per_family > 0:
        for e in pick(entries(data), args.per_family):
            cases.append((e.name, e.family, load(e).astype(np.float32)))
    ns = [int(x) for x in args.ns.split(",")]
    rows = []
    for name, family, A in cases:
        A = sp.csr_matrix(A, dtype=np.float32)
        A.sort_indices()
        for op in args.ops.split(","):
            for n in ([1] if op == "spmv" else ns):
                ref, fns = systems(torch, spc, A, op, n, rng, args.cupy)
                errs = {s: check(torch, fn(), ref) for s, fn in fns.items()}
                bad = [s for s, e in errs.items() if not e < 1e-3]
                if bad:
                    print(f"WRONG {name} {op} N={n}: {errs}", flush=True)
                    fns = {s: f for s, f in fns.items() if s not in bad}
                host = {s: host_time(torch, fn) for s, fn in fns.items()}
                caller = {s: caller_time(torch, fn, args.reps) for s, fn in fns.items()}
                device = device_times(torch, list(fns.items()), 20)
                row = dict(case=name, family=family, op=op, n=n, rows=A.shape[0],
                           cols=A.shape[1], nnz=A.nnz,
                           **{f"{s}_{what}_us": d[s] * 1e6 for s in fns
                              for what, d in (("host", host), ("caller", caller),
                                              ("device", device))})
                if "spc" in caller and "torch" in caller:
                    row["ratio"] = caller["torch"] / caller["spc"]
                rows.append(row)
                print(f"{name[:38]:38s} {op:5s} N={n:<4d} " + "  ".join(
                    f"{s}: host {host[s]*1e6:6.1f} caller {caller[s]*1e6:7.1f} "
                    f"dev {device.get(s, float('nan'))*1e6:7.1f}" for s in fns)
                    + (f"  torch/spc {row['ratio']:.2f}" if "ratio" in row else ""), flush=True)
    summary = {}
    for (fam, op, n) in sorted({(r["family"], r["op"], r["n"]) for r in rows}):
        rs = [r for r in rows if (r["family"], r["op"], r["n"]) == (fam, op, n) and "ratio" in r]
        if rs:
            ratios = [r["ratio"] for r in rs]
            summary[f"{fam}/{op}/N={n}"] = dict(
                geomean_torch_over_spc=statistics.geometric_mean(ratios),
                min_ratio=min(ratios),
                median_spc_host_us=statistics.median(r["spc_host_us"] for r in rs),
                median_torch_host_us=statistics.median(r["torch_host_us"] for r in rs))
    print("\nper family (caller view, torch time / spc time; spc host us per call):")
    for key, s in summary.items():
        print(f"  {key:34s} geomean {s['geomean_torch_over_spc']:.2f}  min {s['min_ratio']:.2f}"
              f"  spc host {s['median_spc_host_us']:.1f} us  torch host "
              f"{s['median_torch_host_us']:.1f} us")
    cold = cold_start() if args.cold else []
    for c in cold:
        print("cold start:", c)
    result = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  device=torch.cuda.get_device_name(), torch=torch.__version__,
                  rows=rows, summary=summary, cold=cold)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
