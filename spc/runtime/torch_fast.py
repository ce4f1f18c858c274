"""The steady-state call of a CUDA kernel on torch CUDA tensors.

``TorchFastPath`` serves the common inference call: every operand a torch
tensor on one GPU, dense operands contiguous in the kernel's dtype, sparse
ones ``sparse_csr`` / ``sparse_csc`` tensors for csr / csc formats, the result
dense or with the sparse operand's pattern (SDDMM).  Everything that depends
only on the kernel (which pointer feeds which parameter, how sizes follow from
shapes) is derived once; a call reads shapes and data pointers, looks up the
validation verdict, allocates the output with torch (zeroed only where the
kernel does not store every entry: ``Kernel.overwrites``) and launches through the
driver API (``cuda_launch.RawLaunch``) on torch's current stream.  Nothing
synchronizes once a sparse tensor has been seen, so calls can be captured in
CUDA graphs after a first (warm-up) call.

Kernels whose schedule reads inspector arrays (``reorder_rows``, ``split_rows``)
get them the same way: computed from host copies of a sparse tensor's index
arrays the first time it is seen, kept with its verdict, reused while it is
unchanged.

Validation stays on.  A sparse operand's index arrays are checked once per
storage (``SparseOperands``) and the verdict is remembered, keyed by the
tensor object (alive: a weak reference), its index arrays' data pointers and
torch's version counters, so a tensor mutated in place is checked again.  The
first check copies the index arrays to the host (one synchronization) and runs
the same inspector as the CPU target.  Anything the fast path does not cover,
or an operand that fails the check, takes the general path (``device.py``),
which canonicalizes or raises the same ``InputError`` as ever.
"""
from __future__ import annotations


import numpy as np

from ..formats.inspect_numba import OK, compressed_errors, compressed_in_bounds
from ..ir.lower import OutputKind, level_io, size_var, vals_buffer
from ..ir.nodes import Buffer, DType, i64
from . import inspectors
from .cuda_launch import RawLaunch, memset_zero
from .memo import LiveObjectMemo

_UNSEEN = object()


def _torch():
    import torch
    return torch


class SparseOperands:
    """What a call needs of sparse torch tensors, remembered per tensor: data
    pointers and lengths of (values, positions, coordinates), the index dtype,
    and the validation verdict ``(in_bounds, canonical)``.

    Requires: ``lookup(x, kind, parents, dim)`` gets a live ``sparse_csr`` (kind
    "csr") or ``sparse_csc`` ("csc") tensor.
    Ensures: an entry is reused only for the same live tensor object (a weak
    reference decides, so a new tensor at a freed one's address is a miss) with
    the same version counter and shape, so a tensor mutated in place is read
    and checked anew; a new entry's verdict comes from host copies of the index
    arrays (one synchronization) checked by the CPU target's inspector.

    One counter covers every array: torch gives a compressed tensor and the
    aliases ``crow_indices()``, ``col_indices()`` and ``values()`` return one
    version counter, bumped by an in-place write through any of them and by any
    in-place op on the tensor, the only ways its arrays change or are replaced
    (tests/test_cuda_fast.py mutates each in place).  The memo's stamp is
    ``(x._version, parents, dim)``; ``torch_specialize`` inlines the lookup.
    """

    def __init__(self):
        self._seen = LiveObjectMemo()

    def lookup(self, x, kind: str, parents: int, dim: int, validate: bool = True):
        """(pointers, lengths, index dtype, values dtype, verdict, (vals, pos, crd),
        inspector results (see ``derived``)),
        or None for a tensor the fast path does not take (batched, values not
        1-d, mixed index dtypes, an inference tensor: made under
        ``torch.inference_mode``, it has no version counter).  The verdict is None when never asked for
        (``validate`` False so far)."""
        if x.is_inference():
            return None          # no version counter: the general path checks every call
        stamp = (x._version, parents, dim)
        entry = self._seen.get(x, stamp)
        if entry is not None and (entry[4] is not None or not validate):
            return entry
        crd = x.col_indices() if kind == "csr" else x.row_indices()
        pos = x.crow_indices() if kind == "csr" else x.ccol_indices()
        vals = x.values()
        if pos.dim() != 1 or vals.dim() != 1 or pos.dtype is not crd.dtype:
            return None
        verdict = _inspect(pos.cpu().numpy(), crd.cpu().numpy(), parents, dim) if validate \
            else None
        return self._seen.put(x, stamp, ((vals.data_ptr(), pos.data_ptr(), crd.data_ptr()),
                                         (vals.numel(), pos.numel(), crd.numel()), pos.dtype,
                                         vals.dtype, verdict, (vals, pos, crd), {}))

    @staticmethod
    def derived(entry, inspector: str, shape):
        """Inspector ``inspector``'s result for the tensor of ``entry`` (a
        ``lookup`` answer), a torch tensor on its device: computed from host
        copies of its index arrays the first time (one synchronization) and
        kept with the entry, so it lives as long as the tensor is unchanged."""
        cache = entry[6]
        out = cache.get(inspector)
        if out is None:
            _, pos, crd = entry[5]
            host = cache.get(None)            # the host copies, shared by its inspectors
            if host is None:
                host = cache[None] = inspectors.HostArrays(tuple(shape), pos.cpu().numpy(),
                                                           crd.cpu().numpy())
            result = inspectors.compute(inspector, host)
            out = cache[inspector] = _torch().from_numpy(result).to(pos.device)
        return out


