"""Sum formats: a tensor stored as the sum of parts in different formats.

``hyb`` (Bell & Garland, SC 2009) stores the first ``w`` entries of every row
in ELL and the rest of the long rows in CSR: regular rows get ELL's
pointer-free, padded slots, and a few long rows do not blow up the padding.
A :class:`SumFormat` only says how to split a tensor's entries among its
parts; kernels over it are kernels over the parts (see
:mod:`spc.runtime.composite`), so the lowerer never sees it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import FormatError, ShapeError
from .format import Format, resolve_format
from .levels_padded import ranks_in_runs


@dataclass(frozen=True)
class SumFormat:
    """Parts in their own formats; ``split(coords, vals, shape)`` returns one
    boolean mask over the entries per part (every entry in exactly one part)."""
    parts: tuple[Format, ...]
    split: Callable
    name: str
    rank: int = 2

    is_dense = False
    is_blocked = False

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other) -> bool:
        return isinstance(other, SumFormat) and (self.name, self.parts) == (other.name, other.parts)

    def __hash__(self) -> int:
        return hash((self.name, self.parts))


def hyb_width(row_lengths: np.ndarray) -> int:
    """The ELL width of hyb: the largest w such that at least a third of the
    rows (and at least one) have w or more entries (Bell & Garland's rule)."""
    if len(row_lengths) == 0 or row_lengths.max() == 0:
        return 0
    counts = np.bincount(row_lengths)
    at_least = np.cumsum(counts[::-1])[::-1]          # rows with >= w entries, w = 0..max
    need = max(1, len(row_lengths) // 3)
    return int(np.nonzero(at_least >= need)[0].max())


def _split_rows(width: int | None):
    def split(coords, vals, shape):
        rows = coords[0]
        order = np.lexsort((coords[1], rows))
        lengths = np.bincount(rows, minlength=shape[0]) if len(rows) else np.zeros(shape[0], int)
        w = hyb_width(lengths) if width is None else width
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = ranks_in_runs(rows[order])
        in_ell = rank < w
        return [in_ell, ~in_ell], w
    return split


def hyb(width: int | None = None) -> SumFormat:
    """ELL of ``width`` slots per row (None: chosen from the row lengths) plus a
    CSR residual holding the entries past the width."""
    if width is not None and int(width) < 0:
        raise FormatError(f"hyb width must be >= 0, not {width}")
    w = None if width is None else int(width)
    name = "hyb" if w is None else f"hyb({w})"
    return SumFormat((resolve_format("ell", 2), resolve_format("csr", 2)), _split_rows(w), name)


def resolve_sum_format(spec) -> SumFormat | None:
    """The SumFormat that ``spec`` names ("hyb", "hyb(8)", a SumFormat), else None."""
    import re
    if isinstance(spec, SumFormat):
        return spec
    if not isinstance(spec, str):
        return None
    m = re.fullmatch(r"\s*hyb\s*(?:\(\s*(\d*)\s*\))?\s*", spec.lower())
    if m is None:
        return None
    return hyb(int(m.group(1)) if m.group(1) else None)


class SumTensor:
    """A tensor stored as the sum of ``parts`` (spc Tensors), in ``format``."""

    def __init__(self, shape, fmt: SumFormat, parts, width: int | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.format = fmt
        self.parts = list(parts)
        self.width = width
        for p in self.parts:
            if tuple(p.shape) != self.shape:
                raise ShapeError(f"{fmt}: part of shape {p.shape} in a tensor of shape {self.shape}")

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def dtype(self):
        """The value type (every part's)."""
        return self.parts[0].dtype

    @property
    def nnz(self) -> int:
        """The sum of every part's ``nnz``."""
        return sum(p.nnz for p in self.parts)

    @property
    def nbytes(self) -> int:
        """Bytes of storage of every part."""
        return sum(p.nbytes for p in self.parts)

    def validate(self, what: str = "tensor") -> None:
        """Check every part's storage; an InputError names ``what`` and the part."""
        for k, p in enumerate(self.parts):
            p.validate(f"{what} part {k} ({p.format})")

    def to_coo(self):
        """``(coords, vals)``: every part's stored entries, concatenated (not summed)."""
        cs, vs = zip(*(p.to_coo() for p in self.parts))
        return [np.concatenate([c[d] for c in cs]) for d in range(self.ndim)], np.concatenate(vs)

    def to_numpy(self) -> np.ndarray:
        """The dense array: the sum of the parts."""
        out = np.zeros(self.shape, dtype=self.dtype)
        for p in self.parts:
            out += p.to_numpy()
        return out

    def to_scipy(self, layout: str = "csr"):
        """The sum of the parts as a scipy.sparse matrix in ``layout`` (duplicates summed)."""
        import scipy.sparse as sp
        coords, vals = self.to_coo()
        m = sp.coo_matrix((vals, (coords[0], coords[1])), shape=self.shape)
        return m.asformat(layout)

    def __repr__(self) -> str:
        return (f"spc.SumTensor(shape={self.shape}, format={self.format}, "
                f"parts={[str(p.format) for p in self.parts]}, nnz={self.nnz})")


def sum_tensor(x, fmt: SumFormat, *, dtype=None) -> SumTensor:
    """``x`` (anything ``spc.tensor`` takes) split into the parts of ``fmt``."""
    from .tensor import Tensor, from_coords, tensor, with_value_dtype
    if isinstance(x, SumTensor):
        if x.format == fmt:
            return x if dtype is None else SumTensor(
                x.shape, fmt, [with_value_dtype(p, dtype) for p in x.parts], x.width)
        coords, vals, shape = *x.to_coo(), x.shape
    else:
        t = x if isinstance(x, Tensor) else tensor(x, "coo", dtype=dtype)
        if len(t.shape) != fmt.rank:
            raise ShapeError(f"format {fmt} stores rank-{fmt.rank} tensors, not rank {len(t.shape)}")
        coords, vals = t.to_coo()
        shape = t.shape
    if dtype is not None:
        vals = vals.astype(dtype)
    masks, width = fmt.split(coords, vals, shape)
    parts = []
    for part_fmt, mask in zip(fmt.parts, masks):
        fmt_k = part_fmt
        if part_fmt.name == "ell" and width is not None:
            fmt_k = resolve_format(f"ell({width})", 2)
        parts.append(from_coords([c[mask] for c in coords], vals[mask], shape, fmt_k))
    return SumTensor(shape, fmt, parts, width)
