"""Conversions between spc Tensors and scipy.sparse / torch, in both directions.

In (``spc.tensor(x, fmt)``):

* scipy ``bsr_matrix``/``bsr_array`` into ``bsr(r,c)`` with the same block size
  reuses scipy's arrays (canonicalized when scipy's are unsorted or hold
  duplicate blocks); into any other format it goes through coordinates, every
  stored block entry included (as scipy's own ``bsr.tocoo()`` does).
* scipy ``dia_matrix``/``dia_array`` into ``dia`` keeps scipy's diagonals
  (those that touch the matrix, sorted); into any other format its nonzeros go
  through coordinates (scipy's ``dia.tocoo()`` drops zeros too).
* torch tensors (CPU; a CUDA tensor is copied to the host): strided (dense),
  ``sparse_coo`` (any rank), ``sparse_csr``/``sparse_csc`` (arrays reused when
  the format is csr/csc), ``sparse_bsr`` (arrays reused into bsr(r,c) of the same
  block size), ``sparse_bsc``, and 2:4 ``SparseSemiStructuredTensor`` (through
  ``to_dense()``).  Defaults: dense, coo, csr, csc, bsr(r,c), bsr(r,c), nm(2,4).
* Into formats with a fixed number of slots per row (``ell``, ``dia``, ``nm``)
  explicit zeros of the input are not stored as entries: they would take slots,
  and for ``nm`` count against the N:M limit.  A matrix that is not N:M raises
  InputError naming :func:`spc.prune.nm`; spc never prunes implicitly.

Out (``Tensor.to_scipy(layout)``, ``Tensor.to_torch(layout)``):

* csr / csc / coo from every format: the values stored inside the tensor's
  shape, explicit zeros included (a bsr block's zeros, a stored diagonal's zeros
  and an N:M group's filler zeros are stored values; scipy's ``bsr.tocsr()``
  keeps them likewise), in canonical (sorted, unique) order.  Block padding past
  the shape is never part of a csr/csc/coo result.
* bsr: the tensor's own block size for a bsr tensor (``blocksize=`` for any
  other, or to re-block).  scipy and torch BSR need a shape that is a multiple
  of the block size, so when the tensor's shape is not, an explicit ``"bsr"``
  request raises ShapeError unless ``pad=True``, which returns the BSR matrix of
  the padded shape (``Tensor.padded_shape``; the padding holds zeros).  The
  *default* layout of a padded bsr tensor is therefore csr (exact shape), and
  that of an unpadded one bsr.
* dia (scipy only): a dia tensor's diagonals as they are stored.

torch is optional: it is imported only by these functions, which raise
UnsupportedError when it is missing.  Results share memory with the tensor's
arrays where the layouts match (as ``to_scipy`` always has).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import DTypeError, FormatError, InputError, ShapeError, UnsupportedError
from . import inspect_numba as ins
from .format import Format, bsr, dia, resolve_format
from .levels import raise_compressed_error
from .levels_padded import Diagonal, FixedWidth, NMGroup
from .tensor import Tensor, from_coords, pick_index_dtype, value_dtype, with_value_dtype

SCIPY_LAYOUTS = ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")
TORCH_LAYOUTS = ("dense", "coo", "csr", "csc", "bsr")


# ---------------------------------------------------------------------------
# optional dependencies
# ---------------------------------------------------------------------------

def _torch(what: str):
    try:
        import torch
    except ImportError:
        raise UnsupportedError(f"{what} needs PyTorch, which is not installed "
                               f"(pip install torch)") from None
    return torch


def _scipy(what: str):
    try:
        import scipy.sparse as sp
    except ImportError:
        raise UnsupportedError(f"{what} needs scipy, which is not installed "
                               f"(pip install scipy)") from None
    return sp


def is_torch(x) -> bool:
    """True for a torch tensor (without importing torch)."""
    return type(x).__module__.partition(".")[0] == "torch" and hasattr(x, "layout")


# ---------------------------------------------------------------------------
# format queries
# ---------------------------------------------------------------------------

def bsr_block(fmt: Format) -> tuple[int, int] | None:
    """(r, c) when ``fmt`` is bsr(r, c), else None."""
    if len(fmt.block) == 2 and fmt == bsr(*fmt.block):
        return fmt.block
    return None


def stores_slots(fmt: Format) -> bool:
    """True when a level of ``fmt`` stores a fixed number of slots per parent
    (ell, dia, nm): such formats store no explicit zeros of their input."""
    return any(isinstance(lv, (FixedWidth, Diagonal, NMGroup)) for lv in fmt.levels)


def _csr() -> Format:
    return resolve_format("csr", 2)


def _csc() -> Format:
    return resolve_format("csc", 2)


def _values(v, dtype) -> np.ndarray:
    """Values in a value type (tensor.VALUE_TYPES: integers and booleans become
    float64, or dtype)."""
    v = np.asarray(v)
    if v.dtype.kind in "iub":
        return v.astype(np.float64 if dtype is None else value_dtype(dtype))
    return v.astype(value_dtype(v.dtype if dtype is None else dtype), copy=False)


def _index_dtype(*arrays) -> np.dtype:
    """The one index dtype for these arrays: int64 if any is int64 or unsigned
    of 64 bits, else int32."""
    for a in arrays:
        if a.dtype.kind not in "iu":
            raise DTypeError(f"index arrays must be integers, not {a.dtype}")
    return np.dtype(np.int64) if any(a.dtype.itemsize >= 8 or (a.dtype.kind == "u" and
                                                                  a.dtype.itemsize >= 4)
                                     for a in arrays) else np.dtype(np.int32)


def coords_into(coords, vals, shape, fmt, dtype=None) -> Tensor:
    """``from_coords`` that stores no explicit zeros in slot formats (ell, dia, nm)."""
    shape = tuple(int(s) for s in shape)
    fmt = resolve_format(fmt, len(shape))
    vals = _values(vals, dtype)
    coords = [np.asarray(c) for c in coords]
    if stores_slots(fmt) and len(vals) and vals.ndim == 1 and all(
            c.ndim == 1 and len(c) == len(vals) for c in coords):
        nz = vals != 0
        if not nz.all():
            coords, vals = [c[nz] for c in coords], vals[nz]
    return from_coords(coords, vals, shape, fmt)


# ---------------------------------------------------------------------------
# in: Tensor, scipy, torch
# ---------------------------------------------------------------------------

def from_tensor(x: Tensor, fmt, dtype) -> Tensor:
    """``x`` in format ``fmt`` (``x`` itself where a kernel of ``fmt`` reads it as stored:
    ``Format.reads``)."""
    if fmt is None or resolve_format(fmt, x.ndim).reads(x.format):
        return with_value_dtype(x, dtype)
    fmt = resolve_format(fmt, x.ndim)
    if x.format.is_dense:          # store only the nonzeros, as for numpy input
        from .tensor import tensor
        return tensor(x.to_numpy(), fmt, dtype=dtype)
    coords, vals = x.to_coo()
    return with_value_dtype(coords_into(coords, vals, x.shape, fmt), dtype)


def from_scipy(m, fmt, dtype, validate: bool) -> Tensor:
    """scipy.sparse -> Tensor (default format csr)."""
    from .tensor import _from_scipy, check_scipy
    if len(m.shape) != 2:
        raise ShapeError(f"a scipy sparse input must be 2-d, this one has shape {m.shape}")
    fmt = resolve_format(fmt or "csr", 2)
    if m.format == "bsr":
        return from_bsr_arrays(m.indptr, m.indices, m.data, m.shape, fmt, dtype, validate,
                               "scipy bsr matrix")
    if m.format == "dia":
        return from_dia_arrays(m.offsets, m.data, m.shape, fmt, dtype, "scipy dia matrix")
    if stores_slots(fmt):
        if m.format not in ("csr", "csc", "coo"):
            m = m.tocoo()
        check_scipy(m)
        if len(m.data) and not np.all(m.data != 0):
            m = m.copy()
            m.eliminate_zeros()
    return _from_scipy(m, fmt, dtype, validate)


def _check_compressed(pos, crd, parents: int, dim: int, what: str) -> bool:
    """Raise InputError unless (pos, crd) is a well-formed compressed level
    (unsorted or duplicate coordinates allowed); return True when it is also
    sorted and unique."""
    if pos.ndim != 1 or crd.ndim != 1:
        raise InputError(f"{what}: index arrays must be 1-d")
    if len(pos) != parents + 1:
        raise InputError(f"{what}: pointer array has length {len(pos)}, expected {parents + 1}")
    code, at = ins.compressed_errors(pos, crd, parents, dim, False, False)
    raise_compressed_error(code, at, pos, crd, parents, dim, what)
    return ins.compressed_errors(pos, crd, parents, dim, True, True)[0] == ins.OK


def _native_index(*arrays) -> list[np.ndarray]:
    dt = _index_dtype(*arrays)
    return [np.ascontiguousarray(a, dtype=dt) for a in arrays]


def from_compressed(pos, crd, vals, shape, major: str, fmt, dtype, validate: bool,
                    what: str) -> Tensor:
    """A CSR (``major="row"``) or CSC (``"col"``) triplet of arrays -> Tensor,
    sharing the arrays when ``fmt`` is that layout and they are canonical."""
    pos, crd, vals = np.asarray(pos), np.asarray(crd), np.asarray(vals)
    rows, cols = (int(s) for s in shape)
    parents, dim = (rows, cols) if major == "row" else (cols, rows)
    pos, crd = _native_index(pos, crd)
    if vals.ndim != 1 or len(vals) != len(crd):
        raise InputError(f"{what}: {vals.shape} values for {len(crd)} indices")
    canonical = _check_compressed(pos, crd, parents, dim, what)
    native = _csr() if major == "row" else _csc()
    fmt = resolve_format(fmt, 2)
    vals = _values(vals, dtype)
    if fmt == native and canonical:
        t = Tensor((rows, cols), fmt, [{}, {"pos": pos, "crd": crd}], vals, validate=False)
        if validate:
            t.validate(what)
        return t
    outer = np.repeat(np.arange(parents, dtype=np.int64), np.diff(pos.astype(np.int64)))
    coords = [outer, crd] if major == "row" else [crd, outer]
    return coords_into(coords, vals, (rows, cols), fmt)


def _block_coords(brow, bcol, r: int, c: int):
    """Element coordinates of every entry of the blocks at (brow, bcol)."""
    ii = (brow.astype(np.int64)[:, None, None] * r + np.arange(r)[None, :, None])
    jj = (bcol.astype(np.int64)[:, None, None] * c + np.arange(c)[None, None, :])
    ii, jj = np.broadcast_arrays(ii, jj)
    return ii.reshape(-1), jj.reshape(-1)


def from_bsr_arrays(pos, crd, data, shape, fmt, dtype, validate: bool, what: str) -> Tensor:
    """BSR arrays (block-row pointers, block-column indices, (nblocks, r, c)
    values) -> Tensor; shared into bsr(r, c) when the block size matches."""
    pos, crd, data = np.asarray(pos), np.asarray(crd), np.asarray(data)
    rows, cols = (int(s) for s in shape)
    if data.ndim != 3:
        raise InputError(f"{what}: block values must have shape (nblocks, r, c), got {data.shape}")
    r, c = data.shape[1], data.shape[2]
    if r < 1 or c < 1 or rows % r or cols % c:
        raise ShapeError(f"{what}: shape ({rows}, {cols}) is not a multiple of the block "
                         f"size ({r}, {c})")
    pos, crd = _native_index(pos, crd)
    if len(data) != len(crd):
        raise InputError(f"{what}: {len(data)} blocks of values for {len(crd)} block indices")
    canonical = _check_compressed(pos, crd, rows // r, cols // c, what)
    fmt = resolve_format(fmt, 2)
    vals = _values(data.reshape(-1), dtype)
    brow = np.repeat(np.arange(rows // r, dtype=np.int64), np.diff(pos.astype(np.int64)))
    if bsr_block(fmt) == (r, c):
        if not canonical:
            pos, crd, vals = _canonical_blocks(brow, crd, vals.reshape(-1, r, c), rows // r)
        arrays = [{}, {"pos": pos, "crd": crd}] + [{} for _ in fmt.levels[2:]]
        t = Tensor((rows, cols), fmt, arrays, np.ascontiguousarray(vals).reshape(-1),
                   validate=False)
        if validate:
            t.validate(what)
        return t
    ii, jj = _block_coords(brow, crd, r, c)
    return coords_into([ii, jj], vals, (rows, cols), fmt)


def _canonical_blocks(brow, bcol, blocks, nbrows: int):
    """Sort blocks by (block row, block column) and sum duplicate blocks."""
    order = np.lexsort((bcol, brow))
    brow, bcol, blocks = brow[order], bcol[order], blocks[order]
    if len(brow):
        new = np.ones(len(brow), dtype=bool)
        new[1:] = (brow[1:] != brow[:-1]) | (bcol[1:] != bcol[:-1])
        if not new.all():
            starts = np.flatnonzero(new)
            blocks = np.add.reduceat(blocks, starts, axis=0)
            brow, bcol = brow[starts], bcol[starts]
    pos = np.zeros(nbrows + 1, dtype=np.int64)
    np.cumsum(np.bincount(brow, minlength=nbrows), out=pos[1:])
    return pos.astype(bcol.dtype), bcol, blocks


def from_dia_arrays(offsets, data, shape, fmt, dtype, what: str) -> Tensor:
    """scipy DIA arrays (``data[k, j] = A[j - offsets[k], j]``) -> Tensor; into
    ``dia`` the diagonals are kept (zeros included), into other formats only the
    nonzeros go through coordinates."""
    offsets = np.asarray(offsets)
    data = np.asarray(data)
    rows, cols = (int(s) for s in shape)
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise InputError(f"{what}: offsets must be a 1-d integer array")
    if data.ndim != 2 or data.shape[0] != len(offsets):
        raise InputError(f"{what}: data has shape {data.shape} for {len(offsets)} offsets")
    off = offsets.astype(np.int64)
    width = min(cols, data.shape[1])
    # the part of each stored diagonal that lies in the matrix (and in data)
    lo = np.maximum(off, 0)
    hi = np.minimum(width, rows + off)
    touch = hi > lo
    fmt = resolve_format(fmt, 2)
    vals = _values(data, dtype)
    if fmt == dia() and len(np.unique(off)) == len(off):
        keep = np.flatnonzero(touch)
        keep = keep[np.argsort(off[keep], kind="stable")]
        k_off = off[keep]
        K = len(keep)
        i = np.arange(rows, dtype=np.int64)[:, None]
        j = i + k_off[None, :]
        inside = (j >= 0) & (j < width)
        out = np.zeros((rows, K), dtype=vals.dtype)
        kk = np.broadcast_to(np.arange(K)[None, :], (rows, K))
        out[inside] = vals[keep[kk[inside]], j[inside]]
        idx = pick_index_dtype(rows, cols, int(np.abs(k_off).max(initial=0)))
        return Tensor((rows, cols), fmt, [{}, {"offsets": k_off.astype(idx)}], out.reshape(-1))
    ks = [np.full(max(int(h - l), 0), k, dtype=np.int64) for k, (l, h) in enumerate(zip(lo, hi))]
    jj = [np.arange(l, h, dtype=np.int64) for l, h in zip(lo, hi)]
    k = np.concatenate(ks) if ks else np.zeros(0, dtype=np.int64)
    j = np.concatenate(jj) if jj else np.zeros(0, dtype=np.int64)
    v = vals[k, j] if len(k) else np.zeros(0, dtype=vals.dtype)
    nz = v != 0
    return coords_into([(j - off[k])[nz], j[nz]], v[nz], (rows, cols), fmt)


_TORCH_TO_NUMPY = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
                   "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
                   "uint8": np.uint8, "bool": np.bool_}
_TORCH_VALUES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                 "bool")


def _torch_numpy(t, dtype, what: str) -> np.ndarray:
    """A CPU torch tensor's data as numpy, without a copy (bfloat16 as ml_dtypes'
    bfloat16; values cast to ``dtype`` where numpy cannot hold torch's dtype)."""
    name = str(t.dtype).rpartition(".")[2]
    if name == "bfloat16":
        torch = _torch("spc.tensor")
        return t.view(torch.int16).numpy().view(value_dtype("bfloat16"))
    if name not in _TORCH_VALUES:
        if dtype is None:
            raise DTypeError(f"{what}: values must be float16, bfloat16, float32 or float64, "
                             f"not {t.dtype}; pass dtype=np.float32 (or another) to convert")
        t = t.double()
    return t.numpy()


