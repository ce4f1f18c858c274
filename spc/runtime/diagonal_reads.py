"""Running an expression that reads diagonals (``y[i] = A[i,i] * x[i]``).

``spc.compile`` rewrites each access that repeats an index to read a diagonal
tensor (``frontend/diagonals.py``) and compiles the rewritten expression;
``DiagonalKernel`` is called with the user's operands, builds each diagonal
from its source operand (on the host), and calls that kernel.  The diagonal
of a dense operand is dense; of a sparse one, the source's stored entries whose
coordinates agree over the repeated modes, stored in a compressed format of
the smaller rank (an explicit zero on the diagonal stays stored, so
``stored()`` reads it as the source's format would).  Building it costs a pass
over the operand per call, on the host: device operands are copied there.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..formats.convert import coords_into
from ..formats.format import Format, resolve_format
from ..formats.tensor import Tensor, tensor
from ..frontend.diagonals import DiagonalRead
from .compiled import KernelCall, bind_operands, call_option
from .operands import on_device


def diagonal_format(source: Format, rank: int) -> Format:
    """The format of a diagonal of rank ``rank`` read from an operand in
    ``source``: dense for a dense source, else a dense outer level over
    compressed ones (a sparse vector for rank 1)."""
    if source.is_dense:
        return resolve_format("dense", rank)
    return resolve_format("s" if rank == 1 else "d" + "s" * (rank - 1), rank)


def _host(x):
    """A device operand's host copy (others as they are)."""
    if not on_device(x):
        return x
    if isinstance(x, Tensor):
        return x.on_host()
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu()
    return x.get()                       # a CuPy array or cupyx matrix


def _sizes(shape, read: DiagonalRead, name: str) -> tuple[int, ...]:
    """The diagonal's shape; a ShapeError where the operand's rank is not the
    access's, or where modes read with one index differ."""
    if len(shape) != len(read.groups):
        raise ShapeError(f"operand {name}: has {len(shape)} dimensions, the expression "
                         f"reads {len(read.groups)}")
    sizes = [shape[m] for m in read.keep]
    for m, g in enumerate(read.groups):
        if shape[m] != sizes[g]:
            raise ShapeError(f"operand {name}: modes {read.keep[g]} and {m} are read with one "
                             f"index but have sizes {sizes[g]} and {shape[m]}")
    return tuple(sizes)


def diagonal_of(x, read: DiagonalRead, source: Format, name: str):
    """The diagonal ``read`` names, of operand ``x`` (stored in ``source`` by the
    kernel the expression as written would have been): a numpy array for a
    dense source, else a Tensor in ``diagonal_format``."""
    x = _host(x)
    rank = len(read.keep)
    if source.is_dense:
        arr = x if isinstance(x, np.ndarray) else tensor(x, source).to_numpy()
        sizes = _sizes(arr.shape, read, name)
        grids = [np.arange(n).reshape([n if a == g else 1 for a in range(rank)])
                 for g, n in enumerate(sizes)]
        return np.ascontiguousarray(arr[tuple(grids[g] for g in read.groups)])
    t = tensor(x, source)
    sizes = _sizes(t.shape, read, name)
    coords, vals = t.to_coo()
    on_diagonal = np.ones(len(vals), dtype=bool)
    for m, g in enumerate(read.groups):
        on_diagonal &= coords[m] == coords[read.keep[g]]
    kept = [np.ascontiguousarray(coords[m][on_diagonal]) for m in read.keep]
    return coords_into(kept, vals[on_diagonal], sizes, diagonal_format(source, rank),
                       vals.dtype)


class DiagonalKernel(KernelCall):
    """Called like the kernel of the expression as written (its operands, in
    ``input_names`` order or by name); runs ``inner``, the kernel of the
    rewritten expression, on the operands with each diagonal built.  Every
    other attribute (``ir``, ``source``, ``schedule``...) is ``inner``'s."""

    def __init__(self, inner, reads: tuple[DiagonalRead, ...], input_names: tuple[str, ...],
                 formats: dict[str, Format]):
        self.inner = inner
        self.reads = reads
        self.input_names = input_names
        self.formats = formats           # each source's format, as written
        self.name = inner.name
        kept = {r.name for r in reads}
        self._passed = tuple(n for n in inner.input_names if n not in kept)

    def __getattr__(self, attr):
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(attr)
        return getattr(inner, attr)

    def describe_diagonals(self) -> list[str]:
        return [r.describe() for r in self.reads]

    def _call(self, args, kwargs):
        options = dict(kwargs)
        validate = call_option(self.input_names, options)
        out = options.pop("out", None) if "out" not in self.input_names else None
        bound = bind_operands(self.name, self.input_names, args, options)
        given = {n: bound[n] for n in self._passed}
        for r in self.reads:
            given[r.name] = diagonal_of(bound[r.source], r, self.formats[r.source], r.source)
        call = [given[n] for n in self.inner.input_names]
        extra = {} if validate else {"validate": False}
        if out is not None:
            extra["out"] = out
        return self.inner(*call, **extra)

    def __repr__(self) -> str:
        return f"DiagonalKernel({self.inner!r})"


__all__ = ["DiagonalKernel", "diagonal_format", "diagonal_of"]
