"""What a tuned kernel must compute: float64 references of the named kernels, and
the check that a candidate's result matches one."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError

TUNABLE = ("spmv", "spmm", "sddmm")
TOLERANCE = {"float64": 1e-9, "float32": 1e-3, "float16": 2e-2, "bfloat16": 2e-2}


def check_kernel(kernel: str) -> str:
    """The named kernel ``kernel`` lower-cased; UnsupportedError for any other."""
    name = str(kernel).strip().lower()
    if name not in TUNABLE:
        raise UnsupportedError(f"spc.tune tunes the named kernels {', '.join(TUNABLE)}, "
                               f"not {kernel!r}")
    return name


def width(kernel: str, dense: tuple) -> int:
    """N, the database's size key: SpMM's output columns, SDDMM's inner dimension, 1 for SpMV."""
    if kernel == "spmv":
        return 1
    return int(dense[0].shape[1]) if dense and len(dense[0].shape) == 2 else 1


def reference(kernel: str, A: sp.csr_matrix, dense: tuple):
    """``kernel``'s result on canonical csr ``A`` and host arrays ``dense``, in float64
    (a numpy array, or for SDDMM a csr matrix with A's pattern)."""
    import scipy.sparse as sp   # scipy is optional: imported on use
    A64 = A.astype(np.float64)
    if kernel in ("spmv", "spmm"):
        return A64 @ np.asarray(dense[0], dtype=np.float64)
    X, Y = (np.asarray(d, dtype=np.float64) for d in dense)
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    sampled = np.einsum("ij,ij->i", X[rows], Y[A.indices]) if A.nnz else np.zeros(0)
    return sp.csr_matrix((A64.data * sampled, A.indices.copy(), A.indptr.copy()), shape=A.shape)


def mismatch(out, ref, dtype: str) -> str | None:
    """None when ``out`` matches ``ref`` within ``dtype``'s tolerance (relative to the
    largest finite reference value; NaNs and infinities must match exactly), else
    a sentence saying how it differs."""
    import scipy.sparse as sp   # scipy is optional: imported on use
    tol = TOLERANCE.get(dtype, 1e-4)
    if sp.issparse(ref):
        if hasattr(out, "to_scipy") and not sp.issparse(out):
            out = out.to_scipy()
        if not sp.issparse(out):
            return f"a {type(out).__name__} where a sparse matrix was expected"
        if out.shape != ref.shape:
            return f"shape {out.shape}, expected {ref.shape}"
        got = out.tocsr().astype(np.float64)
        got.sum_duplicates()
        want = ref.tocsr()
        if got.nnz == want.nnz and np.array_equal(got.indptr, want.indptr) \
                and np.array_equal(got.indices, want.indices):
            return _dense_mismatch(got.data, want.data, tol)
        diff = (got - want).tocsr()
        return _dense_mismatch(diff.data, np.zeros_like(diff.data), tol,
                               scale=_scale(want.data))
    if hasattr(out, "to_numpy"):
        out = out.to_numpy()
    out = host(out)
    if out.shape != ref.shape:
        return f"shape {out.shape}, expected {ref.shape}"
    return _dense_mismatch(out.astype(np.float64), ref, tol)


def host(x):
    """A numpy array of ``x``: torch and CuPy arrays (on a GPU too) are copied to the host."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def _scale(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 1.0


def _dense_mismatch(got, want, tol: float, scale: float | None = None) -> str | None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(_scale(want) if scale is None else scale, 1e-30)
    special = ~np.isfinite(want) | ~np.isfinite(got)
    if not np.array_equal(np.nan_to_num(got[special], nan=1.5, posinf=2.5, neginf=-2.5),
                          np.nan_to_num(want[special], nan=1.5, posinf=2.5, neginf=-2.5)):
        return "NaN or infinity where the reference has none (or the other way round)"
    err = float(np.abs(got[~special] - want[~special]).max()) / scale if (~special).any() else 0.0
    if err > tol:
        return f"max error {err:.2e} of the largest reference value (tolerance {tol:.0e})"
    return None
