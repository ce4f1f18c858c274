"""GPU format benchmark: spc's storage formats (target='cuda') against torch's
sparse layouts on the same matrices, SpMM (float32; fp16 where torch needs it).

    python benchmarks/bench_formats_gpu.py --quick            # 14 matrices, under ~4 min
    python benchmarks/bench_formats_gpu.py                    # every matrix (stops at --budget-s)
    python benchmarks/bench_formats_gpu.py --quick --dry-run  # no GPU: CPU stand-ins, see below

Systems (labels system:variant):

* ``spc:<fmt>``: ``spc.compile("spmm", fmt=fmt, target="cuda")`` called on the
  matrix converted once with ``spc.tensor(A, fmt)`` and moved to the GPU
  (``DeviceOperands.to_device``; hyb part by part), B a torch CUDA tensor,
  ``validate=False`` (the first, checked call validates);
* ``spc:csr-torch``: spc's csr kernel called on torch's CSR tensor (zero copy;
  bench_gpu.py's call), not counted as a format;
* ``torch:csr``: cuSPARSE SpMM (``A_csr @ B``, int32 indices);
* ``torch:bsr(r,c)``: ``A_bsr @ B`` on a ``sparse_bsr`` tensor (cuSPARSE bsrmm,
  or whatever torch routes it to);
* ``torch:bsr-triton(r,c)``: ``torch.sparse._triton_ops.bsr_dense_mm`` (Triton;
  blocks >= 16 and powers of two, N a multiple of 16);
* ``torch:2:4-cusparselt-fp16``, ``torch:2:4-cutlass-fp16``,
  ``torch:2:4-cutlass-fp32``: ``torch.sparse.to_sparse_semi_structured`` on
  2:4 matrices (the N:M 2:4 family), ``torch.mm(A_24, B)``; the matrix is
  zero-padded to multiples of 64 (the output sliced back, a view);
* ``torch:dense`` (cuBLAS fp32, TF32 off) and ``torch:dense-fp16`` (cuBLAS fp16).

Each record carries its dtype; fp16 results are checked against a float64
reference computed from the fp16-rounded inputs (tolerance 1e-2; fp32 1e-3,
CUTLASS fp32 2:4 1e-2 since it may run in TF32).  Times: the caller view (CUDA
events around one call, median of --reps; bench_gpu.py's method) and the device
view (kernel time from torch.profiler, per call).  GFLOP/s = 2 nnz N / time with
nnz the matrix's nonzeros, never the padded storage.  Writes results.json and
summary.md into --out (default bench_out/formats_gpu/) and prints the summary.

``--dry-run`` needs no GPU: it builds the matrices, formats and references,
renders every spc CUDA kernel (``arch=sm_90``; ``--nvcc`` also compiles each
with ``nvcc -cubin``), and runs the same system code on the CPU (spc
target='cpu', torch CPU; the GPU-only systems are recorded as skipped), with
perf_counter timings, so the whole report path runs.
"""
from __future__ import annotations

import argparse
import datetime
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import bench_formats as bf  # noqa: E402
import common  # noqa: E402
from formats_workers import block_of, storage_bytes, stored_slots  # noqa: E402

GPU_FORMATS = ("csr", "bsr(1,4)", "bsr(4,4)", "bsr(16,16)", "bsr(32,32)", "ell", "dia",
               "nm(2,4)", "hyb")
REL_TOL = {"float32": 1e-3, "float16": 1e-2, "tf32": 1e-2}
DENSE_LIMIT = 4e8
PAIRS = (("spc:csr", "torch:csr"), ("spc:bsr(4,4)", "torch:bsr(4,4)"),
         ("spc:bsr(16,16)", "torch:bsr(16,16)"), ("spc:bsr(32,32)", "torch:bsr(32,32)"),
         ("spc:bsr(16,16)", "torch:bsr-triton(16,16)"),
         ("spc:bsr(32,32)", "torch:bsr-triton(32,32)"),
         ("spc:nm(2,4)", "torch:2:4-cusparselt-fp16"), ("spc:nm(2,4)", "torch:2:4-cutlass-fp16"),
         ("spc:nm(2,4)", "torch:2:4-cutlass-fp32"),
         ("spc:best", "spc:csr"), ("spc:best", "torch:dense"), ("spc:best", "torch:dense-fp16"))


