"""The steady-state call of a CUDA kernel on CuPy arrays and cupyx sparse matrices.

The same plan as the torch path (``torch_fast.FeedPlan``: which pointer feeds
which parameter, how sizes follow from shapes, built once per kernel): a call
reads shapes and device pointers, allocates the output with CuPy and launches
through the driver (``cuda_launch.RawLaunch``) on CuPy's current stream.

Validation stays on and is made on every call, since a CuPy array has no
version counter that would tell an unchanged storage from one written in
place: each sparse operand's index arrays go through spc's own storage-check
kernels (``formats/storage_check``, the ones ``device_check`` runs), which add
into a small status array; the call reads it back (one synchronization, the
only one) and launches the product only for a storage that is well formed and
as canonical as the kernel needs.  Anything else (malformed, unsorted or
duplicate where the kernel needs them summed, other layouts, mixed devices,
inspector arrays) returns None: the general path (``device.py``) then
canonicalizes or raises the same ``InputError`` as ever.
"""
from __future__ import annotations

import copy

import numpy as np

from ..codegen.cuda import NARROW_LIMIT
from ..formats.storage_check import ORDER, STRUCTURE
from ..ir.lower import OutputKind
from ..ir.nodes import DType
from .cuda_launch import RawLaunch, memset_zero
from .torch_fast import SIZE, FeedPlan


