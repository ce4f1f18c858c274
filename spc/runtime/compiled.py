"""``CompiledKernel``: lowering, passes, build and cache for one expression, and
the call that checks operands, allocates outputs and launches.
"""
from __future__ import annotations

import copy
import functools
import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from .. import config
from ..errors import InputError, ResourceError, SpcError
from ..formats.format import Format, resolve_format
from ..formats.inspect_numba import compressed_in_bounds, looks_valid
from ..formats.tensor import INDEX_LIMIT_32, Tensor, _is_scipy_sparse
from ..frontend import ast
from ..frontend.check import index_sizes
from ..frontend.pattern_reads import pattern_reads
from ..ir.lower import OutputKind, Program, lower, split_base, vals_buffer
from ..ir.nodes import Buffer, DType, Kernel
from ..ir.printer import format_kernel
from ..ir.verify import verify
from ..passes.widen_outputs import widen_outputs
from ..schedule import TILE_COLS, Schedule, check_applied
from . import cache
from .pattern_kept import check_pattern_kept, may_change_pattern
from .dump import Dumper
from .inspectors import derived
from .cpu_specialize import specialize as specialize_cpu
from .launch_cpu import launch
from .narrow_cpu import narrow as narrow_cpu
from .pack_rows import pack_rows
from .scratch import scratch_arrays
from .out_arg import check_out, copy_into, flat_view, out_option, overlapping
from .operands import (as_scipy_kind, from_dlpack, result_family, scipy_arrays, shape_of,
                       to_tensor, with_index_dtype)

_log = logging.getLogger("spc")

SMALL_WORK = 100_000      # below this much work (``call_work``) a call runs on one thread
ENTRY_WORK = 8            # a stored sparse entry's own cost, in multiply-adds (gather, index)


def call_work(sparse_entries: int, dense_entries: int, free: int) -> int:
    """The work of a call, in multiply-adds: each stored sparse entry costs
    ``ENTRY_WORK`` plus one per combination of the indices no sparse operand
    has (SpMM's N, SDDMM's K), each dense entry one.  Measured on this 2-core
    machine, two threads pay from about 100,000: SpMV from ~12,000 stored
    entries, SpMM at N = 8 from ~6,500, SDDMM at K = 32 from ~1,300."""
    return sparse_entries * (ENTRY_WORK + free) + dense_entries
_UNPLANNED = object()


class _PositionsOverflow(Exception):
    """An assembled output counted in an int32 variant holds more entries than
    int32 positions address (``CompiledKernel.run`` retries with int64)."""


def _overflows_int32(counts, bound: int) -> bool:
    """True when the rows' entry ``counts`` (host or device) total more than int32
    positions address; summed only where the dense ``bound`` could."""
    return bound > INDEX_LIMIT_32 and int(counts.sum(dtype=np.int64)) > INDEX_LIMIT_32


_BUILD_LOCK = threading.RLock()     # builds and fast plans are made once, whatever the threads
_NP_INDEX = {DType.I32: np.dtype(np.int32), DType.I64: np.dtype(np.int64)}
_I32 = _NP_INDEX[DType.I32]
_SIXTEEN_BIT = (DType.F16, DType.BF16)   # value types numba's launcher takes as bits
try:     # the scipy classes a pattern result may share a structure with -> the result's class
    import scipy.sparse as _sp
    _SCIPY_RESULT = {_sp.csr_matrix: _sp.csr_matrix, _sp.csr_array: _sp.csr_array,
                     _sp.csc_matrix: _sp.csc_matrix, _sp.csc_array: _sp.csc_array}
except ImportError:   # pragma: no cover - scipy is optional
    _SCIPY_RESULT = {}


@functools.lru_cache(maxsize=None)
def _named(name: str) -> Format:
    """The named 2-d format (built once: the fast call path compares with it per call)."""
    return resolve_format(name, 2)


def out_of_memory(err: Exception, name: str) -> "ResourceError | None":
    """A ResourceError standing for ``err`` when it is the host (MemoryError) or a
    GPU framework running out of memory: torch's or CuPy's OutOfMemoryError, or the
    CUDA error "out of memory" torch and CuPy raise when their caching allocators are
    off (``PYTORCH_NO_CUDA_MEMORY_CACHING=1``, ``cupy.cuda.set_allocator(None)``)."""
    if isinstance(err, SpcError):
        return None
    framework = type(err).__module__.partition(".")[0] in ("torch", "cupy", "cupy_backends")
    if (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or (framework and "out of memory" in str(err))):
        return ResourceError(f"{name}: out of memory ({err}); nothing was computed and the "
                             f"call's allocations were released")
    return None


def check_schedule_knobs(target, schedule: Schedule, kernels) -> None:
    """Refuse (ScheduleError) the knobs of ``schedule`` that the target, or the
    scheduled IR ``kernels`` of one compiled expression, give no meaning."""
    target.check_schedule(schedule, kernels)
    check_applied(schedule, kernels, target.name)


def loop_var_name(var: str, names: dict[str, str]) -> str:
    """Loop variable ``var`` with its index renamed by ``names`` (internal -> user
    or back), a blocked level's ``ix_blk`` / ``ix_in`` included."""
    if var in names:
        return names[var]
    base = split_base(var)
    if base is not None and base in names:
        return names[base] + var[len(base):]
    return var


def in_user_names(err: SpcError, display: dict[str, str]) -> SpcError:
    """``err`` with every internal name in its message spelled as the user wrote it
    (internal names that differ are mangled forms no other text contains)."""
    message = err.message
    for internal, user in display.items():
        message = message.replace(internal, user)
    if message == err.message:
        return err
    renamed = copy.copy(err)                 # keeps the type and its fields (ScheduleError.knob)
    renamed.message = message
    renamed.args = (renamed._render(),)
    return renamed


def call_option(inputs: tuple[str, ...], kwargs: dict) -> bool:
    """The ``validate`` keyword of a call (default True), taken out of ``kwargs``,
    unless a tensor is named ``validate``: then the keyword is that tensor (and
    validation stays on).  Any other tensor name, ``self`` included, is free."""
    if "validate" in inputs:
        return True
    return bool(kwargs.pop("validate", True))


