"""SpGEMM on the GPU: spc's ``C[i,j] = A[i,k]*B[k,j]`` (all csr, row workspaces)
against torch's CUDA sparse @ sparse (cuSPARSE), A @ A on corpus graphs.

    python benchmarks/bench_spgemm_gpu.py [--data DIR] [--graphs cora,pubmed,...] [--reps 5]

Each result is checked against scipy's product before it is timed (median of
synchronized calls, torch CUDA CSR tensors in and out, default settings).
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402
GRAPHS = "cora,citeseer,pubmed,PROTEINS,facebook_combined,squirrel"


def load(path: Path):
    import scipy.io
    import scipy.sparse as sp
    with gzip.open(path) as f:
        A = sp.csr_matrix(scipy.io.mmread(f), dtype=np.float32)
    A.data = np.random.default_rng(0).uniform(-1, 1, A.nnz).astype(np.float32)
    A.sort_indices()
    return A


def timed(torch, fn, reps: int) -> float:
    """Median seconds of one call and the synchronization after it, after a warm-up call."""
    return statistics.median(common.burst_times(fn, calls=1, bursts=reps, warmup=1,
                                                sync=torch.cuda.synchronize))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--graphs", default=GRAPHS)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    import scipy.sparse as sp
    import torch

    import spc
    k = spc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"},
                    target="cuda")
    ratios = []
    for name in args.graphs.split(","):
        path = Path(args.data) / "graphs" / f"{name}.mtx.gz"
        if not path.exists():
            print(f"{name}: not found under {args.data}")
            continue
        A = load(path)
        tA = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices),
                                     torch.tensor(A.data), A.shape).cuda()
        C, ref = k(tA, tA), A @ A
        got = sp.csr_matrix((C.values().cpu().numpy(), C.col_indices().cpu().numpy(),
                             C.crow_indices().cpu().numpy()), shape=C.shape)
        err = abs(got - ref).max()
        t_spc, t_torch = timed(torch, lambda: k(tA, tA), args.reps), \
            timed(torch, lambda: tA @ tA, args.reps)
        ratios.append(t_torch / t_spc)
        print(f"{name:18s} nnz {A.nnz:8d} -> {ref.nnz:9d}  spc {t_spc * 1e3:8.2f} ms  "
              f"torch/cuSPARSE {t_torch * 1e3:7.2f} ms  cuSPARSE/spc {t_torch / t_spc:5.2f}  "
              f"max error {err:.1e}", flush=True)
    if ratios:
        print(f"geomean cuSPARSE time / spc time: {statistics.geometric_mean(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
