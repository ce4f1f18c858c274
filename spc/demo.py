"""spc's main job: compile SpMV, SpMM and SDDMM for CSR, run them on a built-in
example matrix (fixed seed), check them against scipy and print GFLOP/s; then
SpMM in the deep-learning formats (hyb and bsr on the example, nm on a dense
layer pruned to 2:4).

    python -m spc.demo [--rows 4096] [--cols 4096] [--density 0.01] [--n 64]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def example_matrix(rows: int, cols: int, density: float, seed: int = 0):
    """A CSR matrix with power-law row lengths (a few long rows, many short ones)."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    weights = rng.pareto(1.5, rows) + 1.0
    lengths = np.minimum(cols, np.maximum(0, np.round(
        weights / weights.sum() * density * rows * cols)).astype(np.int64))
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    indices = np.concatenate([np.sort(rng.choice(cols, n, replace=False)) for n in lengths]
                             ) if indptr[-1] else np.zeros(0, np.int64)
    data = rng.uniform(-1, 1, indptr[-1]).astype(np.float32)
    return sp.csr_matrix((data, indices.astype(np.int32), indptr.astype(np.int32)),
                         shape=(rows, cols))


def _median_time(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _formats(A, B, n: int) -> bool:
    """SpMM with A stored in other formats (converted once); True on a mismatch."""
    import spc
    # N:M is for dense layers pruned to exactly n of every m weights
    W = np.random.default_rng(2).standard_normal((1024, A.shape[1])).astype(np.float32)
    pruned = spc.prune.nm(W, 2, 4)
    print(f"\nspmm, A converted once to each format (N={n}):")
    print(f"{'format':10} {'stored':>9} {'MB':>7} {'rel. error':>11} {'ms':>8} {'GFLOP/s':>8}")
    failed = False
    for fmt, M in (("csr", A), ("hyb", A), ("bsr(1,4)", A), ("nm(2,4)", pruned)):
        t = spc.tensor(M, fmt)
        k = spc.compile("spmm", fmt=fmt)
        nnz = int(np.count_nonzero(M)) if isinstance(M, np.ndarray) else M.nnz
        want = M.astype(np.float64) @ B.astype(np.float64)
        err = float(np.linalg.norm(k(t, B) - want) / max(np.linalg.norm(want), 1e-30))
        ok = err < 1e-5
        failed |= not ok
        secs = _median_time(lambda: k(t, B, validate=False))
        print(f"{fmt:10} {t.nnz:9d} {t.nbytes / 1e6:7.2f} {err:11.2e} {secs * 1e3:8.3f} "
              f"{2 * nnz * n / secs / 1e9:8.1f}{'' if ok else '   MISMATCH'}")
    return failed


def main(argv=None) -> int:
    import spc
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--density", type=float, default=0.01)
    p.add_argument("--n", type=int, default=64, help="dense columns for SpMM / SDDMM")
    args = p.parse_args(argv)

    A = example_matrix(args.rows, args.cols, args.density)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(args.cols).astype(np.float32)
    B = rng.standard_normal((args.cols, args.n)).astype(np.float32)
    X = rng.standard_normal((args.rows, args.n)).astype(np.float32)
    Y = rng.standard_normal((args.cols, args.n)).astype(np.float32)
    A64 = A.astype(np.float64)
    print(f"example matrix: {A.shape[0]}x{A.shape[1]}, nnz={A.nnz}, longest row "
          f"{np.diff(A.indptr).max()}, N={args.n}")
    cases = [
        ("spmv", (A, x), A64 @ x.astype(np.float64), 2 * A.nnz),
        ("spmm", (A, B), A64 @ B.astype(np.float64), 2 * A.nnz * args.n),
        ("sddmm", (A, X, Y), A64.multiply(X.astype(np.float64) @ Y.T.astype(np.float64)).tocsr(),
         2 * A.nnz * args.n),
    ]
    failed = False
    print(f"{'kernel':8} {'compile s':>10} {'rel. error':>11} {'ms':>8} {'GFLOP/s':>8}")
    for name, operands, ref, flops in cases:
        t0 = time.perf_counter()
        k = spc.compile(name, fmt="csr").build()
        compile_s = time.perf_counter() - t0
        out = k(*operands)
        got = out.toarray() if hasattr(out, "toarray") else out
        want = ref.toarray() if hasattr(ref, "toarray") else ref
        err = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
        ok = err < 1e-5
        failed |= not ok
        secs = _median_time(lambda: k(*operands))
        print(f"{name:8} {compile_s:10.2f} {err:11.2e} {secs * 1e3:8.3f} {flops / secs / 1e9:8.1f}"
              f"{'' if ok else '   MISMATCH'}")
    failed |= _formats(A, B, args.n)
    print("all kernels match scipy" if not failed else "MISMATCH against scipy")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