def torch_from_numpy(torch, a: np.ndarray):
    """``torch.from_numpy(a)``, ml_dtypes' bfloat16 included (as torch.bfloat16)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def torch_default_format(x) -> str:
    torch = _torch("spc.tensor")
    layout = x.layout
    semi = getattr(torch.sparse, "SparseSemiStructuredTensor", None)
    if semi is not None and isinstance(x, semi):
        return "nm(2,4)"
    if layout == torch.strided:
        return "dense"
    if layout == torch.sparse_coo:
        return "coo"
    if layout == torch.sparse_csr:
        return "csr"
    if layout == torch.sparse_csc:
        return "csc"
    if layout in (torch.sparse_bsr, torch.sparse_bsc):
        r, c = x.values().shape[-2:]
        return f"bsr({r},{c})"
    raise UnsupportedError(f"torch tensors of layout {layout} are not supported")


def from_torch(x, fmt, dtype, validate: bool) -> Tensor:
    """torch tensor -> Tensor (see the module's docstring)."""
    torch = _torch("spc.tensor")
    from .tensor import tensor
    if fmt is None:
        fmt = torch_default_format(x)
    if isinstance(dtype, torch.dtype):
        dtype = _TORCH_TO_NUMPY.get(str(dtype).rpartition(".")[2], dtype)
    semi = getattr(torch.sparse, "SparseSemiStructuredTensor", None)
    if semi is not None and isinstance(x, semi):
        x = x.to_dense()
    x = x.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    layout = x.layout
    what = f"torch {str(layout).rpartition('.')[2]} tensor"
    if layout == torch.strided:
        return tensor(_torch_numpy(x, dtype, what), fmt, dtype=dtype)
    shape = tuple(int(s) for s in x.shape)
    if layout == torch.sparse_coo:
        if x.dense_dim():
            raise UnsupportedError(f"{what}: hybrid COO tensors (dense dimensions in the "
                                   f"values) are not supported; pass x.to_dense()")
        x = x.coalesce()
        idx = x.indices().numpy()
        vals = _torch_numpy(x.values(), dtype, what)
        return with_value_dtype(coords_into(list(idx), vals, shape, fmt, dtype), dtype)
    if layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
        blocked = layout in (torch.sparse_bsr, torch.sparse_bsc)
        if x.dim() != 2 or x.values().dim() != (3 if blocked else 1):
            raise UnsupportedError(f"{what}: batched or hybrid tensors (shape {shape}, values "
                                   f"{tuple(x.values().shape)}) are not supported")
        with _quiet_beta():
            if layout in (torch.sparse_csr, torch.sparse_bsr):
                pos, crd = x.crow_indices().numpy(), x.col_indices().numpy()
            else:
                pos, crd = x.ccol_indices().numpy(), x.row_indices().numpy()
        vals = _torch_numpy(x.values(), dtype, what)
        if layout == torch.sparse_csr:
            return from_compressed(pos, crd, vals, shape, "row", fmt, dtype, validate, what)
        if layout == torch.sparse_csc:
            return from_compressed(pos, crd, vals, shape, "col", fmt, dtype, validate, what)
        if layout == torch.sparse_bsr:
            return from_bsr_arrays(pos, crd, vals, shape, fmt, dtype, validate, what)
        # bsc: blocks ordered by block column; through coordinates
        r, c = vals.shape[1], vals.shape[2]
        if r < 1 or c < 1 or shape[0] % r or shape[1] % c:
            raise ShapeError(f"{what}: shape {shape} is not a multiple of the block size "
                             f"({r}, {c})")
        pos, crd = _native_index(pos, crd)
        if len(vals) != len(crd):
            raise InputError(f"{what}: {len(vals)} blocks of values for {len(crd)} block indices")
        _check_compressed(pos, crd, shape[1] // c, shape[0] // r, what)
        bcol = np.repeat(np.arange(shape[1] // c, dtype=np.int64), np.diff(pos.astype(np.int64)))
        ii, jj = _block_coords(crd, bcol, r, c)
        return coords_into([ii, jj], vals.reshape(-1), shape, fmt, dtype)
    raise UnsupportedError(f"torch tensors of layout {layout} are not supported")


# ---------------------------------------------------------------------------
# out: arrays
# ---------------------------------------------------------------------------

def compressed_arrays(t: Tensor, major: str = "row"):
    """(pos, crd, vals) of ``t`` as CSR (``major="row"``) or CSC (``"col"``):
    the stored values inside the shape, sorted and unique.  Shares ``t``'s
    arrays when ``t`` is csr (csc) already."""
    rows, cols = t.shape
    native = _csr() if major == "row" else _csc()
    if t.format == native:
        return t.arrays[1]["pos"], t.arrays[1]["crd"], t.vals
    coords, vals = t.to_coo()
    outer, inner = (coords[0], coords[1]) if major == "row" else (coords[1], coords[0])
    parents, dim = (rows, cols) if major == "row" else (cols, rows)
    order = np.lexsort((inner, outer))
    outer, inner, vals = outer[order], inner[order], vals[order]
    idx = pick_index_dtype(len(vals), dim, parents)
    pos = np.zeros(parents + 1, dtype=np.int64)
    if len(outer):
        np.cumsum(np.bincount(outer, minlength=parents), out=pos[1:])
    return pos.astype(idx), inner.astype(idx), np.ascontiguousarray(vals)


def _check_blocksize(blocksize, what: str) -> tuple[int, int]:
    try:
        r, c = (int(b) for b in blocksize)
    except (TypeError, ValueError):
        raise InputError(f"{what}: blocksize must be a pair (r, c) of integers, "
                         f"got {blocksize!r}") from None
    if r < 1 or c < 1:
        raise InputError(f"{what}: block sizes must be >= 1, got ({r}, {c})")
    return r, c


def bsr_arrays(t: Tensor, blocksize, pad: bool, what: str):
    """(pos, crd, blocks of shape (nblocks, r, c), shape) of ``t`` in r x c
    blocks; the shape is the padded shape, which must equal ``t.shape`` unless
    ``pad``."""
    r, c = _check_blocksize(blocksize, what)
    b = t if bsr_block(t.format) == (r, c) else from_tensor(t, bsr(r, c), None)
    if b.padding != (0, 0) and not pad:
        raise ShapeError(
            f"{what}: the shape {t.shape} is not a multiple of the block size ({r}, {c}), "
            f"and BSR needs one; pass pad=True for the BSR matrix of the padded shape "
            f"{b.padded_shape} (padding rows/columns {b.padding} hold zeros), or ask for "
            f"'csr' to keep the exact shape")
    lv = b.arrays[1]
    return lv["pos"], lv["crd"], b.vals.reshape(len(lv["crd"]), r, c), b.padded_shape


# ---------------------------------------------------------------------------
# out: scipy
# ---------------------------------------------------------------------------

def default_scipy_layout(t: Tensor) -> str:
    fmt = t.format
    if fmt == _csc() or fmt == resolve_format("dcsc", 2):
        return "csc"
    if fmt.name == "coo" and fmt == resolve_format("coo", 2):
        return "coo"
    if bsr_block(fmt) is not None:
        return "bsr" if t.padding == (0, 0) else "csr"
    if fmt == dia():
        return "dia"
    return "csr"


def to_scipy(t: Tensor, layout: str | None = None, *, blocksize=None, pad: bool = False):
    """``t`` as a scipy.sparse matrix (see the module's docstring for the rules)."""
    sp = _scipy("to_scipy")
    if t.ndim != 2:
        raise ShapeError(f"to_scipy needs a matrix, this tensor has rank {t.ndim}")
    name = default_scipy_layout(t) if layout is None else str(layout).strip().lower()
    if name in ("csr", "csc"):
        pos, crd, vals = compressed_arrays(t, "row" if name == "csr" else "col")
        cls = sp.csr_matrix if name == "csr" else sp.csc_matrix
        return cls((vals, crd, pos), shape=t.shape)
    if name == "coo":
        pos, crd, vals = compressed_arrays(t, "row")
        rows = np.repeat(np.arange(t.shape[0], dtype=crd.dtype), np.diff(pos))
        out = sp.coo_matrix((vals, (rows, crd)), shape=t.shape)
        out.has_canonical_format = True          # row-major, unique: as compressed_arrays made it
        return out
    if name == "bsr":
        if blocksize is None and bsr_block(t.format) is None:
            if pad:
                raise InputError("to_scipy('bsr', pad=True) of a non-bsr tensor needs "
                                 "blocksize=(r, c)")
            return to_scipy(t, "csr").tobsr()          # scipy's own choice of block size
        pos, crd, blocks, shape = bsr_arrays(t, blocksize or bsr_block(t.format), pad,
                                             "to_scipy('bsr')")
        return sp.bsr_matrix((blocks, crd, pos), shape=shape, blocksize=blocks.shape[1:])
    if name == "dia":
        if t.format == dia():
            return _dia_to_scipy(t, sp)
        return to_scipy(t, "coo").todia()
    if name in ("lil", "dok"):
        return to_scipy(t, "csr").asformat(name)
    raise FormatError(f"to_scipy: unknown layout {layout!r} (known: {', '.join(SCIPY_LAYOUTS)})")


def _dia_to_scipy(t: Tensor, sp):
    rows, cols = t.shape
    off = t.arrays[1]["offsets"].astype(np.int64)
    K = len(off)
    data = np.zeros((K, cols), dtype=t.dtype)
    if K and rows:
        i = np.arange(rows, dtype=np.int64)[:, None]
        j = i + off[None, :]
        inside = (j >= 0) & (j < cols)
        kk = np.broadcast_to(np.arange(K)[None, :], (rows, K))
        data[kk[inside], j[inside]] = t.vals.reshape(rows, K)[inside]
    return sp.dia_matrix((data, off.astype(t.arrays[1]["offsets"].dtype)), shape=t.shape)


# ---------------------------------------------------------------------------
# out: torch
# ---------------------------------------------------------------------------

def default_torch_layout(t: Tensor) -> str:
    fmt = t.format
    if fmt.is_dense:
        return "dense"
    if fmt.name == "coo" and fmt == resolve_format("coo", t.ndim):
        return "coo"
    if t.ndim != 2:
        return "coo"
    if fmt == _csc():
        return "csc"
    if bsr_block(fmt) is not None and t.padding == (0, 0):
        return "bsr"
    return "csr"


def _torch_layout_name(layout, torch) -> str:
    if isinstance(layout, torch.layout):
        names = {torch.strided: "dense", torch.sparse_coo: "coo", torch.sparse_csr: "csr",
                 torch.sparse_csc: "csc", torch.sparse_bsr: "bsr"}
        if layout not in names:
            raise FormatError(f"to_torch: layout {layout} is not supported (known: "
                              f"{', '.join(TORCH_LAYOUTS)})")
        return names[layout]
    name = str(layout).strip().lower()
    name = {"strided": "dense", "sparse_coo": "coo", "sparse_csr": "csr",
            "sparse_csc": "csc", "sparse_bsr": "bsr"}.get(name, name)
    if name not in TORCH_LAYOUTS:
        raise FormatError(f"to_torch: unknown layout {layout!r} (known: "
                          f"{', '.join(TORCH_LAYOUTS)}, or a torch.layout)")
    return name


class _quiet_beta(warnings.catch_warnings):
    """Silence torch's notices that sparse layouts are in beta and that invariant
    checks are off: spc builds these tensors from arrays it has validated."""

    def __enter__(self):
        out = super().__enter__()
        warnings.filterwarnings("ignore", message=".*support is in beta state.*")
        warnings.filterwarnings("ignore", message=".*invariant checks are implicitly disabled.*")
        return out


def _from_numpy(torch, a: np.ndarray):
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:
        a = a.copy()
    return torch_from_numpy(torch, a)


def to_torch(t: Tensor, layout=None, *, blocksize=None, pad: bool = False):
    """``t`` as a CPU torch tensor: strided (dense), sparse_coo, sparse_csr,
    sparse_csc or sparse_bsr (see the module's docstring for the rules)."""
    torch = _torch("to_torch")
    name = default_torch_layout(t) if layout is None else _torch_layout_name(layout, torch)
    if name == "dense":
        return torch_from_numpy(torch, t.to_numpy())
    if name == "coo":
        coords, vals = t.to_coo()
        order = np.lexsort(coords[::-1]) if len(vals) > 1 else np.arange(len(vals))
        idx = np.stack([c[order] for c in coords]) if coords else np.zeros((0, len(vals)),
                                                                            dtype=np.int64)
        with _quiet_beta():
            return torch.sparse_coo_tensor(_from_numpy(torch, idx.astype(np.int64)),
                                           _from_numpy(torch, vals[order]), size=t.shape,
                                           is_coalesced=True, check_invariants=False)
    if t.ndim != 2:
        raise ShapeError(f"to_torch('{name}') needs a matrix, this tensor has rank {t.ndim}")
    if name in ("csr", "csc"):
        pos, crd, vals = compressed_arrays(t, "row" if name == "csr" else "col")
        make = torch.sparse_csr_tensor if name == "csr" else torch.sparse_csc_tensor
        with _quiet_beta():
            return make(_from_numpy(torch, pos), _from_numpy(torch, crd), _from_numpy(torch, vals),
                        size=t.shape, check_invariants=False)
    # bsr
    block = blocksize or bsr_block(t.format)
    if block is None:
        raise InputError(f"to_torch('bsr') of a {t.format} tensor needs blocksize=(r, c)")
    pos, crd, blocks, shape = bsr_arrays(t, block, pad, "to_torch('bsr')")
    with _quiet_beta():
        return torch.sparse_bsr_tensor(_from_numpy(torch, pos), _from_numpy(torch, crd),
                                       _from_numpy(torch, blocks), size=shape,
                                       check_invariants=False)


def to_torch_semi_structured(t, *, dtype=None):
    """A 2:4 matrix as torch's ``SparseSemiStructuredTensor`` on the current
    CUDA device (torch's semi-structured kernels exist only on CUDA).

    ``t`` is an spc Tensor (any format; an ``nm(2,4)`` tensor is the natural
    source) or anything ``spc.tensor`` accepts; it must be 2:4 (else InputError
    naming ``spc.prune.nm``).  ``dtype`` (a torch dtype or its name, e.g.
    ``torch.float16``) defaults to the tensor's; torch's 2:4 kernels take
    float16, bfloat16 and int8 (not float32/float64), so pass one: spc does
    not lower the precision behind your back.  Raises UnsupportedError without
    torch, without CUDA, or when torch rejects the matrix (its kernels restrict
    shapes and dtypes; the message is torch's).
    """
    from .tensor import tensor
    x = t if isinstance(t, Tensor) else tensor(t)
    if x.ndim != 2:
        raise ShapeError(f"to_torch_semi_structured needs a matrix, this tensor has rank {x.ndim}")
    if x.format != resolve_format("nm(2,4)", 2):
        x = from_tensor(x, "nm(2,4)", None)      # InputError unless 2:4
    torch = _torch("to_torch_semi_structured")
    convert = getattr(torch.sparse, "to_sparse_semi_structured", None)
    if convert is None:
        raise UnsupportedError(f"torch {torch.__version__} has no semi-structured (2:4) "
                               f"sparse tensors")
    if not torch.cuda.is_available():
        raise UnsupportedError("to_torch_semi_structured needs a CUDA GPU: torch's 2:4 "
                               "semi-structured tensors (cuSPARSELt / CUTLASS) exist only on "
                               "CUDA, and torch.cuda.is_available() is False; use "
                               "to_torch() for a CPU tensor")
    if dtype is None:
        tdt = getattr(torch, x.dtype.name)
    elif isinstance(dtype, torch.dtype):
        tdt = dtype
    else:
        tdt = getattr(torch, str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype, None)
        if not isinstance(tdt, torch.dtype):
            raise DTypeError(f"to_torch_semi_structured: unknown dtype {dtype!r}")
    dense = torch.from_numpy(x.to_numpy()).to(device="cuda", dtype=tdt)
    try:
        return convert(dense)
    except (RuntimeError, ValueError, TypeError) as err:
        hint = ("; torch's 2:4 kernels take float16, bfloat16 or int8 values: pass e.g. "
                "dtype=torch.float16" if tdt in (torch.float32, torch.float64) else "")
        raise UnsupportedError(f"torch cannot hold this {x.shape[0]}x{x.shape[1]} {tdt} matrix "
                               f"as a 2:4 semi-structured tensor: {err}{hint}") from err
