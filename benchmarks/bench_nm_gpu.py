"""GPU benchmark of 2:4 SpMM on sparse tensor cores (issue 11): spc's nm(2,4) SpMM in
float16 (or bfloat16) through mma.sp tiles against torch's semi-structured paths
(cuSPARSELt and CUTLASS), dense cuBLAS and spc's own scalar kernels.

    python benchmarks/bench_nm_gpu.py [--sizes 1024,4096] [--ns 256,1024,2048,4096]
                                      [--dtype float16|bfloat16] [--tiles 32,64,128]
                                      [--rows 16,32,64] [--steps 16,32]

Per case (an M x M matrix, random, pruned to 2:4 by magnitude, times an M x N dense
matrix), in one process and one profiler session: device time (torch.profiler, the
GPU time of one call's kernels) of
- cusparselt: ``torch.mm(to_sparse_semi_structured(A), B)`` (torch's default 2:4
  backend, cuSPARSELt where torch has it);
- cutlass: the same with ``SparseSemiStructuredTensor._FORCE_CUTLASS``;
- cublas: ``torch.mm`` of the dense matrix, same precision;
- spc_tc<W>: spc's nm(2,4) SpMM on sparse tensor cores, ``tile_cols=W`` (with
  ``--rows`` / ``--steps``: spc_tc<W>r<R>s<S>, warp tiles of R rows stepping S slots
  (S / 16 instructions) at a time, an experiment: the pass's defaults,
  ``tensorize_nm.ROWS`` and ``STEP``, set while the kernel compiles; no schedule
  knob sets them);
- spc_unstaged: spc_tc64 with ``stage_tiles=False`` (B read from global memory, not
  staged in shared memory);
- spc_simt: spc's nm(2,4) SpMM with ``tensor_cores=False`` (same precision);
- spc_fp32: spc's nm(2,4) SpMM in float32 (the kernel before tensor cores).
spc's operands are prepared once and called with ``validate=False``.  Every
system's result is checked against float64 from the same 16-bit inputs (float32
inputs for spc_fp32) before timing; a system that fails the check is reported
and not timed.  Prints one row per case, then the best spc tile against
cuSPARSELt, CUTLASS and cuBLAS.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_gpu import device_times  # noqa: E402
from bench_precision_gpu import geo, rel  # noqa: E402


def two_four(torch, m, k, seed, dtype):
    """An m x k matrix on the GPU, uniform in [-1, 1), pruned to 2:4 along its rows
    (the two largest magnitudes of every four columns kept)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    W = (torch.rand((m, k), generator=g, device="cuda") * 2 - 1).view(m, k // 4, 4)
    keep = torch.zeros_like(W).scatter_(-1, W.abs().topk(2, dim=-1).indices, 1.0)
    return (W * keep).view(m, k).to(dtype)


def semi_structured(torch, A, cutlass: bool):
    """``A`` as torch's 2:4 semi-structured tensor, CUTLASS forced or not."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured
    old = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass
    try:
        return to_sparse_semi_structured(A)
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = old


def tiled(spc, dtype: str, tile_cols: int, rows: int | None, step: int | None):
    """spc's nm(2,4) SpMM on sparse tensor cores, ``tile_cols`` wide; ``rows`` and
    ``step`` (not None): tiles of that many rows, stepping that many slots, by
    setting the pass's defaults while the kernel compiles (the kernel compiles
    eagerly; its IR, and so its cache entry, shows them)."""
    from spc.passes import tensorize_nm
    old = tensorize_nm.ROWS, tensorize_nm.ACC_PER_LANE, tensorize_nm.STEP
    if rows:
        tensorize_nm.ROWS, tensorize_nm.ACC_PER_LANE = rows, rows * tile_cols
    if step:
        tensorize_nm.STEP = step
    try:
        k = spc.compile("spmm", fmt="nm(2,4)", target="cuda", dtype=dtype, tile_cols=tile_cols)
        assert rows is None or f"[0, {rows}) @mma_m" in k.ir
        assert step is None or f"[0, {step}) @mma_sparse_k" in k.ir
        return k
    finally:
        tensorize_nm.ROWS, tensorize_nm.ACC_PER_LANE, tensorize_nm.STEP = old


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1024,4096")
    ap.add_argument("--ns", default="256,1024,2048,4096")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
    ap.add_argument("--tiles", default="32,64,128")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rows", default=None,
                    help="rows per warp tile to try (multiples of 16); default: the pass's")
    ap.add_argument("--steps", default=None,
                    help="slots per step to try (multiples of 16); default: the pass's")
    args = ap.parse_args(argv)
    import torch
    import spc
    warnings.filterwarnings("ignore", message=".*semi.structured.*")
    dtype = getattr(torch, args.dtype)
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    tiles = [int(t) for t in args.tiles.split(",")]
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
          f"{torch.cuda.get_device_name()} torch {torch.__version__} {args.dtype}; device "
          f"time per call in microseconds (torch.profiler), {args.reps} calls each")
    rows_tried = [None] if args.rows is None else [int(r) for r in args.rows.split(",")]
    steps_tried = [None] if args.steps is None else [int(x) for x in args.steps.split(",")]
    shapes = [(t, r, st) for t in tiles for r in rows_tried for st in steps_tried]
    label = lambda t, r, st: f"spc_tc{t}" + (f"r{r}" if r else "") + (f"s{st}" if st else "")  # noqa: E731
    spcs = [label(*x) for x in shapes]
    head = ("M", "N", "cusparselt", "cutlass", "cublas", *spcs, "spc_unstaged", "spc_simt",
            "spc_fp32", "worst_err")
    print(" ".join(f"{h:>10}" for h in head))
    kernels = {label(*x): tiled(spc, args.dtype, *x) for x in shapes}
    kernels["spc_unstaged"] = spc.compile("spmm", fmt="nm(2,4)", target="cuda",
                                          dtype=args.dtype, tile_cols=64, stage_tiles=False)
    kernels["spc_simt"] = spc.compile("spmm", fmt="nm(2,4)", target="cuda", dtype=args.dtype,
                                      tensor_cores=False)
    kernels["spc_fp32"] = spc.compile("spmm", fmt="nm(2,4)", target="cuda", dtype="float32")
    rows, failed = [], False
    for m in (int(x) for x in args.sizes.split(",")):
        A = two_four(torch, m, m, seed=m, dtype=dtype)
        host = A.float().cpu().numpy()
        t16 = spc.tensor(host, "nm(2,4)", dtype=args.dtype)
        t32 = spc.tensor(host, "nm(2,4)", dtype="float32")
        prepared = {name: k.prepare(t32 if name == "spc_fp32" else t16, name="A")
                    for name, k in kernels.items()}
        semi = {}
        for name, cutlass in (("cusparselt", False), ("cutlass", True)):
            try:
                semi[name] = semi_structured(torch, A, cutlass)
            except (RuntimeError, ValueError, NotImplementedError) as err:
                print(f"# {name}: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
        for n in (int(x) for x in args.ns.split(",")):
            B = (torch.rand((m, n), generator=torch.Generator(device="cuda").manual_seed(n),
                            device="cuda") * 2 - 1).to(dtype)
            B32 = B.float()
            ref = (A.double() @ B.double()).cpu().numpy()
            calls = [(name, lambda W=W, B=B: torch.mm(W, B)) for name, W in semi.items()]
            calls.append(("cublas", lambda B=B: torch.mm(A, B)))
            calls += [(name, lambda k=k, p=prepared[name], B=(B32 if name == "spc_fp32" else B):
                       k(p, B, validate=False)) for name, k in kernels.items()]
            errs, ok_calls = {}, []
            for name, fn in calls:
                try:
                    out = fn()
                except (RuntimeError, ValueError, NotImplementedError) as err:
                    print(f"# {name} (M {m}, N {n}): {type(err).__name__}: "
                          f"{str(err).splitlines()[0][:120]}")
                    continue
                errs[name] = rel(out.double().cpu().numpy(), ref)
                if errs[name] > tol:
                    print(f"# {name} (M {m}, N {n}): relative error {errs[name]:.2e} > {tol}: "
                          f"not timed")
                    failed |= name.startswith("spc")
                    continue
                ok_calls.append((name, fn))
            times = device_times(torch, ok_calls, args.reps)
            worst = max((v for name, v in errs.items() if name.startswith("spc")), default=0.0)
            row = dict(M=m, N=n, **times, worst_err=worst)
            rows.append(row)
            us = lambda key: f"{row.get(key, float('nan')) * 1e6:10.1f}"  # noqa: E731
            print(f"{m:>10} {n:>10} " + " ".join(us(h) for h in head[2:-1]) + f" {worst:10.1e}",
                  flush=True)
    print("\n# best spc tile (W) against the others: their time / spc's (> 1: spc faster)")
    print(f"{'M':>6} {'N':>6} {'tile':>12} {'cusparselt':>11} {'cutlass':>9} {'cublas':>8} "
          f"{'spc_simt':>9} {'spc_fp32':>9}")
    inf = float("inf")
    ratios = {"cusparselt": [], "cutlass": [], "cublas": []}
    for r in rows:
        best = min(spcs, key=lambda k: r.get(k, inf))
        t = r.get(best, inf)
        cells = []
        for other in ("cusparselt", "cutlass", "cublas", "spc_simt", "spc_fp32"):
            v = r.get(other, inf) / t if t < inf and r.get(other, inf) < inf else float("nan")
            cells.append(v)
            if other in ratios and v == v:
                ratios[other].append(v)
        print(f"{r['M']:>6} {r['N']:>6} {best[6:]:>12} {cells[0]:11.2f} {cells[1]:9.2f} "
              f"{cells[2]:8.2f} {cells[3]:9.2f} {cells[4]:9.2f}")
    print("# geometric means: " + ", ".join(f"{k}/spc {geo(v):.2f}" for k, v in ratios.items()
                                            if v))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
