"""What an operand copy costs on the CPU (issue 13 part 3).

    python benchmarks/bench_operand_copies_cpu.py [--repeats R] [--graphs cora pubmed ...]

``C[i,j] = A[i,j]*B[j,i]`` with A and B in csr (so B is read through a csc copy,
``runtime/operand_copies.py``), a dense output skipped: the output is csr.  On
graphs of the corpus (skipped when it is absent; a fixed-seed synthetic matrix
otherwise), B = A (a symmetric product for the undirected graphs).  Times in ms
(median of ``--repeats`` after one warm-up call), every result checked against
scipy's ``A.multiply(B.T)`` first:

- scipy in: the copy is built on every call (sorting the coordinates);
- spc Tensor in: the copy's structure was built at the first call and kept on
  the Tensor; a call gathers the values;
- first call with a fresh spc Tensor: structure built (what ``k.prepare`` pays once);
- the same kernel compiled with B in csc given a csc Tensor (no copy): the floor;
- scipy's ``A.multiply(B.T)`` (``B.T`` a free view; scipy converts it inside).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common                   # noqa: E402
import spc                      # noqa: E402
from spc import corpus          # noqa: E402

EXPR = "C[i,j] = A[i,j]*B[j,i]"


def median_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls timed call by call, after one warm-up call."""
    return statistics.median(common.call_times(fn, min_repeats=repeats, warmup=1)) * 1e3


def matrices(names):
    if corpus.available():
        for e in corpus.entries("graph"):
            if e.path.name.split(".")[0] in names:
                yield e.path.name.split(".")[0], corpus.load(e.path, np.float32).tocsr()
        return
    rng = np.random.default_rng(0)
    yield "synthetic 20000x20000 1e-3", sp.random(20000, 20000, density=1e-3, format="csr",
                                                 dtype=np.float32, random_state=rng)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--graphs", nargs="+", default=["cora", "pubmed", "PROTEINS",
                                                      "luxembourg_osm"])
    args = ap.parse_args(argv)
    copying = spc.compile(EXPR, formats={"A": "csr", "B": "csr", "C": "csr"})
    floor = spc.compile(EXPR, formats={"A": "csr", "B": "csc", "C": "csr"})
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{spc.get_num_threads()} threads, float32, median of {args.repeats}")
    print("| matrix | nnz | scipy in | spc Tensor in | first call (builds copy) | "
          "B in csc, no copy | scipy A.multiply(B.T) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, a in matrices(args.graphs):
        want = a.multiply(a.T).tocsr()
        got = copying(A=a, B=a)
        np.testing.assert_allclose(got.toarray() if a.shape[0] < 5000 else got.data,
                                   want.toarray() if a.shape[0] < 5000 else want.data,
                                   rtol=1e-5)
        ta = spc.tensor(a, "csr")
        t0 = time.perf_counter()
        tb = spc.tensor(a.copy(), "csr")
        copying(A=ta, B=tb)
        first = (time.perf_counter() - t0) * 1e3
        tb_csc = spc.tensor(a, "csc")
        row = [median_ms(lambda: copying(A=a, B=a), args.repeats),
               median_ms(lambda: copying(A=ta, B=tb), args.repeats),
               first,
               median_ms(lambda: floor(A=ta, B=tb_csc), args.repeats),
               median_ms(lambda: a.multiply(a.T), args.repeats)]
        print(f"| {name} | {a.nnz:,} | " + " | ".join(f"{x:.2f}" for x in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