class Skip(Exception):
    """A system that cannot run this case (recorded, not an error)."""


# -- the environment: a GPU, or CPU stand-ins for --dry-run ----------------------------------------
class Env:
    def __init__(self, dry_run: bool):
        import torch
        self.torch = torch
        self.dry = dry_run
        self.dev = "cpu" if dry_run else "cuda"
        self.target = "cpu" if dry_run else "cuda"
        self.ops = None
        if not dry_run:
            if not torch.cuda.is_available():
                sys.exit("no CUDA device (use --dry-run to check the script without one)")
            from spc.runtime.device import DeviceOperands
            self.ops = DeviceOperands.get()
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        try:
            torch.sparse.check_sparse_tensor_invariants.disable()
        except AttributeError:
            pass
        import warnings
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        warnings.filterwarnings("ignore", message=".*semi.structured.*")
        self.triton_mm = None
        self.triton_note = "needs CUDA" if dry_run else None
        if not dry_run:
            try:
                from torch.sparse._triton_ops import bsr_dense_mm
                self.triton_mm = bsr_dense_mm
            except Exception as err:  # noqa: BLE001 - absent or broken triton
                self.triton_note = f"torch.sparse._triton_ops.bsr_dense_mm: {type(err).__name__}: {err}"
            if self.triton_mm is None and self.triton_note is None:
                self.triton_note = "torch.sparse._triton_ops has no bsr_dense_mm (no triton?)"

    def sync(self):
        if not self.dry:
            self.torch.cuda.synchronize()

    def to_device(self, t):
        """An spc tensor (or hyb SumTensor) whose arrays live on the GPU."""
        if self.dry:
            return t
        parts = getattr(t, "parts", None)
        if parts is not None:
            from spc.formats.composite import SumTensor
            return SumTensor(t.shape, t.format, [self.ops.to_device(p) for p in parts],
                             getattr(t, "width", None))
        return self.ops.to_device(t)

    def caller_time(self, fn, reps):
        if self.dry:
            return statistics.median(common.call_times(fn, min_repeats=reps))
        import bench_gpu
        return bench_gpu.caller_time(self.torch, fn, reps)

    def device_times(self, labelled, reps):
        if self.dry or not labelled:
            return {}
        import bench_gpu
        return bench_gpu.device_times(self.torch, labelled, reps)

    def info(self):
        t = self.torch
        d = {"torch": t.__version__, "device": "cpu (dry run)" if self.dry else
             t.cuda.get_device_name(), "triton": self.triton_note or "bsr_dense_mm available"}
        try:
            import triton
            d["triton_version"] = triton.__version__
        except ImportError:
            d["triton_version"] = None
        if not self.dry:
            import cupy
            d["cupy"] = cupy.__version__
            d["cusparselt"] = bool(getattr(t.backends, "cusparselt", None)
                                   and t.backends.cusparselt.is_available())
            d["allow_tf32"] = bool(t.backends.cuda.matmul.allow_tf32)
        return d


# -- one matrix -----------------------------------------------------------------------------------
def torch_csr(env, A, dtype=None, index=None):
    t = env.torch
    dtype = dtype or t.float32
    index = index or t.int32
    return t.sparse_csr_tensor(t.from_numpy(A.indptr).to(index), t.from_numpy(A.indices).to(index),
                               t.from_numpy(A.data).to(dtype), size=A.shape).to(env.dev)


def reference(env, A, B, half=False):
    """float64 A @ B on the device (A and B rounded to fp16 first when ``half``)."""
    t = env.torch
    vals = A.data.astype(np.float16).astype(np.float64) if half else A.data.astype(np.float64)
    A64 = sp.csr_matrix((vals, A.indices, A.indptr), shape=A.shape)
    B64 = (B.half() if half else B).double()
    if A.shape[0] * A.shape[1] <= DENSE_LIMIT and A.nnz > 0.02 * A.shape[0] * A.shape[1]:
        return t.from_numpy(A64.toarray()).to(env.dev) @ B64
    return torch_csr(env, A64, t.float64, t.int64) @ B64


