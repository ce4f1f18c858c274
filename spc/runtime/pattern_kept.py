"""Refuse a conversion that would change an operand's pattern where a kernel reads it.

A kernel that reads operand A's pattern (``frontend/pattern_reads.py``: ``stored(A)``,
``max``/``min`` over A) computes over A's stored entries.  Converting A to a format that
fills its structure with zeros (DIA's diagonals, BSR's blocks, N:M's groups) adds stored
entries A does not hold, so the answer would depend on the format chosen, not on A:
``check_pattern_kept`` raises a FormatError naming the operand instead.  An operand
given already in the kernel's format is the user's own storage, its stored zeros
included, and is taken as it is; so is any operand of a dense format (every entry is
stored, as numpy's ``A.max(axis=1)`` sees it).  The check costs a count of the
converted entries, and only for such operands in a non-dense format.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError
from ..formats.format import Format
from ..formats.tensor import Tensor, _is_scipy_sparse


def check_pattern_kept(given, converted: Tensor, fmt: Format, name: str) -> None:
    """Raise FormatError if ``converted`` (operand ``name``, ``given`` by the caller,
    converted to ``fmt``) stores more entries than ``given`` holds.

    Requires: ``converted`` is ``given`` in ``fmt`` (host or device arrays)."""
    if not fmt.may_fill or (isinstance(given, Tensor) and given.format == fmt):
        return
    stored = len(converted.to_coo()[1])
    held = held_entries(given)
    if held is not None and stored > held:
        raise FormatError(
            f"operand {name}: the result depends on which entries {name} stores (read by "
            f"stored(), or max or min over them), and format {fmt} would store "
            f"{stored - held:,} entries {name} does not hold (zeros that fill its "
            f"structure), changing the answer; "
            f"compile with a format that keeps the pattern (csr, csc, coo, ell, hyb) or "
            f"give {name} already in {fmt} (spc.tensor), whose stored zeros then count")


def held_entries(x) -> int | None:
    """The distinct entries operand ``x`` holds: a sparse operand's stored ones
    (duplicates counted once, explicit zeros counted), a dense one's nonzeros; None
    where that is not known without a device copy."""
    if _is_scipy_sparse(x):
        if x.format in ("csr", "csc", "coo") and not getattr(x, "has_canonical_format", False):
            x = x.tocoo(copy=True)
            x.sum_duplicates()
        return int(x.nnz)
    if isinstance(x, Tensor):
        if x.format.is_dense:
            return int(np.count_nonzero(x.to_numpy()))
        coords, _ = x.to_coo()
        return len(np.unique(np.stack(coords), axis=1).T) if coords and len(coords[0]) else 0
    if type(x).__module__.startswith("torch"):
        if str(x.layout) == "torch.sparse_coo":
            return int(x.coalesce()._nnz())
        if str(x.layout) != "torch.strided":
            return int(x._nnz())
        return int(x.count_nonzero())
    if hasattr(x, "__cuda_array_interface__") or type(x).__module__.startswith("cupy"):
        if hasattr(x, "nnz"):                                  # cupyx.scipy.sparse
            return int(x.nnz)
        return int(x.astype(bool).sum())
    return int(np.count_nonzero(np.asarray(x)))
