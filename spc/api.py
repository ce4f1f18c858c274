"""``spc.compile``: named kernels and index-notation expressions."""
from __future__ import annotations

import dataclasses
import hashlib
import inspect

from .errors import FormatError, KernelNameError, ScheduleError, SpcError, UnsupportedError
from .formats.composite import SumFormat, resolve_sum_format
from .formats.format import Format, resolve_format
from .frontend.check import check
from .frontend.names import internal_names, names_of, rename, symbol_part
from .frontend.parser import parse
from .ir.nodes import DType
from .runtime.compiled import CompiledKernel, in_user_names, loop_var_name
from .schedule import Schedule
from .runtime.composite import CompositeKernel
from .runtime.dispatch import TypedKernel

NAMED_KERNELS = {
    # name: (expression, operands taking `fmt`, positional operand order)
    "spmv": ("y[i] = A[i,j] * x[j]", ("A",), ("A", "x")),
    "spmm": ("C[i,j] = A[i,k] * B[k,j]", ("A",), ("A", "B")),
    "sddmm": ("S[i,j] = A[i,j] * X[i,k] * Y[j,k]", ("A", "S"), ("A", "X", "Y")),
}

def _value_type(dtype) -> DType:
    """The DType ``spc.compile``'s ``dtype=`` names (a numpy dtype or its name,
    a torch dtype, "f32"/"f64"); a DTypeError for a type no kernel computes in."""
    from .errors import DTypeError
    from .formats.tensor import value_dtype
    from .runtime.value_types import COMPUTED
    try:
        return COMPUTED[value_dtype({"f32": "float32", "f64": "float64"}.get(dtype, dtype)
                                    if isinstance(dtype, str) else dtype).name]
    except (DTypeError, TypeError):
        raise DTypeError(f"dtype must be None (the operands' type) or one of "
                         f"{', '.join(COMPUTED)}, not {dtype!r}") from None


def make_target(target, **options):
    """A Target object from a name ("cpu", "cuda") or a Target instance."""
    from .codegen.target import Target
    if isinstance(target, Target):
        return target
    if target == "cpu":
        from .codegen.cpu import CPUTarget as cls
    elif target == "cuda":
        from .codegen.cuda import CUDATarget as cls
    else:
        cls = None
    if cls is not None:
        known = [p for p in inspect.signature(cls).parameters]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UnsupportedError(f"target={target!r} takes no option {', '.join(unknown)} "
                                   f"(its options: {', '.join(known) or 'none'}; schedule "
                                   f"knobs: {', '.join(SCHEDULE_KEYWORDS)})")
        return cls(**options)
    raise UnsupportedError(f"unknown target {target!r} (known: 'cpu', 'cuda')")


def compile(kernel: str, *, fmt=None, formats=None, target="cpu", dtype=None,
            accumulate=None, schedule: "Schedule | str | None" = None,
            **target_options) -> TypedKernel:
    """Compile a named kernel ("spmv", "spmm", "sddmm") or an index-notation
    expression such as ``"y[i] = A[i,j] * x[j] + b[i]"``.

    ``fmt`` sets the sparse operand of a named kernel; ``formats`` maps tensor
    names of an expression to formats (unnamed tensors are dense).  ``dtype``:
    None (the default) computes each call in its operands' value type, one
    compiled kernel per type; float16, bfloat16 (stored in 16 bits, computed in
    float32), float32 or float64 computes in that type, refusing operands it
    would round (``runtime/value_types.py`` has the rule).  ``accumulate``:
    the type sums run in, "float32" or "float64" (None: float32 for 16-bit
    values, else the values' type); never narrower than the values.  Returns a
    TypedKernel whose ``.source`` and ``.ir`` show the generated code.

    ``schedule="auto"`` (named kernels): a kernel that runs, per sparse
    operand, the format and schedule the tuning database recorded for the
    nearest matrix (``spc.tune`` fills it), else the default (see
    ``spc/tuning/auto.py``).
    """
    if isinstance(schedule, str):
        return _auto(kernel, schedule, fmt=fmt, formats=formats, target=target, dtype=dtype,
                     accumulate=accumulate, options=target_options)
    dt = None if dtype is None else _value_type(dtype)
    sums = None if accumulate is None else _value_type(accumulate)
    if sums is not None and sums.widened is not sums:
        from .errors import DTypeError
        raise DTypeError(f"accumulate={accumulate!r}: sums run in float32 or float64")
    if "[" not in kernel and "=" not in kernel:
        name = kernel.strip().lower()
        if name not in NAMED_KERNELS:
            raise KernelNameError(f"unknown kernel '{kernel}' (named kernels: "
                                  f"{', '.join(sorted(NAMED_KERNELS))}, or an index-notation "
                                  f"expression like 'y[i] = A[i,j] * x[j]')")
        text, sparse_ops, positional = NAMED_KERNELS[name]
        fmts = dict(formats or {})
        for op in sparse_ops:
            fmts.setdefault(op, fmt if fmt is not None else "csr")
        label = name
    else:
        if fmt is not None:
            raise FormatError("fmt= is for named kernels; give an expression formats={...}")
        text, fmts, positional, label = kernel, dict(formats or {}), None, None
    assign = parse(text)
    check(assign)
    ranks = {assign.lhs.tensor: len(assign.lhs.indices)}
    for acc in assign.accesses():
        ranks[acc.tensor] = len(acc.indices)
    for t in fmts:
        if t not in ranks:
            raise FormatError(f"formats names '{t}', which is not a tensor of '{text}'")
    resolved: dict[str, Format] = {
        t: resolve_sum_format(fmts.get(t)) or resolve_format(fmts.get(t, "dense"), r,
                                                             what=f"tensor {t}")
        for t, r in ranks.items()}
    for t, f in resolved.items():
        if isinstance(f, SumFormat) and f.rank != ranks[t]:
            raise FormatError(f"tensor {t}: format {f} stores rank-{f.rank} tensors, "
                              f"not rank {ranks[t]}")
    input_names = positional or tuple(dict.fromkeys(a.tensor for a in assign.accesses()))
    if label is None:
        label = "k" + hashlib.sha1(text.encode()).hexdigest()[:8]
    label = f"{label}_{'_'.join(_format_label(resolved[t]) for t in sorted(resolved))}"
    # inside spc, names that could collide with generated ones are mangled
    internal = internal_names(names_of(assign))
    schedule = with_knobs(schedule or Schedule(), target_options)
    if schedule.order is not None:
        schedule = dataclasses.replace(
            schedule, order=tuple(loop_var_name(ix, internal) for ix in schedule.order))
    kind = CompositeKernel if any(isinstance(f, SumFormat) for f in resolved.values()) \
        else CompiledKernel
    display = {i: u for u, i in internal.items() if i != u}
    built_target = make_target(target, **target_options)

    def make(value_type: DType):
        if sums is not None and sums.nbytes < value_type.widened.nbytes:
            from .errors import DTypeError
            raise DTypeError(f"accumulate={accumulate!r} would sum {value_type.numpy} values "
                             f"in less precision than they hold")
        knobs = schedule if dt is not None else for_value_type(schedule, value_type,
                                                                 built_target.name)
        try:
            return kind(rename(assign, internal), {internal[t]: f for t, f in resolved.items()},
                        built_target, value_type, knobs, label,
                        tuple(internal[n] for n in input_names), display=display,
                        accumulate=sums)
        except SpcError as err:
            raise in_user_names(err, display) from None
    typed = TypedKernel(make, dt)
    if dt is None and built_target.name == "cuda" and not schedule.tf32 and (
            schedule.tensor_cores or schedule.tile_cols is not None):
        typed.specialize(DType.F16)     # the tensor-core knobs steer 16-bit values: refused
    return typed                        # now where they cannot (tf32: float32's, built)


