"""Operands on the GPU: CuPy, cupyx.scipy.sparse, torch, and host data moved over.

The CUDA target's calls go through :class:`DeviceOperands`:

* inputs may be CuPy arrays, ``cupyx.scipy.sparse`` CSR/CSC/COO matrices, torch
  tensors (dense, ``sparse_csr``, ``sparse_csc``, ``sparse_coo``), spc Tensors
  whose arrays are CuPy arrays, or anything the CPU target takes (numpy,
  scipy.sparse, spc Tensors, lists), which is converted on the host and
  copied to the device;
* device data is used in place where its layout is the kernel's (a torch or
  CuPy CSR matrix for a csr operand, a C-contiguous array of the kernel's
  dtype for a dense one: ``__cuda_array_interface__``, no copy); other layouts
  are converted (on the device for csr/csc/coo, through the host otherwise);
* the kernels run on the inputs' device, on the current stream of the inputs'
  framework (torch's current stream for torch tensors, CuPy's otherwise);
* the result comes back in the inputs' family: torch in, torch out (on the
  inputs' device); CuPy or cupyx in, CuPy or cupyx out; host data in, the CPU
  target's result family out (numpy, scipy, spc), copied back to the host.
  Sparse results that neither torch nor cupyx can hold (a dcsr output, say)
  are spc Tensors with CuPy arrays.

Nothing here ever runs a kernel on the CPU: without CuPy or a GPU a call
raises.  Validation (``validate=True``) checks device arrays on the device,
with one synchronization per operand; a malformed operand is re-checked on
the host for the same error message the CPU target gives.
"""
from __future__ import annotations

import threading
from functools import cached_property, lru_cache

import numpy as np

from ..errors import DTypeError, InputError, ShapeError, SpcError, UnsupportedError
from ..formats.format import Format, resolve_format
from ..formats.tensor import Tensor, value_dtype, with_value_dtype
from ..frontend.check import index_sizes
from ..ir.nodes import DType
from . import operands as host_ops
from .memo import LiveObjectMemo
from .pattern_kept import check_pattern_kept

_NP_INDEX = {DType.I32: np.dtype(np.int32), DType.I64: np.dtype(np.int64)}

# a host operand of this many bytes or more, copied to the GPU on a call, is a
# PerformanceWarning: at PCIe speeds it costs milliseconds every call
HOST_COPY_WARN_BYTES = 16 << 20

# DLPack device types (dlpack.h) whose memory CuPy can read in place
_DLPACK_ON_GPU = {2, 13}          # kDLCUDA, kDLCUDAManaged


@lru_cache(maxsize=256)
def _named_matrix_format(fmt: Format) -> str | None:
    """'csr', 'csc' or 'coo' when ``fmt`` is that named matrix format, else None."""
    if fmt.rank == 2 and fmt.name in ("csr", "csc", "coo") \
            and fmt == resolve_format(fmt.name, 2):
        return fmt.name
    return None


def _is_torch(x) -> bool:
    return type(x).__module__.partition(".")[0] == "torch" and hasattr(x, "layout")


def warn_if_copied_large(name: str, t: Tensor) -> None:
    """A PerformanceWarning when host operand ``name``, now device Tensor ``t``,
    was copied to the GPU for this call and holds HOST_COPY_WARN_BYTES or more."""
    size = int(t.vals.nbytes) + sum(int(a.nbytes) for lv in t.arrays for a in lv.values())
    if size >= HOST_COPY_WARN_BYTES:
        import warnings
        from ..errors import PerformanceWarning
        warnings.warn(f"operand {name}: {size / (1 << 20):.0f} MiB copied from the host to "
                      f"the GPU on this call (and on every call given host data); pass a "
                      f"CuPy array or a CUDA torch tensor, or k.prepare() it once",
                      PerformanceWarning, stacklevel=host_ops.caller_level())


