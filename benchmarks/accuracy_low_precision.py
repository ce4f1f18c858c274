"""Accuracy of spc's 16-bit kernels (issue 11): per kernel and dtype, the error
against float64 on corpus matrices, next to torch's error for the same operation
in the same precision.

    python benchmarks/accuracy_low_precision.py [--data DIR] [--per-family 2] [--target cpu|cuda]

Inputs are rounded to the 16-bit type once; the reference is float64 computed
from those rounded inputs, so that the error is the kernel's own (accumulation
and the rounding of results).  Error: max |got - ref| / max |ref| over the
output.  torch's figure: on the CPU, torch has no float16/bfloat16 sparse
matmul (``addmm_out_sparse_csr_impl_mkl`` is not implemented for them), so it is
dense ``torch.mm`` / ``torch.mv`` on the same rounded operands; on CUDA it is
cuSPARSE (``torch.sparse.mm``; SDDMM: dense, as cuSPARSE has no 16-bit SDDMM in
torch).  The issue's bars: 2e-3 (float16), 1e-2 (bfloat16).
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

from bench_gpu import pick  # noqa: E402
from common import DEFAULT_DATA, entries, load  # noqa: E402

BARS = {"float16": 2e-3, "bfloat16": 1e-2}


def rel(got, ref) -> float:
    got = np.asarray(got, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-family", type=int, default=2)
    ap.add_argument("--target", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args(argv)
    import torch
    import spc
    dev = "cuda" if args.target == "cuda" else "cpu"
    print(f"# {datetime.date.today()} target={args.target} torch {torch.__version__}")
    print(f"{'matrix':>26} {'kernel':>6} {'dtype':>9} {'spc':>9} {'torch':>9}")
    worst = {d: 0.0 for d in BARS}
    kernels = {}
    for e in pick(entries(args.data), args.per_family):
        A32 = load(e)
        rng = np.random.default_rng(0)
        m, n = A32.shape
        for dtype in BARS:
            tdt = getattr(torch, dtype)
            vals = torch.tensor(A32.data).to(tdt)
            A64 = A32.astype(np.float64)
            A64.data = vals.double().numpy()
            A = torch.sparse_csr_tensor(torch.tensor(A32.indptr), torch.tensor(A32.indices),
                                        vals, A32.shape).to(dev)
            dense = A.to_dense()

            def t(shape):
                return torch.tensor(rng.uniform(-1, 1, shape)).to(tdt).to(dev)

            x, B, X, Y = t(n), t((n, 64)), t((m, 32)), t((n, 32))
            cases = {
                "spmv": ((A, x), A64 @ x.double().cpu().numpy(),
                         (lambda: torch.mv(A, x)) if dev == "cuda" else lambda: dense @ x),
                "spmm": ((A, B), A64 @ B.double().cpu().numpy(),
                         (lambda: torch.sparse.mm(A, B)) if dev == "cuda"
                         else lambda: torch.mm(dense, B)),
                "sddmm": ((A, X, Y), A64.multiply(X.double().cpu().numpy()
                                                   @ Y.double().cpu().numpy().T).toarray(),
                          lambda: dense * (X @ Y.T)),
            }
            for name, (ops, ref, theirs) in cases.items():
                k = kernels.setdefault(name, spc.compile(name, target=args.target))
                out = k(*ops)
                if out.layout != torch.strided:
                    out = out.to_dense()
                mine = rel(out.double().cpu().numpy(), ref)
                try:
                    other = rel(theirs().double().cpu().numpy(), ref)
                except RuntimeError as err:
                    other = float("nan")
                    print(f"# torch {name} {dtype}: {str(err).splitlines()[0]}")
                worst[dtype] = max(worst[dtype], mine)
                print(f"{Path(e.path).stem[:26]:>26} {name:>6} {dtype:>9} {mine:9.1e} "
                      f"{other:9.1e}", flush=True)
    ok = all(worst[d] <= BARS[d] for d in BARS)
    print("# worst spc error: " + ", ".join(f"{d} {worst[d]:.1e} (bar {BARS[d]:.0e})"
                                            for d in BARS) + (" ok" if ok else " OVER"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