def _inspect(pos: np.ndarray, crd: np.ndarray, parents: int, dim: int) -> tuple[bool, bool]:
    """(in bounds, canonical) of host copies of a compressed level's arrays."""
    code, _ = compressed_errors(pos, crd, parents, dim, True, True)
    if code == OK:
        return True, True
    return bool(compressed_in_bounds(pos, crd, np.int64(parents), np.int64(dim))), False


class _KernelFeed:
    """Where one kernel's parameters come from, in parameter order: per buffer
    (operand position, or -1 for the output; which array: an index into the
    operand's pointers, or an inspector's name), per size parameter
    (``SIZE``, the index it is)."""

    def __init__(self, launch: RawLaunch, params: list[tuple[int, object]]):
        self.launch = launch
        self.params = params


SIZE = -2          # _KernelFeed.params: an integer parameter, not a buffer


class FeedPlan:
    """What a device fast path knows of one kernel, whatever the operands'
    family: each input's kind, where each size comes from, the output's axes,
    which inputs must be canonical, and per index dtype the kernels' feeds
    (``_feeds``).  ``TorchFastPath`` and ``cupy_fast.CupyFastPath`` read
    their operands into it."""

    SPECIALIZE = False          # write straight-line code once the feeds are built

    def __init__(self, ck, kinds, sources, out_dims, needs_canonical, output_kind, pattern):
        self.ck = ck
        self.kinds = kinds                      # per input: ("dense", rank) or ("csr"|"csc", 2)
        self.sources = sources                  # index -> [(operand, axis), ...]
        self.out_dims = out_dims                # output axis -> (operand, axis)
        self.needs_canonical = needs_canonical  # per input
        self.output_kind = output_kind
        self.pattern = pattern                  # the operand whose pattern a PATTERN output takes
        self.feeds: dict[DType, list[_KernelFeed] | None] = {}
        self.zero: dict[DType, bool] = {}       # per index dtype: zero the output first
        # 32-bit words a value (16-bit outputs are never zeroed here: see ``of``)
        self.value_words = {DType.F32: 1, DType.F64: 2}.get(ck.dtype, 0)
        self._layout = None                     # the feeds' parameter layout, once built
        self.same_layout: set[DType] = set()    # index dtypes whose feeds have that layout
        self.call = self.generic

    @classmethod
    def of(cls, ck) -> "FeedPlan | None":
        """The fast path of CompiledKernel ``ck``, or None where it cannot apply (a
        kernel of another kind: one reading operand copies, a composite)."""
        if not hasattr(ck, "_variant"):
            return None
        v = ck._variant(DType.I32)
        program = v.program
        if program.output_kind not in (OutputKind.DENSE, OutputKind.PATTERN):
            return None
        out_vals = vals_buffer(ck.output, ck.dtype).name
        if v.array_dtype(out_vals, ck.dtype) is not ck.dtype or \
                (ck.dtype.nbytes < 4 and v.zeroes(out_vals)):
            return None          # a widened 16-bit output (rounded after): the general path
        kinds = ck.operand_kinds()
        if kinds is None:
            return None
        pattern = None
        if program.output_kind == OutputKind.PATTERN:
            pattern = ck.inputs.index(program.pattern_source)
            out_fmt = ck.formats[ck.output]
            if kinds[pattern][0] != out_fmt.name or out_fmt != ck.formats[program.pattern_source]:
                return None
        sources = ck.index_sources()
        out_dims = [sources[ix][0] for ix in ck.expression.lhs.indices]
        accepting = ck.accepts_noncanonical
        needs_canonical = tuple(n not in accepting for n in ck.inputs)
        return cls(ck, kinds, sources, out_dims, needs_canonical, program.output_kind, pattern)

    def _feeds(self, index_dtype: DType) -> list[_KernelFeed] | None:
        feeds = self.feeds.get(index_dtype, _UNSEEN)
        if feeds is not _UNSEEN:
            return feeds
        ck = self.ck
        ck.build(index_dtype)
        v = ck._variants[index_dtype]
        names = {}
        for k, n in enumerate(ck.inputs):
            kind = self.kinds[k][0]
            names[vals_buffer(n, ck.dtype).name] = (k, 0)
            if kind != "dense":
                io = level_io(n, 1, i64(0), index_dtype)
                names[io.buffer("pos").name] = (k, 1)
                names[io.buffer("crd").name] = (k, 2)
        size_names = {size_var(ix).name: ix for ix in self.sources}
        feeds = []
        for kernel, launcher in zip(v.kernels, v.launchers):
            params = []
            for p in kernel.params:
                if isinstance(p.value, Buffer):
                    if p.tensor == ck.output:
                        if p.name != vals_buffer(ck.output, ck.dtype).name:
                            feeds = None
                            break
                        params.append((-1, 0))
                    elif p.name in names:
                        params.append(names[p.name])
                    elif p.inspector and p.tensor in ck.inputs \
                            and self.kinds[ck.inputs.index(p.tensor)][0] != "dense":
                        params.append((ck.inputs.index(p.tensor), p.inspector))
                    else:
                        feeds = None
                        break
                elif p.tensor is None and p.name in size_names:
                    params.append((SIZE, size_names[p.name]))
                else:
                    feeds = None              # a level scalar: not a csr/csc/dense kernel
                    break
            if feeds is None:
                break
            feeds.append(_KernelFeed(RawLaunch(launcher), params))
        self.feeds[index_dtype] = feeds
        self.zero[index_dtype] = v.zeroes(vals_buffer(ck.output, ck.dtype).name)
        if feeds is not None:
            layout = [(f.params, f.launch.plan.lane_buffer, f.launch.plan.items_buffer)
                      for f in feeds]
            if self._layout is None:
                self._layout = layout
                self.same_layout.add(index_dtype)
                if self.SPECIALIZE:
                    from .torch_specialize import specialize
                    self.call = specialize(self, feeds) or self.generic
            elif layout == self._layout:
                self.same_layout.add(index_dtype)
        return feeds

    def __call__(self, args, validate: bool):
        return self.call(args, validate)

    def sizes_of(self, shapes) -> dict | None:
        """Each index's size read from the operands' shapes, or None where two
        operands disagree (the general path explains the mismatch)."""
        sizes = {}
        for ix, where in self.sources.items():
            first = shapes[where[0][0]][where[0][1]]
            for k, axis in where[1:]:
                if shapes[k][axis] != first:
                    return None
            sizes[ix] = first
        return sizes

    @staticmethod
    def launch_feeds(feeds, sizes, ptrs, lens, out_ptr: int, out_n: int, stream: int,
                     device: int, derived=None) -> None:
        """Enqueue every kernel of ``feeds`` with its parameters: sizes, the
        output (``out_ptr``, ``out_n`` entries), operand arrays (``ptrs`` and
        ``lens`` per operand) and inspector arrays (``derived(operand, name)``:
        a (pointer, length) pair)."""
        for feed in feeds:
            values, bl, sz = [], [], []
            for k, j in feed.params:
                if k == SIZE:
                    n = sizes[j]
                    values.append(n)
                    sz.append(n)
                elif k < 0:
                    values.append(out_ptr)
                    bl.append(out_n)
                elif j.__class__ is str:         # an inspector's array
                    ptr, n = derived(k, j)
                    values.append(ptr)
                    bl.append(n)
                else:
                    values.append(ptrs[k][j])
                    bl.append(lens[k][j])
            feed.launch.launch(values, bl, sz, stream, device)

    def generic(self, args, validate: bool):
        """The result, or None where the general path must run (per family)."""
        raise NotImplementedError