def by_position(inputs: tuple[str, ...], args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``(args, kwargs)`` as one tuple of positional operands and no keywords where
    the keywords name exactly the operands after ``args`` (so that a call by
    tensor name, ``k(A=A, x=x)``, takes the same fast path as ``k(A, x)``);
    else unchanged (``bind`` then explains what is missing or doubled)."""
    rest = inputs[len(args):]
    if len(kwargs) != len(rest) or not all(n in kwargs for n in rest):
        return args, kwargs
    return tuple(args) + tuple(kwargs[n] for n in rest), {}


def prepared_input(kernel, name: str | None, candidates: list[str]) -> str:
    """The internal name of the input ``kernel.prepare(operand, name)`` prepares:
    ``name`` (a user's input name), or without one the only ``candidates``
    entry; an InputError where neither says which."""
    if name is None:
        if len(candidates) != 1:
            raise InputError(f"{kernel.name}: prepare(operand, name=...) must name the "
                             f"input, one of {', '.join(kernel.input_names)}")
        return candidates[0]
    users = {u: n for n, u in zip(kernel.inputs, kernel.input_names)}
    if name not in users:
        raise InputError(f"{kernel.name}: prepare: no input named {name!r} (inputs: "
                         f"{', '.join(kernel.input_names)})")
    return users[name]


def bind_operands(name: str, inputs: tuple[str, ...], args, kwargs) -> dict[str, object]:
    """Operands by name from a call's positional (``inputs`` order) and keyword arguments."""
    if len(args) > len(inputs):
        raise InputError(f"{name} takes {len(inputs)} operands "
                         f"({', '.join(inputs)}), got {len(args)}")
    bound = dict(zip(inputs, args))
    for k, v in kwargs.items():
        if k not in inputs:
            raise InputError(f"{name} has no operand named '{k}' "
                             f"(operands: {', '.join(inputs)})")
        if k in bound:
            raise InputError(f"operand '{k}' given twice")
        bound[k] = v
    missing = [n for n in inputs if n not in bound]
    if missing:
        raise InputError(f"{name} is missing operand(s) {', '.join(missing)}")
    return bound


class _CompressedView:
    """An spc Tensor in csr or csc seen through scipy's attribute names, for the
    fast call path (``of`` returns the Tensor itself when it is in another format)."""
    __slots__ = ("format", "shape", "data", "indices", "indptr")

    @staticmethod
    def of(t: Tensor, kind: str):
        if t.ndim != 2 or t.format != _named(kind):
            return t
        v = _CompressedView()
        v.format, v.shape, v.data = kind, t.shape, t.vals
        v.indptr, v.indices = t.arrays[1]["pos"], t.arrays[1]["crd"]
        return v


@dataclass(frozen=True, slots=True)
class _FastPlan:
    """What the fast call path precomputes for a kernel (see ``_fast_plan``)."""
    operands: tuple[tuple[str, int, bool], ...]   # (kind, rank, needs_canonical) per input
    checks: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]  # index -> (operand, axis) that must agree
    first: tuple[tuple[int, int], ...]            # (operand, axis) giving each size, in ``sizes`` order
    sizes: tuple[str, ...]                        # the kernel's indices
    out_dims: tuple[int, ...]                     # output axes, as positions in ``sizes``
    free: tuple[int, ...]                         # sizes of indices no sparse operand has
    launches: tuple[tuple[int, tuple[tuple[int, str], ...], tuple[int, ...]], ...]
    parallel: bool                                # may use more than one thread
    pattern: int = -1                             # OutputKind.PATTERN: the operand whose
                                                  # pattern the output has (else -1)
    inspected: tuple[int, ...] = ()               # operands inspectors read: spc Tensors
                                                  # only (their results are kept on them)
    zero: bool = True                             # the output must start at zero
    assembled: str = ""                           # OutputKind.ASSEMBLED: the output's
                                                  # format (csr or csc), counted by the
                                                  # first kernel, filled by the second
    drops_zeros: bool = False                     # the fill writes each row's kept count


@functools.lru_cache(maxsize=None)
def _scipy_fields(cls) -> "dict | None":
    """The instance fields (other than the arrays and shape) scipy's constructor
    gives a ``cls`` (csr/csc matrix or array), when they are exactly the ones
    ``_scipy_result`` sets; None when this scipy stores anything else, and the
    public constructor must be used."""
    probe = cls((np.zeros(1, np.float32), np.zeros(1, np.int32), np.array([0, 1], np.int32)),
                shape=(1, 1))
    if set(vars(probe)) != {"_shape", "maxprint", "data", "indices", "indptr"}:
        return None
    return {"maxprint": probe.maxprint}


def _scipy_result(cls, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape):
    """``cls((data, indices, indptr), shape=shape)`` without the constructor's
    format check (~8 us; ~0.5 us this way): the fast path has validated the
    structure or the caller waived validation, as for any other result."""
    fields = _scipy_fields(cls)
    if fields is None:
        return cls((data, indices, indptr), shape=shape)
    out = cls.__new__(cls)
    out.__dict__.update(fields, _shape=shape, data=data, indices=indices, indptr=indptr)
    return out


@dataclass
class _Variant:
    program: Program
    kernels: tuple[Kernel, ...]        # after the target's passes
    sources: tuple[str, ...]
    launchers: list | None = None

    def array_dtype(self, buffer: str, default: DType) -> DType:
        """The type of the array the kernels take as ``buffer`` (an output
        widen_outputs holds in float32), ``default`` if no kernel takes it."""
        for k in self.kernels:
            for p in k.params:
                if p.name == buffer:
                    return p.value.dtype
        return default

    def zeroes(self, buffer: str) -> bool:
        """Whether output ``buffer`` must start at zero: unless the first kernel
        stores every entry of it once (``Kernel.overwrites``); later kernels,
        launched after it in order, add to what it stored."""
        return not self.kernels or buffer not in self.kernels[0].overwrites


class KernelCall:
    """``kernel(*args, **kwargs)``: ``self._call(args, kwargs)``, with running out of
    memory reported as an spc.ResourceError.  Any keyword names a tensor (``self``
    is positional only)."""

    name: str

    def __call__(self, /, *args, **kwargs):
        """Run the kernel on its operands and return the result.

        Operands come positionally, in ``input_names`` order (a named kernel:
        ``spmv(A, x)``, ``spmm(A, B)``, ``sddmm(A, X, Y)``), or by tensor name
        (``k(A=A, x=x, b=b)``), or both.  Each may be a numpy array, a
        scipy.sparse matrix or array, an spc Tensor (also one returned by
        ``prepare``), a Python number or nested list, and on ``target="cuda"``
        a CuPy array, a ``cupyx.scipy.sparse`` matrix or a torch tensor.
        ``validate=False`` (a keyword, unless a tensor is named ``validate``)
        skips the storage checks: the caller then promises in-bounds,
        canonical operands.

        Requires: operands whose shapes agree with the expression (a
        ``ShapeError`` otherwise), value types the kernel computes in (see the
        dtype policy; a ``DTypeError`` otherwise) and well-formed storage (an
        ``InputError`` naming the operand otherwise).
        Ensures: the result in the operands' family (the return-type rules):
        torch in, torch out; else scipy in, scipy out for a sparse result;
        a dense result is a numpy array (a numpy scalar for a 0-d output); a
        sparse result with no numpy or scipy form is an spc Tensor.  Running
        out of host or GPU memory raises ``ResourceError``.
        """
        try:
            return self._call(args, kwargs)
        except Exception as err:
            raise out_of_memory(err, self.name) or err


class KernelSequence(KernelCall):
    """A call that runs several kernels in order (``kernels``: CompiledKernels or
    kernels built like them); its ``ir`` and ``source`` are theirs, in order."""

    kernels: list

    @property
    def ir(self) -> str:
        return "\n".join(k.ir for k in self.kernels)

    @property
    def source(self) -> str:
        return "\n".join(k.source for k in self.kernels)

    @property
    def schedules(self) -> tuple:
        """Each kernel's ``schedule``, in order."""
        return tuple(k.schedule for k in self.kernels)


class CompiledKernel(KernelCall):
    """A compiled expression.  Call it with operands (positionally in
    ``self.inputs`` order, or by name); see ``spc.compile``.
    """

    def __init__(self, assign: ast.Assignment, formats: dict[str, Format], target,
                 dtype: DType, schedule: Schedule, name: str, inputs: tuple[str, ...],
                 separate: frozenset[str] = frozenset(),
                 display: dict[str, str] | None = None, check_knobs: bool = True,
                 accumulate: DType | None = None, lowering=None):
        """``assign``, ``formats``, ``inputs`` and ``schedule.order`` use spc's
        internal names (frontend.names); ``display`` maps the internal names that
        differ to the user's, which keyword calls and messages use.
        ``check_knobs``: refuse schedule knobs that steer nothing in this kernel
        (a composite kernel checks them over all its parts instead).
        ``accumulate``: the type sums run in (None: ``dtype.widened``).
        ``lowering(index_dtype)``: the lowered Program to run instead of
        lowering ``assign`` (a fused program: ``assign`` is then its signature,
        the output and every operand, which sizes and binding read)."""
        self._lowering = lowering
        self.display = dict(display or {})
        self.input_names = tuple(self.display.get(n, n) for n in inputs)
        self.expression = assign
        self.formats = formats
        self.target = target
        self.dtype = dtype
        self.accumulate = accumulate
        self._schedule = schedule       # as asked, in internal names
        self.name = name
        self.inputs = inputs
        self.separate = separate        # tensors whose terms get kernels of their own
        self._variants: dict[DType, _Variant] = {}
        # facts the call path needs, derived once
        self._np_dtype = dtype.np
        self._sparse_indices = frozenset(
            ix for a in assign.accesses() if not formats[a.tensor].is_dense for ix in a.indices)
        # operands whose pattern the result depends on, in a format that may fill it
        self.pattern_reads = frozenset(n for n in pattern_reads(assign)
                                       if n in formats and may_change_pattern(formats[n]))
        self._max_threads = schedule.threads or config.num_threads()
        self._plan = _UNPLANNED
        self._fast = self._fast_call      # the CPU fast call: straight-line once planned
        self._device_fast = _UNPLANNED
        self._variant(DType.I32)           # lower, render (and checks) eagerly
        if check_knobs:
            check_schedule_knobs(target, schedule, self.lowered_kernels())

    # -- what it is -----------------------------------------------------------
    @property
    def ir(self) -> str:
        """The scheduled loop IR of every kernel, as text."""
        return "\n".join(format_kernel(k) for k in self._variant(DType.I32).kernels)

    @property
    def source(self) -> str:
        """The generated source (LLVM IR or CUDA C) of every kernel."""
        return "\n".join(self._variant(DType.I32).sources)

    @property
    def accepts_noncanonical(self) -> frozenset[str]:
        """Inputs whose unsorted or duplicate entries every kernel sums as scipy
        does (from the IR: ``Kernel.accepts_noncanonical``); the call path
        canonicalizes every other sparse input that is not canonical."""
        refused = {p.tensor for k in self._variant(DType.I32).kernels for p in k.params
                   if p.tensor not in k.accepts_noncanonical}
        return frozenset(n for n in self.inputs if n not in refused)

    @property
    def output(self) -> str:
        """The name of the output tensor (spc's internal name)."""
        return self.expression.lhs.tensor

    @property
    def schedule(self) -> Schedule:
        """The schedule this kernel runs: the one asked for, with spc's compile-time
        choices filled in (the loop order; CPU threads; determinism).  Launch
        knobs left None are chosen per call from its sizes: once a call has run,
        they report the last call's choices."""
        s = self._schedule
        order = tuple(loop_var_name(ix, self.display)
                      for ix in self._variant(DType.I32).program.index_order)
        s = s.replace(reorder_rows=s.reorder_rows or "none", split_rows=s.split_rows or False)
        if s.tile is not None:
            s = s.replace(tile=tuple((loop_var_name(ix, self.display), n) for ix, n in s.tile))
        if self.target.name == "cpu":
            from ..passes.register_tile import register_tiles
            tiles = [w for k in self.lowered_kernels() for w in register_tiles(k)]
            from ..threads import cap
            return s.replace(order=order, deterministic=s.deterministic is not False,
                             tile_cols=max(tiles) if tiles and max(tiles) in TILE_COLS
                             else s.tile_cols,
                             threads=min(self._max_threads, cap() or self._max_threads)
                             if s.parallel else 1)
        from ..passes.stage_tiles import staged
        from ..passes.tensorize import tensorized, uses_tf32
        tiles = [w for k in self.lowered_kernels() if (w := tensorized(k))]
        return s.replace(order=order, deterministic=bool(s.deterministic),
                         tensor_cores=bool(tiles), tile_cols=max(tiles) if tiles else None,
                         tf32=any(uses_tf32(k) for k in self.lowered_kernels()),
                         stage_tiles=any(staged(k) for k in self.lowered_kernels()),
                         **{k: v for k, v in self.launch_choices().items()
                            if getattr(s, k) is None
                            and not (k == "flat" and v and s.split is not None)})

    def launch_choices(self) -> dict[str, object]:
        """The launch knobs the last call's launches took, by name (the first
        kernel to take a knob decides it; empty before a call)."""
        out: dict[str, object] = {}
        for v in self._variants.values():
            for launcher in v.launchers or ():
                for knob, value in getattr(launcher, "chosen", dict)().items():
                    out.setdefault(knob, value)
        return out

    def __repr__(self) -> str:
        return f"spc.CompiledKernel({self.expression.source!r}, target={self.target.name})"

    def lowered_kernels(self) -> tuple:
        """The scheduled IR kernels (int32 indices) this kernel runs."""
        return self._variant(DType.I32).kernels

    def build(self, index_dtype: DType = DType.I32) -> "CompiledKernel":
        """Build (or fetch from the cache) the binaries now rather than at first call.
        Ensures: a variant's launchers are made once, however many threads call at
        once (launchers replaced later would free the code a fast plan points at)."""
        with _BUILD_LOCK:
            return self._build(index_dtype)

    def _build(self, index_dtype: DType) -> "CompiledKernel":
        v = self._variant(index_dtype)
        if v.launchers is None:
            launchers = []
            for kernel, source in zip(v.kernels, v.sources):
                key = cache.cache_key(format_kernel(kernel), self.target.cache_key())
                launchers.append(cache.load_or_build(
                    key, lambda k=kernel, s=source: self.target.build(s, k),
                    lambda binary, k=kernel: self.target.load(binary, k, self._schedule),
                    self.target.recognise))
            v.launchers = launchers
            if _log.isEnabledFor(logging.INFO):
                _log.info("%s (%s, %s, %s indices): schedule %s", self.name, self.target.name,
                          self.dtype.value, index_dtype.value, self.schedule)
        return self

    def _variant(self, index_dtype: DType) -> _Variant:
        v = self._variants.get(index_dtype)
        if v is not None:
            return v
        dump = Dumper.for_kernel(f"{self.name}_{index_dtype.value}")
        dump.write("expression", f"{self.expression.source}\n{self.expression!r}\n"
                   f"formats: { {k: str(f) for k, f in sorted(self.formats.items())} }\n")
        program = self._lowering(index_dtype) if self._lowering is not None else lower(
            self.expression, self.formats, name=self.name, order=self._schedule.order,
            value_dtype=self.dtype, index_dtype=index_dtype, separate=self.separate,
            sum_dtype=self.accumulate)
        kernels, sources = [], []
        for kernel in program.kernels:
            verify(kernel, "lower")
            dump.write(f"{kernel.name}.00_lower.ir", format_kernel(kernel))
            for n, pass_ in enumerate(self.target.pipeline(self._schedule), start=1):
                kernel = verify(pass_(kernel), pass_.__name__)
                dump.write(f"{kernel.name}.{n:02d}_{pass_.__name__}.ir", format_kernel(kernel))
            source = self.target.render(kernel)
            dump.write(f"{kernel.name}.source", source)
            kernels.append(kernel)
            sources.append(source)
        out_vals = vals_buffer(self.output, self.dtype).name
        held = {p.value.dtype for k in kernels for p in k.params if p.name == out_vals}
        if len(held) > 1:
            # kernels of one program share the output array: all hold it in the widest type
            widest = max(held, key=lambda dt: dt.nbytes)
            kernels = [verify(widen_outputs(k, to=widest), "widen_outputs") for k in kernels]
            sources = [self.target.render(k) for k in kernels]
        v = _Variant(program, tuple(kernels), tuple(sources))
        self._variants[index_dtype] = v
        return v

    # -- calling -------------------------------------------------------------------
    def prepare(self, operand, name: str | None = None) -> Tensor:
        """``operand`` made ready for repeated calls: converted once to its input's
        format (on the GPU for target='cuda') and every inspector the schedule
        needs (``reorder_rows``'s permutation) run on it.  Pass the result in the
        operand's place; calls reuse the inspectors' results.

        ``name``: the input it stands for (by default the only sparse input, or
        the one inspectors read).  Ensures: the result is an spc Tensor whose
        ``inspect_seconds`` is the time its inspectors took (0.0 when the schedule
        needs none) and ``prepare_seconds`` the whole preparation's.
        """
        t0 = time.perf_counter()
        kernels = self.lowered_kernels()
        wanted = [(p.tensor, p.inspector) for k in kernels for p in k.params if p.inspector]
        internal = prepared_input(self, name, list(dict.fromkeys(n for n, _ in wanted)) or
                                  [n for n in self.inputs if not self.formats[n].is_dense])
        shown = self.display.get(internal, internal)
        device_operands = getattr(self.target, "operands", None)
        if device_operands is not None:
            ops = device_operands()
            t = ops.to_tensor(operand, ops.family(operand), self.formats[internal],
                              self._np_dtype, shown, True)
        else:
            t = to_tensor(operand, self.formats[internal], self._np_dtype, shown, True)
        if internal in self.pattern_reads:
            check_pattern_kept(operand, t, self.formats[internal], shown)
        if t is operand:                      # an spc Tensor already in the format: a copy
            t = Tensor(t.shape, t.format, t.arrays, t.vals, validate=False)
        t.inspect_seconds = 0.0
        for tensor, inspector in wanted:
            if tensor == internal:
                derived(t, inspector, shown)
        t.prepare_seconds = time.perf_counter() - t0
        return t

    def bind(self, args, kwargs) -> dict[str, object]:
        """Operands by internal name from a call's positional and keyword arguments
        (keywords are the callers' names)."""
        bound = bind_operands(self.name, self.input_names, args, kwargs)
        return {n: bound[u] for n, u in zip(self.inputs, self.input_names)}

    def operand_kinds(self) -> tuple[tuple[str, int], ...] | None:
        """Per input, ("dense", rank) for a dense format in identity order or
        (name, 2) for the named csr / csc format; None when an input has any
        other format (the fast call paths take these kinds only)."""
        kinds = []
        for n in self.inputs:
            fmt = self.formats[n]
            if fmt.is_dense and fmt.identity_order:
                kinds.append(("dense", fmt.rank))
            elif fmt.name in ("csr", "csc") and fmt == _named(fmt.name):
                kinds.append((fmt.name, 2))
            else:
                return None
        return tuple(kinds)

    def index_sources(self) -> dict[str, list[tuple[int, int]]]:
        """index -> (input position, axis) of every right-hand access that uses it,
        left to right: the operand shapes a call reads each index's size from."""
        position = {n: k for k, n in enumerate(self.inputs)}
        sources: dict[str, list[tuple[int, int]]] = {}
        for acc in self.expression.accesses():
            for axis, ix in enumerate(acc.indices):
                sources.setdefault(ix, []).append((position[acc.tensor], axis))
        return sources

    def _fast_plan(self) -> "_FastPlan | None":
        """How the fast path finds each launch argument, or None where it cannot apply.

        The fast path covers dense outputs, and outputs with the pattern of a
        csr/csc operand in the same format (SDDMM), whose operands are
        C-contiguous numpy arrays (dense operands) or scipy CSR/CSC matrices or
        spc Tensors (csr/csc operands) of the kernel's dtype with int32 indices:
        the common case of inference loops, where the general path's conversions
        would cost more than small kernels do.  It covers csr/csc outputs
        assembled by a count kernel and a fill kernel (SpGEMM) too, when every
        operand is a scipy matrix (``_assembled_call``).  Anything else takes
        the general path.
        """
        v = self._variants.get(DType.I32)
        if v is None or v.launchers is None \
                or v.array_dtype(vals_buffer(self.output, self.dtype).name, self.dtype) \
                is not self.dtype:           # a widened output (rounded after): general path
            return None
        program = v.program
        pattern = -1
        assembled = ""
        out_fmt = self.formats[self.output]
        if program.output_kind == OutputKind.PATTERN:
            src = program.pattern_source
            if src not in self.inputs or len(program.kernels) != 1 \
                    or self.formats[self.output] != self.formats[src]:
                return None
            pattern = self.inputs.index(src)
        elif program.output_kind == OutputKind.ASSEMBLED:
            if len(program.kernels) != 2 or out_fmt.name not in ("csr", "csc") \
                    or out_fmt != _named(out_fmt.name):
                return None
            assembled = out_fmt.name
        elif program.output_kind != OutputKind.DENSE:
            return None
        if any(getattr(launcher, "address", None) is None for launcher in v.launchers):
            return None
        kinds = self.operand_kinds()
        if kinds is None:
            return None
        if pattern >= 0 and kinds[pattern][0] not in ("csr", "csc"):
            return None
        launches = []
        for kernel, launcher in zip(v.kernels, v.launchers):
            get = []
            for p in kernel.params:
                if not isinstance(p.value, Buffer):
                    continue
                name = p.name
                if p.inspector and p.tensor in self.inputs:
                    get.append((self.inputs.index(p.tensor), "@" + p.inspector))
                    continue
                if name == f"{self.output}_vals":
                    get.append((-1, "out"))
                    continue
                if assembled and name in (f"{self.output}1_pos", f"{self.output}1_crd",
                                          f"{self.output}1_nnz"):
                    get.append((-1, name[len(self.output) + 2:]))     # pos, crd, nnz
                    continue
                for k, n in enumerate(self.inputs):
                    if name == f"{n}_vals":
                        get.append((k, "data" if kinds[k][0] != "dense" else "arr"))
                    elif name == f"{n}1_pos":
                        get.append((k, "indptr"))
                    elif name == f"{n}1_crd":
                        get.append((k, "indices"))
                    else:
                        continue
                    break
                else:
                    return None
            ints = tuple(p.name[len("size_"):] for p in kernel.params
                         if not isinstance(p.value, Buffer))
            launches.append((launcher.address, tuple(get), ints))
        sources = self.index_sources()
        # Operands every kernel reads correctly when unsorted or duplicated (the IR
        # says so: Kernel.accepts_noncanonical) need in-bounds entries only; the
        # others must be canonical, or the call takes the general path, which
        # canonicalizes them.
        accepting = self.accepts_noncanonical
        operands = tuple((kind, rank, n not in accepting) for n, (kind, rank) in
                         zip(self.inputs, kinds))
        sizes = tuple(sorted(sources))
        return _FastPlan(
            operands=operands,
            checks=tuple((ix, tuple(where)) for ix, where in sources.items() if len(where) > 1),
            first=tuple(sources[ix][0] for ix in sizes),
            sizes=sizes,
            out_dims=tuple(sizes.index(ix) for ix in self.expression.lhs.indices),
            free=tuple(sizes.index(ix) for ix in sizes if ix not in self._sparse_indices),
            launches=tuple((addr, get, tuple(sizes.index(ix) for ix in ints))
                           for addr, get, ints in launches),
            parallel=self._schedule.parallel and self._max_threads > 1,
            pattern=pattern,
            assembled=assembled,
            drops_zeros=program.drops_zeros,
            zero=v.zeroes(vals_buffer(self.output, self.dtype).name),
            inspected=tuple(sorted({k for _, get, _ in launches for k, what in get
                                    if what.startswith("@")})))

    def _fast_call(self, args, validate: bool, out=None):
        """The result, or None when the fast path does not apply (see _fast_plan;
        ``out=`` calls take the general path here)."""
        plan = self._plan
        if plan is None or out is not None:
            return None
        dtype = self._np_dtype
        ops = list(args)
        for k in plan.inspected:
            if type(ops[k]) is not Tensor:
                return None          # inspected per call: the general path does it
        sparse_work = dense_work = 0
        shapes = []
        for k, (kind, rank, canonical) in enumerate(plan.operands):
            x = ops[k]
            if kind == "dense":
                if type(x) is not np.ndarray or x.dtype != dtype or x.ndim != rank \
                        or not x.flags.c_contiguous:
                    return None
                dense_work += x.size
                shapes.append(x.shape)
                continue
            if type(x) is Tensor:
                x = ops[k] = _CompressedView.of(x, kind)
                if type(x) is not _CompressedView:
                    return None
            elif getattr(x, "format", None) != kind or not _is_scipy_sparse(x) \
                    or (k == plan.pattern and type(x) not in _SCIPY_RESULT):
                return None
            crd, pos, data = x.indices, x.indptr, x.data
            if data.dtype != dtype or crd.dtype != _I32 or pos.dtype != _I32 \
                    or len(data) != len(crd):
                return None
            sparse_work += len(crd)
            shape = x.shape                  # (a property on scipy matrices: read once)
            shapes.append(shape)
            if validate:
                rows, cols = shape
                parents, dim = (rows, cols) if kind == "csr" else (cols, rows)
                if canonical or type(x) is _CompressedView:   # spc Tensors are canonical
                    ok = looks_valid(pos, crd, parents, dim, True, True)
                else:
                    ok = compressed_in_bounds(pos, crd, parents, dim)
                if not ok:
                    return None      # malformed or non-canonical: the general path explains
        for ix, where in plan.checks:
            k0, a0 = where[0]
            first = shapes[k0][a0]
            for k, axis in where[1:]:
                if shapes[k][axis] != first:
                    return None          # the general path explains the mismatch
        sizes = [shapes[k][axis] for k, axis in plan.first]
        if plan.assembled:
            return self._assembled_call(plan, args, ops, sizes, sparse_work)
        new = np.zeros if plan.zero else np.empty
        if plan.pattern >= 0:
            out = new(len(ops[plan.pattern].indices), dtype=dtype)
        else:
            out = new([sizes[d] for d in plan.out_dims], dtype=dtype)
        nthreads = 1
        if plan.parallel:
            free = 1
            for d in plan.free:
                free *= sizes[d]
            if call_work(sparse_work, dense_work, free) >= SMALL_WORK:
                nthreads = self._max_threads
        flat = out.reshape(-1)
        bits = self.dtype in _SIXTEEN_BIT         # numba's launcher sees 16-bit floats' bits
        for address, get, ints in plan.launches:
            bufs = [flat if k < 0 else ops[k] if what == "arr"
                    else derived(args[k], what[1:], self.input_names[k]) if what[0] == "@"
                    else getattr(ops[k], what) for k, what in get]
            if bits:
                bufs = [b.view(np.uint16) if b.dtype == dtype else b for b in bufs]
            launch(address, nthreads, tuple(bufs), tuple([sizes[d] for d in ints]))
        if plan.pattern >= 0:
            return self._pattern_result(args[plan.pattern], ops[plan.pattern], out,
                                        tuple(sizes[d] for d in plan.out_dims))
        return out[()] if out.ndim == 0 else out

    def _assembled_call(self, plan: _FastPlan, args, ops, sizes, sparse_work: int):
        """``_fast_call`` for an assembled csr/csc output, every operand validated:
        count each row's entries, prefix-sum, fill, pack the rows where the fill
        dropped zeros; a scipy matrix (array, if every operand is one) as the
        general path returns.  None (the general path runs) when an operand is
        not a scipy matrix, or when the output holds more entries than int32
        positions address (the general path then runs with int64 indices)."""
        if any(type(x) not in _SCIPY_RESULT for x in ops):
            return None
        shape = tuple(sizes[d] for d in plan.out_dims)
        parents, dim = shape if plan.assembled == "csr" else shape[::-1]
        if max(parents + 1, dim) > INDEX_LIMIT_32:
            return None
        nthreads = 1
        if plan.parallel and call_work(sparse_work, 0, 1) >= SMALL_WORK:
            nthreads = self._max_threads
        out = {"pos": np.zeros(parents + 1, dtype=_I32)}
        bits = self.dtype in _SIXTEEN_BIT         # numba's launcher sees 16-bit floats' bits
        dtype = self._np_dtype

        def run(address, get, ints):
            bufs = [out[what] if k < 0 else getattr(ops[k], what) for k, what in get]
            if bits:
                bufs = [b.view(np.uint16) if b.dtype == dtype else b for b in bufs]
            launch(address, nthreads, tuple(bufs), tuple([sizes[d] for d in ints]))

        (count, fill) = plan.launches
        run(*count)
        pos = out["pos"]
        if _overflows_int32(pos, parents * dim):
            return None
        np.cumsum(pos, out=pos)
        nnz = int(pos[-1])
        out["crd"] = crd = np.empty(nnz, dtype=_I32)
        out["out"] = vals = np.empty(nnz, dtype=dtype)
        if plan.drops_zeros:
            out["nnz"] = np.zeros(parents, dtype=_I32)
        run(*fill)
        if plan.drops_zeros:
            pos, crd, vals = pack_rows(pos, out["nnz"], crd, vals)
        cls = getattr(_sp, f"{plan.assembled}_{'array' if scipy_arrays(ops) else 'matrix'}")
        return _scipy_result(cls, vals, crd, pos, shape)

    def _pattern_result(self, given, src, vals: np.ndarray, shape: tuple[int, ...]):
        """The fast path's result with the pattern of operand ``given`` (``src``: it,
        or its _CompressedView): what the general path returns (a Tensor for a
        Tensor, else a scipy csr/csc matrix, or array for an array), with ``vals`` as values and
        copies of the operand's index arrays, so that the result is independent
        of the operand (a copy costs ~1 us per 10^5 entries)."""
        if type(given) is Tensor:
            arrays = [{k: a.copy() for k, a in lv.items()} for lv in given.arrays]
            return Tensor(shape, given.format, arrays, vals, validate=False)
        return _scipy_result(_SCIPY_RESULT[type(src)], vals, src.indices.copy(),
                             src.indptr.copy(), shape)

    def __call__(self, /, *args, **kwargs):
        paths = self._device_fast
        if kwargs or paths is None or paths is _UNPLANNED or len(args) != len(self.inputs):
            return KernelCall.__call__(self, *args, **kwargs)
        try:
            path = paths.by_type.get(args[0].__class__) if args else None
            out = path.call(args, True) if path is not None else paths.call(args, True)
            return out if out is not None else self.run(self.bind(args, {}), True)
        except Exception as err:
            raise out_of_memory(err, self.name) or err

    __call__.__doc__ = KernelCall.__call__.__doc__ + """
        A device kernel called positionally with every operand, once its fast
        paths are made, goes straight to them: the steady-state call of a GPU
        kernel on torch or CuPy operands crosses no other Python frame (~1 us
        of host time).
        """

    def _call(self, args, kwargs):
        validate = call_option(self.input_names, kwargs)
        if not kwargs:
            out = self.fast(args, validate)
            if out is not None:
                return out
            return self.run(self.bind(args, kwargs), validate)
        out = out_option(self.input_names, kwargs)
        args, kwargs = by_position(self.input_names, args, kwargs)
        if not kwargs:
            result = self.fast(args, validate, out)
            if result is not None:
                return result
        return self.run(self.bind(args, kwargs), validate, out=out)

    def fast(self, args: tuple, validate: bool = True, out=None):
        """The result of a call with positional operands ``args`` through the
        target's fast path, or None where that path does not take them (the
        caller then takes ``run``).  A result means every typed operand has the
        kernel's value type exactly: the fast paths convert nothing.  ``out``:
        the caller's out= array (the CPU's specialized path writes into a
        fitting numpy array; any other takes ``run``, which explains a misfit)."""
        if len(args) != len(self.inputs):
            return None
        if getattr(self.target, "operands", None) is not None:    # a device target (cuda)
            if out is not None:
                return None
            if self._device_fast is _UNPLANNED:
                self._device_fast = self.target.fast_path(self)
            return None if self._device_fast is None else self._device_fast.call(args, validate)
        if self._plan is _UNPLANNED:
            with _BUILD_LOCK:                    # one plan, made once, then published
                if self._plan is _UNPLANNED:
                    self.build()
                    plan = self._fast_plan()
                    self._fast = self._fast_call if plan is None else (
                        specialize_cpu(self, plan, _CompressedView, _SCIPY_RESULT,
                                       call_work, SMALL_WORK) or self._fast_call)
                    self._plan = plan
        if out is not None:
            return self._fast(args, validate, out)
        return self._fast(args, validate)

    def run(self, bound: dict[str, object], validate: bool = True, out=None):
        """The result for ``bound``, every operand by internal name (``bind``'s
        result): the general call path, for every operand family and target.
        ``out``: a dense array to write the result into and return
        (``runtime/out_arg.py`` says which it takes)."""
        device_operands = getattr(self.target, "operands", None)
        if device_operands is not None:        # a device target (cuda) handles its operands
            return device_operands().call(self, bound, validate, out=out)
        bound = {n: from_dlpack(x) for n, x in bound.items()}
        shapes = {n: shape_of(x) for n, x in bound.items()}
        sizes = index_sizes(self.expression, shapes, self.display)
        tensors = {n: to_tensor(x, self.formats[n], self._np_dtype, self.display.get(n, n),
                                validate)
                   for n, x in bound.items()}
        for n in self.pattern_reads & bound.keys():
            check_pattern_kept(bound[n], tensors[n], self.formats[n], self.display.get(n, n))
        index_dtype = self._pick_index_dtype(tensors, sizes, counted=True)
        try:
            result = self._run_indexed(index_dtype, tensors, sizes, out)
        except _PositionsOverflow:      # counted: more entries than int32 positions hold
            result = self._run_indexed(DType.I64, tensors, sizes, out)
        return out if out is not None else self._to_family(result, bound, tensors)

    def _run_indexed(self, index_dtype: DType, tensors, sizes, out) -> Tensor:
        """``_run`` of the variant with ``index_dtype`` indices (built if need be),
        the operands' index arrays widened to int64 for an int64 variant."""
        np_index = _NP_INDEX[index_dtype]
        if index_dtype is DType.I64:
            tensors = {n: with_index_dtype(t, np_index) for n, t in tensors.items()}
        v = self._variants.get(index_dtype)
        if v is None or v.launchers is None:
            self.build(index_dtype)
            v = self._variants[index_dtype]
        return self._run(v, tensors, sizes, np_index, out=out)

    def _pick_index_dtype(self, tensors: dict[str, Tensor], sizes: dict[str, int],
                          counted: bool = False) -> DType:
        """int64 where an operand has int64 indices or the sparse output may hold
        more entries than int32 positions address; with ``counted`` (the caller
        retries on ``_PositionsOverflow``), an assembled output whose dimensions
        fit int32 keeps int32 however large its dense bound: ``_run`` checks the
        counted total before it fills."""
        if any(not t.format.is_dense and t.index_dtype == np.int64 for t in tensors.values()):
            return DType.I64
        out_fmt = self.formats[self.output]
        if not out_fmt.is_dense:
            dims = [sizes[ix] for ix in self.expression.lhs.indices]
            if math.prod(dims) > INDEX_LIMIT_32:
                if counted and max(dims) < INDEX_LIMIT_32 and \
                        self._variant(DType.I32).program.output_kind == OutputKind.ASSEMBLED:
                    return DType.I32
                return DType.I64
        return DType.I32

    def _threads(self, tensors: dict[str, Tensor], sizes: dict[str, int]) -> int:
        if not self._schedule.parallel or self._max_threads == 1:
            return 1
        free = 1
        for ix, s in sizes.items():
            if ix not in self._sparse_indices:
                free *= s
        sparse = sum(len(t.vals) for t in tensors.values() if not t.format.is_dense)
        dense = sum(len(t.vals) for t in tensors.values() if t.format.is_dense)
        return 1 if call_work(sparse, dense, free) < SMALL_WORK else self._max_threads

    def _run(self, v: _Variant, tensors, sizes, np_index, xp=np,
             array_dtype=lambda dt: dt.np, narrow=None, out=None, device_id=None,
             as_device_array=None) -> Tensor:
        """Allocate the output with the array module ``xp`` (numpy, or cupy for a
        device target), launch the kernels and return the output Tensor.
        ``array_dtype(dt)``: the dtype of ``xp``'s arrays of values of DType ``dt``;
        ``narrow(a, dt)``: a float32 or float64 array ``a`` rounded to ``dt``
        (default: the CPU's IR kernel, runtime/narrow_cpu).  ``out``: the
        caller's dense array (on GPU ``device_id``, None for the host), checked
        here and written with the result (``as_device_array`` views a torch
        CUDA tensor as a CuPy array)."""
        program = v.program
        out_name = self.output
        out_fmt = self.formats[out_name]
        out_shape = tuple(sizes[ix] for ix in self.expression.lhs.indices)
        if out is not None:
            check_out(out, result=self.display.get(out_name, out_name), fmt=out_fmt,
                      shape=out_shape, dtype=self._np_dtype, device_id=device_id)
        arrays: dict[str, np.ndarray] = {}
        ints = {f"size_{ix}": n for ix, n in sizes.items()}
        for name, t in tensors.items():
            arrays[vals_buffer(name, self.dtype).name] = t.vals
            for lvl, level_arrays in enumerate(t.arrays):
                for arr_name, arr in level_arrays.items():
                    arrays[f"{name}{lvl}_{arr_name}"] = arr
            if not t.format.is_dense:
                ints.update(t.scalars(name))
        arrays.update(scratch_arrays(v.kernels, ints, xp, array_dtype))
        for kernel in v.kernels:                 # arrays inspectors compute from operands
            for p in kernel.params:
                if p.inspector and p.name not in arrays:
                    arrays[p.name] = derived(tensors[p.tensor], p.inspector,
                                             self.display.get(p.tensor, p.tensor))
        nthreads = self._threads(tensors, sizes)
        out_vals = vals_buffer(out_name, self.dtype).name
        # the kernels' output array: the sums' type for an output they add into
        # (passes/widen_outputs), rounded to the kernel's type once at the end
        out_type = v.array_dtype(out_vals, self.dtype)
        np_dtype = array_dtype(out_type)
        if out_type is self.dtype:
            def rounded(a):
                return a
        elif narrow is None:                   # the CPU: an IR kernel rounds (narrow_cpu)
            def rounded(a):
                return narrow_cpu(self.target, a, self.dtype, nthreads)
        else:
            def rounded(a):
                return narrow(a, self.dtype)
        new = xp.zeros if v.zeroes(out_vals) else xp.empty
        if program.output_kind == OutputKind.DENSE:
            view = None if out is None or out_type is not self.dtype else \
                flat_view(out, as_device_array)
            if view is not None:
                self._check_overlap(view, arrays)
                if v.zeroes(out_vals):
                    view.fill(0)
                vals = view
            else:
                vals = new(math.prod(out_shape), dtype=np_dtype)
            arrays[out_vals] = vals
            for which in range(len(v.kernels)):      # one kernel per group of terms
                self._launch(v, which, arrays, ints, nthreads)
            result = rounded(vals)
            if out is not None and view is None:
                copy_into(out, result)
            return Tensor(out_shape, out_fmt, [{} for _ in out_fmt.levels], result,
                          validate=False)
        if program.output_kind == OutputKind.PATTERN:
            src = tensors[program.pattern_source]
            # the source's positions, times the output's further (full) levels: a
            # batch of the pattern (ir/lower.stores_pattern_of)
            batch = math.prod(out_fmt.level_dims(out_shape)[src.format.nlevels:])
            vals = new(src.nnz * batch, dtype=np_dtype)
            arrays[out_vals] = vals
            copied = [{k: a.copy() for k, a in lv.items()} for lv in src.arrays] + \
                [{} for _ in range(out_fmt.nlevels - src.format.nlevels)]
            result = Tensor(out_shape, out_fmt, copied, vals, validate=False)
            ints.update(result.scalars(out_name))      # its further levels' (Batch)
            self._launch(v, 0, arrays, ints, nthreads)
            return Tensor(out_shape, out_fmt, copied, rounded(vals), validate=False)
        # assembled: count entries per parent, prefix-sum, then fill
        last = out_fmt.nlevels - 1
        dims = [out_shape[m] for m in out_fmt.order]
        parents = math.prod(dims[:last])
        pos = xp.zeros(parents + 1, dtype=np_index)
        arrays[f"{out_name}{last}_pos"] = pos
        self._launch(v, 0, arrays, ints, nthreads)
        if pos.dtype == _I32 and _overflows_int32(pos, parents * dims[last]):
            raise _PositionsOverflow
        xp.cumsum(pos, out=pos)
        nnz = int(pos[-1])
        crd = xp.empty(nnz, dtype=np_index)
        vals = xp.empty(nnz, dtype=np_dtype)
        arrays[f"{out_name}{last}_crd"] = crd
        arrays[out_vals] = vals
        if program.drops_zeros:                # each row's count of entries kept
            kept = arrays[f"{out_name}{last}_nnz"] = xp.zeros(parents, dtype=np_index)
        self._launch(v, 1, arrays, ints, nthreads)
        if program.drops_zeros:
            pos, crd, vals = pack_rows(pos, kept, crd, vals)
        level_arrays = [{} for _ in range(last)] + [{"pos": pos, "crd": crd}]
        return Tensor(out_shape, out_fmt, level_arrays, rounded(vals), validate=False)

    def _check_overlap(self, view, arrays: dict) -> None:
        """Refuse (OutputError) an ``out=`` whose memory may overlap an array the
        kernels read: they would read entries they have overwritten."""
        clash = overlapping(view, arrays)
        if clash is None:
            return
        owner = next((n for n in sorted(self.inputs, key=len, reverse=True)
                      if clash.startswith(n)), clash)
        from ..errors import OutputError
        raise OutputError(f"out= shares memory with operand {self.display.get(owner, owner)} "
                          f"(its array {clash}), which the kernel reads while it writes out=; "
                          f"pass a separate array")

    def _launch(self, v: _Variant, which: int, arrays, sizes, nthreads) -> None:
        kernel = v.kernels[which]
        buffers, ints = [], []
        for p in kernel.params:
            if isinstance(p.value, Buffer):
                arr = arrays[p.name]
                if p.value.dtype in _SIXTEEN_BIT and isinstance(arr, np.ndarray):
                    arr = arr.view(np.uint16)     # numba's launcher types no 16-bit floats
                buffers.append(arr)
            else:
                ints.append(sizes[p.name])
        v.launchers[which](buffers, ints, nthreads=nthreads)

    def _to_family(self, out: Tensor, bound, tensors):
        fam = result_family(list(bound.values()))
        if out.format.is_dense:
            if out.ndim == 0:
                return out.vals[0]
            stored = out.vals.reshape([out.shape[m] for m in out.format.order])
            if out.format.identity_order or out.ndim < 2:
                arr = stored                # the freshly allocated output: no copy
            else:
                arr = np.array(stored.transpose(np.argsort(out.format.order)), order="C")
            if fam == "torch":
                import torch
                from ..formats.convert import torch_from_numpy
                return torch_from_numpy(torch, arr)
            return arr
        if fam == "torch" and out.ndim == 2:
            return out.to_torch()
        if fam == "scipy" and out.ndim == 2:
            layout = out.format.name if out.format.name in ("csr", "csc", "coo") else "csr"
            return as_scipy_kind(out.to_scipy(layout), scipy_arrays(list(bound.values())))
        return out
