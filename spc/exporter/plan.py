"""What an export needs to know about a compiled kernel, read from its IR.

``plan_export`` checks that the kernel can run without spc's Python runtime
(one IR kernel, no inspector, no workspace or scratch array, 32- or 64-bit
float values) and describes every parameter of the IR kernel in order: which
tensor's values or level array it is, or which index's extent, so that the
header, the example and the docs are generated from the IR alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ExportError
from ..ir.lower import OutputKind, vals_buffer
from ..ir.nodes import Alloc, Buffer, DType, Kernel, Param, ParamRole
from ..ir.traverse import walk

VALUE_TYPES = (DType.F32, DType.F64)
INDEX_TYPES = {"int32": DType.I32, "int64": DType.I64}
EXAMPLE_FORMATS = ("csr", "dense")      # the operand formats the C example reads and writes
_LEVEL_ARRAY = re.compile(r"^(?P<tensor>.+?)(?P<level>\d+)_(?P<array>[A-Za-z]\w*)$")
_ARRAY_WORDS = {
    "pos": "positions: entries of parent p are [pos[p], pos[p + 1]) (length parents + 1)",
    "crd": "coordinates of the stored entries (length nnz)",
}


@dataclass(frozen=True, slots=True)
class ParamDoc:
    """One parameter of the exported kernel, in order, and what it holds."""
    param: Param
    what: str

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def is_buffer(self) -> bool:
        return isinstance(self.param.value, Buffer)


@dataclass(frozen=True, slots=True)
class Operand:
    """A tensor of the expression as the example handles it: ``name`` as the
    user wrote it, ``internal`` as the IR names it, ``kind`` "csr", "dense" or
    another format's name, and its index (internal) per axis."""
    name: str
    internal: str
    kind: str
    indices: tuple[str, ...]

    @property
    def rank(self) -> int:
        return len(self.indices)


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """Everything an exporter writes from: the IR kernel, its rendered source and
    a description of its parameters, operands and output."""
    kernel: Kernel
    source: str
    target: object
    value: DType
    index: DType
    params: tuple[ParamDoc, ...]
    inputs: tuple[Operand, ...]
    output: Operand
    output_kind: str                    # OutputKind.DENSE or OutputKind.PATTERN
    pattern_source: str | None          # internal name of the input whose pattern it has
    zero_output: bool                   # the output array must hold zeros before a call
    size_sources: dict[str, tuple[tuple[int, int], ...]]   # size param -> (input, axis)
    expression: str
    example_problem: str | None         # why the C example cannot be generated, or None
    schedule: object = None             # the Schedule asked for (its launch knobs, on CUDA)

    @property
    def name(self) -> str:
        return self.kernel.name


def compiled_of(kernel, dtype):
    """The CompiledKernel behind ``kernel`` (a TypedKernel is specialized to
    ``dtype``, else to its own dtype or float32); ExportError for anything else."""
    from ..runtime.compiled import CompiledKernel
    fixed = getattr(kernel, "dtype", None) if hasattr(kernel, "specialize") else None
    if dtype is not None and (fixed is not None or not hasattr(kernel, "specialize")) \
            and dtype is not fixed:
        raise ExportError("export(dtype=...) is for kernels compiled with dtype=None; this "
                          "one computes in its own type")
    if hasattr(kernel, "specialize") and not isinstance(kernel, CompiledKernel):
        kernel = kernel.specialize(dtype or fixed or DType.F32)
    if not isinstance(kernel, CompiledKernel):
        raise ExportError(f"{type(kernel).__name__} runs several compiled kernels from Python "
                          f"(a program, a sum format or a tuned kernel); export takes one "
                          f"expression compiled by spc.compile")
    return kernel