class CupyFastPath(FeedPlan):
    """``path.call(args, validate)``: the result, or None where the general path
    must run.

    Ensures: a dense result is a new CuPy array; a result with the sparse
    operand's pattern is a new cupyx matrix whose values are new and whose
    index arrays are the operand's own (not copied: they are not written).
    """

    def __init__(self, *plan):
        super().__init__(*plan)
        import cupy
        import cupyx.scipy.sparse as cpsp
        self.cp = cupy
        self.np_dtype = np.dtype(self.ck.dtype.np)
        self.layouts = {"csr": cpsp.csr_matrix, "csc": cpsp.csc_matrix}
        self.i32 = np.dtype(np.int32)
        self._checks: dict[str, list] | None = None
        self._status: dict[int, tuple] = {}          # device -> (device array, host buffer)

    @classmethod
    def of(cls, ck) -> "CupyFastPath | None":
        if ck.dtype is DType.BF16:                    # CuPy holds no bfloat16
            return None
        path = super().of(ck)
        if path is not None and path.output_kind != OutputKind.DENSE and ck.dtype is DType.F16:
            return None                               # cupyx holds no float16 values
        return path

    # -- the storage checks -------------------------------------------------------
    def _check_launches(self, kind: str) -> list:
        """(RawLaunch, parameter names) of the checks of a compressed level with
        int32 indices below a dense one (csr's and csc's second level)."""
        if self._checks is None:
            self._checks = {}
        found = self._checks.get(kind)
        if found is None:
            from ..codegen.cuda import CUDATarget
            from .device_check import _launcher
            fmt = self.ck.formats[self.ck.inputs[[k for k, (kd, _) in enumerate(self.kinds)
                                                  if kd == kind][0]]]
            levels = fmt.levels
            kernels = levels[1].device_check(DType.I32, levels[0]) or []
            target = CUDATarget()
            found = self._checks[kind] = [(RawLaunch(_launcher(k, target)),
                                           [p.name for p in k.params])
                                          for k in kernels]
        return found

    def _status_arrays(self, device: int, n: int):
        """A device int32 array of 2 * n counters and a pinned host copy, kept per device."""
        kept = self._status.get(device)
        if kept is None or kept[0].size < 2 * n:
            cp = self.cp
            dev = cp.zeros(2 * n, dtype=cp.int32)
            host = cp.cuda.alloc_pinned_memory(8 * n)
            kept = self._status[device] = (dev, np.frombuffer(host, np.int32, 2 * n), host)
        return kept

    def _verdicts(self, checks, device: int, stream: int) -> list[tuple[bool, bool]] | None:
        """(in bounds, canonical) per checked operand, read back once (the
        call's one synchronization); None where some operand has no check."""
        cp = self.cp
        dev, host, _ = self._status_arrays(device, len(checks))
        memset_zero(dev.data.ptr, 2 * len(checks), stream)
        for n, (kind, pos, crd, parents, dim) in enumerate(checks):
            launches = self._check_launches(kind)
            if not launches:
                return None
            status = dev.data.ptr + 8 * n
            given = {"pos": (pos.data.ptr, pos.size), "crd": (crd.data.ptr, crd.size),
                     "status": (status, 2), "count": parents, "dim": dim, "nnz": crd.size}
            for launch, names in launches:
                values, lengths, sizes = [], [], []
                for p in names:
                    v = given[p]
                    if isinstance(v, tuple):
                        values.append(v[0])
                        lengths.append(v[1])
                    else:
                        values.append(v)
                        sizes.append(v)
                plan = launch.plan
                span = lengths[plan.lane_buffer] if plan.lane_buffer is not None else None
                items = lengths[plan.items_buffer] if plan.items_buffer is not None else None
                # 64-bit index arithmetic: the arrays' values, not only their lengths,
                # may be anything here
                launch.run(tuple(values), tuple(sizes), NARROW_LIMIT, span, items, stream, device)
        cp.cuda.runtime.memcpyAsync(host.ctypes.data, dev.data.ptr, 8 * len(checks),
                                    cp.cuda.runtime.memcpyDeviceToHost, stream)
        cp.cuda.runtime.streamSynchronize(stream)
        return [(not host[2 * n + STRUCTURE], not host[2 * n + ORDER])
                for n in range(len(checks))]

    # -- the call -----------------------------------------------------------------
    def generic(self, args, validate: bool):
        cp = self.cp
        ndarray = cp.ndarray
        dtype = self.np_dtype
        device = -1
        ptrs, lens, shapes, checks, checked = [], [], [], [], []
        for k, x in enumerate(args):
            kind, rank = self.kinds[k]
            if kind == "dense":
                if type(x) is not ndarray or x.dtype != dtype or x.ndim != rank \
                        or not x.flags.c_contiguous:
                    return None
                d = x.device.id
                ptrs.append((x.data.ptr,))
                lens.append((x.size,))
            else:
                if type(x) is not self.layouts[kind]:
                    return None
                vals, crd, pos = x.data, x.indices, x.indptr
                shape = x.shape
                parents, dim = (shape[0], shape[1]) if kind == "csr" else (shape[1], shape[0])
                if vals.dtype != dtype or crd.dtype != self.i32 or pos.dtype != self.i32 \
                        or pos.size != parents + 1 or vals.size != crd.size:
                    return None                   # the general path explains or converts
                d = vals.device.id
                if crd.device.id != d or pos.device.id != d:
                    return None
                ptrs.append((vals.data.ptr, pos.data.ptr, crd.data.ptr))
                lens.append((vals.size, pos.size, crd.size))
                checks.append((kind, pos, crd, parents, dim))
                checked.append(k)
            if device >= 0 and d != device:
                return None
            device = d
            shapes.append(x.shape)
        sizes = self.sizes_of(shapes)
        if sizes is None:
            return None
        feeds = self.feeds.get(DType.I32)
        if feeds is None:
            if DType.I32 in self.feeds:
                return None
            feeds = self._feeds(DType.I32)
            if feeds is None:
                return None
        if any(j.__class__ is str for f in feeds for k, j in f.params if k != SIZE):
            return None                           # inspector arrays: the general path
        if device < 0 or cp.cuda.runtime.getDevice() != device:
            return None
        stream = cp.cuda.get_current_stream().ptr
        canonical = True
        if validate and checks:
            found = self._verdicts(checks, device, stream)
            if found is None:
                return None
            for k, (in_bounds, ordered) in zip(checked, found):
                if not in_bounds or (not ordered and self.needs_canonical[k]):
                    return None                   # the general path explains or canonicalizes
                canonical = canonical and ordered
        out_shape = tuple(shapes[k][axis] for k, axis in self.out_dims)
        if self.output_kind == OutputKind.DENSE:
            out = cp.empty(out_shape, dtype=dtype)
        else:
            out = cp.empty(lens[self.pattern][0], dtype=dtype)
        out_ptr, out_n = out.data.ptr, out.size
        if self.zero[DType.I32]:
            memset_zero(out_ptr, out_n * self.value_words, stream)
        self.launch_feeds(feeds, sizes, ptrs, lens, out_ptr, out_n, stream, device)
        if self.output_kind == OutputKind.DENSE:
            return out
        return _with_values(args[self.pattern], out, canonical and validate)


def _with_values(x, values, canonical: bool):
    """A cupyx matrix with ``x``'s shape and index arrays (the same objects) and
    ``values``: a shallow copy of ``x`` (cupyx's constructor reads the index
    arrays back to the host: ~160 us a call on the H200 host), else a new one."""
    try:
        result = copy.copy(x)
        if result.indices is not x.indices or result.indptr is not x.indptr:
            raise TypeError("not a shallow copy")
        result.data = values
    except (TypeError, AttributeError):
        result = type(x)((values, x.indices, x.indptr), shape=x.shape)
    if canonical:
        try:
            result.has_canonical_format = True
        except AttributeError:                    # a CuPy without the setter checks lazily
            pass
    return result
