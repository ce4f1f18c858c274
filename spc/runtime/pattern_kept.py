"""Refuse a conversion that would change an operand's pattern where a kernel reads it.

A kernel that reads operand A's pattern (``frontend/pattern_reads.py``: ``stored(A)``,
``max``/``min`` over A) computes over A's stored entries.  Converting A to a format that
fills its structure with zeros (DIA's diagonals, BSR's blocks, N:M's groups) adds stored
entries A does not hold, and converting it to one with a fixed number of slots per row
(ell, dia, nm, hyb's ell part) drops the explicit zeros A stores (``formats/convert.py``),
so the answer would depend on the format chosen, not on A: ``check_pattern_kept`` raises
a FormatError naming the operand instead.  An operand given already in the kernel's
format is the user's own storage, its stored zeros included, and is taken as it is; so
is any operand of a dense format (every entry is stored, as numpy's ``A.max(axis=1)``
sees it).  The check sorts the converted and the held coordinates (O(nnz log nnz)), and
only for pattern-read operands in a format that may change the pattern.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError
from ..formats.composite import SumFormat, SumTensor
from ..formats.convert import stores_slots
from ..formats.tensor import Tensor, _is_scipy_sparse


def may_change_pattern(fmt) -> bool:
    """Whether converting into ``fmt`` may store entries the input does not hold (a
    format that may fill) or drop explicit zeros it does (slots per row: ell, dia, nm;
    a sum format's parts)."""
    return isinstance(fmt, SumFormat) or fmt.may_fill or stores_slots(fmt)


def check_pattern_kept(given, converted, fmt, name: str) -> None:
    """Raise FormatError if ``converted`` (operand ``name``, ``given`` by the caller,
    converted to ``fmt``; a Tensor, or a SumTensor for a sum format) stores more or
    fewer entries than ``given`` holds.

    Requires: ``converted`` is ``given`` in ``fmt`` (host or device arrays)."""
    if not may_change_pattern(fmt) or (isinstance(given, (Tensor, SumTensor))
                                       and given.format == fmt):
        return
    stored = _entries(converted)
    held = held_pattern(given)
    if np.array_equal(stored, held):
        return
    added = len(np.setdiff1d(stored, held, assume_unique=True))
    dropped = len(np.setdiff1d(held, stored, assume_unique=True))
    change = " and ".join(
        ([f"store {added:,} entries {name} does not hold (zeros that fill its structure)"]
         if added else []) +
        ([f"drop {dropped:,} that it does (explicit zeros: fixed slots keep none)"]
         if dropped else []))
    raise FormatError(
        f"operand {name}: the result depends on which entries {name} stores (read by "
        f"stored(), or max or min over them), and format {fmt} would {change}, changing "
        f"the answer; compile with a format that keeps the pattern (csr, csc or coo), "
        f"remove explicit zeros first (scipy's eliminate_zeros()), or give {name} already "
        f"in {fmt} (spc.tensor), whose stored entries then count as they are")


def _entries(t) -> np.ndarray:
    """The sorted, distinct row-major linear indices of the entries spc Tensor (or
    SumTensor: its parts together) ``t`` stores, padding excluded."""
    parts = t.parts if isinstance(t, SumTensor) else [t]
    return np.unique(np.concatenate([_linear(p.to_coo()[0], p.shape) for p in parts]))


def _linear(coords, shape) -> np.ndarray:
    """Row-major linear indices of coordinates (one array per dimension)."""
    if not len(coords) or not len(coords[0]):
        return np.zeros(0, dtype=np.int64)
    return np.ravel_multi_index(tuple(np.asarray(c, dtype=np.int64) for c in coords),
                                tuple(int(n) for n in shape))


def held_pattern(x) -> np.ndarray:
    """The sorted, distinct row-major linear indices of the entries operand ``x`` holds:
    a sparse operand's stored ones (explicit zeros included, duplicates once; a scipy
    dia matrix's every diagonal slot inside the matrix, as its ``nnz`` counts them), a
    dense one's nonzeros."""
    if _is_scipy_sparse(x) and x.format == "dia":
        return np.unique(_linear(_dia_slots(x), x.shape))
    if _is_scipy_sparse(x):
        m = x.tocoo()
        return np.unique(_linear((m.row, m.col), m.shape))
    if isinstance(x, Tensor) and x.format.is_dense:
        return np.flatnonzero(x.to_numpy())
    if isinstance(x, (Tensor, SumTensor)):
        return _entries(x)
    if type(x).__module__.startswith("torch"):
        if str(x.layout) == "torch.strided":
            return np.flatnonzero((x.detach() != 0).cpu().numpy())
        coo = x.detach().cpu().to_sparse_coo().coalesce()
        return np.unique(_linear(coo.indices().numpy(), coo.shape))
    if type(x).__module__.startswith("cupy"):
        return held_pattern(x.get())
    return np.flatnonzero(np.asarray(x))


def _dia_slots(m) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every slot of scipy dia matrix ``m``'s diagonals inside the
    matrix (``data[k, j]`` holds entry ``(j - offsets[k], j)``)."""
    rows, cols = m.shape
    width = min(cols, m.data.shape[1])
    js = [np.arange(max(int(o), 0), min(width, rows + int(o)), dtype=np.int64)
          for o in m.offsets]
    j = np.concatenate(js) if js else np.zeros(0, dtype=np.int64)
    off = np.repeat(np.asarray(m.offsets, dtype=np.int64), [len(a) for a in js])
    return j - off, j
