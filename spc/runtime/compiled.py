"""``CompiledKernel``: lowering, passes, build and cache for one expression, and
the call that checks operands, allocates outputs and launches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import config
from ..errors import InputError, ShapeError
from ..formats.format import Format
from ..formats.tensor import INDEX_LIMIT_32, Tensor
from ..frontend import ast
from ..frontend.check import index_sizes
from ..ir.lower import OutputKind, Program, lower, size_var, vals_buffer
from ..ir.nodes import Buffer, DType, Kernel, ParamRole
from ..ir.printer import format_kernel
from ..ir.verify import verify
from . import cache
from .dump import Dumper
from .operands import family_of, result_family, shape_of, to_tensor, with_index_dtype

SMALL_WORK = 150_000      # below this many multiply-adds a call runs on one thread


@dataclass(frozen=True)
class Schedule:
    """How to run a kernel.

    ``order``: the loop order (index names, outermost first); None picks one
    that visits sparse levels in storage order.  ``parallel``: run the
    outermost independent loop on threads (CPU) or blocks (GPU).  ``threads``:
    CPU threads (None: SPC_NUM_THREADS or every core).
    """
    order: tuple[str, ...] | None = None
    parallel: bool = True
    threads: int | None = None


@dataclass
class _Variant:
    program: Program
    kernels: tuple[Kernel, ...]        # after the target's passes
    sources: tuple[str, ...]
    launchers: list | None = None


class CompiledKernel:
    """A compiled expression.  Call it with operands (positionally in
    ``self.inputs`` order, or by name); see ``spc.compile``.
    """

    def __init__(self, assign: ast.Assignment, formats: dict[str, Format], target,
                 dtype: DType, schedule: Schedule, name: str, inputs: tuple[str, ...]):
        self.expression = assign
        self.formats = formats
        self.target = target
        self.dtype = dtype
        self.schedule = schedule
        self.name = name
        self.inputs = inputs
        self._variants: dict[DType, _Variant] = {}
        self._variant(DType.I32)           # lower, render (and checks) eagerly

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
    def output(self) -> str:
        return self.expression.lhs.tensor

    def __repr__(self) -> str:
        return f"spc.CompiledKernel({self.expression.source!r}, target={self.target.name})"

    def build(self, index_dtype: DType = DType.I32) -> "CompiledKernel":
        """Build (or fetch from the cache) the binaries now rather than at first call."""
        v = self._variant(index_dtype)
        if v.launchers is None:
            launchers = []
            for kernel, source in zip(v.kernels, v.sources):
                key = cache.cache_key(format_kernel(kernel), self.target.cache_key())
                binary = cache.get_or_build(key, lambda k=kernel, s=source: self.target.build(s, k))
                launchers.append(self.target.load(binary, kernel))
            v.launchers = launchers
        return self

    def _variant(self, index_dtype: DType) -> _Variant:
        v = self._variants.get(index_dtype)
        if v is not None:
            return v
        dump = Dumper.for_kernel(f"{self.name}_{index_dtype.value}")
        dump.write("expression", f"{self.expression.source}\n{self.expression!r}\n"
                   f"formats: { {k: str(f) for k, f in sorted(self.formats.items())} }\n")
        program = lower(self.expression, self.formats, name=self.name, order=self.schedule.order,
                        value_dtype=self.dtype, index_dtype=index_dtype)
        kernels, sources = [], []
        for kernel in program.kernels:
            verify(kernel, "lower")
            dump.write(f"{kernel.name}.00_lower.ir", format_kernel(kernel))
            for n, pass_ in enumerate(self.target.pipeline(), start=1):
                if pass_.__name__ == "map_parallel" and not self.schedule.parallel:
                    continue
                kernel = verify(pass_(kernel), pass_.__name__)
                dump.write(f"{kernel.name}.{n:02d}_{pass_.__name__}.ir", format_kernel(kernel))
            source = self.target.render(kernel)
            dump.write(f"{kernel.name}.source", source)
            kernels.append(kernel)
            sources.append(source)
        v = _Variant(program, tuple(kernels), tuple(sources))
        self._variants[index_dtype] = v
        return v

    # -- calling -------------------------------------------------------------------
    def bind(self, args, kwargs) -> dict[str, object]:
        if len(args) > len(self.inputs):
            raise InputError(f"{self.name} takes {len(self.inputs)} operands "
                             f"({', '.join(self.inputs)}), got {len(args)}")
        bound = dict(zip(self.inputs, args))
        for k, v in kwargs.items():
            if k not in self.inputs:
                raise InputError(f"{self.name} has no operand named '{k}' "
                                 f"(operands: {', '.join(self.inputs)})")
            if k in bound:
                raise InputError(f"operand '{k}' given twice")
            bound[k] = v
        missing = [n for n in self.inputs if n not in bound]
        if missing:
            raise InputError(f"{self.name} is missing operand(s) {', '.join(missing)}")
        return bound

    def __call__(self, *args, validate: bool = True, **kwargs):
        bound = self.bind(args, kwargs)
        shapes = {n: shape_of(x) for n, x in bound.items()}
        sizes = index_sizes(self.expression, shapes)
        np_dtype = np.dtype(self.dtype.numpy)
        tensors = {n: to_tensor(x, self.formats[n], np_dtype, n, validate)
                   for n, x in bound.items()}
        index_dtype = self._pick_index_dtype(tensors, sizes)
        np_index = np.dtype(index_dtype.numpy)
        tensors = {n: with_index_dtype(t, np_index) for n, t in tensors.items()}
        self.build(index_dtype)
        v = self._variants[index_dtype]
        out = self._run(v, tensors, sizes, np_index)
        return self._to_family(out, bound, tensors)

    def _pick_index_dtype(self, tensors: dict[str, Tensor], sizes: dict[str, int]) -> DType:
        if any(t.index_dtype == np.int64 for t in tensors.values() if not t.format.is_dense):
            return DType.I64
        out_fmt = self.formats[self.output]
        if not out_fmt.is_dense:
            bound = math.prod(sizes[ix] for ix in self.expression.lhs.indices)
            if bound > INDEX_LIMIT_32:
                return DType.I64
        return DType.I32

    def _threads(self, tensors: dict[str, Tensor], sizes: dict[str, int]) -> int:
        if not self.schedule.parallel:
            return 1
        threads = self.schedule.threads or config.num_threads()
        sparse_ix = {ix for a in self.expression.accesses()
                     if not self.formats[a.tensor].is_dense for ix in a.indices}
        free = math.prod(s for ix, s in sizes.items() if ix not in sparse_ix)
        work = sum(t.nnz for t in tensors.values()) * max(1, free)
        return 1 if work < SMALL_WORK else threads

    def _run(self, v: _Variant, tensors, sizes, np_index) -> Tensor:
        program = v.program
        out_name = self.output
        out_fmt = self.formats[out_name]
        out_shape = tuple(sizes[ix] for ix in self.expression.lhs.indices)
        arrays: dict[str, np.ndarray] = {}
        for name, t in tensors.items():
            arrays[vals_buffer(name, self.dtype).name] = t.vals
            for lvl, level_arrays in enumerate(t.arrays):
                for arr_name, arr in level_arrays.items():
                    arrays[f"{name}{lvl}_{arr_name}"] = arr
        nthreads = self._threads(tensors, sizes)
        np_dtype = np.dtype(self.dtype.numpy)
        if program.output_kind == OutputKind.DENSE:
            vals = np.zeros(math.prod(out_shape), dtype=np_dtype)
            arrays[vals_buffer(out_name, self.dtype).name] = vals
            for which in range(len(v.kernels)):      # one kernel per group of terms
                self._launch(v, which, arrays, sizes, nthreads)
            return Tensor(out_shape, out_fmt, [{} for _ in out_fmt.levels], vals, validate=False)
        if program.output_kind == OutputKind.PATTERN:
            src = tensors[program.pattern_source]
            vals = np.zeros(src.nnz, dtype=np_dtype)
            arrays[vals_buffer(out_name, self.dtype).name] = vals
            self._launch(v, 0, arrays, sizes, nthreads)
            copied = [{k: a.copy() for k, a in lv.items()} for lv in src.arrays]
            return Tensor(out_shape, out_fmt, copied, vals, validate=False)
        # assembled: count entries per parent, prefix-sum, then fill
        last = out_fmt.rank - 1
        dims = [out_shape[m] for m in out_fmt.order]
        parents = math.prod(dims[:last])
        pos = np.zeros(parents + 1, dtype=np_index)
        arrays[f"{out_name}{last}_pos"] = pos
        self._launch(v, 0, arrays, sizes, nthreads)
        np.cumsum(pos, out=pos)
        nnz = int(pos[-1])
        crd = np.empty(nnz, dtype=np_index)
        vals = np.empty(nnz, dtype=np_dtype)
        arrays[f"{out_name}{last}_crd"] = crd
        arrays[vals_buffer(out_name, self.dtype).name] = vals
        self._launch(v, 1, arrays, sizes, nthreads)
        level_arrays = [{} for _ in range(last)] + [{"pos": pos, "crd": crd}]
        return Tensor(out_shape, out_fmt, level_arrays, vals, validate=False)

    def _launch(self, v: _Variant, which: int, arrays, sizes, nthreads) -> None:
        kernel = v.kernels[which]
        buffers, ints = [], []
        for p in kernel.params:
            if isinstance(p.value, Buffer):
                buffers.append(arrays[p.name])
            else:
                ints.append(sizes[p.name[len("size_"):]])
        v.launchers[which](buffers, ints, nthreads=nthreads)

    def _to_family(self, out: Tensor, bound, tensors):
        fam = result_family(list(bound.values()))
        if out.format.is_dense:
            if out.ndim == 0:
                return out.vals[0]
            stored = out.vals.reshape([out.shape[m] for m in out.format.order])
            inverse = np.argsort(out.format.order)
            return np.ascontiguousarray(stored.transpose(inverse)) if out.ndim > 1 else stored
        if fam == "scipy" and out.ndim == 2:
            layout = out.format.name if out.format.name in ("csr", "csc", "coo") else "csr"
            return out.to_scipy(layout)
        return out
