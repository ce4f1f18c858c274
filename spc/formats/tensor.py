"""``Tensor``: a tensor stored in a level format, and conversions to and from it.

Requires nothing of callers beyond well-typed input: every constructor checks
its input and raises an ``SpcError`` naming the problem.  Construction from
coordinates canonicalizes (sorts, sums duplicates); construction from raw level
arrays validates and rejects malformed storage.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, InputError, ShapeError
from .format import Format, resolve_format
from .levels import Compressed, Singleton

INDEX_LIMIT_32 = 2**31 - 1


def pick_index_dtype(*extents: int) -> np.dtype:
    """int32 when every position and coordinate fits, else int64."""
    return np.dtype(np.int32) if max((0,) + tuple(extents)) <= INDEX_LIMIT_32 else np.dtype(np.int64)


VALUE_TYPES = ("float16", "bfloat16", "float32", "float64")


_VALUE_DTYPES: dict = {}          # dtype (hashable) -> its value_dtype: str() of one is ~3 us


def value_dtype(dtype) -> np.dtype:
    """The numpy dtype of values of ``dtype``, one of VALUE_TYPES (bfloat16 is
    ml_dtypes'); a DTypeError for any other."""
    try:
        return _VALUE_DTYPES[dtype]
    except (KeyError, TypeError):           # TypeError: an unhashable dtype description
        pass
    dt = _value_dtype(dtype)
    try:
        _VALUE_DTYPES[dtype] = dt
    except TypeError:
        pass
    return dt


def _value_dtype(dtype) -> np.dtype:
    if str(dtype).startswith("torch."):
        dtype = str(dtype)[len("torch."):]          # torch.float16 -> "float16"
    if str(dtype) == "bfloat16" or getattr(dtype, "__name__", None) == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    dt = np.dtype(dtype)
    if dt.name not in VALUE_TYPES:
        raise DTypeError(f"values must be {', '.join(VALUE_TYPES)}, not {dt}")
    return dt


class Tensor:
    """A tensor in a level format.

    ``arrays[l]`` holds level l's arrays by name (e.g. {"pos": ..., "crd": ...}),
    ``vals`` the values at the last level's positions, ``shape`` the logical
    shape (in the tensor's own dimension order, not the storage order).
    """

    def __init__(self, shape, fmt: Format, arrays, vals, *, validate: bool = True):
        self.shape = tuple(int(s) for s in shape)
        self.format = fmt
        self.arrays = [dict(a) for a in arrays]
        self.vals = vals
        self.derived: dict = {}     # inspector results (runtime/inspectors.py), with stamps
        if validate:
            self.validate()

    # -- properties ---------------------------------------------------------
    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """The values' type.  On a GPU, bfloat16 values are held as their bits
        (a uint16 CuPy array: CuPy has no bfloat16); values are floats, so uint16
        values there always are bfloat16."""
        dt = self.vals.dtype
        if dt == np.uint16 and not isinstance(self.vals, np.ndarray):
            return value_dtype("bfloat16")
        return dt

    @property
    def index_dtype(self) -> np.dtype:
        """The type of the index arrays (int32 where the tensor has none)."""
        for level, a in zip(self.format.levels, self.arrays):
            for name, arr in a.items():
                if name not in level.array_dtypes:
                    return arr.dtype
        return np.dtype(np.int32)

    @property
    def nbytes(self) -> int:
        """Bytes of storage: values plus every level array."""
        return int(self.vals.nbytes) + sum(int(a.nbytes) for lv in self.arrays for a in lv.values())

    @property
    def level_dims(self) -> tuple[int, ...]:
        """The size of each level's coordinate range, in storage order (``Format.level_dims``)."""
        return self.format.level_dims(self.shape)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """The shape of the storage: ``shape`` rounded up to whole blocks for a
        blocked format (the positions past ``shape`` hold zeros that kernels skip)."""
        return self.format.padded_shape(self.shape)

    @property
    def padding(self) -> tuple[int, ...]:
        """How many rows/columns of padding the storage adds in each dimension."""
        return tuple(p - n for p, n in zip(self.padded_shape, self.shape))

    def scalars(self, name: str) -> dict[str, int]:
        """The integer scalars the levels pass to kernels, keyed by their IR name
        for the operand ``name`` (e.g. ``A1_width``)."""
        out: dict[str, int] = {}
        count = 1
        for lvl, (level, dim) in enumerate(zip(self.format.levels, self.level_dims)):
            arrays = self.arrays[lvl]
            if level.scalar_names:
                for k, v in level.scalars(arrays, count, dim).items():
                    out[f"{name}{lvl}_{k}"] = int(v)
            count = level.size(arrays, count, dim)
        return out

    @property
    def nnz(self) -> int:
        """Number of stored values (explicit zeros and padding included)."""
        return len(self.vals)

    def __repr__(self) -> str:
        return (f"spc.Tensor(shape={self.shape}, format={self.format}, nnz={self.nnz}, "
                f"dtype={self.dtype})")

    # -- checks ---------------------------------------------------------------
    def validate(self, what: str = "tensor") -> None:
        """Raise InputError unless the storage is well formed, sorted and unique."""
        if len(self.shape) != self.format.rank:
            raise ShapeError(f"{what}: shape {self.shape} has rank {len(self.shape)} but "
                             f"format {self.format} stores rank-{self.format.rank} tensors")
        if len(self.arrays) != self.format.nlevels:
            raise InputError(f"{what}: {len(self.arrays)} level array sets for a format with "
                             f"{self.format.nlevels} levels")
        if any(s < 0 for s in self.shape):
            raise ShapeError(f"{what}: negative dimension in shape {self.shape}")
        if not isinstance(self.vals, np.ndarray) or self.vals.ndim != 1:
            raise InputError(f"{what}: values must be a 1-d numpy array")
        value_dtype(self.vals.dtype)
        count = 1
        idx_dtypes = set()
        for lvl, (level, dim) in enumerate(zip(self.format.levels, self.level_dims)):
            arrays = self.arrays[lvl]
            for name in level.array_names:
                if name not in arrays:
                    raise InputError(f"{what}: level {lvl} ({level.name}) lacks its '{name}' array")
                arr = arrays[name]
                if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                    raise InputError(f"{what}: level {lvl} '{name}' must be a 1-d numpy array")
                if name in level.array_dtypes:
                    if arr.dtype != np.dtype(level.array_dtypes[name]):
                        raise DTypeError(f"{what}: level {lvl} '{name}' has dtype {arr.dtype}; "
                                         f"a {level.name} level stores it as "
                                         f"{np.dtype(level.array_dtypes[name])}")
                    continue
                if arr.dtype not in (np.int32, np.int64):
                    raise DTypeError(f"{what}: level {lvl} '{name}' has dtype {arr.dtype}; "
                                     f"index arrays must be int32 or int64")
                idx_dtypes.add(arr.dtype)
            count = level.validate(arrays, count, dim, f"{what} level {lvl} ({level.name})")
        if len(idx_dtypes) > 1:
            raise DTypeError(f"{what}: index arrays mix int32 and int64")
        if len(self.vals) != count:
            raise InputError(f"{what}: {len(self.vals)} values for {count} stored positions")
        if any(isinstance(lv, Singleton) for lv in self.format.levels) and count > 1:
            coords = self.coords_in_storage_order()
            keys = np.stack(coords, axis=1)
            diff = keys[1:] - keys[:-1]
            first = np.argmax(diff != 0, axis=1)
            sign = diff[np.arange(len(diff)), first]
            if np.any(sign <= 0):
                k = int(np.argmax(sign <= 0)) + 1
                kind = "duplicate" if sign[k - 1] == 0 else "unsorted"
                raise InputError(f"{what}: {kind} entry {tuple(int(c) for c in keys[k])} "
                                 f"at position {k}")

    # -- conversions out ----------------------------------------------------
    def coords_in_storage_order(self) -> list[np.ndarray]:
        """Coordinates of every stored value, per level, in storage order."""
        parent = np.zeros(1, dtype=np.int64)
        coords: list[np.ndarray] = []
        count = 1
        for lvl, (level, dim) in enumerate(zip(self.format.levels, self.level_dims)):
            owner, parent, crd = level.unpack(self.arrays[lvl], parent, count, dim)
            count = level.size(self.arrays[lvl], count, dim)
            coords = [c[owner] for c in coords] + [crd]
        self._last_positions = parent
        return coords

    def on_host(self) -> "Tensor":
        """This tensor with numpy arrays: itself, or a host copy when its arrays
        live on a GPU (CuPy arrays, as a CUDA kernel's sparse result holds)."""
        if isinstance(self.vals, np.ndarray):
            return self

        def host(a):
            return a.get() if hasattr(a, "get") and hasattr(a, "__cuda_array_interface__") \
                else np.asarray(a)

        vals = host(self.vals)
        if vals.dtype == np.uint16:          # bfloat16 bits (see ``dtype``)
            vals = vals.view(value_dtype("bfloat16"))
        return Tensor(self.shape, self.format, [{k: host(a) for k, a in lv.items()}
                                                 for lv in self.arrays],
                      vals, validate=False)

    def to_coo(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(coordinates per dimension in the tensor's own order, values) of the
        stored entries (padding excluded), in storage order."""
        if not isinstance(self.vals, np.ndarray):
            return self.on_host().to_coo()
        coords = self.coords_in_storage_order()
        vals = self.vals[self._last_positions]
        by_mode = self.format.mode_coords(coords)
        if self.format.is_blocked and len(vals):
            inside = np.ones(len(vals), dtype=bool)
            for c, n in zip(by_mode, self.shape):
                inside &= c < n
            by_mode = [c[inside] for c in by_mode]
            vals = vals[inside]
        return [np.asarray(c, dtype=np.int64) for c in by_mode], vals

    def to_numpy(self) -> np.ndarray:
        """The dense array (copied to the host if the tensor lives on a GPU)."""
        if not isinstance(self.vals, np.ndarray):
            return self.on_host().to_numpy()
        if self.format.is_dense:
            stored = self.vals.reshape(self.level_dims)
            return np.array(stored.transpose(np.argsort(self.format.order)), order="C")
        out = np.zeros(self.shape, dtype=self.dtype)
        coords, vals = self.to_coo()
        if len(vals):
            np.add.at(out, tuple(coords), vals)
        return out

    def to_scipy(self, layout: str | None = None, *, blocksize=None, pad: bool = False):
        """A scipy.sparse matrix: ``layout`` "csr", "csc", "coo", "bsr", "dia", "lil"
        or "dok"; by default the format's own (csc for csc/dcsc, coo for coo, bsr for
        an unpadded bsr, dia for dia, else csr).

        csr/csc/coo hold the values stored inside the shape, explicit zeros
        included.  "bsr" uses the tensor's block size (``blocksize=(r, c)`` for
        another, or for a tensor that is not bsr; without one, scipy's own
        ``tobsr()`` choice).  scipy's BSR needs a shape that is a multiple of the
        block size: when the shape is not, "bsr" raises ShapeError unless
        ``pad=True``, which returns the BSR matrix of ``self.padded_shape``.
        16-bit values come back as float32 (exactly): scipy.sparse holds no
        float16 or bfloat16.  See :mod:`spc.formats.convert`.
        """
        from .convert import to_scipy
        t = self.on_host()
        if t.vals.dtype.itemsize < 4:
            t = Tensor(t.shape, t.format, t.arrays, t.vals.astype(np.float32), validate=False)
        return to_scipy(t, layout, blocksize=blocksize, pad=pad)

    def to_torch(self, layout=None, *, blocksize=None, pad: bool = False):
        """A CPU torch tensor: ``layout`` "dense" (strided), "coo", "csr", "csc" or
        "bsr" (or the torch.layout); by default dense for dense formats, coo for coo
        and tensors of rank other than 2, csc for csc, bsr for an unpadded bsr, else
        csr.  "bsr" follows the rules of :meth:`to_scipy` (a tensor that is not bsr
        needs ``blocksize=``).  Raises UnsupportedError without torch.
        """
        from .convert import to_torch
        return to_torch(self.on_host(), layout, blocksize=blocksize, pad=pad)


# ---------------------------------------------------------------------------
# Conversions in
# ---------------------------------------------------------------------------

def from_coords(coords, vals, shape, fmt, *, index_dtype=None, sum_duplicates=True) -> Tensor:
    """Build a tensor from coordinate lists (any order, duplicates summed).

    Requires: ``coords`` is a sequence of rank integer arrays of equal length,
    one per dimension in the tensor's own order, and ``vals`` matches them.
    """
    shape = tuple(int(s) for s in shape)
    fmt = resolve_format(fmt, len(shape))
    vals = np.asarray(vals)
    if vals.dtype.kind in "iub":
        vals = vals.astype(np.float64)
    value_dtype(vals.dtype)
    if len(coords) != len(shape):
        raise ShapeError(f"{len(coords)} coordinate arrays for a rank-{len(shape)} tensor")
    coords = [np.asarray(c) for c in coords]
    for d, c in enumerate(coords):
        if c.ndim != 1 or len(c) != len(vals):
            raise ShapeError(f"coordinate array {d} has shape {c.shape}, expected ({len(vals)},)")
        if c.dtype.kind not in "iu":
            raise DTypeError(f"coordinate array {d} has dtype {c.dtype}; it must be integer")
        if len(c) and (c.min() < 0 or c.max() >= shape[d]):
            bad = int(c.min()) if c.min() < 0 else int(c.max())
            raise InputError(f"coordinate {bad} in dimension {d} is out of range [0, {shape[d]})")
    stored = fmt.level_coords([c.astype(np.int64) for c in coords])
    order = np.lexsort(stored[::-1]) if stored else np.zeros(0, dtype=np.int64)
    stored = [c[order] for c in stored]
    vals = vals[order]
    if sum_duplicates and len(vals) > 1 and stored:
        keys = np.stack(stored, axis=1)
        new = np.ones(len(vals), dtype=bool)
        new[1:] = np.any(keys[1:] != keys[:-1], axis=1)
        if not new.all():
            group = np.cumsum(new) - 1
            summed = np.zeros(int(new.sum()), dtype=vals.dtype)
            np.add.at(summed, group, vals)
            stored = [c[new] for c in stored]
            vals = summed
    dims = list(fmt.level_dims(shape))
    narrow_later = index_dtype is None       # pack in int64, then narrow what fits
    if narrow_later:
        index_dtype = np.dtype(np.int64)
    arrays = []
    parent = np.zeros(len(vals), dtype=np.int64)
    count = 1
    for level, c, dim in zip(fmt.levels, stored, dims):
        arr, parent, count = level.pack(parent, count, c, dim, index_dtype)
        arrays.append(arr)
    if narrow_later:
        # int32 when every stored index, the positions and the sizes fit
        extents = [count, max(dims, default=0)] + [
            int(np.abs(a).max()) for lv, a_set in zip(fmt.levels, arrays)
            for name, a in a_set.items() if name not in lv.array_dtypes and a.size]
        if pick_index_dtype(*extents) == np.int32:
            arrays = [{name: a if name in lv.array_dtypes else a.astype(np.int32)
                       for name, a in a_set.items()} for lv, a_set in zip(fmt.levels, arrays)]
    out_vals = np.zeros(count, dtype=vals.dtype)
    out_vals[parent] = vals
    return Tensor(shape, fmt, arrays, out_vals, validate=False)


_SPARSE_BASES: tuple | None = None


def _is_scipy_sparse(x) -> bool:
    global _SPARSE_BASES
    if _SPARSE_BASES is None:
        try:
            import scipy.sparse as sp
            _SPARSE_BASES = tuple(c for c in (getattr(sp, "spmatrix", None),
                                              getattr(sp, "sparray", None)) if c is not None)
        except ImportError:  # pragma: no cover
            _SPARSE_BASES = ()
    return isinstance(x, _SPARSE_BASES)


def tensor(x, fmt=None, *, dtype=None, shape=None, validate: bool = True) -> Tensor:
    """Build an spc Tensor.

    ``x`` may be a scipy.sparse matrix (any layout; bsr and dia convert directly
    into bsr(r,c) and dia), a torch tensor (strided, sparse COO/CSR/CSC/BSR/BSC
    or 2:4 semi-structured; CUDA tensors are copied to the host), a numpy array
    (dense; zeros are not stored unless ``fmt`` is dense), a ``(coords, vals)``
    pair of COO triplets (``shape`` required), or a Tensor (converted to
    ``fmt``).  ``fmt`` defaults to csr for scipy matrices, dense for arrays and
    the matching layout for torch tensors.  Formats with fixed slots per row
    (ell, dia, nm) store no explicit zeros of the input; a matrix that is not
    N:M raises InputError (prune it with ``spc.prune.nm``).  A sum format
    (``hyb``) gives a :class:`~spc.formats.composite.SumTensor`.
    """
    from .composite import SumTensor, resolve_sum_format, sum_tensor
    sum_fmt = resolve_sum_format(fmt)
    if sum_fmt is not None:
        return sum_tensor(x, sum_fmt, dtype=dtype)
    if isinstance(x, SumTensor):       # a hyb tensor into a plain format: its parts' entries
        if fmt is None:
            return sum_tensor(x, x.format, dtype=dtype)
        from .convert import coords_into
        coords, vals = x.to_coo()
        return with_value_dtype(coords_into(coords, vals, x.shape, fmt), dtype)
    if isinstance(x, Tensor):
        from .convert import from_tensor
        return from_tensor(x, fmt, dtype)
    if _is_scipy_sparse(x):
        from .convert import from_scipy
        return from_scipy(x, fmt, dtype, validate)
    from .convert import from_torch, is_torch
    if is_torch(x):
        return from_torch(x, fmt, dtype, validate)
    if isinstance(x, tuple) and len(x) == 2:
        if shape is None:
            raise ShapeError("spc.tensor((coords, vals)) needs shape=")
        from .convert import coords_into
        coords, vals = x
        return with_value_dtype(coords_into(list(coords), vals, shape, fmt or "coo"), dtype)
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64 if dtype is None else dtype)
    fmt = resolve_format(fmt or "dense", arr.ndim)
    arr = arr.astype(value_dtype(dtype or arr.dtype), copy=False)
    if fmt.is_dense:
        vals = np.ascontiguousarray(arr.transpose(fmt.order)).reshape(-1)
        return Tensor(arr.shape, fmt, [{} for _ in fmt.levels], vals, validate=False)
    nz = np.nonzero(arr)
    return from_coords(list(nz), arr[nz], arr.shape, fmt)


def with_value_dtype(t: Tensor, dtype) -> Tensor:
    """``t`` with values of ``dtype`` (``t`` itself when they already are, or dtype is None)."""
    if dtype is None or np.dtype(dtype) == t.vals.dtype:
        return t
    return Tensor(t.shape, t.format, t.arrays, t.vals.astype(value_dtype(dtype)), validate=False)


def check_scipy(m, what: str = "sparse matrix") -> None:
    """Raise InputError unless a scipy csr/csc/coo matrix is well formed in its own
    layout (unsorted or duplicate entries are allowed: they are canonicalized)."""
    from . import inspect_numba as ins
    if m.format in ("csr", "csc"):
        pos, crd = m.indptr, m.indices
        parents, dim = (m.shape[0], m.shape[1]) if m.format == "csr" else (m.shape[1], m.shape[0])
        if pos.dtype.kind not in "iu" or crd.dtype.kind not in "iu":
            raise DTypeError(f"{what}: index arrays must be integers")
        if len(m.data) != len(crd):
            raise InputError(f"{what}: {len(m.data)} values for {len(crd)} column indices")
        code, at = ins.compressed_errors(pos, crd, parents, dim, False, False)
        if code != ins.OK:
            Compressed(unique=False).validate({"pos": pos, "crd": crd}, parents, dim, what)
    elif m.format == "coo":
        n = len(m.data)
        if len(m.row) != n or len(m.col) != n:
            raise InputError(f"{what}: {len(m.row)} rows, {len(m.col)} columns and {n} values")
        for arr, dim, axis in ((m.row, m.shape[0], "row"), (m.col, m.shape[1], "column")):
            if n and (arr.min() < 0 or arr.max() >= dim):
                bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
                raise InputError(f"{what}: {axis} index {bad} is out of range [0, {dim})")


def _from_scipy(m, fmt, dtype, validate: bool) -> Tensor:
    """scipy.sparse -> Tensor, sharing index arrays where the layout matches."""
    fmt = resolve_format(fmt or "csr", 2)
    if m.format not in ("csr", "csc", "coo"):
        m = m.tocoo()
    check_scipy(m)
    vals = m.data
    if vals.dtype.kind in "iub":
        vals = vals.astype(np.float64 if dtype is None else dtype)
    vals = vals.astype(value_dtype(dtype or vals.dtype), copy=False)
    native = {"csr": "csr", "csc": "csc"}.get(fmt.name)
    if native is not None and m.format == native:
        t = Tensor(m.shape, fmt, [{}, {"pos": m.indptr, "crd": m.indices}], vals, validate=False)
        try:
            if validate:
                t.validate("sparse matrix")
            return t
        except Exception as err:
            from ..errors import InputError as _IE
            if not isinstance(err, _IE) or not ("unsorted" in str(err) or "duplicate" in str(err)):
                raise
        # unsorted or duplicate indices: canonicalize a copy (scipy semantics: sum)
        canon = m.copy()
        canon.sum_duplicates()
        canon.sort_indices()
        return _from_scipy(canon, fmt, dtype, validate)
    coo = m.tocoo()
    return from_coords([coo.row, coo.col], coo.data.astype(vals.dtype), m.shape, fmt)
