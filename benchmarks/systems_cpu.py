"""Per-system CPU runners: one process measures one system.

Each system turns (op, A, dense inputs) into a zero-argument callable that does
what a user of that system would write for one call, plus a function that turns
its result into numpy for the check.  A worker checks the first result against
the float64 reference and times only results that pass.

Two ways to run a worker (the driver ``bench_cpu.py`` uses the first):

    python benchmarks/systems_cpu.py --system torch --serve
        reads one JSON request per line on stdin, answers one JSON line per case
        on stdout, then {"done": true}; {"quit": true} ends it.
    python benchmarks/systems_cpu.py --system torch --case-file req.json --out res.json
        runs the requests of a file (a list of requests) and writes a JSON list.

A request: {"matrix": "<name>", "npz": "<indptr/indices/data/shape .npz>",
"cases": [{"op", "n", "inputs": {"B": "<.npy>"}, "ref": "<.npy>", "flops", "bytes"}],
"min_time": 0.2, "min_repeats": 5}.

Systems: spc, spc-nv (spc with validate=False: the call path without operand
checks), scipy, torch, numpy (dense), numba.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from common import DENSE_LIMIT, DENSE_WORK_LIMIT, REL_TOL, rel_error, time_guarded  # noqa: E402
import worker_protocol  # noqa: E402

SYSTEMS = ("spc", "spc-nv", "scipy", "torch", "numpy", "numba")


class Skip(Exception):
    """The system has no sensible implementation of this case (recorded, not an error)."""


def _pattern_values(out: sp.spmatrix, A: sp.csr_matrix) -> np.ndarray:
    """The values of a sparse result at A's pattern, in A's CSR order."""
    out = sp.csr_matrix(out)
    out.sort_indices()
    if (out.shape == A.shape and out.nnz == A.nnz and np.array_equal(out.indptr, A.indptr)
            and np.array_equal(out.indices, A.indices)):
        return np.asarray(out.data)
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    extra = out.nnz - A.nnz
    if extra > 0:
        raise ValueError(f"result has {extra} entries outside A's pattern")
    return np.asarray(out[rows, A.indices]).ravel()


# -- the systems --------------------------------------------------------------------------------
class System:
    name = "?"

    def info(self) -> dict:
        return {}

    def prepare(self, op, A, inputs):
        """(fn, to_numpy): fn() runs one call; to_numpy(fn()) gives the checked array."""
        raise NotImplementedError

    def forget_matrix(self):
        """Drop per-matrix state (e.g. numpy's dense copy)."""


class Spc(System):
    """``spc.compile(op, fmt="csr")``, compiled once per op; called on scipy A
    and numpy dense operands, as a user would."""

    def __init__(self, validate=True):
        self.name = "spc" if validate else "spc-nv"
        self.validate = validate
        import spc
        self.spc = spc
        t = time.perf_counter()
        self.kernels = {op: spc.compile(op, fmt="csr") for op in ("spmv", "spmm", "sddmm")}
        self.compile_s = time.perf_counter() - t

    def info(self):
        from spc import config
        threads = getattr(config, "num_threads", lambda: None)()
        return {"compile_s": self.compile_s, "threads": threads,
                "validate": self.validate, "path": str(Path(self.spc.__file__).parent)}

    def prepare(self, op, A, inputs):
        k = self.kernels[op]
        v = self.validate
        if op == "spmv":
            x = inputs["x"]
            return (lambda: k(A, x, validate=v)), np.asarray
        if op == "spmm":
            B = inputs["B"]
            return (lambda: k(A, B, validate=v)), np.asarray
        X, Y = inputs["X"], inputs["Y"]
        return (lambda: k(A, X, Y, validate=v)), (lambda S: _pattern_values(S, A))


class Scipy(System):
    """``A @ x`` / ``A @ B`` with scipy.sparse CSR (single-threaded)."""
    name = "scipy"

    def info(self):
        import scipy
        return {"version": scipy.__version__, "threads": 1}

    def prepare(self, op, A, inputs):
        if op == "spmv":
            x = inputs["x"]
            return (lambda: A @ x), np.asarray
        if op == "spmm":
            B = inputs["B"]
            return (lambda: A @ B), np.asarray
        raise Skip("scipy.sparse has no SDDMM; A.multiply(X @ Y.T) computes the whole "
                   "dense product, and a gather-based version is numpy, not scipy")


class Torch(System):
    """torch.sparse CSR on the CPU (MKL): ``A_t @ x``, ``A_t @ B``,
    ``torch.sparse.sampled_addmm(A_t, X, Y.T, beta=0, alpha=1)`` followed by an
    in-place scaling of its values by A's values (sampled_addmm only samples the
    pattern of its input; spc's SDDMM also multiplies by A).  int32 indices
    (shared with scipy, and faster than int64 here)."""
    name = "torch"

    def __init__(self):
        import torch
        self.torch = torch
        try:
            torch.sparse.check_sparse_tensor_invariants.disable()
        except AttributeError:
            pass
        import warnings
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")

    def info(self):
        t = self.torch
        return {"version": t.__version__, "threads": t.get_num_threads(),
                "mkl": bool(t.backends.mkl.is_available())}

    def prepare(self, op, A, inputs):
        t = self.torch
        At = t.sparse_csr_tensor(t.from_numpy(A.indptr), t.from_numpy(A.indices),
                                 t.from_numpy(A.data), size=A.shape)
        if op == "spmv":
            x = t.from_numpy(inputs["x"])
            return (lambda: At @ x), (lambda y: y.numpy())
        if op == "spmm":
            B = t.from_numpy(inputs["B"])
            return (lambda: At @ B), (lambda C: C.numpy())
        X, Y = t.from_numpy(inputs["X"]), t.from_numpy(inputs["Y"])
        vals = At.values()

        def sddmm():
            S = t.sparse.sampled_addmm(At, X, Y.T, beta=0.0, alpha=1.0)
            S.values().mul_(vals)
            return S

        def to_numpy(S):
            if not (t.equal(S.crow_indices().to(t.int64), At.crow_indices().to(t.int64))
                    and t.equal(S.col_indices().to(t.int64), At.col_indices().to(t.int64))):
                raise ValueError("sampled_addmm changed the pattern")
            return S.values().numpy()
        return sddmm, to_numpy


class NumpyDense(System):
    """numpy dense (BLAS): ``A_dense @ x``, ``A_dense @ B``, ``(X @ Y.T) * A_dense``
    (a dense M x K result).  A_dense is built once per matrix, outside timing;
    skipped when rows*cols > 4e8, or rows*cols*N > 6e10 (a second or more per
    call: it would take most of the run's time for nothing)."""
    name = "numpy"

    def __init__(self):
        self._key = None
        self._dense = None

    def info(self):
        return common.numpy_info()

    def forget_matrix(self):
        self._key = self._dense = None

    def prepare(self, op, A, inputs):
        M, K = A.shape
        n = 1 if op == "spmv" else inputs["B" if op == "spmm" else "X"].shape[1]
        if M * K > DENSE_LIMIT:
            raise Skip(f"dense A over {DENSE_LIMIT:.0e} entries: {M}x{K}")
        if M * K * n > DENSE_WORK_LIMIT:
            raise Skip(f"dense work over {DENSE_WORK_LIMIT:.0e} multiply-adds a call "
                       f"(~1 s or more): {M}x{K}, N={n}")
        if self._key is not A:
            self._dense = A.toarray()
            self._key = A
        D = self._dense
        if op == "spmv":
            x = inputs["x"]
            return (lambda: D @ x), np.asarray
        if op == "spmm":
            B = inputs["B"]
            return (lambda: D @ B), np.asarray
        X, Y = inputs["X"], inputs["Y"]
        rows = np.repeat(np.arange(M), np.diff(A.indptr))
        cols = A.indices
        return (lambda: (X @ Y.T) * D), (lambda S: S[rows, cols])


# The numba kernels, plain Python here so that only the numba worker imports numba;
# Numba() binds ``prange`` to numba.prange and jit-compiles them (parallel, fastmath).
prange = range


def numba_spmv(indptr, indices, data, x):
    m = indptr.size - 1
    y = np.empty(m, dtype=x.dtype)
    for i in prange(m):
        s = np.float32(0.0)
        for p in range(indptr[i], indptr[i + 1]):
            s += data[p] * x[indices[p]]
        y[i] = s
    return y


def numba_spmm(indptr, indices, data, B):
    m = indptr.size - 1
    n = B.shape[1]
    C = np.zeros((m, n), dtype=B.dtype)
    for i in prange(m):
        for p in range(indptr[i], indptr[i + 1]):
            a = data[p]
            k = indices[p]
            for j in range(n):
                C[i, j] += a * B[k, j]
    return C


def numba_sddmm(indptr, indices, data, X, Y):
    m = indptr.size - 1
    n = X.shape[1]
    out = np.empty_like(data)
    for i in prange(m):
        for p in range(indptr[i], indptr[i + 1]):
            k = indices[p]
            s = np.float32(0.0)
            for j in range(n):
                s += X[i, j] * Y[k, j]
            out[p] = data[p] * s
    return out


_NUMBA_KERNELS = {"spmv": numba_spmv, "spmm": numba_spmm, "sddmm": numba_sddmm}


class Numba(System):
    """The ~20-line numba kernels a user would write: CSR, prange over rows,
    fastmath, parallel=True, allocating the output inside the call."""
    name = "numba"

    def __init__(self):
        import numba
        self.numba = numba
        globals()["prange"] = numba.prange
        opts = dict(parallel=True, fastmath=True, cache=True, nogil=True)
        self.kernels = {op: numba.njit(**opts)(fn) for op, fn in _NUMBA_KERNELS.items()}

    def info(self):
        nb = self.numba
        layer = None
        try:
            layer = nb.threading_layer()
        except ValueError:
            pass
        return {"version": nb.__version__, "threads": nb.get_num_threads(),
                "threading_layer": layer}

    def prepare(self, op, A, inputs):
        k = self.kernels[op]
        ip, ix, dv = A.indptr, A.indices, A.data
        if op == "spmv":
            x = inputs["x"]
            return (lambda: k(ip, ix, dv, x)), np.asarray
        if op == "spmm":
            B = inputs["B"]
            return (lambda: k(ip, ix, dv, B)), np.asarray
        X, Y = inputs["X"], inputs["Y"]
        return (lambda: k(ip, ix, dv, X, Y)), np.asarray


def make_system(name: str) -> System:
    if name == "spc":
        return Spc(validate=True)
    if name == "spc-nv":
        return Spc(validate=False)
    return {"scipy": Scipy, "torch": Torch, "numpy": NumpyDense, "numba": Numba}[name]()


# -- running requests -------------------------------------------------------------------------
def prepare_case(system: System, A, case: dict):
    """(record, fn, to_numpy, reference) of one case for ``system``; ``fn`` is None,
    and the record says why, when the system skips the case."""
    rec = {"op": case["op"], "n": case["n"], "system": system.name}
    inputs = {k: np.load(p) for k, p in case["inputs"].items()}
    ref = np.load(case["ref"])
    try:
        fn, to_numpy = system.prepare(case["op"], A, inputs)
    except Skip as s:
        return {**rec, "status": "skip", "message": str(s)}, None, None, None
    return rec, fn, to_numpy, ref


def run_case(system: System, A, case: dict, req: dict, budget: list) -> dict:
    rec = {"op": case["op"], "n": case["n"], "system": system.name}
    try:
        rec, fn, to_numpy, ref = prepare_case(system, A, case)
        if fn is None:
            return rec
        return worker_protocol.check_and_time(rec, fn, fn, to_numpy, ref, case, req, budget,
                                              rel_error, REL_TOL, time_guarded)
    except Exception as err:  # noqa: BLE001 - a system's failure is a result, not a crash
        return {**rec, "status": "error",
                "message": f"{type(err).__name__}: {err}".strip()[:2000],
                "traceback": traceback.format_exc()[-4000:]}


def case_fields(case: dict) -> dict:
    return {"op": case["op"], "n": case["n"]}


def main(argv=None) -> None:
    worker_protocol.main(argv, __doc__, SYSTEMS, make_system, run_case, case_fields)


if __name__ == "__main__":
    main()