def _auto(kernel, schedule: str, *, fmt, formats, target, dtype, accumulate, options):
    """``spc.compile(..., schedule="auto")``: an AutoKernel; ScheduleError for any other
    string, UnsupportedError for the options auto does not take."""
    if schedule != "auto":
        raise ScheduleError(f"schedule must be a spc.Schedule, None or \"auto\", not "
                            f"{schedule!r}")
    if formats is not None or accumulate is not None or options:
        given = ", ".join(k for k, v in (("formats", formats), ("accumulate", accumulate))
                          if v is not None) or ", ".join(options)
        raise UnsupportedError(f"schedule=\"auto\" takes fmt, target and dtype; not {given}")
    from .tuning.auto import AutoKernel
    return AutoKernel(kernel, fmt=fmt, target=target, dtype=dtype)


TENSOR_CORE_TYPES = (DType.F16, DType.BF16)


def for_value_type(schedule: Schedule, value_type: DType, target: str) -> Schedule:
    """``schedule`` for the ``value_type`` specialization of a kernel compiled with
    ``dtype=None``: on CUDA the tensor-core knobs (``tensor_cores=True``,
    ``tile_cols``) steer the value types that have tensor cores (float16,
    bfloat16, and float32 with ``tf32=True``), ``tf32`` the float32 one;
    specializations of other types compute with scalar loops (with an
    explicit ``dtype=`` of such a type they are refused instead)."""
    if target != "cuda":
        return schedule
    if value_type in TENSOR_CORE_TYPES:
        return schedule.replace(tf32=schedule.tf32 and None)
    if value_type is DType.F32 and schedule.tf32:
        return schedule
    return schedule.replace(tensor_cores=schedule.tensor_cores and None, tile_cols=None,
                            tf32=schedule.tf32 and None)


SCHEDULE_KEYWORDS = tuple(f.name for f in dataclasses.fields(Schedule))


def with_knobs(schedule: Schedule, options: dict) -> Schedule:
    """``schedule`` with the knobs given as ``spc.compile`` keywords (a shorthand:
    ``spc.compile(..., group=8)`` is ``schedule=Schedule(group=8)``) taken out of
    ``options``; a knob given both ways must agree."""
    knobs = {k: options.pop(k) for k in SCHEDULE_KEYWORDS if k in options}
    asked = schedule.knobs()
    for k, v in knobs.items():
        if k in asked and asked[k] != v:
            raise ScheduleError.of(k, f"given as {v!r} to spc.compile and as "
                                      f"{getattr(schedule, k)!r} in schedule=")
    return schedule.replace(**knobs) if knobs else schedule


def _format_label(fmt) -> str:
    """A format's name as part of a kernel symbol."""
    text = str(fmt)
    for ch in "(), ;=":
        text = text.replace(ch, "")
    return symbol_part(text)
