"""Per-system CPU workers of the format benchmark (``bench_formats.py``): one
process measures one system, each over several storage formats ("variants").

    python benchmarks/formats_workers.py --system spc --serve
        reads one JSON request per line on stdin, answers one JSON line per case
        on stdout, then {"done": true}; {"quit": true} ends it.
    python benchmarks/formats_workers.py --system torch --case-file req.json [--out res.json]
        runs the requests of a file (one request or a list) and prints/writes JSON.

A request: {"matrix": name, "npz": "<indptr/indices/data/shape .npz>",
"cases": [{"id", "op", "n", "variant", "inputs": {"B": "<.npy>"}, "ref": "<.npy>",
"flops"}], "min_time", "min_repeats", "max_external_load", "retries",
"retry_budget_s"}.  Cases of one variant come together; the matrix is converted
to a variant once (outside timing) and reused for every op and N.

Systems and their variants:

* ``spc``: ``spc.compile(op, fmt=variant)`` on the matrix pre-converted with
  ``spc.tensor(A, variant)`` (csr, bsr(r,c), ell, dia, nm(n,m), hyb, ...): the
  first call (``validate=True``) is checked, the timed calls pass
  ``validate=False`` (the format comparison is about the kernels; validation
  is an O(stored) pass that every format pays differently).  ``csr-scipy`` is
  the csr kernel called on the scipy matrix itself (spc's fast call path for
  scipy CSR input; spc Tensors take the general path);
* ``scipy``: ``csr`` (``A @ B``) and ``bsr(r,c)`` (``A.tobsr((r, c)) @ B``), single-threaded;
* ``torch``: ``csr`` (MKL, int32 indices shared with scipy), ``bsr(r,c)``
  (``A_t.to_sparse_bsr((r, c)) @ B``; MKL takes square blocks only) and
  ``dense`` (``torch.mm`` / ``torch.mv`` on ``A.toarray()``);
* ``numpy``: ``dense`` (``A.toarray() @ B``, BLAS).

Records carry the conversion time (``convert_s``) and the bytes the format
stores (``storage_bytes``: values plus every index array) besides the timing.
"""
from __future__ import annotations

import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from common import DENSE_LIMIT, DENSE_WORK_LIMIT, REL_TOL, rel_error, time_guarded  # noqa: E402
import worker_protocol  # noqa: E402

SYSTEMS = ("spc", "scipy", "torch", "numpy")


class Skip(Exception):
    """This system cannot run this variant (recorded as a skip, not an error)."""