class TorchFastPath(FeedPlan):
    """``path.call(args, validate)`` (or ``path(args, validate)``): the result, or
    None where the general path must run.  ``call`` walks the plan
    (``generic``) until the first kernel is built, then runs straight-line code
    written for this kernel (``torch_specialize``).

    Ensures: a dense result is a new torch tensor; a result with the sparse
    operand's pattern is a new sparse torch tensor whose values are new and
    whose index tensors are the operand's own (no copy: they are not written).
    """

    SPECIALIZE = True

    def __init__(self, *plan):
        super().__init__(*plan)
        self.sparse = SparseOperands()
        torch = _torch()
        self.torch = torch
        self.tdtype = {DType.F16: torch.float16, DType.BF16: torch.bfloat16,
                       DType.F32: torch.float32, DType.F64: torch.float64}[self.ck.dtype]
        self.index_dtypes = {torch.int32: DType.I32, torch.int64: DType.I64}
        self.layouts = {"csr": torch.sparse_csr, "csc": torch.sparse_csc}
        # the result of an SDDMM-like kernel shares the sparse operand's index tensors
        self.make_sparse = {"csr": getattr(torch, "_sparse_csr_tensor_unsafe",
                                           torch.sparse_csr_tensor),
                            "csc": getattr(torch, "_sparse_csc_tensor_unsafe",
                                           torch.sparse_csc_tensor)}
        self._devices: dict[int, object] = {}
        self._current_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        self._stream = raw if raw is not None else \
            (lambda d: torch.cuda.current_stream(d).cuda_stream)

    def device_of(self, d: int):
        """torch's device object for CUDA device ``d`` (made once)."""
        dev = self._devices[d] = self.torch.device("cuda", d)
        return dev

    def generic(self, args, validate: bool):
        """The call, walking the plan (``torch_specialize`` writes it out)."""
        torch = self.torch
        tdtype = self.tdtype
        device = -1
        ptrs, lens, shapes = [], [], []       # per operand: (vals, pos, crd) pointers, lengths
        entries = []                          # per operand: its SparseOperands entry (sparse)
        index_dtype = None
        for k, x in enumerate(args):
            kind, rank = self.kinds[k]
            if not isinstance(x, torch.Tensor):
                return None
            d = x.get_device()
            if d < 0 or (device >= 0 and d != device):
                return None
            device = d
            shape = x.shape
            if kind == "dense":
                if x.layout is not torch.strided or x.dtype is not tdtype or len(shape) != rank \
                        or not x.is_contiguous():
                    return None
                ptrs.append((x.data_ptr(),))
                lens.append((x.numel(),))
                entries.append(None)
            else:
                if x.layout is not self.layouts[kind] or len(shape) != 2:
                    return None
                parents, dim = (shape[0], shape[1]) if kind == "csr" else (shape[1], shape[0])
                entry = self.sparse.lookup(x, kind, parents, dim, validate)
                if entry is None:
                    return None
                p, n, idx, vdt, verdict = entry[:5]
                it = self.index_dtypes.get(idx)
                if vdt is not tdtype or it is None or (index_dtype is not None
                                                       and it is not index_dtype):
                    return None
                if validate and not (verdict[0] and (verdict[1] or not self.needs_canonical[k])):
                    return None               # the general path canonicalizes or explains
                index_dtype = it
                ptrs.append(p)
                lens.append(n)
                entries.append(entry)
            shapes.append(shape)
        sizes = self.sizes_of(shapes)
        if sizes is None:
            return None
        index_dtype = index_dtype or DType.I32
        feeds = self.feeds.get(index_dtype, _UNSEEN)
        if feeds is _UNSEEN:
            feeds = self._feeds(index_dtype)
        if feeds is None or self._current_device() != device:
            return None                       # the general path switches devices
        dev = self._devices.get(device)
        if dev is None:
            dev = self.device_of(device)
        stream = self._stream(device)
        out_shape = tuple(shapes[k][axis] for k, axis in self.out_dims)
        if self.output_kind == OutputKind.DENSE:
            out = torch.empty(out_shape, dtype=tdtype, device=dev)
            out_n = out.numel()
        else:
            out_n = lens[self.pattern][0]
            out = torch.empty(out_n, dtype=tdtype, device=dev)
        out_ptr = out.data_ptr()
        if self.zero[index_dtype]:
            memset_zero(out_ptr, out_n * self.value_words, stream)

        def derived(k, name):
            arr = self.sparse.derived(entries[k], name, shapes[k])
            return arr.data_ptr(), arr.numel()

        self.launch_feeds(feeds, sizes, ptrs, lens, out_ptr, out_n, stream, device, derived)
        if self.output_kind == OutputKind.DENSE:
            return out
        _, pos, crd = self.sparse.lookup(args[self.pattern], self.kinds[self.pattern][0],
                                         *self._pattern_dims(shapes), False)[5]
        return self.make_sparse[self.kinds[self.pattern][0]](pos, crd, out, out_shape)

    def _pattern_dims(self, shapes) -> tuple[int, int]:
        rows, cols = shapes[self.pattern]
        return (rows, cols) if self.kinds[self.pattern][0] == "csr" else (cols, rows)
