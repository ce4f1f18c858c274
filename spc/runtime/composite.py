"""Kernels over sum-format tensors (``hyb``): kernels over their parts.

An operand ``A`` in a :class:`~spc.formats.composite.SumFormat` is rewritten
to the sum of its parts, ``A[i,j] -> A__0[i,j] + A__1[i,j]``, each part a
tensor in an ordinary format; the terms of different parts are lowered as
separate kernels that add into one dense output.  An output in a sum format
takes the pattern of an operand in the same format (SDDMM): one kernel per
part, each writing that part's pattern.
"""
from __future__ import annotations

from ..errors import OutputError, UnsupportedError
from ..formats.composite import SumFormat, SumTensor, sum_tensor
from ..formats.tensor import Tensor
from ..frontend import ast
from ..frontend.pattern_reads import pattern_reads
from ..ir.sum_parts import part_name, read_inside_function, read_parts
from .out_arg import out_option
from .pattern_kept import check_pattern_kept
from .compiled import (CompiledKernel, KernelSequence, bind_operands, call_option,
                       check_schedule_knobs)


def _refuse_inside_functions(assign: ast.Assignment, sums: dict[str, SumFormat]) -> None:
    """An UnsupportedError where a sum-format operand sits inside a function or a
    reduction (``ir/sum_parts.read_inside_function``).  (spc.compile then reads
    the operand through a copy in a csr-like format: ``ir/operand_copies``.)"""
    found = read_inside_function(assign, sums)
    if found is not None:
        raise UnsupportedError(
            f"'{assign.source}': {found} ({sums[found]}) is read inside a function or a "
            f"reduction; its parts are summed as separate terms, which a function of the "
            f"whole does not allow; store {found} in a single format (e.g. csr)")


def _pattern_source(assign: ast.Assignment, fmt: SumFormat) -> str:
    """The operand whose pattern a sum-format output takes: a factor of the
    right-hand side product in the output's format and with its indices."""
    from ..ir.lower import _product_factors
    factors = _product_factors(assign.rhs) or []
    for f in factors:
        if isinstance(f, ast.Access) and f.indices == assign.lhs.indices and f.tensor != assign.lhs.tensor:
            return f.tensor
    raise UnsupportedError(
        f"'{assign.source}': an output in {fmt} must take the pattern of an operand in {fmt} "
        f"(S[i,j] = A[i,j] * ...); store {assign.lhs.tensor} in another format")


