"""GPU benchmark: spc's SpMV, SpMM and SDDMM (float32) against cuSPARSE (through
torch), CuPy's cupyx.scipy.sparse and dense cuBLAS, on the real-matrix corpus.

    python benchmarks/bench_gpu.py [--data DIR] [--ns 32,128,1024] [--per-family 8]

For every system and case it reports two times:

* caller: what a caller sees, CUDA events recorded around one call (host
  overhead included), the stream idle before each call; median of --reps;
* device: the GPU time of the call's kernels, memsets and copies, from the
  profiler (torch.profiler over CUPTI, which sees CuPy's launches too), per call.

Per matrix family it prints the median GFLOP/s of both views, the median
fraction of the memory-bandwidth floor reached (bytes that must move once /
measured device-to-device copy bandwidth, over the device time), and the
geometric-mean speedup of spc over cuSPARSE in both views.  Every result is
checked against a float64 reference (‖out - ref‖ / ‖ref‖ < 1e-3) before it is
timed; a wrong result is reported and not timed.  spc runs with
``validate=False`` on torch tensors (the same tensors cuSPARSE gets; torch does
not validate either).  FLOPs: SpMV 2·nnz, SpMM and SDDMM 2·nnz·N.

``--memcheck`` runs each spc kernel once per matrix and nothing else (for
``compute-sanitizer --tool memcheck``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402

FAMILIES = ("dlmc-transformer", "dlmc-rn50", "graph")
LABEL = {"dlmc-transformer": "transformer", "dlmc-rn50": "rn50", "graph": "graphs"}
REL_TOL = 1e-3
DENSE_LIMIT = 4e8          # dense cuBLAS only when rows*cols is at most this


# -- corpus ---------------------------------------------------------------------------------
def pick(entries, per_family: int):
    """Up to ``per_family`` entries of each family, spread evenly over nnz."""
    out = []
    for fam in FAMILIES:
        es = sorted((e for e in entries if e.family == fam), key=lambda e: e.nnz)
        if len(es) <= per_family:
            out += es
        elif per_family == 1:
            out.append(es[len(es) // 2])
        else:
            step = (len(es) - 1) / (per_family - 1)
            out += [es[round(k * step)] for k in range(per_family)]
    return out


def flops(op, nnz, n):
    return 2 * nnz * (1 if op == "spmv" else n)


def floor_bytes(op, rows, cols, nnz, n):
    """Bytes that must move once: values and indices of A, row pointers, dense
    inputs and the output (float32 values, int32 indices)."""
    a = nnz * 8 + (rows + 1) * 4
    if op == "spmv":
        return a + cols * 4 + rows * 4
    if op == "spmm":
        return a + cols * n * 4 + rows * n * 4
    return a + rows * n * 4 + cols * n * 4 + nnz * 4


# -- timing -----------------------------------------------------------------------------------
def caller_time(torch, fn, reps: int) -> float:
    """Median seconds of one call, CUDA events around it, idle stream before each."""
    return statistics.median(common.cuda_event_times(torch, fn, reps))


def device_times(torch, labelled, reps: int) -> dict:
    """{label: device seconds per call} from one profiler session over all calls."""
    from torch.profiler import ProfilerActivity, profile, record_function
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for label, fn in labelled:
            with record_function(f"spcbench::{label}"):
                for _ in range(reps):
                    fn()
                torch.cuda.synchronize()
    events = prof.events()
    ranges, gpu = {}, []
    for ev in events:
        name = ev.name
        if name.startswith("spcbench::"):
            ranges[name[len("spcbench::"):]] = (ev.time_range.start, ev.time_range.end)
        elif str(ev.device_type).endswith("CUDA"):
            gpu.append((ev.time_range.start, ev.time_range.end))
    out = {}
    for label, (lo, hi) in ranges.items():
        busy = sum(e - s for s, e in gpu if s >= lo and e <= hi)
        out[label] = busy * 1e-6 / reps if busy > 0 else float("nan")
    return out


def copy_bandwidth(torch) -> tuple[float, str]:
    """(device-to-device copy bandwidth in bytes/s, bytes read plus written; the
    timer): the median device time of a 1 GiB copy (``common.gpu_kernel_time``)."""
    n = 1 << 28                         # 1 GiB of float32
    a = torch.empty(n, device="cuda")
    b = torch.empty_like(a)
    t = common.gpu_kernel_time(torch, lambda: b.copy_(a), reps=10, warmup=3)
    return 2 * n * 4 / t.seconds, t.timer


# -- systems ----------------------------------------------------------------------------------
class Case:
    def __init__(self, torch, cupy, cpsp, spc_k, A, op, n, rng):
        self.op, self.n = op, n
        m, k = A.shape
        dev = "cuda"
        self.t_crow = torch.from_numpy(A.indptr.astype(np.int32)).to(dev)
        self.t_col = torch.from_numpy(A.indices.astype(np.int32)).to(dev)
        self.t_val = torch.from_numpy(A.data.astype(np.float32)).to(dev)
        self.tA = torch.sparse_csr_tensor(self.t_crow, self.t_col, self.t_val, (m, k))
        self.cA = cpsp.csr_matrix((cupy.asarray(A.data), cupy.asarray(A.indices),
                                   cupy.asarray(A.indptr)), shape=A.shape)
        self.dense_ok = m * k <= DENSE_LIMIT
        f64 = torch.float64
        tA64 = torch.sparse_csr_tensor(self.t_crow.long(), self.t_col.long(),
                                       self.t_val.to(f64), (m, k))
        if op == "spmv":
            self.x = torch.from_numpy(rng.uniform(-1, 1, k).astype(np.float32)).to(dev)
            self.cx = cupy.asarray(self.x)
            self.ref = (tA64 @ self.x.to(f64).unsqueeze(1)).squeeze(1)
            self.systems = {
                "spc": lambda: spc_k["spmv"](self.tA, self.x, validate=False),
                "cusparse": lambda: torch.mv(self.tA, self.x),
                "cupy": lambda: self.cA @ self.cx,
            }
        elif op == "spmm":
            self.B = torch.from_numpy(rng.uniform(-1, 1, (k, n)).astype(np.float32)).to(dev)
            self.cB = cupy.asarray(self.B)
            self.ref = tA64 @ self.B.to(f64)
            self.systems = {
                "spc": lambda: spc_k["spmm"](self.tA, self.B, validate=False),
                "cusparse": lambda: self.tA @ self.B,
                "cupy": lambda: self.cA @ self.cB,
            }
        else:
            self.X = torch.from_numpy(rng.uniform(-1, 1, (m, n)).astype(np.float32)).to(dev)
            self.Y = torch.from_numpy(rng.uniform(-1, 1, (k, n)).astype(np.float32)).to(dev)
            rows = torch.repeat_interleave(torch.arange(m, device=dev),
                                           self.t_crow[1:].long() - self.t_crow[:-1].long())
            cols = self.t_col.long()
            X64, Y64 = self.X.to(f64), self.Y.to(f64)
            chunk = max(1, (1 << 26) // n)                       # bounded scratch memory
            self.ref_pattern = torch.cat([                       # (X Y^T) at A's pattern
                (X64[rows[s:s + chunk]] * Y64[cols[s:s + chunk]]).sum(1)
                for s in range(0, len(rows), chunk)]) if len(rows) else torch.zeros(0, dtype=f64,
                                                                                  device=dev)
            self.ref = self.ref_pattern * self.t_val.to(f64)     # spc's S = A .* (X Y^T)
            Yt = self.Y.T
            self.systems = {
                "spc": lambda: spc_k["sddmm"](self.tA, self.X, self.Y, validate=False),
                "cusparse": lambda: torch.sparse.sampled_addmm(self.tA, self.X, Yt,
                                                               beta=0.0, alpha=1.0),
            }
        if self.dense_ok:
            self.Ad = self.tA.to_dense()
            if op == "spmv":
                self.systems["dense"] = lambda: torch.mv(self.Ad, self.x)
            elif op == "spmm":
                self.systems["dense"] = lambda: self.Ad @ self.B
            else:
                mask = self.Ad != 0
                self.mask = mask
                self.systems["dense"] = lambda: (self.X @ self.Y.T) * self.Ad

    def values(self, torch, cupy, name, out):
        """The result's values as a float64 torch vector comparable with the reference."""
        if isinstance(out, cupy.ndarray):
            out = torch.as_tensor(out, device="cuda")
        elif hasattr(out, "format") and hasattr(out, "indptr") and not isinstance(out, torch.Tensor):
            out = torch.as_tensor(out.data, device="cuda")
        if self.op == "sddmm":
            if name == "dense":
                return None
            if out.layout == torch.sparse_csr:
                out = out.values()
            return out.to(torch.float64)
        return out.to(torch.float64).reshape(self.ref.shape)

    def check(self, torch, cupy, name) -> float:
        out = self.systems[name]()
        torch.cuda.synchronize()
        got = self.values(torch, cupy, name, out)
        if got is None:           # dense SDDMM: compare on A's pattern
            dense = out.to(torch.float64)
            m = self.tA.shape[0]
            rows = torch.repeat_interleave(torch.arange(m, device="cuda"),
                                           self.t_crow[1:].long() - self.t_crow[:-1].long())
            got = dense[rows, self.t_col.long()]
            ref = self.ref
        else:
            ref = self.ref_pattern if (self.op == "sddmm" and name == "cusparse") else self.ref
        if got.shape != ref.shape:
            return float("inf")
        den = torch.linalg.vector_norm(ref).item() or 1.0
        return torch.linalg.vector_norm(got - ref).item() / den


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SPC_DATA_DIR"))
    ap.add_argument("--ns", default="32,128,1024")
    ap.add_argument("--ops", default="spmv,spmm,sddmm")
    ap.add_argument("--per-family", type=int, default=8)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--prof-reps", type=int, default=10)
    ap.add_argument("--memcheck", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.data:
        os.environ["SPC_DATA_DIR"] = args.data
    import cupy
    import cupyx.scipy.sparse as cpsp
    import torch

    import spc
    from spc import corpus

    ns = [int(x) for x in args.ns.split(",")]
    ops = args.ops.split(",")
    entries = pick(corpus.entries(), args.per_family)
    spc_k = {name: spc.compile(name, fmt="csr", target="cuda") for name in ("spmv", "spmm", "sddmm")}
    rng = np.random.default_rng(0)
    dev = torch.cuda.get_device_name()
    if args.memcheck:
        for e in entries:
            A = corpus.load(e.path)
            for op in ops:
                for n in ([1] if op == "spmv" else ns):
                    case = Case(torch, cupy, cpsp, spc_k, A, op, n, rng)
                    err = case.check(torch, cupy, "spc")
                    print(f"memcheck {e.name} {op} N={n}: rel err {err:.1e}", flush=True)
        return 0
    bw, bw_timer = copy_bandwidth(torch)
    print(f"# {dev}, {datetime.date.today()}, torch {torch.__version__}, cupy {cupy.__version__}; "
          f"copy bandwidth {bw / 1e9:.0f} GB/s ({bw_timer}); {len(entries)} matrices", flush=True)
    rows = []
    t0 = time.time()
    for e in entries:
        A = corpus.load(e.path)
        labelled, cases = [], {}
        for op in ops:
            for n in ([1] if op == "spmv" else ns):
                case = Case(torch, cupy, cpsp, spc_k, A, op, n, rng)
                for name in list(case.systems):
                    try:
                        err = case.check(torch, cupy, name)
                    except Exception as exc:  # noqa: BLE001 - a system may not support a case
                        print(f"  {e.name} {op} N={n} {name}: error {type(exc).__name__}: "
                              f"{str(exc)[:120]}", flush=True)
                        del case.systems[name]
                        continue
                    if not err < REL_TOL:
                        print(f"  {e.name} {op} N={n} {name}: WRONG (rel err {err:.2e})",
                              flush=True)
                        del case.systems[name]
                        continue
                    key = f"{op}|{n}|{name}"
                    cases[key] = (case, name, err)
                    labelled.append((key, case.systems[name]))
        dev_t = device_times(torch, labelled, args.prof_reps)
        for key, (case, name, err) in cases.items():
            op, n, _ = key.split("|")
            n = int(n)
            ct = caller_time(torch, case.systems[name], args.reps)
            dt = dev_t.get(key, float("nan"))
            fl = flops(op, A.nnz, n)
            fb = floor_bytes(op, A.shape[0], A.shape[1], A.nnz, n)
            rows.append(dict(matrix=e.name, family=e.family, rows=A.shape[0], cols=A.shape[1],
                             nnz=A.nnz, op=op, n=n, system=name, err=err, caller_s=ct,
                             device_s=dt, caller_gflops=fl / ct / 1e9,
                             device_gflops=fl / dt / 1e9 if dt == dt else float("nan"),
                             floor_frac=(fb / bw) / dt if dt == dt else float("nan")))
        del cases, labelled
        torch.cuda.empty_cache()
        print(f"  done {e.name} ({A.shape[0]}x{A.shape[1]}, nnz {A.nnz}) "
              f"[{time.time() - t0:.0f}s]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=dev, date=str(datetime.date.today()),
                                                   copy_bw=bw, copy_bw_timer=bw_timer, rows=rows), indent=1))
    report(rows, dev, bw, ops, ns)
    return 0