def rel_err(out, ref):
    """max |out - ref| / max |ref| (out: torch, or a CuPy array viewed as torch)."""
    torch = sys.modules["torch"]
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(out, device=ref.device)
    out = out.double()
    if tuple(out.shape) != tuple(ref.shape):
        return math.inf
    d = (out - ref).abs().max().item()
    s = ref.abs().max().item() or 1.0
    return d / s if math.isfinite(d) else math.inf


def pad_to(t, x, rows, cols):
    if tuple(x.shape) == (rows, cols):
        return x.contiguous()
    out = t.zeros((rows, cols), dtype=x.dtype, device=x.device)
    out[:x.shape[0], :x.shape[1]] = x
    return out


def build_systems(env, mat, A, formats, n, args, spc_kernels, cache, hyb_note):
    """{label: (fn, dtype, storage_bytes)} and skip records for one matrix and N.
    ``cache`` keeps the per-matrix device structures across N."""
    import spc
    t = env.torch
    dev = env.dev
    M, K = A.shape
    systems, skips = {}, []
    rng = np.random.default_rng(zlib.crc32(f"{mat.name}|spmm|{n}".encode()))
    B = t.from_numpy(rng.uniform(-1, 1, (K, n)).astype(np.float32)).to(dev)
    dense_ok = M * K <= DENSE_LIMIT

    def skip(label, why, status="skip"):
        skips.append((label, why, status))

    def spc_calls(k, operand):
        """fn (validate=False), check (validate=True), check_nv; on the CPU (dry
        run) with numpy B and the result as a torch tensor."""
        if env.dry:
            Bn = B.numpy()
            return {"fn": lambda: t.from_numpy(k(operand, Bn, validate=False)),
                    "check": lambda: t.from_numpy(k(operand, Bn)),
                    "check_nv": lambda: t.from_numpy(k(operand, Bn, validate=False))}
        return {"fn": lambda: k(operand, B, validate=False), "check": lambda: k(operand, B),
                "check_nv": lambda: k(operand, B, validate=False)}

    # spc formats
    for f in formats:
        label = f"spc:{f}"
        why = cache["guard"].get(f)
        if why:
            skip(label, why)
            continue
        if f.startswith("hyb") and hyb_note:
            skip(label, f"hyb not available: {hyb_note}")
            continue
        try:
            if f not in cache["spc"]:
                t0 = time.perf_counter()
                host = spc.tensor(A, f)
                cache["spc"][f] = (env.to_device(host), storage_bytes(host), stored_slots(host),
                                   time.perf_counter() - t0)
            td, nbytes, _slots, _conv = cache["spc"][f]
            systems[label] = {**spc_calls(spc_kernels(f), td), "dtype": "float32",
                              "bytes": nbytes}
        except Exception as err:  # noqa: BLE001 - conversion or compilation failed
            skip(label, f"{type(err).__name__}: {str(err)[:300]}", "error")
    # torch csr (cuSPARSE)
    if "csr" not in cache:
        cache["csr"] = torch_csr(env, A)
    tA = cache["csr"]
    csr_bytes = A.data.nbytes + A.indices.nbytes + A.indptr.nbytes
    systems["torch:csr"] = {"fn": lambda: tA @ B, "dtype": "float32", "bytes": csr_bytes}
    if "csr" in formats:             # spc's csr kernel on torch's CSR tensor (bench_gpu.py's call)
        calls = spc_calls(spc_kernels("csr"), A if env.dry else tA)  # CPU target: scipy
        calls.pop("check_nv")
        systems["spc:csr-torch"] = {**calls, "dtype": "float32", "bytes": csr_bytes}
    # torch bsr: cuSPARSE and Triton
    for f in formats:
        b = block_of(f)
        if b is None:
            continue
        why = cache["guard"].get(f)
        if not why and (M % b[0] or K % b[1]):
            why = f"to_sparse_bsr needs the shape divisible by the block: {A.shape} by {b}"
        if why:
            skip(f"torch:bsr{f[3:]}", why)
            skip(f"torch:bsr-triton{f[3:]}", why)
            continue
        if env.dry and b[0] != b[1]:
            skip(f"torch:bsr{f[3:]}", "torch CPU BSR matmul (MKL) takes square blocks only")
            skip(f"torch:bsr-triton{f[3:]}", "needs CUDA")
            continue
        key = ("bsr", b)
        if key not in cache:
            try:
                cpu = t.sparse_csr_tensor(t.from_numpy(A.indptr), t.from_numpy(A.indices),
                                          t.from_numpy(A.data), size=A.shape)
                cache[key] = cpu.to_sparse_bsr(b).to(dev)
            except Exception as err:  # noqa: BLE001
                cache[key] = err
        Ab = cache[key]
        if isinstance(Ab, Exception):
            skip(f"torch:bsr{f[3:]}", f"to_sparse_bsr: {type(Ab).__name__}: {str(Ab)[:200]}")
            continue
        nb = sum(x.numel() * x.element_size()
                 for x in (Ab.values(), Ab.crow_indices(), Ab.col_indices()))
        systems[f"torch:bsr{f[3:]}"] = {"fn": (lambda Ab=Ab: Ab @ B), "dtype": "float32",
                                        "bytes": nb}
        tl = f"torch:bsr-triton{f[3:]}"
        if env.triton_mm is None:
            skip(tl, env.triton_note)
        elif min(b) < 16 or (b[0] & (b[0] - 1)) or (b[1] & (b[1] - 1)):
            skip(tl, "Triton bsr_dense_mm takes blocks >= 16 and powers of two")
        elif n % 16:
            skip(tl, "Triton bsr_dense_mm needs N divisible by 16")
        else:
            mm = env.triton_mm
            systems[tl] = {"fn": (lambda Ab=Ab: mm(Ab, B)), "dtype": "float32", "bytes": nb}
    # torch 2:4 semi-structured
    if bf.nm_group_max(A, 4) <= 2 and mat.family.startswith("nm"):
        labels = ("torch:2:4-cusparselt-fp16", "torch:2:4-cutlass-fp16", "torch:2:4-cutlass-fp32")
        if env.dry:
            for lb in labels:
                skip(lb, "needs CUDA")
        else:
            Mp, Kp = -(-M // 64) * 64, -(-K // 64) * 64
            if "dense" not in cache:
                cache["dense"] = t.from_numpy(A.toarray()).to(dev)
            for lb in labels:
                dt = t.float32 if lb.endswith("fp32") else t.float16
                cutlass = "cutlass" in lb
                key = ("24", lb)
                if key not in cache:
                    try:
                        from torch.sparse import (SparseSemiStructuredTensor,
                                                  to_sparse_semi_structured)
                        old = SparseSemiStructuredTensor._FORCE_CUTLASS
                        SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass
                        try:
                            W = pad_to(t, cache["dense"].to(dt), Mp, Kp)
                            cache[key] = to_sparse_semi_structured(W)
                        finally:
                            SparseSemiStructuredTensor._FORCE_CUTLASS = old
                    except Exception as err:  # noqa: BLE001
                        cache[key] = err
                W24 = cache[key]
                if isinstance(W24, Exception):
                    skip(lb, f"to_sparse_semi_structured: {type(W24).__name__}: "
                             f"{str(W24).splitlines()[0][:200]}")
                    continue
                Bp = pad_to(t, B.to(dt), Kp, n)
                nb = sum(x.numel() * x.element_size() for x in
                         (getattr(W24, "packed", None), getattr(W24, "meta", None))
                         if x is not None)
                systems[lb] = {"fn": (lambda W24=W24, Bp=Bp: t.mm(W24, Bp)[:M]),
                               "dtype": "tf32" if dt == t.float32 else "float16",
                               "bytes": nb, "padded": [Mp, Kp]}
    # dense cuBLAS
    if dense_ok:
        if "dense" not in cache:
            cache["dense"] = t.from_numpy(A.toarray()).to(dev)
        D = cache["dense"]
        systems["torch:dense"] = {"fn": lambda: t.mm(D, B), "dtype": "float32",
                                  "bytes": D.numel() * 4}
        if env.dry and M * K * n > 3e7:
            skip("torch:dense-fp16", "dry run: fp16 matmul on the CPU is too slow")
        else:
            if "dense16" not in cache:
                cache["dense16"] = D.half()
            D16, B16 = cache["dense16"], B.half()
            systems["torch:dense-fp16"] = {"fn": lambda: t.mm(D16, B16), "dtype": "float16",
                                           "bytes": D16.numel() * 2}
    else:
        skip("torch:dense", f"dense A over {DENSE_LIMIT:.0e} entries")
        skip("torch:dense-fp16", f"dense A over {DENSE_LIMIT:.0e} entries")
    return B, systems, skips


def run_matrix(env, mat, A, formats, ns, args, spc_kernels, hyb_note, records, storage):
    M, K = A.shape
    cache = {"spc": {}, "guard": {}}
    st = {"matrix": mat.name, "family": mat.family, "rows": M, "cols": K, "nnz": A.nnz,
          "formats": {}}
    max_bytes = args.max_storage_mb * 2**20
    for f in formats:
        e = bf.estimate(A, f)
        why = bf.guard(e, args.max_fill, max_bytes)
        if why and f != "csr":
            cache["guard"][f] = why
        st["formats"][f] = {"bytes": e["bytes"], "fill": e["fill"], "fits": e["fits"],
                            "built": False}
    e = bf.estimate(A, "dense")
    st["formats"]["dense"] = {"bytes": e["bytes"], "fill": e["fill"], "fits": True, "built": True}
    base = {"matrix": mat.name, "family": mat.family, "rows": M, "cols": K, "nnz": A.nnz,
            "op": "spmm"}
    ok = {}                                   # (label, n) -> (system, record, flops)
    for n in ns:
        B, systems, skips = build_systems(env, mat, A, formats, n, args, spc_kernels, cache,
                                          hyb_note)
        for lb, why, status in skips:
            records.append({**base, "n": n, "label": lb, "status": status, "message": why,
                            "guard": why in cache["guard"].values()})
        refs = {"float32": reference(env, A, B)}
        if any(s["dtype"] == "float16" for s in systems.values()):
            refs["float16"] = reference(env, A, B, half=True)
        refs["tf32"] = refs["float32"]
        for lb, s in systems.items():
            rec = {**base, "n": n, "label": lb, "dtype": s["dtype"], "storage_bytes": s["bytes"]}
            if "padded" in s:
                rec["padded_shape"] = s["padded"]
            try:
                t0 = time.perf_counter()
                try:
                    out = (s.get("check") or s["fn"])()
                except Exception as err:  # noqa: BLE001 - spc's validation on device data
                    if "check_nv" not in s:
                        raise
                    rec["validate_error"] = f"{type(err).__name__}: {str(err)[:300]}"
                    out = s["check_nv"]()
                env.sync()
                rec["first_call_s"] = time.perf_counter() - t0
                err = rel_err(out, refs[s["dtype"]])
                rec["rel_err"] = err
                del out
                if not err < REL_TOL[s["dtype"]]:
                    records.append({**rec, "status": "fail",
                                    "message": f"relative error {err:.3g} >= "
                                               f"{REL_TOL[s['dtype']]:g}; not timed"})
                    continue
                s["fn"]()                                   # warm-up
                env.sync()
                ok[(lb, n)] = (s, rec, 2 * A.nnz * n)
            except Exception as err:  # noqa: BLE001
                msg = f"{type(err).__name__}: {str(err)[:500]}"
                low = msg.lower()
                sticky = "illegal" in low or "cudaerror" in low.replace(" ", "") \
                    or "unspecified launch failure" in low
                unsupported = not lb.startswith("spc:") and ("support" in low
                                                              or "not implemented" in low)
                records.append({**rec, "status": "skip" if unsupported else "error",
                                "message": msg})
                if sticky:
                    return f"{lb} N={n} on {mat.name}: {msg}"
        del refs
    # one profiler session for the matrix, then the caller view call by call
    dev_t = env.device_times([(f"{lb}|{n}", v[0]["fn"]) for (lb, n), v in ok.items()],
                             args.prof_reps) if args.profile else {}
    for (lb, n), (s, rec, flops) in ok.items():
        ct = env.caller_time(s["fn"], args.reps)
        dt = dev_t.get(f"{lb}|{n}", math.nan)
        records.append({**rec, "status": "ok", "caller_s": ct, "device_s": dt,
                        "gflops": flops / ct / 1e9,
                        "device_gflops": flops / dt / 1e9 if dt == dt and dt > 0 else math.nan})
    del ok
    for f, (_td, nbytes, slots, conv) in cache["spc"].items():
        st["formats"][f].update(bytes=nbytes, built=True, fill=slots / max(1, A.nnz),
                                convert_s=conv)
    for key, v in cache.items():
        if isinstance(key, tuple) and key[0] == "24" and not isinstance(v, Exception):
            nb = sum(x.numel() * x.element_size() for x in
                     (getattr(v, "packed", None), getattr(v, "meta", None)) if x is not None)
            st["formats"][key[1]] = {"bytes": nb, "fits": True, "built": True, "fill": None}
    storage.append(st)
    return None


def interleave(mats):
    """Round-robin over the families (in family order), each family's matrices in order."""
    by = {}
    for m in mats:
        by.setdefault(m.family, []).append(m)
    groups = [by[f] for f in sorted(by, key=bf.family_order)]
    return [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]


# -- CUDA sources without a GPU (dry run) ------------------------------------------------------------
def render_check(formats, ops, nvcc: bool) -> list[str]:
    """Render every spc kernel of the run for sm_90 (and compile it with nvcc)."""
    import spc
    problems = []
    nv = shutil.which("nvcc") if nvcc else None
    for op in ops:
        for f in formats:
            try:
                src = spc.compile(op, fmt=f, target="cuda", arch="sm_90").source
            except Exception as err:  # noqa: BLE001
                problems.append(f"render {op} {f}: {type(err).__name__}: {err}")
                continue
            status = "rendered"
            if nv:
                with tempfile.TemporaryDirectory() as d:
                    cu = Path(d) / "k.cu"
                    cu.write_text(src)
                    r = subprocess.run([nv, "-arch=sm_90", "-cubin", "-o", str(Path(d) / "k.cubin"),
                                        str(cu)], capture_output=True, text=True, timeout=600)
                    if r.returncode:
                        problems.append(f"nvcc {op} {f}: {(r.stdout + r.stderr)[-600:]}")
                        status = "nvcc FAILED"
                    else:
                        status = "rendered, nvcc ok"
            print(f"  cuda {op} {f}: {status} ({len(src)} chars)", flush=True)
    return problems


# -- main -----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="bench_formats.py's quick matrix set (14 matrices), under ~4 min")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: CPU stand-ins, CUDA sources rendered (see the docstring)")
    ap.add_argument("--nvcc", action="store_true", help="with --dry-run: nvcc -cubin each source")
    ap.add_argument("--families", nargs="+", default=None)
    ap.add_argument("--per-family", type=int, default=None)
    ap.add_argument("--nm-patterns", nargs="+", default=None)
    ap.add_argument("--matrices", nargs="+", default=None)
    ap.add_argument("--max-nnz", type=int, default=None)
    ap.add_argument("--formats", nargs="+", default=list(GPU_FORMATS))
    ap.add_argument("--n", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--reps", type=int, default=None, help="caller-view repeats (default 30; "
                    "dry run 3)")
    ap.add_argument("--prof-reps", type=int, default=10)
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the device view (torch.profiler)")
    ap.add_argument("--max-fill", type=float, default=4.0)
    ap.add_argument("--max-storage-mb", type=float, default=2048.0)
    ap.add_argument("--margin", type=float, default=1.05)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting new matrices after this many seconds (default 180 with "
                         "--quick, else 480, so that a run fits a 10-minute slot; 0: no limit); "
                         "the matrices run round-robin over the families, and the report "
                         "covers what ran")
    ap.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    args.formats = list(dict.fromkeys(["csr"] + [f.replace(" ", "").lower() for f in args.formats]))
    if args.reps is None:
        args.reps = 3 if args.dry_run else 30
    if args.budget_s is None:
        args.budget_s = 180.0 if args.quick else 480.0
    if args.out is None:
        args.out = common.REPO / "bench_out" / ("formats_gpu_dry" if args.dry_run else "formats_gpu")
    return args


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    import spc
    env = Env(args.dry_run)
    hyb_note = (bf.hyb_status(env.target, ("spmm",))
                if any(f.startswith("hyb") for f in args.formats) else None)
    mats = bf.matrix_set(args.quick, args.families, args.max_nnz, args.matrices,
                         args.nm_patterns, args.per_family, args.data)
    if not mats:
        sys.exit("no matrices selected")
    if args.dry_run:
        mats = [m for m in mats if m.family != "graph" or (m.nnz or 0) <= 500_000]
    mats = interleave(mats)          # every family early, in case --budget-s cuts the run
    info = env.info()
    fams = sorted({m.family for m in mats}, key=bf.family_order)
    print(f"# {info['device']}, {datetime.date.today()}, torch {info['torch']}; "
          f"{len(mats)} matrices ({', '.join(f'{bf.family_label(f)} {sum(m.family == f for m in mats)}' for f in fams)}); "
          f"N {args.n}; formats {args.formats}; triton: {info['triton']}"
          + (f"; hyb skipped: {hyb_note}" if hyb_note else ""), flush=True)
    problems = []
    if args.dry_run:
        fl = [f for f in args.formats if not (f.startswith("hyb") and hyb_note)]
        fl += [f"nm({p.replace(':', ',')})" for p in (args.nm_patterns or ["2:4"])
               if f"nm({p.replace(':', ',')})" not in fl]
        problems = render_check(fl, ["spmm"], args.nvcc)
    kernels = {}

    def spc_kernels(f):
        if f not in kernels:
            t0 = time.perf_counter()
            kernels[f] = spc.compile("spmm", fmt=f, target=env.target, dtype="float32")
            kernels[f"{f}:compile_s"] = time.perf_counter() - t0
        return kernels[f]

    records, storage = [], []
    poisoned, truncated = None, 0
    bar = common.progress(len(mats), desc="bench_formats_gpu")
    try:
        for i, mat in enumerate(mats):
            if args.budget_s and time.time() - t_start > args.budget_s:
                truncated = len(mats) - i
                bar.write(f"  budget of {args.budget_s:.0f} s spent: {truncated} matrices not run")
                break
            t0 = time.perf_counter()
            A = mat.build()
            formats = bf.formats_for(mat, args.formats)
            poisoned = run_matrix(env, mat, A, formats, sorted(set(args.n)), args, spc_kernels,
                                  hyb_note, records, storage)
            mine = [r for r in records if r["matrix"] == mat.name and r["status"] == "ok"
                    and r["n"] == max(args.n)]
            best = max(mine, key=lambda r: r["gflops"]) if mine else None
            base = next((r for r in mine if r["label"] == "spc:csr"), None)
            bar.write(f"[{i + 1}/{len(mats)}] {bf.family_label(mat.family)} {mat.name} "
                      f"{A.shape[0]}x{A.shape[1]} nnz={A.nnz} ({time.perf_counter() - t0:.1f} s) "
                      + (f"N={max(args.n)} best {best['label']} {best['gflops']:.0f} GFLOP/s"
                         + (f", spc:csr {base['gflops']:.0f}" if base else "") if best else ""))
            for r in records:
                if r["matrix"] == mat.name and r["status"] in ("fail", "error"):
                    bar.write(f"    {r['label']} N={r['n']}: {r['status']}: {r['message'][:300]}")
            bar.update()
            if poisoned:
                bar.write(f"  CUDA context lost ({poisoned}); stopping")
                break
            if not args.dry_run:
                env.torch.cuda.empty_cache()
    finally:
        bar.close()
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "env": info, "dry_run": args.dry_run, "hyb": hyb_note or "available",
            "pruning": bf.pruner(), "matrices": len(storage), "planned": len(mats),
            "truncated": truncated, "poisoned": poisoned, "render_problems": problems,
            "families": sorted({s["family"] for s in storage}, key=bf.family_order),
            "per_family": {f: sum(s["family"] == f for s in storage) for f in fams},
            "compile_s": {k: v for k, v in kernels.items() if k.endswith("compile_s")},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "wall_s": time.time() - t_start}
    write_report(records, storage, meta, args.out)
    return 1 if poisoned or problems else 0


def write_report(records, storage, meta, out: Path):
    args = meta["args"]
    ns = sorted(set(args["n"]))
    op_ns = [("spmm", n) for n in ns]
    env = meta["env"]
    lines = [f"# spc format benchmark (GPU{', DRY RUN on the CPU' if meta['dry_run'] else ''}), "
             f"{meta['date']}", "",
             f"Device: {env['device']}; torch {env['torch']}, triton {env.get('triton_version')}"
             f" ({env['triton']}), cupy {env.get('cupy', '–')}, cuSPARSELt "
             f"{env.get('cusparselt', '–')}, TF32 {env.get('allow_tf32', '–')}; hyb: {meta['hyb']};"
             f" N:M pruning: {meta['pruning']}; {meta['matrices']} matrices ("
             + ", ".join(f"{bf.family_label(f)} {c}" for f, c in meta["per_family"].items())
             + ")" + (f", {meta['truncated']} more not run (--budget-s)" if meta["truncated"] else "")
             + ".", "",
             "spc runs float32; torch's 2:4 kernels run fp16 (cuSPARSELt, CUTLASS) and fp32 "
             "(CUTLASS, TF32 math), dense cuBLAS fp32 and fp16: dtypes are in the labels. "
             "GFLOP/s = 2 nnz N / time, nnz = the matrix's nonzeros (not padding, not the "
             "64-padded 2:4 shape).", ""]
    if meta.get("poisoned"):
        lines += [f"**The run stopped early: {meta['poisoned']}**", ""]
    if meta.get("render_problems"):
        lines += ["**CUDA render/nvcc problems:**", ""] + [f"- {p}" for p in
                                                          meta["render_problems"]] + [""]
    lines += ["## Caller view (CUDA events around one call, median)", ""]
    lines += bf.tables(records, storage, op_ns, meta["families"], args["formats"],
                       margin=args["margin"], pairs=PAIRS)
    if any(r.get("device_gflops") == r.get("device_gflops") and r.get("device_gflops")
           for r in records if r["status"] == "ok"):
        lines += ["## Device view (kernel time from torch.profiler, per call)", ""]
        dev = bf.tables(records, storage, op_ns, meta["families"], args["formats"],
                        key="device_gflops", margin=args["margin"], pairs=PAIRS)
        cut = next((i for i, x in enumerate(dev) if x.startswith("### Fastest")), len(dev))
        lines += dev[:cut]
    bad = {}
    for r in records:
        if r["status"] in ("fail", "error") or (r["status"] == "skip" and not r.get("guard")):
            bad.setdefault((r["label"], r["status"], r.get("message", "")[:200]), set()).add(
                r["matrix"])
        if r.get("validate_error"):
            bad.setdefault((r["label"], "validate=True raised (timed with validate=False)",
                            r["validate_error"][:200]), set()).add(r["matrix"])
    if bad:
        lines += ["### Not timed (besides the storage guard), and other notes", ""]
        for (lb, st, msg), ms in sorted(bad.items()):
            lines.append(f"- {lb}: {st} on {len(ms)} matrices ({', '.join(sorted(ms)[:2])}"
                         f"{', ...' if len(ms) > 2 else ''}): {msg}")
        lines.append("")
    lines += [f"Timing: caller view = median of {args['reps']} calls, each between CUDA events "
              f"on an idle stream; device view = kernel time from torch.profiler over "
              f"{args['prof_reps']} calls. Every result checked against float64 before timing. "
              f"Total wall time {meta['wall_s'] / 60:.1f} min.", ""]
    bf.write_outputs(out, lines, meta, storage, records)


if __name__ == "__main__":
    sys.exit(main())