def block_of(variant: str):
    """(r, c) of "bsr(r,c)", else None."""
    m = re.fullmatch(r"bsr\((\d+),(\d+)\)", variant.replace(" ", ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def storage_bytes(t) -> int:
    """Bytes an spc tensor stores: its values plus every level array (the parts
    of a sum-format tensor such as hyb, summed)."""
    parts = getattr(t, "parts", None)
    if parts is not None:
        return sum(storage_bytes(p) for p in parts)
    return int(t.vals.nbytes) + sum(int(a.nbytes) for lv in t.arrays for a in lv.values())


def stored_slots(t) -> int:
    """Value slots an spc tensor stores (padding and explicit zeros included)."""
    parts = getattr(t, "parts", None)
    if parts is not None:
        return sum(stored_slots(p) for p in parts)
    return int(len(t.vals))


# -- systems ------------------------------------------------------------------------------------
class System:
    name = "?"

    def __init__(self):
        self._matrix = None
        self._cache: dict = {}

    def info(self) -> dict:
        return {}

    def forget_matrix(self):
        self._matrix = None
        self._cache = {}

    def converted(self, A, variant):
        """(object, meta) for ``variant`` of A, built once per matrix."""
        if self._matrix is not A:
            self.forget_matrix()
            self._matrix = A
        if variant not in self._cache:
            t = time.perf_counter()
            obj, meta = self.convert(A, variant)
            meta["convert_s"] = time.perf_counter() - t
            self._cache[variant] = (obj, meta)
        return self._cache[variant]

    def convert(self, A, variant):
        raise NotImplementedError

    def prepare(self, op, variant, A, inputs):
        """(fn, check_fn, to_numpy, meta): fn() is one timed call, check_fn() the
        checked first call, to_numpy(out) the array compared with the reference."""
        raise NotImplementedError


class Spc(System):
    name = "spc"

    def __init__(self):
        super().__init__()
        import spc
        self.spc = spc
        self.kernels: dict = {}
        self.compile_s: dict = {}

    def info(self):
        from spc import config
        threads = getattr(config, "num_threads", lambda: None)()
        return {"threads": threads, "compile_s": self.compile_s,
                "version": getattr(self.spc, "__version__", "?")}

    def kernel(self, op, variant):
        key = (op, variant)
        if key not in self.kernels:
            t = time.perf_counter()
            self.kernels[key] = self.spc.compile(op, fmt=variant, dtype="float32")
            self.compile_s[f"{op}:{variant}"] = round(time.perf_counter() - t, 3)
        return self.kernels[key]

    def convert(self, A, variant):
        t = self.spc.tensor(A, variant)
        return t, {"storage_bytes": storage_bytes(t), "stored": stored_slots(t),
                   "parts": [str(p.format) for p in t.parts] if hasattr(t, "parts") else None}

    def prepare(self, op, variant, A, inputs):
        x = inputs["x" if op == "spmv" else "B"]
        if variant == "csr-scipy":         # the csr kernel on the scipy matrix: spc's fast path
            k = self.kernel(op, "csr")
            meta = {"storage_bytes": A.data.nbytes + A.indices.nbytes + A.indptr.nbytes,
                    "stored": A.nnz}
            return ((lambda: k(A, x, validate=False)), (lambda: k(A, x)), np.asarray, meta)
        k = self.kernel(op, variant)
        t, meta = self.converted(A, variant)
        return ((lambda: k(t, x, validate=False)), (lambda: k(t, x)), np.asarray, meta)


class Scipy(System):
    name = "scipy"

    def info(self):
        import scipy
        return {"version": scipy.__version__, "threads": 1}

    def convert(self, A, variant):
        if variant == "csr":
            return A, {"storage_bytes": A.data.nbytes + A.indices.nbytes + A.indptr.nbytes,
                       "stored": A.nnz}
        b = block_of(variant)
        if b is None:
            raise Skip(f"scipy has no {variant}")
        if A.shape[0] % b[0] or A.shape[1] % b[1]:
            raise Skip(f"scipy bsr needs the shape divisible by the block: {A.shape} "
                       f"by {b}")
        Ab = A.tobsr(blocksize=b)
        return Ab, {"storage_bytes": Ab.data.nbytes + Ab.indices.nbytes + Ab.indptr.nbytes,
                    "stored": int(Ab.data.size)}

    def prepare(self, op, variant, A, inputs):
        M, meta = self.converted(A, variant)
        x = inputs["x" if op == "spmv" else "B"]
        fn = lambda: M @ x                                          # noqa: E731
        return fn, fn, np.asarray, meta


class Torch(System):
    name = "torch"

    def __init__(self):
        super().__init__()
        import warnings

        import torch
        self.torch = torch
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        try:
            torch.sparse.check_sparse_tensor_invariants.disable()
        except AttributeError:
            pass

    def info(self):
        t = self.torch
        return {"version": t.__version__, "threads": t.get_num_threads(),
                "mkl": bool(t.backends.mkl.is_available())}

    def convert(self, A, variant):
        t = self.torch
        if variant == "dense":
            M, K = A.shape
            if M * K > DENSE_LIMIT:
                raise Skip(f"dense A over {DENSE_LIMIT:.0e} entries: {M}x{K}")
            D = t.from_numpy(A.toarray())
            return D, {"storage_bytes": D.numel() * 4, "stored": D.numel()}
        At = t.sparse_csr_tensor(t.from_numpy(A.indptr), t.from_numpy(A.indices),
                                 t.from_numpy(A.data), size=A.shape)
        if variant == "csr":
            return At, {"storage_bytes": A.data.nbytes + A.indices.nbytes + A.indptr.nbytes,
                        "stored": A.nnz}
        b = block_of(variant)
        if b is None:
            raise Skip(f"torch has no {variant}")
        if b[0] != b[1]:
            raise Skip("torch CPU BSR matmul goes through MKL Sparse, which takes square "
                       "blocks only")
        if A.shape[0] % b[0] or A.shape[1] % b[1]:
            raise Skip(f"to_sparse_bsr needs the shape divisible by the block: {A.shape} "
                       f"by {b}")
        Ab = At.to_sparse_bsr(b)
        nbytes = sum(x.numel() * x.element_size()
                     for x in (Ab.values(), Ab.crow_indices(), Ab.col_indices()))
        return Ab, {"storage_bytes": nbytes, "stored": Ab.values().numel()}

    def prepare(self, op, variant, A, inputs):
        t = self.torch
        M, meta = self.converted(A, variant)
        if variant == "dense":
            n = 1 if op == "spmv" else inputs["B"].shape[1]
            if M.shape[0] * M.shape[1] * n > DENSE_WORK_LIMIT:
                raise Skip(f"dense work over {DENSE_WORK_LIMIT:.0e} multiply-adds a call")
        if op == "spmv":
            x = t.from_numpy(inputs["x"])
            fn = (lambda: t.mv(M, x)) if variant == "dense" else (lambda: M @ x)
        else:
            B = t.from_numpy(inputs["B"])
            fn = (lambda: t.mm(M, B)) if variant == "dense" else (lambda: M @ B)
        return fn, fn, (lambda y: y.numpy()), meta


class NumpyDense(System):
    name = "numpy"

    def info(self):
        return common.numpy_info()

    def convert(self, A, variant):
        if variant != "dense":
            raise Skip(f"numpy has no {variant}")
        M, K = A.shape
        if M * K > DENSE_LIMIT:
            raise Skip(f"dense A over {DENSE_LIMIT:.0e} entries: {M}x{K}")
        D = A.toarray()
        return D, {"storage_bytes": D.nbytes, "stored": D.size}

    def prepare(self, op, variant, A, inputs):
        D, meta = self.converted(A, variant)
        x = inputs["x" if op == "spmv" else "B"]
        n = 1 if op == "spmv" else x.shape[1]
        if D.shape[0] * D.shape[1] * n > DENSE_WORK_LIMIT:
            raise Skip(f"dense work over {DENSE_WORK_LIMIT:.0e} multiply-adds a call")
        fn = lambda: D @ x                                          # noqa: E731
        return fn, fn, np.asarray, meta


def make_system(name: str) -> System:
    return {"spc": Spc, "scipy": Scipy, "torch": Torch, "numpy": NumpyDense}[name]()


# -- running requests -----------------------------------------------------------------------------
def run_case(system: System, A, case: dict, req: dict, budget: list) -> dict:
    rec = {"id": case["id"], "op": case["op"], "n": case["n"], "variant": case["variant"],
           "system": system.name}
    try:
        inputs = {k: np.load(p) for k, p in case["inputs"].items()}
        ref = np.load(case["ref"])
        try:
            fn, check_fn, to_numpy, meta = system.prepare(case["op"], case["variant"], A, inputs)
        except Skip as s:
            return {**rec, "status": "skip", "message": str(s)}
        rec.update({k: v for k, v in meta.items() if v is not None})
        return worker_protocol.check_and_time(rec, check_fn, fn, to_numpy, ref, case, req, budget,
                                              rel_error, REL_TOL, time_guarded)
    except Exception as err:  # noqa: BLE001 - a failure is a result, not a crash
        return {**rec, "status": "error",
                "message": f"{type(err).__name__}: {err}".strip()[:2000],
                "traceback": traceback.format_exc()[-4000:]}


def case_fields(case: dict) -> dict:
    return {"id": case["id"], "op": case["op"], "n": case["n"], "variant": case["variant"]}


def main(argv=None) -> None:
    worker_protocol.main(argv, __doc__, SYSTEMS, make_system, run_case, case_fields)


if __name__ == "__main__":
    main()