def plan_export(ck, index: str = "int32") -> ExportPlan:
    """The export plan of CompiledKernel ``ck`` with ``index`` ("int32" or
    "int64") index arrays.

    Requires: ``ck`` is a CompiledKernel.  Ensures: the plan's kernel needs no
    inspector, workspace or scratch array, and takes float32 or float64 values;
    otherwise an ExportError says why.
    """
    if index not in INDEX_TYPES:
        raise ExportError(f"index={index!r}: exported index arrays are 'int32' or 'int64'")
    index_dtype = INDEX_TYPES[index]
    variant = ck._variant(index_dtype)
    shown = ck.display.get
    if len(variant.kernels) != 1:
        raise ExportError(f"{ck.name} runs {len(variant.kernels)} IR kernels in sequence "
                          f"(a sparse output assembled in two passes, or a sum split into "
                          f"kernels); export takes kernels that run as one")
    kernel, source = variant.kernels[0], variant.sources[0]
    program = variant.program
    if ck.dtype not in VALUE_TYPES:
        raise ExportError(f"{ck.name} computes in {ck.dtype.numpy}; exported kernels take "
                          f"float32 or float64 values (C has no portable 16-bit float)")
    for p in kernel.params:
        if p.inspector:
            raise ExportError(f"{ck.name}: parameter {p.name} is computed by the inspector "
                              f"'{p.inspector}' (reorder_rows / split_rows), which runs in "
                              f"spc's Python runtime; export a kernel scheduled without it")
        if p.role is ParamRole.SCRATCH:
            raise ExportError(f"{ck.name}: parameter {p.name} is a scratch array the runtime "
                              f"zeroes per call (a workspace); export takes kernels without "
                              f"workspaces")
        if isinstance(p.value, Buffer) and p.value.dtype not in (index_dtype, ck.dtype):
            raise ExportError(f"{ck.name}: array {p.name} holds {p.value.dtype.numpy}, "
                              f"neither the values' nor the index type")
    if kernel.workspaces or any(isinstance(s, Alloc) and s.is_workspace
                                for s in walk(kernel.body)):
        raise ExportError(f"{ck.name} allocates a workspace (heap memory per row or per "
                          f"thread); export takes kernels without workspaces")
    if program.output_kind not in (OutputKind.DENSE, OutputKind.PATTERN):
        raise ExportError(f"{ck.name}: its output is assembled at run time; export takes "
                          f"dense outputs and outputs with an input's pattern")
    if program.output_kind == OutputKind.PATTERN and \
            ck.formats[ck.output] != ck.formats[program.pattern_source]:
        raise ExportError(f"{ck.name}: its output takes an input's pattern in another format "
                          f"({ck.formats[ck.output]}, a batch of it); export takes outputs "
                          f"in their pattern input's format")
    expr = ck.expression
    accesses = [(expr.lhs.tensor, tuple(expr.lhs.indices))] + \
        [(a.tensor, tuple(a.indices)) for a in expr.accesses()]
    indices = dict(accesses)
    operands = {t: Operand(shown(t, t), t, _kind(ck.formats[t]), indices[t]) for t in indices}
    inputs = tuple(operands[t] for t in ck.inputs)
    output = operands[ck.output]
    size_sources = {f"size_{ix}": tuple((k, axis) for k, op in enumerate(inputs)
                                        for axis, j in enumerate(op.indices) if j == ix)
                    for _, ixs in accesses for ix in ixs}
    docs = tuple(ParamDoc(p, _describe(p, ck, operands, size_sources, inputs))
                 for p in kernel.params)
    out_vals = vals_buffer(ck.output, ck.dtype).name
    return ExportPlan(
        kernel=kernel, source=source, target=ck.target, value=ck.dtype, index=index_dtype,
        params=docs, inputs=inputs, output=output, output_kind=program.output_kind,
        pattern_source=program.pattern_source, zero_output=out_vals not in kernel.overwrites,
        size_sources=size_sources, expression=expr.source,
        example_problem=_example_problem(kernel, inputs, output, program),
        schedule=ck._schedule)


def _kind(fmt) -> str:
    """"csr" or "dense" (identity order) when the example handles ``fmt``, else its name."""
    if fmt.is_dense and fmt.identity_order:
        return "dense"
    if fmt.name == "csr" and fmt.order == (0, 1) and not fmt.block:
        return "csr"
    return str(fmt.name or fmt)


def _example_problem(kernel: Kernel, inputs, output, program) -> str | None:
    """Why the C example cannot drive ``kernel``, or None when it can."""
    for op in inputs + (output,):
        if op.kind not in EXAMPLE_FORMATS:
            return (f"tensor {op.name} is stored as {op.kind}; the example reads and writes "
                    f"{' and '.join(EXAMPLE_FORMATS)} tensors")
        if op.rank > 2:
            return f"tensor {op.name} has rank {op.rank}; Matrix Market files hold matrices"
    for p in kernel.params:
        if not isinstance(p.value, Buffer) and not p.name.startswith("size_"):
            return f"parameter {p.name} is a level scalar the example does not compute"
    return None


def _describe(p: Param, ck, operands: dict, size_sources: dict, inputs) -> str:
    """A one-line comment saying what parameter ``p`` holds."""
    if not isinstance(p.value, Buffer):
        if p.name in size_sources:
            ix = p.name[len("size_"):]
            user = ck.display.get(ix, ix)
            where = ", ".join(f"{inputs[k].name} axis {axis}" for k, axis in size_sources[p.name])
            return f"extent of index {user}" + (f" ({where})" if where else " (output only)")
        return f"a scalar of {ck.display.get(p.tensor, p.tensor)}'s storage"
    tensor = p.tensor
    name = operands[tensor].name if tensor in operands else tensor
    access = "written" if p.role is ParamRole.OUTPUT else "read"
    if p.name == vals_buffer(tensor, ck.dtype).name:
        fmt = ck.formats[tensor]
        if fmt.is_dense:
            shape = " x ".join(f"size_{ix}" for ix in operands[tensor].indices) or "1"
            layout = "row-major" if fmt.identity_order else f"mode order {fmt.order}"
            return f"{name}'s values, {shape}, {layout} ({access})"
        return f"{name}'s stored values, one per stored entry ({access})"
    m = _LEVEL_ARRAY.match(p.name)
    if m and m.group("tensor") == tensor:
        lvl, array = int(m.group("level")), m.group("array")
        fmt = ck.formats[tensor]
        level = fmt.levels[lvl]
        words = _ARRAY_WORDS.get(array, f"array '{array}'")
        return (f"{name}'s level {lvl} ({level.name}, axis {fmt.order[lvl]}): {words} "
                f"({access})")
    return f"an array of {name} ({access})"