class DeviceOperands:
    """CuPy-backed operand handling for device targets (one per process)."""

    _instance: "DeviceOperands | None" = None
    _lock = threading.Lock()

    def __init__(self):
        try:
            import cupy
            import cupyx.scipy.sparse as cpsp
        except ImportError as err:
            raise UnsupportedError(
                f"target='cuda' needs CuPy to run kernels ({err}); spc never runs a CUDA "
                f"kernel on the CPU") from None
        self.cp = cupy
        self.cpsp = cpsp
        self.xp = cupy
        self._streams: dict[int, object] = {}
        # zero-copy views of torch sparse tensors, dropped when the tensor dies
        self._natives = LiveObjectMemo()
        self._sizes: dict = {}

    @classmethod
    def get(cls) -> "DeviceOperands":
        if cls._instance is None:
            with cls._lock:
                if cls._instance is None:
                    cls._instance = cls()
        return cls._instance

    # -- families -----------------------------------------------------------------
    def family(self, x) -> str:
        """'torch', 'cupy', 'cupyx', 'spc-device', or a host family of operands.py."""
        if isinstance(x, self.cp.ndarray):
            return "cupy"
        if _is_torch(x):
            return "torch"
        if self.cpsp.issparse(x):
            return "cupyx"
        if isinstance(x, Tensor) and isinstance(x.vals, self.cp.ndarray):
            return "spc-device"
        return host_ops.family_of(x)

    def from_dlpack(self, x):
        """``x`` as a CuPy array over the same memory when it is a DLPack array of
        no family spc knows (a JAX array, say) on a GPU; such an array on the
        host as a numpy array (``operands.from_dlpack``); any other operand
        unchanged."""
        if isinstance(x, (np.ndarray, Tensor, self.cp.ndarray)) or _is_torch(x) \
                or not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__") \
                or host_ops.family_of(x) != "python" or self.cpsp.issparse(x):
            return x
        try:
            on_gpu = int(x.__dlpack_device__()[0]) in _DLPACK_ON_GPU
        except (TypeError, ValueError, IndexError, AttributeError):
            on_gpu = False
        if not on_gpu:
            return host_ops.from_dlpack(x)
        try:
            return self.cp.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError) as err:
            raise DTypeError(f"a {type(x).__name__} given through DLPack could not be read "
                             f"on the GPU ({err})") from None

    def device_of(self, bound: dict, families: dict) -> int:
        ids = set()
        for n, x in bound.items():
            fam = families[n]
            if fam == "cupy":
                ids.add(x.device.id)
            elif fam == "cupyx":
                ids.add(x.data.device.id)
            elif fam == "spc-device":
                ids.add(x.vals.device.id)
            elif fam == "torch" and x.is_cuda:
                ids.add(x.device.index if x.device.index is not None else
                        _torch().cuda.current_device())
        if len(ids) > 1:
            raise InputError(f"operands live on different GPUs ({sorted(ids)}); move them "
                             f"to one device")
        return ids.pop() if ids else self.cp.cuda.runtime.getDevice()

    def stream_for(self, families: dict, device_id: int):
        """The stream to launch on: torch's current stream when any operand is a
        torch tensor, else None (CuPy's current stream)."""
        if "torch" not in families.values():
            return None
        ptr = _torch_stream(device_id)
        if ptr == 0:
            return None                       # the legacy default stream: CuPy's default too
        s = self._streams.get(ptr)
        if s is None:
            s = self.cp.cuda.ExternalStream(ptr)
            self._streams[ptr] = s
        return s

    # -- the call -------------------------------------------------------------------
    def call(self, ck, bound: dict, validate: bool, out=None):
        """Run CompiledKernel ``ck`` on ``bound`` operands; see the module docstring.
        ``out``: a dense device array written with the result and returned."""
        bound = {n: self.from_dlpack(x) for n, x in bound.items()}
        families = {n: self.family(x) for n, x in bound.items()}
        device_id = self.device_of(bound, families)
        with self.cp.cuda.Device(device_id):
            stream = self.stream_for(families, device_id)
            if stream is None:
                return self._call(ck, bound, families, validate, out)
            with stream:
                return self._call(ck, bound, families, validate, out)

    def _call(self, ck, bound, families, validate, out=None):
        shapes = {n: self.shape_of(x, families[n]) for n, x in bound.items()}
        key = (id(ck.expression), tuple(shapes.items()))
        hit = self._sizes.get(key)
        if hit is not None and hit[0] is ck.expression:
            sizes = hit[1]
        else:
            sizes = index_sizes(ck.expression, shapes, ck.display)
            if len(self._sizes) > 256:
                self._sizes.clear()
            self._sizes[key] = (ck.expression, sizes)
        np_dtype = ck.dtype.np
        tensors = {n: self.to_tensor(x, families[n], ck.formats[n], np_dtype,
                                     ck.display.get(n, n), validate)
                   for n, x in bound.items()}
        for n in ck.pattern_reads & bound.keys():
            check_pattern_kept(bound[n], tensors[n], ck.formats[n], ck.display.get(n, n))
        for n, x in bound.items():
            if not host_ops.on_device(x):
                warn_if_copied_large(ck.display.get(n, n), tensors[n])
        index_dtype = ck._pick_index_dtype(tensors, sizes)
        np_index = _NP_INDEX[index_dtype]
        if index_dtype is DType.I64:
            tensors = {n: host_ops.with_index_dtype(t, np_index) for n, t in tensors.items()}
        v = ck._variants.get(index_dtype)
        if v is None or v.launchers is None:
            ck.build(index_dtype)
            v = ck._variants[index_dtype]
        alloc = self.cp
        if "torch" in families.values():
            alloc = _TorchArrays(self, self.cp.cuda.runtime.getDevice())
        result = ck._run(v, tensors, sizes, np_index, xp=alloc, array_dtype=device_dtype,
                         narrow=self.narrow, out=out,
                         device_id=self.cp.cuda.runtime.getDevice(),
                         as_device_array=self._as_cupy)
        return out if out is not None else self.to_family(ck, result, bound, families, alloc)

    def narrow(self, a, dt: DType):
        """The float32 or float64 device array ``a`` rounded to ``dt`` (to nearest
        even; bfloat16 as its bits, through float32, a NaN staying a quiet NaN)."""
        if dt is not DType.BF16:
            return a.astype(device_dtype(dt))
        cp = self.cp
        bits = cp.ascontiguousarray(a, dtype=cp.float32).view(cp.uint32)
        rounded = (bits + cp.uint32(0x7FFF) + ((bits >> 16) & cp.uint32(1))) >> 16
        return cp.where(cp.isnan(a), (bits >> 16) | cp.uint32(0x40), rounded).astype(cp.uint16)

    def shape_of(self, x, fam: str) -> tuple[int, ...]:
        if fam in ("cupy", "cupyx", "torch", "spc-device"):
            return tuple(int(s) for s in x.shape)
        return host_ops.shape_of(x)

    # -- operands in ------------------------------------------------------------------
    def to_tensor(self, x, fam: str, fmt: Format, dtype: np.dtype, name: str,
                  validate: bool) -> Tensor:
        """Operand ``name`` as a Tensor in ``fmt`` whose arrays are CuPy arrays
        (bfloat16 values as their bits: CuPy has no bfloat16; they are checked,
        canonicalized and summed as float32, which holds every bfloat16 exactly,
        and rounded once)."""
        if dtype.name == "bfloat16":
            if fam == "torch" and x.is_cuda and x.layout == _torch().strided and fmt.is_dense \
                    and x.dtype is _torch().bfloat16:              # dense: its bits, no copy
                with host_ops.operand_errors(name):
                    bits = self._as_cupy(x.detach().view(_torch().int16)).view(np.uint16)
                    return self._dense(bits, fmt, bits.dtype, name)
            if fam == "spc-device" and x.vals.dtype == np.uint16:     # bits already (prepared)
                if x.format == fmt:
                    return self.to_tensor(x, fam, fmt, x.vals.dtype, name, validate)
                x, fam = self.to_host(x), "spc"
            t = self.to_tensor(x, fam, fmt, np.dtype(np.float32), name, validate)
            return Tensor(t.shape, t.format, t.arrays, self.narrow(t.vals, DType.BF16),
                          validate=False)
        with host_ops.operand_errors(name):
            if fam == "torch" and not x.is_cuda:
                x = self._torch_to_host(x)
                fam = host_ops.family_of(x)
            elif fam == "torch" and x.layout == _torch().sparse_coo and x.ndim != 2:
                # a sparse vector or n-d COO tensor: through the host, as the CPU target
                # takes it (cupyx holds matrices only)
                return self.to_device(host_ops.to_tensor(x.cpu(), fmt, dtype, name, validate))
            if fam not in ("cupy", "cupyx", "torch", "spc-device"):
                t = host_ops.to_tensor(x, fmt, dtype, name, validate)
                return self.to_device(t)
            if fmt.is_dense:
                return self._dense(self._dense_array(x, fam), fmt, dtype, name)
            return with_value_dtype(self._sparse(x, fam, fmt, validate), dtype)

    def to_device(self, t: Tensor) -> Tensor:
        cp = self.cp
        arrays = [{k: cp.asarray(a) for k, a in lv.items()} for lv in t.arrays]
        return Tensor(t.shape, t.format, arrays, cp.asarray(t.vals), validate=False)

    def _torch_to_host(self, x):
        """A CPU torch tensor as numpy / scipy (then handled like host data;
        bfloat16, which scipy cannot hold, as float32: exact)."""
        x = x.detach()
        if x.dtype is _torch().bfloat16:
            x = x.float()
        if x.layout == _torch().strided:
            return x.numpy()
        import scipy.sparse as sp
        if x.layout == _torch().sparse_csr:
            return sp.csr_matrix((x.values().numpy(), x.col_indices().numpy(),
                                  x.crow_indices().numpy()), shape=tuple(x.shape))
        if x.layout == _torch().sparse_csc:
            return sp.csc_matrix((x.values().numpy(), x.row_indices().numpy(),
                                  x.ccol_indices().numpy()), shape=tuple(x.shape))
        if x.layout == _torch().sparse_coo:
            x = x.coalesce()
            idx = x.indices().numpy()
            if x.ndim != 2:
                return x.to_dense().numpy()
            return sp.coo_matrix((x.values().numpy(), (idx[0], idx[1])), shape=tuple(x.shape))
        raise InputError(f"torch tensors of layout {x.layout} are not supported")

    def _as_cupy(self, t):
        """A torch CUDA tensor (dense) as a CuPy array over the same memory (no
        copy; the array keeps the tensor alive), except bfloat16, which CuPy
        cannot hold: a float32 copy (exact)."""
        if t.dtype is _torch().bfloat16:
            t = t.float()            # exact; the array keeps the copy alive
        dt = _np_dtype_of(t.dtype)
        if dt is None:
            raise DTypeError(f"values must be float16, bfloat16, float32 or float64, "
                             f"not {t.dtype}")
        shape = tuple(t.shape)
        if t.numel() == 0:
            return self.cp.empty(shape, dtype=dt)
        strides = t.stride()
        span = 1 + sum((n - 1) * st for n, st in zip(shape, strides))
        cuda = self.cp.cuda
        mem = cuda.UnownedMemory(t.data_ptr(), span * dt.itemsize, t, t.get_device())
        return self.cp.ndarray(shape, dt, cuda.MemoryPointer(mem, 0),
                               strides=tuple(st * dt.itemsize for st in strides))

    def _dense_array(self, x, fam: str):
        """The operand's values as a dense CuPy array."""
        if fam == "cupy":
            return x
        if fam == "cupyx":
            return x.toarray()
        if fam == "spc-device":
            if x.format.is_dense:
                stored = x.vals.reshape(x.level_dims)
                return stored.transpose(np.argsort(x.format.order)) if x.ndim > 1 else stored
            return self.cp.asarray(self.to_host(x).to_numpy())
        torch = _torch()
        if x.layout != torch.strided:
            x = x.to_dense()
        return self._as_cupy(x)

    def _dense(self, arr, fmt: Format, dtype: np.dtype, name: str) -> Tensor:
        cp = self.cp
        if arr.dtype.kind not in "iufb":
            raise DTypeError(f"operand {name}: dtype {arr.dtype} is not numeric")
        if arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64):
            value_dtype(arr.dtype)
        if arr.ndim != fmt.rank:
            raise ShapeError(f"operand {name}: has {arr.ndim} dimensions, the format "
                             f"{fmt} has {fmt.rank}")
        stored = arr.transpose(fmt.order) if fmt.order != tuple(range(arr.ndim)) else arr
        vals = cp.ascontiguousarray(stored, dtype=dtype).reshape(-1)
        return Tensor(arr.shape, fmt, [{} for _ in fmt.levels], vals, validate=False)

    # sparse operands -------------------------------------------------------------
    def _native(self, x, fam: str):
        """(layout, shape, arrays, vals) of a device sparse operand, where layout
        is 'csr' / 'csc' (arrays: pos, crd) or 'coo' (arrays: row, col)."""
        shape = tuple(int(s) for s in x.shape)
        if fam == "cupyx":
            if x.format in ("csr", "csc"):
                return x.format, shape, (x.indptr, x.indices), x.data
            if x.format == "coo":
                return "coo", shape, (x.row, x.col), x.data
            x = x.tocsr()
            return "csr", shape, (x.indptr, x.indices), x.data
        if x.layout == _torch().strided:
            return None                       # dense data for a sparse format
        # an uncoalesced COO tensor refuses values() until coalesced: _values() serves
        vals = x._values() if x.layout == _torch().sparse_coo else x.values()
        stamp = (x._nnz(), vals.data_ptr(), shape, x.layout)
        native = self._natives.get(x, stamp)
        if native is None:
            native = self._natives.put(x, stamp, self._torch_native(x, shape))
        return native

    def _torch_native(self, x, shape):
        torch = _torch()
        if x.layout == torch.sparse_csr:
            self._matrix(x)
            return ("csr", shape, (self._as_cupy(x.crow_indices()), self._as_cupy(x.col_indices())),
                    self._as_cupy(x.values()))
        if x.layout == torch.sparse_csc:
            self._matrix(x)
            return ("csc", shape, (self._as_cupy(x.ccol_indices()), self._as_cupy(x.row_indices())),
                    self._as_cupy(x.values()))
        if x.layout == torch.sparse_coo:
            self._matrix(x)
            if not x.is_coalesced():
                x = x.coalesce()            # sorted, duplicates summed (scipy's meaning)
            idx = self._as_cupy(x.indices())
            return "coo", shape, (idx[0], idx[1]), self._as_cupy(x.values())
        if x.layout == torch.sparse_bsr:
            self._matrix(x)
            r, c = (int(b) for b in x.values().shape[1:])
            return (f"bsr({r},{c})", shape,
                    (self._as_cupy(x.crow_indices()), self._as_cupy(x.col_indices())),
                    self._as_cupy(x.values().reshape(-1)))
        return None

    @staticmethod
    def _matrix(x) -> None:
        if x.ndim != 2 or x.dense_dim() != 0:
            raise InputError(f"sparse torch tensors must be 2-d matrices of scalars, got "
                             f"shape {tuple(x.shape)} with {x.dense_dim()} dense dimensions")

    def _sparse(self, x, fam: str, fmt: Format, validate: bool) -> Tensor:
        cp = self.cp
        if fam == "spc-device":
            if x.format == fmt:
                if validate:
                    self.validate(x, "sparse tensor")
                return x
            return self.to_device(host_ops.to_tensor(self.to_host(x), fmt, x.dtype, "x", False))
        native = self._native(x, fam) if fam in ("cupyx", "torch") else None
        if native is None:                     # a dense device array for a sparse format
            arr = self._dense_array(x, fam)
            if arr.ndim == 2:
                m = self.cpsp.csr_matrix(arr.astype(np.float64) if arr.dtype.kind != "f" else
                                         arr.astype(np.float32) if arr.dtype == np.float16
                                         else arr)
                native = ("csr", tuple(arr.shape), (m.indptr, m.indices), m.data)
            else:
                t = host_ops.to_tensor(cp.asnumpy(arr), fmt, np.dtype(
                    arr.dtype if arr.dtype.kind == "f" else np.float64), "x", False)
                return self.to_device(t)
        layout, shape, arrays, vals = native
        if layout.startswith("bsr"):
            if fmt == resolve_format(layout, 2):          # torch's blocks are the format's
                return self._blocked(shape, fmt, arrays, vals, validate)
            x = x.to_dense().to_sparse_csr()              # other blocks: through csr
            layout, shape, arrays, vals = self._torch_native(x, shape)
        if vals.dtype.kind != "f":
            vals = vals.astype(np.float64)
        value_dtype(vals.dtype)
        if arrays[0].dtype != arrays[1].dtype:
            wide = np.promote_types(arrays[0].dtype, arrays[1].dtype)
            arrays = tuple(a.astype(wide) for a in arrays)
        if arrays[0].dtype not in (np.int32, np.int64):
            arrays = tuple(a.astype(np.int64) for a in arrays)
        named = _named_matrix_format(fmt)
        if named == layout:
            t = self._from_native(layout, shape, arrays, vals, fmt)
            if validate:
                problem = self.problems(t)
                if problem == "order":
                    t = self._from_native(*self._canonical(layout, shape, arrays, vals), fmt)
                elif problem:
                    self.raise_host_error(t, "sparse matrix")
            return t
        # another layout: convert on the device through cupyx (csr/csc/coo), else the host
        m = self._cupyx(layout, shape, arrays, vals)
        if named is not None:
            m = m.tocsr()
            m.sum_duplicates()                  # canonical: sorted, duplicates summed
            if named == "csc":
                m = m.tocsc()
                m.sum_duplicates()
            if named == "coo":
                m = m.tocoo()
                arrays = (m.row, m.col)
            else:
                arrays = (m.indptr, m.indices)
            return self._from_native(named, shape, arrays, m.data, fmt)
        host = m.get()
        host.sum_duplicates()
        return self.to_device(host_ops.to_tensor(host, fmt, np.dtype(host.dtype), "x", False))

    def _blocked(self, shape, fmt: Format, arrays, vals, validate: bool) -> Tensor:
        """A torch BSR tensor's arrays (block row pointers, block columns, blocks
        row-major) as a Tensor in ``fmt``, the same blocked format: no copy."""
        if vals.dtype.kind != "f":
            vals = vals.astype(np.float64)
        pos, crd = arrays
        if pos.dtype != crd.dtype:
            pos, crd = (a.astype(np.promote_types(pos.dtype, crd.dtype)) for a in arrays)
        t = Tensor(shape, fmt, [{}, {"pos": pos, "crd": crd}, {}, {}], vals, validate=False)
        if validate and self.problems(t):
            self.raise_host_error(t, "sparse BSR tensor")
        return t

    def _from_native(self, layout, shape, arrays, vals, fmt: Format) -> Tensor:
        if layout in ("csr", "csc"):
            pos, crd = arrays
            return Tensor(shape, fmt, [{}, {"pos": pos, "crd": crd}], vals, validate=False)
        row, col = arrays
        pos = self.cp.asarray(np.array([0, len(vals)], dtype=row.dtype))
        return Tensor(shape, fmt, [{"pos": pos, "crd": row}, {"crd": col}], vals, validate=False)

    def _cupyx(self, layout, shape, arrays, vals):
        """A cupyx matrix of native arrays (float16 values as float32, exactly:
        cupyx holds no 16-bit values; callers round back where they need to)."""
        sp = self.cpsp
        if vals.dtype == np.float16:
            vals = vals.astype(np.float32)
        if arrays[0].dtype != np.int32:
            if max(len(vals), *shape, 0) > 2**31 - 1:
                raise UnsupportedError("converting a sparse operand with 64-bit indices "
                                       "between layouts on the device")
            arrays = tuple(a.astype(np.int32) for a in arrays)
        if layout == "csr":
            return sp.csr_matrix((vals, arrays[1], arrays[0]), shape=shape)
        if layout == "csc":
            return sp.csc_matrix((vals, arrays[1], arrays[0]), shape=shape)
        return sp.coo_matrix((vals, (arrays[0], arrays[1])), shape=shape)

    def _canonical(self, layout, shape, arrays, vals):
        """Sorted, duplicate-free copies of native arrays (duplicates summed)."""
        m = self._cupyx(layout, shape, arrays, vals).copy()
        m.sum_duplicates()
        if layout == "coo":
            m = m.tocsr()
            m.sum_duplicates()
            m = m.tocoo()
            return layout, shape, (m.row, m.col), m.data
        return layout, shape, (m.indptr, m.indices), m.data

    # -- validation on the device -------------------------------------------------
    def problems(self, t: Tensor) -> str | None:
        """None if ``t`` is well formed; "order" if its only problem is unsorted or
        duplicate coordinates; "structure" otherwise.  Checked on the device by
        spc's own storage-check kernels (one synchronization), or on a host copy
        for levels that have none."""
        from .device_check import NOT_CHECKED, storage_problems
        found = storage_problems(t, self.cp, self._check_target)
        if found is NOT_CHECKED:
            return "structure" if self._host_invalid(t) else None
        return found

    @cached_property
    def _check_target(self):
        """The CUDA target the storage checks are built for (the current device's arch)."""
        from ..codegen.cuda import CUDATarget
        return CUDATarget()

    def _host_invalid(self, t: Tensor) -> bool:
        try:
            self.to_host(t).validate()
        except SpcError:
            return True
        return False

    def validate(self, t: Tensor, what: str) -> None:
        """Raise the CPU target's InputError for a malformed device tensor."""
        if self.problems(t):
            self.raise_host_error(t, what)

    def raise_host_error(self, t: Tensor, what: str) -> None:
        self.to_host(t).validate(what)
        raise InputError(f"{what}: malformed storage")

    def to_host(self, t: Tensor) -> Tensor:
        """Device Tensor ``t`` on the host (values held as bfloat16 bits, uint16, as
        bfloat16: device values are floats, so uint16 values are always bits)."""
        cp = self.cp
        arrays = [{k: cp.asnumpy(a) for k, a in lv.items()} for lv in t.arrays]
        vals = cp.asnumpy(t.vals)
        if vals.dtype == np.uint16:
            vals = vals.view(DType.BF16.np)
        return Tensor(t.shape, t.format, arrays, vals, validate=False)

    # -- results out ------------------------------------------------------------------
    def to_family(self, ck, out: Tensor, bound: dict, families: dict, alloc=None):
        fams = set(families.values())
        if "torch" in fams:
            cuda = any(families[n] == "torch" and x.is_cuda for n, x in bound.items())
            return self._to_torch(out, cuda, alloc, bf16=ck.dtype is DType.BF16)
        if ck.dtype is DType.BF16 and not fams & {"spc-device"}:
            # CuPy has no bfloat16: the bits come back as bfloat16 on the host (to_host)
            return ck._to_family(self.to_host(out), bound, None)
        if fams & {"cupy", "cupyx", "spc-device"}:
            return self._to_cupy(out, sparse_family="cupyx" if "cupyx" in fams else "spc")
        return ck._to_family(self.to_host(out), bound, None)

    def _dense_result(self, out: Tensor):
        stored = out.vals.reshape([out.shape[m] for m in out.format.order])
        if out.ndim > 1 and out.format.order != tuple(range(out.ndim)):
            return self.cp.ascontiguousarray(stored.transpose(np.argsort(out.format.order)))
        return stored

    def _to_cupy(self, out: Tensor, sparse_family: str):
        if out.format.is_dense:
            return self._dense_result(out)
        name = _named_matrix_format(out.format)
        if sparse_family == "cupyx" and name in ("csr", "csc", "coo"):
            try:
                if name == "coo":
                    row, col = out.arrays[0]["crd"], out.arrays[1]["crd"]
                    return self._cupyx("coo", out.shape, (row, col), out.vals)
                lv = out.arrays[1]
                m = self._cupyx(name, out.shape, (lv["pos"], lv["crd"]), out.vals)
                try:
                    m.has_canonical_format = True
                except AttributeError:       # a CuPy without the setter: it checks lazily
                    pass
                return m
            except UnsupportedError:
                return out
        return out

    def _to_torch(self, out: Tensor, cuda: bool, alloc=None, bf16: bool = False):
        torch = _torch()

        def t(a):
            x = alloc.tensor_of(a) if isinstance(alloc, _TorchArrays) else None
            if x is None:
                x = torch.from_dlpack(a)
            if bf16 and x.dtype in (torch.uint16, torch.int16):     # values as bits
                x = x.view(torch.bfloat16)
            return x if cuda else x.cpu()

        if out.format.is_dense:
            return t(self._dense_result(out))
        name = _named_matrix_format(out.format)
        size = tuple(out.shape)
        if name == "csr":
            lv = out.arrays[1]
            return torch.sparse_csr_tensor(t(lv["pos"]), t(lv["crd"]), t(out.vals), size)
        if name == "csc":
            lv = out.arrays[1]
            return torch.sparse_csc_tensor(t(lv["pos"]), t(lv["crd"]), t(out.vals), size)
        if name == "coo":
            idx = self.cp.stack([out.arrays[0]["crd"], out.arrays[1]["crd"]]).astype(np.int64)
            try:
                return torch.sparse_coo_tensor(t(idx), t(out.vals), size, is_coalesced=True)
            except TypeError:                  # older torch: no is_coalesced argument
                return torch.sparse_coo_tensor(t(idx), t(out.vals), size).coalesce()
        return out if cuda else self.to_host(out)


