"""A kernel bound to one format and schedule, converting its sparse operand to
that format, and remembering the conversion of operands it has seen."""
from __future__ import annotations

import weakref
import zlib

import numpy as np

from ..schedule import Schedule


class BoundKernel:
    """``kernel`` (compiled for ``fmt`` and ``schedule``) called with its sparse
    operand first, like the kernel itself.

    The conversion of an operand is kept while the operand lives and its
    arrays are unchanged (same buffers, same values: a CRC of the values is
    checked per call, a few per cent of a call), so steady-state calls do not
    convert again; any other operand is converted by the kernel on each call.
    Results come back in the family of the operands (scipy in, scipy out), as
    the plain kernel's would.
    """

    def __init__(self, kernel, fmt: str, schedule: Schedule):
        self.kernel = kernel
        self.fmt = fmt
        self.schedule = schedule
        self._held: tuple | None = None       # (weakref to operand, fingerprint, prepared)

    def __call__(self, A, *rest, **kwargs):
        import scipy.sparse as sp   # scipy is optional: imported on use
        prepared = self._prepared(A)
        if prepared is None:
            return self.kernel(A, *rest, **kwargs)
        out = self.kernel(prepared, *rest, **kwargs)
        if sp.issparse(A) and hasattr(out, "to_scipy") and not sp.issparse(out):
            out = out.to_scipy()
            if isinstance(A, sp.sparray):
                out = sp.csr_array(out)
        return out

    def hold(self, A, prepared) -> None:
        """Remember ``prepared`` as ``A`` converted for this kernel (``A`` a scipy matrix)."""
        try:
            ref = weakref.ref(A)
        except TypeError:
            return
        self._held = (ref, fingerprint(A), prepared)

    def prepare(self, A):
        """``A`` converted for this kernel (and its inspectors run), as ``k.prepare``."""
        try:
            return self.kernel.prepare(A)
        except AttributeError:                # sum formats (hyb): plain conversion
            from ..formats.tensor import tensor
            dtype = getattr(A, "dtype", None)
            return tensor(A, self.fmt, dtype=dtype)

    def _prepared(self, A):
        """The kept conversion of ``A``, made now when there is none; None where the
        kernel takes ``A`` as it is (a scipy csr matrix for a CPU csr kernel without
        inspectors: no copy) or ``A`` is not a scipy matrix.  A CUDA kernel always
        keeps its operand on the GPU, rather than copying it there per call."""
        import scipy.sparse as sp   # scipy is optional: imported on use
        if not sp.issparse(A) or (self.fmt == "csr" and A.format == "csr" and on_cpu(self.kernel)
                                  and not inspects(self.schedule)):
            return None
        if self._held is not None:
            ref, fp, prepared = self._held
            if ref() is A and fingerprint(A) == fp:
                return prepared
        prepared = self.prepare(A)
        self.hold(A, prepared)
        return prepared

    def __repr__(self) -> str:
        return f"<spc tuned kernel {self.kernel.name}: {self.fmt}, {self.schedule}>"


def on_cpu(kernel) -> bool:
    """The kernel runs on the CPU (spc kernels name their target; others are taken as CPU)."""
    target = getattr(kernel, "target", None)
    return getattr(target, "name", "cpu") == "cpu"


def inspects(schedule: Schedule) -> bool:
    """The schedule runs an inspector on the sparse operand (reordered or split rows)."""
    return schedule.reorder_rows not in (None, "none") or schedule.split_rows not in (None, False)


def fingerprint(A) -> tuple:
    """What must be unchanged for a kept conversion of scipy matrix ``A`` to stay right:
    its shape, layout, buffers and a CRC of its values and indices."""
    parts = [A.shape, A.format, A.nnz]
    for name in ("data", "indices", "indptr", "row", "col", "offsets"):
        arr = getattr(A, name, None)
        if isinstance(arr, np.ndarray):
            parts.append((arr.__array_interface__["data"][0], arr.dtype.str, arr.size,
                          zlib.crc32(np.ascontiguousarray(arr).view(np.uint8))))
    return tuple(parts)