def report(rows, dev, bw, ops, ns):
    systems = ["spc", "cusparse", "cupy", "dense"]
    print(f"\n## {dev}, {datetime.date.today()}: median GFLOP/s per family "
          f"(transformer / rn50 / graphs), caller view | device view; floor = median "
          f"fraction of the bandwidth floor (device view); copy {bw / 1e9:.0f} GB/s")
    for op in ops:
        for n in ([1] if op == "spmv" else ns):
            print(f"\n{op} N={n}")
            print(f"  {'system':9s} {'caller GFLOP/s':>24s} | {'device GFLOP/s':>24s} | "
                  f"{'floor frac':>18s}")
            for s in systems:
                sel = [r for r in rows if r["op"] == op and r["n"] == n and r["system"] == s]
                if not sel:
                    continue
                cells = []
                for key in ("caller_gflops", "device_gflops", "floor_frac"):
                    per = []
                    for fam in FAMILIES:
                        v = [r[key] for r in sel if r["family"] == fam and r[key] == r[key]]
                        fmt = "{:.0f}" if key != "floor_frac" else "{:.2f}"
                        per.append(fmt.format(statistics.median(v)) if v else "-")
                    cells.append(" / ".join(per))
                print(f"  {s:9s} {cells[0]:>24s} | {cells[1]:>24s} | {cells[2]:>18s}")
            for other in ("cusparse", "cupy"):
                sp_ = []
                for fam in FAMILIES:
                    pair_c, pair_d = [], []
                    for r in rows:
                        if r["op"] == op and r["n"] == n and r["system"] == "spc" \
                                and r["family"] == fam:
                            o = [q for q in rows if q["matrix"] == r["matrix"] and q["op"] == op
                                 and q["n"] == n and q["system"] == other]
                            if o:
                                pair_c.append(o[0]["caller_s"] / r["caller_s"])
                                pair_d.append(o[0]["device_s"] / r["device_s"])
                    sp_.append((common.geomean(pair_c), common.geomean(pair_d)))
                if any(x == x for pair in sp_ for x in pair):
                    print(f"  geomean speedup of spc over {other:8s} caller: "
                          + " / ".join(f"{c:.2f}x" for c, _ in sp_)
                          + "   device: " + " / ".join(f"{d:.2f}x" for _, d in sp_))


if __name__ == "__main__":
    sys.exit(main())
