"""GPU benchmark of block-sparse SpMM on tensor cores (issue 11): spc's BSR SpMM in
float16, bfloat16 or float32 as tf32 against torch's BSR paths, dense cuBLAS and spc's
own scalar kernel.

    python benchmarks/bench_bsr_gpu.py [--sizes 4096] [--ns 256,1024] [--blocks 16,32]
                                       [--sparsity 0.9] [--dtype float16|bfloat16|float32]

Per case (an M x M matrix whose blocks are kept at random with probability
1 - sparsity, times an M x N dense matrix), in one process and one profiler
session: device time (torch.profiler, the GPU time of one call's kernels) of
- torch: ``A_bsr @ B`` (torch's dispatch: cuSPARSE bsrmm or its Triton kernel);
- triton: ``torch.sparse._triton_ops.bsr_dense_mm`` where torch has it;
- cublas: ``torch.mm`` of the dense matrix (float32: in float32, and ``cublas_tf32``
  with torch's tf32 allowed);
- spc: ``tensor_cores`` on at each ``tile_cols`` in ``--tiles`` (float32: ``tf32=True``),
  the same at the first of them with ``stage_tiles=False`` (operands read from global
  memory, not staged in shared memory: ``spc_unstaged``), and off (the scalar kernel),
  operands prepared once, ``validate=False``.
Each system's result is checked against float64 from the same 16-bit inputs.
Prints one row per case, then the best spc against the best torch BSR path and
against cuBLAS.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_gpu import device_times  # noqa: E402
from bench_precision_gpu import geo, rel  # noqa: E402


def block_sparse(torch, m, block, sparsity, seed, dtype):
    g = torch.Generator(device="cuda").manual_seed(seed)
    keep = torch.rand((m // block, m // block), generator=g, device="cuda") >= sparsity
    vals = torch.rand((m, m), generator=g, device="cuda") * 2 - 1
    mask = keep.repeat_interleave(block, 0).repeat_interleave(block, 1)
    return (vals * mask).to(dtype)


def _dense(torch, out):
    if isinstance(out, torch.Tensor):
        return (out.to_dense() if out.layout != torch.strided else out).double().cpu().numpy()
    return np.asarray(out.to_numpy(), dtype=np.float64)


def _sddmm_calls(torch, A, k, dtype, kernels, prepared, tf32):
    """The SDDMM calls for mask A and inner size k, and float64's result."""
    m = A.shape[0]
    X, Y = ((torch.rand((m, k), device="cuda") * 2 - 1).to(dtype) for _ in range(2))
    mask = (A != 0).to(dtype)
    ref = (mask.double() * (X.double() @ Y.double().T) * A.double()).cpu().numpy()
    csr = A.to_sparse_csr()
    calls = [("cublas", lambda: torch.mm(X, Y.T) * A)]
    if tf32:
        calls.append(("cublas_tf32", lambda: _tf32_mm(torch, X, Y.T) * A))
    calls.append(("torch", lambda: _sampled(torch, csr, X, Y)))
    calls += [(name, lambda kk=kk, p=prepared[name]: kk(p, X, Y, validate=False))
              for name, kk in kernels.items()]
    return calls, ref


def _sampled(torch, csr, X, Y):
    """torch's SDDMM (cuSPARSE): csr * (X @ Y^T) on csr's pattern."""
    s = torch.sparse.sampled_addmm(csr, X, Y.T, beta=0.0)
    return torch.sparse_csr_tensor(s.crow_indices(), s.col_indices(),
                                   s.values() * csr.values(), s.shape)