class CompositeKernel(KernelSequence):
    """A compiled expression with sum-format operands; called like CompiledKernel."""

    def __init__(self, assign: ast.Assignment, formats: dict, target, dtype, schedule,
                 name: str, inputs: tuple[str, ...], display: dict[str, str] | None = None,
                 accumulate=None):
        self.display = dict(display or {})
        self.input_names = tuple(self.display.get(n, n) for n in inputs)
        self.expression = assign
        self.formats = formats
        self.target = target
        self.dtype = dtype
        self.name = name
        self.inputs = inputs
        self.sums = {t: f for t, f in formats.items() if isinstance(f, SumFormat)}
        self.pattern_reads = pattern_reads(assign) & set(self.sums)
        _refuse_inside_functions(assign, self.sums)
        out = assign.lhs.tensor
        plain = {t: f for t, f in formats.items() if t not in self.sums}
        self.source_of_pattern = None
        if out in self.sums:
            src = _pattern_source(assign, self.sums[out])
            if self.sums.get(src) != self.sums[out]:
                raise UnsupportedError(
                    f"'{assign.source}': output {out} in {self.sums[out]} takes the pattern of "
                    f"{src}, which must be in the same format")
            self.source_of_pattern = src
            self.kernels = []
            for k, part_fmt in enumerate(self.sums[out].parts):
                pick = {src: k}
                rhs = read_parts(assign.rhs, self.sums, pick)
                lhs = ast.Access(part_name(out, k), assign.lhs.indices, assign.lhs.span,
                                 assign.lhs.index_spans)
                sub = ast.Assignment(lhs, rhs, assign.source)
                fmts = dict(plain)
                for t, f in self.sums.items():
                    for j, pf in enumerate(f.parts):
                        fmts[part_name(t, j)] = pf
                sub_fmts = {a.tensor: fmts[a.tensor] for a in (sub.lhs,) + sub.accesses()}
                self.kernels.append(CompiledKernel(
                    sub, sub_fmts, target, dtype, schedule, f"{name}_part{k}",
                    tuple(dict.fromkeys(a.tensor for a in sub.accesses())),
                    check_knobs=False, accumulate=accumulate))
        else:
            rhs = read_parts(assign.rhs, self.sums)
            sub = ast.Assignment(assign.lhs, rhs, assign.source)
            fmts = dict(plain)
            separate = set()
            for t, f in self.sums.items():
                for j, pf in enumerate(f.parts):
                    fmts[part_name(t, j)] = pf
                    separate.add(part_name(t, j))
            self.kernels = [CompiledKernel(
                sub, fmts, target, dtype, schedule, name,
                tuple(dict.fromkeys(a.tensor for a in sub.accesses())), frozenset(separate),
                check_knobs=False, accumulate=accumulate)]
        check_schedule_knobs(target, schedule, self.lowered_kernels())

    # -- what it is ---------------------------------------------------------------

    @property
    def output(self) -> str:
        return self.expression.lhs.tensor

    def lowered_kernels(self) -> tuple:
        """The scheduled IR kernels (int32 indices) of every part."""
        return tuple(kern for part in self.kernels for kern in part.lowered_kernels())

    @property
    def schedule(self):
        """The schedule of the first part (every part runs the one asked for)."""
        return self.kernels[0].schedule

    def build(self, *args, **kwargs) -> "CompositeKernel":
        for k in self.kernels:
            k.build(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        return f"spc.CompositeKernel({self.expression.source!r}, target={self.target.name})"

    # -- calling ----------------------------------------------------------------------
    def fast(self, args, validate: bool = True, out=None):
        """None: calls of sum formats take the general path (see CompiledKernel.fast)."""
        return None

    def _call(self, args, kwargs):
        validate = call_option(self.input_names, kwargs)
        if out_option(self.input_names, kwargs) is not None:
            raise OutputError(f"{self.name}: out= is not supported for kernels over sum "
                              f"formats (they add their parts' results in Python)")
        by_user = bind_operands(self.name, self.input_names, args, kwargs)
        bound = {n: by_user[u] for n, u in zip(self.inputs, self.input_names)}
        np_dtype = self.dtype.np
        operands = {}
        split = {}
        for n, x in bound.items():
            fmt = self.sums.get(n)
            if fmt is None:
                operands[n] = x
                continue
            from .operands import operand_errors
            with operand_errors(n):
                st = sum_tensor(_host(x), fmt, dtype=np_dtype)
            if n in self.pattern_reads:
                check_pattern_kept(x, st, fmt, self.display.get(n, n))
            split[n] = st               # each part is validated by the part's kernel
            for k, part in enumerate(st.parts):
                operands[part_name(n, k)] = part
        if self.source_of_pattern is None:
            k = self.kernels[0]
            return k.run({n: operands[n] for n in k.inputs}, validate)
        outs = [_part_tensor(k.run({n: operands[n] for n in k.inputs}, validate), k)
                for k in self.kernels]
        src = split[self.source_of_pattern]
        out = SumTensor(src.shape, self.sums[self.output], outs, src.width)
        from .operands import result_family
        family = result_family(list(bound.values()))
        if family == "scipy":
            from .operands import as_scipy_kind, scipy_arrays
            return as_scipy_kind(out.to_scipy("csr"), scipy_arrays(list(bound.values())))
        if family == "torch":             # (not through scipy: it holds no 16-bit values)
            from ..formats.tensor import from_coords
            coords, vals = out.to_coo()
            return from_coords(coords, vals, out.shape, "csr").to_torch()
        return out


def _part_tensor(result, kernel: CompiledKernel) -> Tensor:
    """A part kernel's result (in its operands' family: scipy, torch, spc) as an
    spc Tensor in the part's format, on the host."""
    if isinstance(result, Tensor):
        if type(result.vals).__module__.startswith("cupy"):
            from .device import DeviceOperands
            return DeviceOperands.get().to_host(result)
        return result
    from ..formats.tensor import tensor
    return tensor(_host(result) if type(result).__module__.startswith("cupy") else result,
                  kernel.formats[kernel.output])


def _host(x):
    """A host-side operand for splitting (device arrays are copied to the host)."""
    if isinstance(x, SumTensor):
        return x
    if hasattr(x, "get") and hasattr(x, "__cuda_array_interface__"):
        return x.get()
    mod = type(x).__module__
    if mod.startswith("cupyx"):
        return x.get()
    if mod.startswith("torch"):
        t = x.detach()
        if t.is_cuda:
            t = t.cpu()
        if t.layout != __import__("torch").strided:
            t = t.to_dense()
        from ..formats.convert import _torch_numpy
        return _torch_numpy(t, None, "operand")          # bfloat16 as ml_dtypes'
    return x
