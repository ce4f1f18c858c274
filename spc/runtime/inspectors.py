"""Inspectors: arrays computed from an operand's storage (row permutations, ...)
that scheduled kernels read as extra parameters (``Param.inspector``).

An inspector runs on the host, once per Tensor object: its result is kept on
the Tensor (``Tensor.derived``) with a stamp of the storage it was computed
from, so ``k.prepare(A)``'s Tensor pays once and later calls reuse it.  Device
tensors are read back to the host for the inspector and its result uploaded.
An inspector must give a valid result for unsorted and duplicate entries too:
kernels that accept such input (``Kernel.accepts_noncanonical``) read it as it
is, and so does the inspector.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from . import inspect_rows, inspect_segments


def rows_by_length(t) -> np.ndarray:
    """The rows of ``t`` (level 0 dense rows, level 1 compressed) longest first,
    ties in stored order (Sputnik's row swizzle).  Ensures: an int32
    permutation of ``range(rows)``."""
    return inspect_rows.by_length(_host(t.arrays[1]["pos"]))


def rows_by_similarity(t) -> np.ndarray:
    """The rows of ``t`` with overlapping column sets next to each other (ASpT-style
    row reordering: a panel of consecutive rows touches fewer columns, so fewer
    rows of SpMM's dense operand); empty rows last.  See
    ``inspect_rows.by_similarity`` (numba; ~2.5 s to compile on first use)."""
    return inspect_rows.by_similarity(_host(t.arrays[1]["pos"]), _host(t.arrays[1]["crd"]))


def row_segments(t, max_nnz: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, starts, count): the rows of ``t`` cut into pieces of at most
    ``max_nnz`` positions ("auto": chosen from the matrix), see
    ``inspect_segments.row_segments``."""
    pos = _host(t.arrays[1]["pos"])
    k = inspect_segments.auto_max_nnz(pos) if max_nnz == "auto" else int(max_nnz)
    return inspect_segments.row_segments(pos, k)


INSPECTORS = {"rows_by_length": rows_by_length, "rows_by_similarity": rows_by_similarity}
PARAMETRIC = {"segment_rows": (row_segments, 0), "segment_starts": (row_segments, 1),
              "segment_count": (row_segments, 2)}
#  ^ "name:arg" inspectors: (function of the tensor and arg, which part of its result)


def compute(inspector: str, t):
    """The result of ``inspector`` ("name" or "name:arg") for ``t`` (a Tensor or
    HostArrays); the parts of one parametric computation are computed together,
    once per ``t``."""
    base, _, arg = inspector.partition(":")
    if base not in PARAMETRIC:
        return INSPECTORS[inspector](t)
    fn, part = PARAMETRIC[base]
    key = (fn.__name__, arg)
    stamp = storage_stamp(t)
    hit = t.derived.get(key)
    if hit is None or hit[0] != stamp:
        hit = (stamp, fn(t, arg))
        t.derived[key] = hit
    return hit[1][part]


class HostArrays:
    """What an inspector reads of a csr-like operand held elsewhere (a torch
    sparse tensor): its shape and host copies of level 1's ``pos`` and ``crd``,
    shaped like a Tensor's storage (``compute`` accepts it)."""

    def __init__(self, shape: tuple, pos: np.ndarray, crd: np.ndarray):
        self.shape = shape
        self.arrays = [{}, {"pos": pos, "crd": crd}]
        self.vals = crd                     # (its length is the stamp's nnz)
        self.derived: dict = {}


def _host(a) -> np.ndarray:
    if hasattr(a, "get"):                        # CuPy
        return a.get()
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def storage_stamp(t) -> tuple:
    """What an inspector's result depends on: the shape and the identity and
    length of every level array (a prepared tensor whose storage was swapped
    no longer matches)."""
    return (t.shape, len(t.vals)) + tuple((name, id(a), len(a)) for lv in t.arrays
                                          for name, a in sorted(lv.items()))


def derived(t, inspector: str, name: str):
    """``inspector``'s result for Tensor ``t`` (operand ``name``), computed once
    per Tensor and kept on it; on the device when ``t``'s arrays are.

    Raises InputError when ``t`` holds a result computed from other storage
    (a prepared operand whose arrays were replaced since ``k.prepare``)."""
    cache = t.derived
    stamp = storage_stamp(t)
    hit = cache.get(inspector)
    if hit is not None:
        if hit[0] != stamp:
            raise InputError(f"operand {name} was prepared (k.prepare) for other storage "
                             f"than it holds now ({_describe(hit[0])} then, "
                             f"{_describe(stamp)} now); call k.prepare on the matrix again")
        return hit[1]
    t0 = time.perf_counter()
    result = compute(inspector, t)
    sample = t.arrays[1]["pos"]
    if hasattr(sample, "__cuda_array_interface__"):
        import cupy
        result = cupy.asarray(result)
    cache[inspector] = (stamp, result)
    t.inspect_seconds = getattr(t, "inspect_seconds", 0.0) + time.perf_counter() - t0
    return result


def _describe(stamp: tuple) -> str:
    shape, nnz = stamp[0], stamp[1]
    return f"{'x'.join(map(str, shape))} with {nnz} stored entries"


__all__ = ["INSPECTORS", "PARAMETRIC", "HostArrays", "compute", "derived", "row_segments", "storage_stamp",
           "rows_by_length", "rows_by_similarity"]