def _torch():
    import torch
    return torch


def _torch_stream(device_id: int) -> int:
    """The raw handle of torch's current stream on ``device_id``."""
    torch = _torch()
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return raw(device_id)
    return torch.cuda.current_stream(device_id).cuda_stream


_TORCH_NP: dict = {}


def device_dtype(dt: DType) -> np.dtype:
    """The dtype of device arrays of values of ``dt``: bfloat16 as its bits."""
    return np.dtype(np.uint16) if dt is DType.BF16 else dt.np


def _np_dtype_of(torch_dtype):
    """The numpy dtype of a torch dtype spc accepts (None for half precision and others)."""
    if not _TORCH_NP:
        torch = _torch()
        _TORCH_NP.update({torch.float16: np.dtype(np.float16),
                          torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                          torch.int32: np.dtype(np.int32), torch.int64: np.dtype(np.int64),
                          torch.int16: np.dtype(np.int16), torch.int8: np.dtype(np.int8),
                          torch.uint8: np.dtype(np.uint8), torch.bool: np.dtype(np.bool_)})
    return _TORCH_NP.get(torch_dtype)


class _TorchArrays:
    """The array module ``_run`` allocates outputs with when the operands are
    torch tensors: the memory is torch's (on its current stream), so results
    are torch tensors without a DLPack round trip; the runtime sees CuPy views."""

    def __init__(self, ops: DeviceOperands, device_id: int):
        self.ops = ops
        self.device = _torch().device("cuda", device_id)
        self.owners: dict[int, object] = {}

    def _new(self, make, n, dtype):
        torch = _torch()
        dt = np.dtype(dtype)
        tdt = {np.dtype(np.float16): torch.float16, np.dtype(np.uint16): torch.bfloat16,
               np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
               np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64,
               np.dtype(np.int8): torch.int8}[dt]          # int8: workspace marks (scratch)
        t = make(int(n), dtype=tdt, device=self.device)
        # bfloat16 (device_dtype) is seen as its bits
        view = self.ops._as_cupy(t.view(torch.int16) if tdt is torch.bfloat16 else t)
        if tdt is torch.bfloat16:
            view = view.view(np.uint16)
        if n:
            self.owners[view.data.ptr] = t
        return view

    def zeros(self, n, dtype):
        return self._new(_torch().zeros, n, dtype)

    def empty(self, n, dtype):
        return self._new(_torch().empty, n, dtype)

    def cumsum(self, a, out=None):
        return self.ops.cp.cumsum(a, out=out)

    def tensor_of(self, a):
        """The torch tensor whose memory the CuPy array ``a`` is (reshaped), or None."""
        if a.size == 0 or not a.flags.c_contiguous:
            return None
        t = self.owners.get(a.data.ptr)
        if t is None or t.numel() != a.size:
            return None
        return t.view(a.shape)


__all__ = ["DeviceOperands"]