def _tf32_mm(torch, A, B):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return torch.mm(A, B)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4096")
    ap.add_argument("--ns", default="256,1024")
    ap.add_argument("--blocks", default="16,32")
    ap.add_argument("--sparsity", default="0.9")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    ap.add_argument("--tiles", default="32,64,128")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--kernel", default="spmm", choices=("spmm", "sddmm"),
                    help="sddmm: S = A * (X @ Y^T) on A's blocks, K = each of --ns; torch's "
                         "sampled_addmm on a CSR tensor of the same pattern and dense "
                         "torch.mm then the mask stand in for torch BSR and cuBLAS")
    args = ap.parse_args(argv)
    import torch
    import spc
    dtype = getattr(torch, args.dtype)
    tol = 1e-2 if dtype is torch.bfloat16 else 2e-3        # float32: tf32 inputs
    tf32 = dtype is torch.float32
    try:
        from torch.sparse._triton_ops import bsr_dense_mm
    except ImportError:
        bsr_dense_mm = None
    tiles = [int(t) for t in args.tiles.split(",")]
    if args.kernel == "sddmm":
        tiles = tiles[:1]              # SDDMM's tiles are its blocks: tile_cols is not a knob
    print(f"# {datetime.date.today()} {torch.cuda.get_device_name()} torch {torch.__version__} "
          f"{args.dtype}; device time per call in microseconds")
    tcs = [f"spc_tc{t}" for t in tiles]
    spcs = tcs + ["spc_unstaged", "spc_scalar"]
    dense = ["cublas"] + (["cublas_tf32"] if tf32 else [])
    head = ("M", "block", "sparsity", "N", "torch", "triton", *dense, *spcs, "worst_err")
    print(" ".join(f"{h:>10}" for h in head))
    rows, failed = [], False
    for m in (int(x) for x in args.sizes.split(",")):
        for b in (int(x) for x in args.blocks.split(",")):
            for s in (float(x) for x in args.sparsity.split(",")):
                A = block_sparse(torch, m, b, s, seed=m + b, dtype=dtype)
                Ab = A.to_sparse_bsr((b, b))
                sddmm = args.kernel == "sddmm"
                kernels = {f"spc_tc{t}": spc.compile(args.kernel, fmt=f"bsr({b},{b})",
                                                     target="cuda", tf32=tf32,
                                                     **({} if sddmm else {"tile_cols": t}))
                           for t in tiles}
                kernels["spc_unstaged"] = spc.compile(
                    args.kernel, fmt=f"bsr({b},{b})", target="cuda", tf32=tf32,
                    stage_tiles=False, **({} if sddmm else {"tile_cols": tiles[0]}))
                kernels["spc_scalar"] = spc.compile(args.kernel, fmt=f"bsr({b},{b})",
                                                    target="cuda", tensor_cores=False)
                prepared = {name: k.prepare(Ab) for name, k in kernels.items()}
                for n in (int(x) for x in args.ns.split(",")):
                    if sddmm:
                        calls, ref = _sddmm_calls(torch, A, n, dtype, kernels, prepared, tf32)
                    else:
                        B = (torch.rand((m, n), device="cuda") * 2 - 1).to(dtype)
                        ref = (A.double() @ B.double()).cpu().numpy()
                        calls = [("torch", lambda B=B: Ab @ B),
                                 ("cublas", lambda B=B: torch.mm(A, B))]
                        if tf32:
                            calls.append(("cublas_tf32", lambda B=B: _tf32_mm(torch, A, B)))
                        if bsr_dense_mm is not None:
                            calls.append(("triton", lambda B=B: bsr_dense_mm(Ab, B)))
                        calls += [(name, lambda k=k, p=prepared[name], B=B:
                                   k(p, B, validate=False)) for name, k in kernels.items()]
                    errs, ok_calls = {}, []
                    for name, fn in calls:
                        try:
                            out = fn()
                        except (RuntimeError, ValueError) as err:
                            print(f"# {name}: {str(err).splitlines()[0][:100]}")
                            continue
                        errs[name] = rel(_dense(torch, out), ref)
                        ok_calls.append((name, fn))
                    times = device_times(torch, ok_calls, args.reps)
                    worst = max(v for name, v in errs.items() if name.startswith("spc"))
                    failed |= worst > tol
                    row = dict(M=m, block=b, sparsity=s, N=n, **times, worst_err=worst)
                    rows.append(row)
                    us = lambda key: f"{row.get(key, float('nan')) * 1e6:10.1f}"  # noqa: E731
                    print(f"{m:>10} {b:>10} {s:>10} {n:>10} " +
                          " ".join(us(h) for h in head[4:-1]) + f" {worst:10.1e}", flush=True)
    print("\n# best spc tensor-core tile against torch's best BSR path and dense cuBLAS")
    print(f"{'M':>6} {'block':>6} {'sparsity':>9} {'N':>6} {'tile':>8} {'torchBSR/spc':>13} "
          f"{'cublas/spc':>11} {'scalar/spc':>11} {'unstaged/spc':>13}"
          + (f" {'cublasTF32/spc':>15}" if tf32 else ""))
    for r in rows:
        best = min(tcs, key=lambda k: r.get(k, float("inf")))
        t = r[best]
        bsr = min(r.get("torch", float("inf")), r.get("triton", float("inf")))
        print(f"{r['M']:>6} {r['block']:>6} {r['sparsity']:>9} {r['N']:>6} {best[6:]:>8} "
              f"{bsr / t if bsr < float('inf') else float('nan'):13.2f} {r['cublas'] / t:11.2f} {r['spc_scalar'] / t:11.2f} "
              f"{r['spc_unstaged'] / r[f'spc_tc{tiles[0]}']:13.2f}"
              + (f" {r['cublas_tf32'] / t:15.2f}" if tf32 else ""))
    print(f"# geometric means: torchBSR/spc "
          f"{geo([min(r.get('torch', 1e9), r.get('triton', 1e9)) / min(r[k] for k in tcs) for r in rows]):.2f}, "
          f"cublas/spc {geo([r['cublas'] / min(r[k] for k in tcs) for r in rows]):.2f}, "
          f"unstaged/staged at tile {tiles[0]} "
          f"{geo([r['spc_unstaged'] / r[f'spc_tc{tiles[0]}'] for r in rows]):.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
