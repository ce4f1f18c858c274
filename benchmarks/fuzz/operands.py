"""Turn a case's dense values into what is handed to spc, by operand family."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _torch():
    import torch
    return torch


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# without torch (CI installs none), a torch family is built as its numpy/scipy twin
_WITHOUT_TORCH = {"torch-coo": "scipy-coo", "torch-coo-dup": "scipy-coo-dup",
                  "torch-csr": "scipy-csr", "torch-csc": "scipy-csc"}


def _shuffle_within_rows(m: sp.csr_matrix, rng) -> sp.csr_matrix:
    m = m.copy()
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        perm = rng.permutation(hi - lo) + lo
        m.indices[lo:hi] = m.indices[perm]
        m.data[lo:hi] = m.data[perm]
    m.has_sorted_indices = False
    return m


def _dup_triplets(r, c, v, rng):
    """Split about half of the entries into two stored halves that sum to it
    (halves, so that the sum is exact in any float dtype the values are cast to)."""
    r, c, v = list(r), list(c), list(v)
    for n in range(len(v)):
        if rng.random() < 0.5:
            part = v[n] * 0.5
            v[n] = v[n] - part
            r.append(r[n]); c.append(c[n]); v.append(part)
    order = rng.permutation(len(v))
    return (np.asarray(r, dtype=np.int64)[order], np.asarray(c, dtype=np.int64)[order],
            np.asarray(v)[order])


def _zero_triplets(arr, r, c, v, rng):
    """Add explicit zeros at a few unstored coordinates."""
    zr, zc = np.nonzero(arr == 0)
    if len(zr):
        pick = rng.random(len(zr)) < 0.3
        r = np.concatenate([r, zr[pick]]); c = np.concatenate([c, zc[pick]])
        v = np.concatenate([v, np.zeros(int(pick.sum()))])
    return r, c, v


def build(op: dict, fmt: str, dtype: str, shape: tuple):
    """The operand ``op`` (a case's operand entry) in its family."""
    import spc
    fam = op["family"]
    if fam.startswith("torch") and not torch_available():
        sparse_ok = len(shape) == 2 and np.dtype(op.get("cast", dtype)) != np.float16
        fam = _WITHOUT_TORCH.get(fam, "numpy") if sparse_ok else \
            ("np-0d" if not shape else "numpy")
    dt = np.dtype(op.get("cast", dtype))
    arr = np.asarray(op["values"], dtype=np.float64).reshape(shape)
    rng = np.random.default_rng(op["seed"])
    a = arr.astype(dt)
    if fam == "float":
        return float(a)
    if fam == "np-scalar":
        return a[()]
    if fam == "np-0d":
        return a
    if fam == "numpy":
        return np.array(a, order="C")
    if fam == "numpy-f":
        return np.asfortranarray(a)
    if fam == "numpy-strided":
        big = np.zeros(tuple(2 * s for s in shape), dtype=dt)
        big[tuple(slice(None, None, 2) for _ in shape)] = a
        return big[tuple(slice(None, None, 2) for _ in shape)]
    if fam == "numpy-T":
        return np.array(a.transpose(), order="C").transpose()
    if fam == "spc":
        return spc.tensor(a, fmt)
    if fam.startswith("torch"):
        torch = _torch()
        t = torch.from_numpy(np.array(a, order="C"))
        if fam == "torch":
            return t
        if fam == "torch-coo":
            return t.to_sparse()
        if fam == "torch-coo-dup":
            r, c = np.nonzero(a)
            r, c, v = _dup_triplets(r, c, a[r, c], rng)
            return torch.sparse_coo_tensor(torch.from_numpy(np.stack([r, c])),
                                           torch.from_numpy(v.astype(dt)), shape)
        if fam == "torch-csr":
            return t.to_sparse_csr()
        if fam == "torch-csc":
            return t.to_sparse_csc()
    if fam.startswith("scipy") or fam == "spc-from-scipy":
        if fam == "scipy-csr":
            return sp.csr_matrix(a)
        if fam == "scipy-csc":
            return sp.csc_matrix(a)
        if fam == "scipy-coo":
            return sp.coo_matrix(a)
        if fam == "scipy-bsr":
            return sp.bsr_matrix(a)
        if fam == "spc-from-scipy":
            return spc.tensor(sp.csr_matrix(a), fmt)
        if fam == "scipy-csr-unsorted":
            return _shuffle_within_rows(sp.csr_matrix(a), rng)
        if fam == "scipy-csc-unsorted":
            m = _shuffle_within_rows(sp.csr_matrix(a.T), rng)
            out = sp.csc_matrix((m.data, m.indices, m.indptr), shape=shape)
            out.has_sorted_indices = False
            return out
        r, c = np.nonzero(a)
        v = arr[r, c]
        if "zeros" in fam:
            r, c, v = _zero_triplets(a, r, c, v, rng)
        if "dup" in fam:
            r, c, v = _dup_triplets(r, c, v, rng)
        coo = sp.coo_matrix((v.astype(dt), (r, c)), shape=shape)
        if fam.startswith("scipy-coo"):
            return coo
        m = _csr_keep(coo, shape)
        if "unsorted" in fam:
            m = _shuffle_within_rows(m, rng)
        return m
    raise ValueError(f"unknown family {fam}")


def _csr_keep(coo: sp.coo_matrix, shape) -> sp.csr_matrix:
    """CSR with coo's entries kept as stored (duplicates and zeros not summed)."""
    order = np.argsort(coo.row, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(coo.row, minlength=shape[0]))])
    m = sp.csr_matrix((coo.data[order], coo.col[order].astype(np.int32),
                       indptr.astype(np.int32)), shape=shape)
    return m


def to_dense(x) -> np.ndarray:
    """A result as a float64 numpy array (raises TypeError for an unknown family)."""
    import spc
    if isinstance(x, (float, int, np.generic)):
        return np.asarray(x, dtype=np.float64)
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    if sp.issparse(x):
        return np.asarray(x.toarray(), dtype=np.float64)
    mod = type(x).__module__
    if mod.startswith("cupy"):                     # CuPy arrays, cupyx.scipy.sparse
        x = x.get()
        return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    if isinstance(x, (spc.Tensor, spc.SumTensor)):
        return np.asarray(x.to_numpy(), dtype=np.float64)
    try:
        torch = _torch()
        if isinstance(x, torch.Tensor):
            if x.layout != torch.strided:
                x = x.to_dense()
            return x.detach().cpu().double().numpy()
    except ImportError:
        pass
    raise TypeError(f"result of unknown type {type(x).__name__}")


def result_dtype(x):
    if isinstance(x, float):
        return None
    try:
        d = x.dtype
    except AttributeError:
        return None
    return str(d).replace("torch.", "")
