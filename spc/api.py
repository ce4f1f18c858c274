"""``spc.compile``: named kernels and index-notation expressions."""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import warnings

from .errors import (FormatError, KernelNameError, ModeOrderConflict, ScheduleError, SpcError,
                     PerformanceWarning, UnsupportedError)
from .formats.composite import SumFormat, resolve_sum_format
from .formats.format import Format, resolve_format
from .frontend.check import check
from .frontend.diagonals import rewrite_diagonals
from .frontend.names import internal_names, names_of, rename, symbol_part
from .frontend.parser import parse
from .ir.nodes import DType
from .runtime.compiled import CompiledKernel, in_user_names, loop_var_name
from .schedule import Schedule
from .runtime.composite import CompositeKernel
from .runtime.dispatch import TypedKernel

_log = logging.getLogger("spc")

NAMED_KERNELS = {
    # name: (expression, operands taking `fmt`, positional operand order)
    "spmv": ("y[i] = A[i,j] * x[j]", ("A",), ("A", "x")),
    "spmm": ("C[i,j] = A[i,k] * B[k,j]", ("A",), ("A", "B")),
    "sddmm": ("S[i,j] = A[i,j] * X[i,k] * Y[j,k]", ("A", "S"), ("A", "X", "Y")),
}
"""The named kernels ``spc.compile`` knows: name -> (expression, the operands that
``fmt=`` sets, the order of positional operands)."""

# named programs: (statements, operands taking `fmt`, positional operand order)
NAMED_PROGRAMS = {
    # O = softmax over the stored entries of each row of c * (Q K^T) * A, times V
    # (a row with no entries gives 0); c is the scale, 1/sqrt(d) by default
    "attention": ("S[i,j] = {scale} * A[i,j] * Q[i,k] * K[j,k]; "
                  "m[i] = max(j, S[i,j]); "
                  "r[i] = 1 / max(sum(j, stored(S[i,j]) * exp(S[i,j] - m[i])), 1e-30); "
                  "O[i,d] = stored(S[i,j]) * exp(S[i,j] - m[i]) * V[j,d] * r[i]",
                  ("A", "S"), ("A", "Q", "K", "V")),
}

# the same programs over a batch of heads h (issue 12): Q, K, V and the result carry a
# leading heads index, the mask A is shared by every head.  (statements, {sparse result:
# the operand whose format it takes, batched over the heads}; the operands take
# NAMED_PROGRAMS' formats); 3-d operands run these
HEADS_PROGRAMS = {
    # S[h] has A's pattern in every head: on the GPU S is stored in A's format with
    # a heads level innermost (formats.batched: A's index arrays, values nnz x H),
    # so the scores kernel writes at A's positions and nothing is assembled; on
    # the CPU per head as dds (see _batched_format)
    "attention": ("S[h,i,j] = {scale} * A[i,j] * Q[h,i,k] * K[h,j,k]; "
                  "m[h,i] = max(j, S[h,i,j]); "
                  "r[h,i] = 1 / max(sum(j, stored(S[h,i,j]) * exp(S[h,i,j] - m[h,i])), 1e-30); "
                  "O[h,i,d] = stored(S[h,i,j]) * exp(S[h,i,j] - m[h,i]) * V[h,j,d] * r[h,i]",
                  {"S": "A"}),
}


def _compile_program(text: str, *, fmt=None, formats=None, fuse: bool | str = "rows",
                     **options):
    """A ProgramKernel of the statements of ``text`` (or of a named program).
    ``fuse``: True fuses statements over the same rows into one kernel and
    recomputes sampled results where they are read (``_compile_fused``);
    "rows" fuses rows but keeps sampled results in memory; False keeps every
    statement a kernel of its own.  "rows" is the default: recomputing a
    row's scores in each of its three loops cost more than storing them once
    on both targets (``benchmarks/bench_attention_gpu.py``,
    ``bench_attention_cpu.py``); since ``passes/online_softmax`` makes those
    loops one, True computes each score once and saves the nnz-sized array,
    a little faster than "rows" on the CPU at L = 2048 and slower at 4096
    (README)."""
    from .runtime.program import ProgramKernel
    if fuse not in (True, False, "rows"):
        raise UnsupportedError(f"fuse must be True, 'rows' or False, not {fuse!r}")
    name = text.strip().lower()
    named = NAMED_PROGRAMS.get(name)
    options = _program_tiles(named[0].format(scale="1.0") if named else text, options)
    fused = (lambda stmts, f: _compile_fused(stmts, f, inline=fuse is True,
                                             **_tiles_of(stmts, options))) if fuse else None
    if named:
        text, sparse_ops, positional = named
        formats = dict(formats or {})
        given = fmt if fmt is not None else "csr"
        formats.setdefault(sparse_ops[0], given)
        for op in sparse_ops[1:]:
            formats.setdefault(op, _result_format(given, sparse_ops[0]))

        def build(scale: float):
            return ProgramKernel(text.format(scale=repr(float(scale))),
                                 lambda stmt, f: compile(stmt, formats=f,
                                                         **_tiles_of([stmt], options)),
                                 formats, positional, fused)
        heads_text, results = HEADS_PROGRAMS.get(name, (None, {}))
        target = options.get("target", "cpu")
        on_gpu = getattr(target, "name", target) == "cuda"
        heads_formats = {**formats, **{out: _batched_format(formats[src], src, on_gpu)
                                       for out, src in results.items()}}

        def build_heads(scale: float):
            return ProgramKernel(heads_text.format(scale=repr(float(scale))),
                                 lambda stmt, f: compile(stmt, formats=f, **options),
                                 heads_formats, positional, fused)
        return NamedProgram(name, build, build_heads if heads_text is not None else None)
    if fmt is not None:
        raise FormatError("fmt= is for named kernels; give a program formats={...}")
    return ProgramKernel(text, lambda stmt, f: compile(stmt, formats=f,
                                                       **_tiles_of([stmt], options)),
                         formats, compile_fused=fused)


def _result_format(spec, operand: str):
    """The format of a named program's sparse result (attention's scores S) whose
    pattern is operand ``operand``'s, in format ``spec``: ``spec`` itself where it
    stores whole rows first at a dense level (csr, dia, ell, nm), else csr,
    assembled from the operand's stored entries (explicit zeros kept), so that
    the statements reading the result walk its rows and fuse into one kernel
    (``fuse_rows``), which ``passes/online_softmax`` makes one walk per row:
    with bsr's blocks or coo's compressed rows each statement stayed a kernel
    of its own (2026-11-29, this loaded 2-core CPU, BigBird L = 2048, d = 64,
    bsr(16,16): 44 ms as four kernels, 28 ms with S in csr)."""
    if resolve_sum_format(spec) is not None:
        return spec
    fmt = resolve_format(spec, 2, what=f"tensor {operand}")
    if not fmt.is_blocked and fmt.order[0] == 0 and fmt.levels[0].locatable:
        return spec
    return "csr"


def _batched_format(spec, operand: str, on_gpu: bool) -> Format:
    """The format of a heads program's sparse result on the GPU (``on_gpu``) or
    the CPU: there, operand ``operand``'s format ``spec`` (of a matrix) with a
    heads level innermost (``formats.batched``: the operand's index arrays,
    one run of values per head), where that format stores whole rows first at
    a dense level (csr, dia, ell, nm), so that the scores kernel writes at the
    operand's positions (no counting kernel, prefix sum and device
    synchronization) and the statements reading the result walk its rows
    (h, i) as they walk the operand's rows i.  Elsewhere, and on the CPU,
    the result is stored per head as dds (dense h, dense i, compressed j), its
    pattern assembled from the operand's entries: coo's compressed rows and
    bsr's blocks of rows would make the readers copy a batch; on the CPU,
    where assembling costs ~0.05 ms, LLVM compiles the readers' per-head
    value offset (``h * nnz + p``) into loops ~20% slower than dds' own
    positions (2026-11-29, L = 2048, one head: 14.2 against 11.1 ms), which
    outweighs the scores kernel's gain (tests/test_batched_pattern.py keeps
    the batched program exercised on the CPU)."""
    from .formats.format import batched
    if on_gpu and resolve_sum_format(spec) is None:
        fmt = resolve_format(spec, 2, what=f"tensor {operand}")
        if not fmt.is_blocked and fmt.order[0] == 0 and fmt.levels[0].locatable:
            return batched(fmt)
    return resolve_format("dds", 3)


def _indices_of(statements) -> set[str]:
    out: set[str] = set()
    for stmt in statements:
        a = parse(stmt)
        for acc in (a.lhs,) + a.accesses():
            out.update(acc.indices)
    return out


def _program_tiles(text: str, options: dict) -> dict:
    """``options`` with a ``tile`` knob (given as a keyword or in ``schedule=``) moved
    into ``schedule=``; ScheduleError for an index no statement of ``text`` has."""
    from .runtime.program import split_statements
    schedule = options.get("schedule")
    if isinstance(schedule, str) or ("tile" not in options and getattr(schedule, "tile", None)
                                     is None):
        return options
    options = dict(options)
    schedule = (schedule or Schedule()).replace(tile=options.pop("tile", None)
                                                or (schedule.tile if schedule else None))
    indices = _indices_of(split_statements(text))
    for index, _ in schedule.tile or ():
        if index not in indices:
            raise ScheduleError.of("tile", f"no statement of this program has an index "
                                           f"'{index}' (its indices: {', '.join(sorted(indices))})")
    options["schedule"] = schedule
    return options


def _tiles_of(statements, options: dict) -> dict:
    """``options`` for compiling ``statements`` of a program: the schedule's ``tile``
    kept for the indices they have (each statement tiles the indices it has)."""
    schedule = options.get("schedule")
    if not isinstance(schedule, Schedule) or schedule.tile is None:
        return options
    indices = _indices_of(statements)
    kept = tuple((ix, n) for ix, n in schedule.tile if ix in indices)
    return {**options, "schedule": schedule.replace(tile=kept or None)}


def _compile_fused(statements, formats, *, target="cpu", dtype=None, accumulate=None,
                   schedule: Schedule | None = None, inline: bool = True, **target_options):
    """The statements as one kernel (``passes/fuse_rows``: their loops over rows
    fused, intermediate vectors in registers), or None where they do not fuse.
    With ``inline``, a result with a sparse operand's pattern that later
    statements read entry by entry is recomputed where they read it
    (``passes/inline_producer``) instead of stored.

    The kernel's signature (what binds operands and sizes) is the last
    statement's output and every tensor the statements read that they do not
    produce, each accessed with one tuple of indices throughout."""
    from .frontend import ast
    from .frontend.names import is_plain
    from .ir.lower import OutputKind, Program, lower
    from .passes.fuse_rows import NotFusable, fuse_rows
    from .passes.inline_producer import inline_batched, inline_sampled
    if isinstance(schedule, str):          # schedule="auto": each statement its own
        return None
    assigns = [parse(s) for s in statements]
    for a in assigns:
        check(a)
    made = [a.lhs.tensor for a in assigns]
    external: dict[str, ast.Access] = {}
    ranks = {}
    for a in assigns:
        for acc in (a.lhs,) + a.accesses():
            ranks[acc.tensor] = len(acc.indices)
            if not all(is_plain(n) for n in (acc.tensor, *acc.indices)):
                return None                     # keep to names spc spells as written
            if acc.tensor in made:
                continue
            seen = external.setdefault(acc.tensor, acc)
            if seen.indices != acc.indices:
                return None
    out = assigns[-1].lhs
    if not set(out.indices) <= {ix for acc in external.values() for ix in acc.indices}:
        return None
    resolved = {t: _resolved_format(formats, t, r) for t, r in ranks.items()}
    if any(isinstance(f, SumFormat) for f in resolved.values()) or not resolved[out.tensor].is_dense:
        return None
    rhs = None
    for acc in external.values():
        rhs = acc if rhs is None else ast.BinOp("*", rhs, acc, acc.span)
    text = "; ".join(statements)
    signature = ast.Assignment(out, rhs, text)
    dt = None if dtype is None else _value_type(dtype)
    sums = None if accumulate is None else _value_type(accumulate)
    label = "f" + hashlib.sha1(text.encode()).hexdigest()[:8]
    schedule = with_knobs(schedule or Schedule(), target_options).replace(order=None)
    built_target = make_target(target, **target_options)     # after with_knobs took the knobs
    sig_formats = {t: resolved[t] for t in [out.tensor, *external]}

    def make(value_type: DType):
        def lowering(index_dtype):
            kernels, producers = [], []
            for n, a in enumerate(assigns):
                mine = {t: resolved[t] for t in [a.lhs.tensor] + [x.tensor for x in a.accesses()]}
                program = lower(a, mine, name=f"{label}_{n}", value_dtype=value_type,
                                index_dtype=index_dtype, sum_dtype=sums)
                if len(program.kernels) == 1 and program.output_kind == OutputKind.PATTERN \
                        and n < len(assigns) - 1 and inline:
                    producers.append((program.compute, a.lhs.tensor, program.pattern_source))
                    continue
                if program.output_kind == OutputKind.ASSEMBLED and n < len(assigns) - 1 \
                        and inline:          # a batch of a pattern (S[h,i,j] of A[i,j]): the
                    dense = dict(mine)       # value it computes, lowered as if stored dense
                    dense[a.lhs.tensor] = resolve_format("dense", len(a.lhs.indices))
                    values = lower(a, dense, name=f"{label}_{n}", value_dtype=value_type,
                                   index_dtype=index_dtype, sum_dtype=sums)
                    if len(values.kernels) == 1:
                        producers.append((values.compute, a.lhs.tensor, None))
                        continue
                if len(program.kernels) != 1 or program.output_kind != OutputKind.DENSE:
                    raise NotFusable(f"statement {n} is not one kernel with a dense output")
                kernel = program.compute
                for t, (producer, result, source) in enumerate(producers):
                    kernel = inline_sampled(producer, kernel, result, source, f"s{t}") \
                        if source is not None else \
                        inline_batched(producer, kernel, result, f"s{t}")
                kernels.append(kernel)
            fused = fuse_rows(kernels, label)
            return Program((fused,), out.tensor, OutputKind.DENSE, resolved[out.tensor], None,
                           tuple(dict(fused.attrs)["order"].split(",")),
                           tuple(sorted(sig_formats.items())), value_type, index_dtype)
        return CompiledKernel(signature, sig_formats, built_target, value_type, schedule, label,
                              tuple(external), accumulate=sums, lowering=lowering)
    try:
        return TypedKernel(make, dt)
    except (NotFusable, UnsupportedError):
        return None


class NamedProgram:
    """A named program taking a scale: ``attention(A, Q, K, V, scale=None)`` (scale
    1/sqrt(d), d = Q's last dimension).  The scale is a constant of the
    program's kernels, which are compiled once per scale (a scale operand would
    keep the calls off the straight-line call paths); ``program`` is the last
    one run.

    Heads (issue 12): a call dispatches on the operands' rank.  Q, K, V of shape
    (L, d) run the program of ``NAMED_PROGRAMS``; of shape (H, L, d) the program
    of ``HEADS_PROGRAMS`` (every head in one kernel per statement, the heads loop
    outermost, the mask A shared by all heads; the result is (H, L, d)), compiled
    at the first such call.  Q, K, V of different ranks or numbers of heads
    raise a ShapeError naming them."""

    def __init__(self, name: str, build, build_heads=None):
        self.name = name
        self._build = build
        self._build_heads = build_heads
        self.program = build(1.0)      # built now, so that errors show at compile time
        self._programs: dict[tuple[bool, float], object] = {(False, 1.0): self.program}

    def __call__(self, A, Q, K, V, scale=None, *, validate: bool = True):
        import math
        heads = _heads_of(self.name, {"Q": Q, "K": K, "V": V},
                          batched=self._build_heads is not None)
        if scale is None:
            d = int(Q.shape[-1])
            scale = 1.0 / math.sqrt(d) if d else 1.0
        program = self._program(heads is not None, float(scale))
        self.program = program
        return program(A, Q, K, V, validate=validate)

    def heads_program(self, scale: float = 1.0):
        """The program a call with (H, L, d) operands runs at ``scale``, compiled
        now if it was not (to read its kernels' ``ir`` and ``source`` without a
        call: on ``target="cuda"`` with no GPU, say); UnsupportedError for a
        program without a heads form."""
        if self._build_heads is None:
            raise UnsupportedError(f"{self.name} has no form over a batch of heads")
        return self._program(True, float(scale))

    def _program(self, heads: bool, scale: float):
        """The program for 3-d (``heads``) or 2-d operands at ``scale``, built once."""
        key = (heads, scale)
        program = self._programs.get(key)
        if program is None:
            if len(self._programs) > 16:
                self._programs.clear()
            program = self._programs[key] = (self._build_heads if heads else self._build)(scale)
        return program

    def __getattr__(self, attr):
        return getattr(self.__dict__["program"], attr)


def _heads_of(name: str, operands: dict, *, batched: bool) -> int | None:
    """The number of heads of a named program's dense operands (each of shape
    (L, d), or (H, L, d) when the program has a heads form), or None for 2-d
    operands; a ShapeError naming the operands that disagree."""
    from .errors import ShapeError
    shapes = {n: tuple(getattr(x, "shape", ())) for n, x in operands.items()}
    ranks = {n: len(s) for n, s in shapes.items()}
    allowed = (2, 3) if batched else (2,)
    wrong = [n for n, r in ranks.items() if r not in allowed]
    if wrong:
        raise ShapeError(f"{name}: operand(s) {', '.join(wrong)} have shape(s) "
                         f"{', '.join(str(shapes[n]) for n in wrong)}; "
                         f"{', '.join(operands)} must each be "
                         + ("(L, d) or, for a batch of heads, (H, L, d)" if batched
                            else "(L, d)"))
    if len(set(ranks.values())) > 1:
        raise ShapeError(f"{name}: operands {', '.join(f'{n} {shapes[n]}' for n in shapes)} "
                         f"mix 2-d and 3-d: give every one as (L, d), or every one as "
                         f"(H, L, d)")
    if next(iter(ranks.values())) == 2:
        return None
    heads = {n: s[0] for n, s in shapes.items()}
    if len(set(heads.values())) > 1:
        raise ShapeError(f"{name}: operands {', '.join(f'{n} {shapes[n]}' for n in shapes)} "
                         f"have different numbers of heads (first dimension)")
    return int(next(iter(heads.values())))


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
    """Compile a named kernel ("spmv", "spmm", "sddmm"), a named program
    ("attention"), an index-notation expression such as
    ``"y[i] = A[i,j] * x[j] + b[i]"``, or a program of several such statements
    separated by ``;`` or newlines (a ProgramKernel; ``fuse=`` True, "rows" or
    False chooses how much of it becomes one kernel: see ``_compile_program``).

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
    from .runtime.program import split_statements
    if isinstance(kernel, str) and (len(split_statements(kernel)) > 1
                                    or kernel.strip().lower() in NAMED_PROGRAMS):
        return _compile_program(kernel, fmt=fmt, formats=formats, target=target, dtype=dtype,
                                accumulate=accumulate, schedule=schedule, **target_options)
    if "fuse" in target_options:
        raise UnsupportedError("fuse= is for programs of several statements")
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
    diagonals = rewrite_diagonals(assign) if positional is None else None
    if diagonals is not None:
        return _compile_diagonals(assign, *diagonals, fmts, target=target, dtype=dtype,
                                  accumulate=accumulate, schedule=schedule, **target_options)
    check(assign)
    ranks = {assign.lhs.tensor: len(assign.lhs.indices)}
    for acc in assign.accesses():
        ranks[acc.tensor] = len(acc.indices)
    for t in fmts:
        if t not in ranks:
            raise FormatError(f"formats names '{t}', which is not a tensor of '{text}'")
    resolved: dict[str, Format] = {t: _resolved_format(fmts, t, r)
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
    if schedule.tile is not None:
        schedule = dataclasses.replace(
            schedule, tile=tuple(sorted((loop_var_name(ix, internal), n)
                                        for ix, n in schedule.tile)))
    kind = CompositeKernel if any(isinstance(f, SumFormat) for f in resolved.values()) \
        else CompiledKernel
    display = {i: u for u, i in internal.items() if i != u}
    built_target = make_target(target, **target_options)

    inner_assign = rename(assign, internal)
    inner_formats = {internal[t]: f for t, f in resolved.items()}
    inner_inputs = tuple(internal[n] for n in input_names)
    copying: list = []          # the copy plan, once found (logged once per compile)

    def make(value_type: DType):
        if sums is not None and sums.nbytes < value_type.widened.nbytes:
            from .errors import DTypeError
            raise DTypeError(f"accumulate={accumulate!r} would sum {value_type.numpy} values "
                             f"in less precision than they hold")
        knobs = schedule if dt is not None else for_value_type(schedule, value_type,
                                                                 built_target.name)
        try:
            if copying:
                return _copying_kernel(copying[0], inner_assign, inner_formats, inner_inputs,
                                       display, built_target, value_type, knobs, label, sums)
            try:
                if schedule.order is None and not copying and _gustavson(
                        inner_assign, inner_formats, copying, display):
                    return _copying_kernel(copying[0], inner_assign, inner_formats,
                                           inner_inputs, display, built_target, value_type,
                                           knobs, label, sums)
                return kind(inner_assign, inner_formats, built_target, value_type, knobs, label,
                            inner_inputs, display=display, accumulate=sums)
            except UnsupportedError as conflict:
                reason = in_user_names(conflict, display).message
                plan = dataclasses.replace(
                    _copy_plan(conflict, inner_assign, inner_formats, schedule.order, display),
                    reason=reason)
                tried: set = set()
                while True:         # a target may refuse what lowering accepts (CUDA
                    try:            # workspaces): then the output in the next format
                        k = _copying_kernel(plan, inner_assign, inner_formats, inner_inputs,
                                            display, built_target, value_type, knobs, label,
                                            sums)
                        break
                    except UnsupportedError as refused:
                        if isinstance(refused, ScheduleError) \
                                or inner_formats[inner_assign.lhs.tensor].is_dense:
                            raise
                        from .ir.operand_copies import lowers, plan_output
                        if plan.output is not None:
                            tried.add(plan.output.computed)
                        plan = plan_output(inner_assign, inner_formats,
                                           lambda a, f: lowers(a, f, schedule.order),
                                           exclude=frozenset(tried))
                        if plan is None:
                            raise conflict from None
                        plan = dataclasses.replace(plan, reason=reason)
                copying.append(plan)
                _log.info("spc.compile('%s'): %s; because %s", assign.source,
                          "; ".join(k.describe_copies()), plan.reason)
                return k
        except SpcError as err:
            raise in_user_names(err, display) from None
    typed = TypedKernel(make, dt)
    if dt is None and built_target.name == "cuda" and not schedule.tf32 and (
            schedule.tensor_cores or schedule.tile_cols is not None):
        typed.specialize(DType.F16)     # the tensor-core knobs steer 16-bit values: refused
    return typed                        # now where they cannot (tf32: float32's, built)


def _resolved_format(formats: dict, tensor: str, rank: int):
    """Tensor ``tensor``'s format (a SumFormat for hyb) from the user's ``formats``
    (absent: dense) for a tensor of ``rank``; a FormatError names a bad spec."""
    return resolve_sum_format(formats.get(tensor)) or resolve_format(
        formats.get(tensor, "dense"), rank, what=f"tensor {tensor}")


def _compile_diagonals(assign, text: str, reads, fmts: dict, **options):
    """A DiagonalKernel: ``assign`` (which repeats an index in some access) computed
    by the kernel of ``text``, where each of ``reads`` is an access of a diagonal
    tensor (``frontend/diagonals.py``, ``runtime/diagonal_reads.py``)."""
    from .runtime.diagonal_reads import DiagonalKernel, diagonal_format
    ranks = {a.tensor: len(a.indices) for a in assign.accesses()}
    for t in fmts:
        if t not in ranks and t != assign.lhs.tensor:
            raise FormatError(f"formats names '{t}', which is not a tensor of '{assign.source}'")
    sources = {r.source: _resolved_format(fmts, r.source, ranks[r.source])
               for r in reads}
    still_read = {a.tensor for a in parse(text).accesses()} | {assign.lhs.tensor}
    inner_formats = {t: f for t, f in fmts.items() if t in still_read}
    for r in reads:
        inner_formats[r.name] = diagonal_format(sources[r.source], len(r.keep))
    inner = compile(text, formats=inner_formats, **options)
    input_names = tuple(dict.fromkeys(a.tensor for a in assign.accesses()))
    for r in reads:
        _log.info("spc.compile('%s'): %s", assign.source, r.describe())
    return DiagonalKernel(inner, tuple(reads), input_names, sources)


def _copy_plan(conflict: UnsupportedError, assign, formats, order, display=None):
    """The copies that let the kernels compute what ``conflict`` refused
    (``ir/operand_copies``), or raise.

    Without an explicit ``order``: the fewest operands read through copies in
    another storage order or format (a conflict of mode orders, a blocked
    operand beside an unblocked one), else a sparse output computed in a
    format the kernels build and converted (``plan_output``: coo, dcsr, csf,
    ell... outputs), else the refusal (a ModeOrderConflict says what was tried).
    A ScheduleError of another knob is raised as it is.

    With an explicit ``order``: copies of the accesses ``order`` visits out of
    storage order (each in the mode order ``order`` binds, in its own levels or
    csr-like ones), with, where the program without ``order`` needs a plan,
    that plan's output format; else (no copies serve: the output's own order, an
    unknown index) the refusal, which names the level and the orders that work."""
    from .ir.lower import split_base
    from .ir.operand_copies import (CopyPlan, _storage_order, assembled_formats, lowers,
                                    plan_copies_for_order)
    if order is not None:
        if isinstance(conflict, ScheduleError) and conflict.knob != "order":
            raise conflict
        if lowers(assign, formats):     # no plan needed without ``order``: copies for it alone
            plan = plan_copies_for_order(assign, formats, order,
                                         lambda a, f: lowers(a, f, order))
            if plan is None:
                raise conflict
            copies = ", ".join(f"{c.source} through a copy in {c.format.name}"
                               for c in plan.copies)
            warnings.warn(PerformanceWarning(in_user_names(UnsupportedError(
                f"schedule order {order} visits levels out of their storage order: spc reads "
                f"{copies}, converted on every call; the order spc picks "
                f"(order=None) reads every operand as stored"), display or {}).message),
                stacklevel=4)
            return plan
        base = _plan_without_order(assign, formats)
        if base is None:
            raise conflict
        outputs = [None]
        if base.output is not None:       # the output as the program without order computes
            out = assign.lhs.tensor           # it, or in the mode order ``order`` appends
            outputs = list(dict.fromkeys([base.output.computed] + assembled_formats(
                len(assign.lhs.indices), _storage_order(assign.lhs.indices, order,
                                                        lambda v: split_base(v) or v))))
        for computed in outputs:
            trial = formats if computed is None else {**formats, out: computed}
            if lowers(assign, trial, order):
                plan = CopyPlan(assign, trial, ())
            else:
                plan = plan_copies_for_order(assign, trial, order,
                                             lambda a, f: lowers(a, f, order))
            if plan is not None:
                output = None if computed is None else dataclasses.replace(
                    base.output, computed=computed)
                return dataclasses.replace(plan, output=output)
        if lowers(base.assign, base.formats, order):    # the plan's own copies serve the order
            return base
        raise conflict
    if isinstance(conflict, ScheduleError):
        raise conflict
    plan = _plan_without_order(assign, formats)
    if plan is None:
        if isinstance(conflict, ModeOrderConflict):
            raise ModeOrderConflict(f"{conflict.message}; spc found no operand whose copy in "
                                    f"another storage order resolves it") from None
        raise conflict
    return plan


def _gustavson(assign, formats, copying: list, display) -> bool:
    """When the default order would build the sparse output by inner products over
    a dense loop (csr x csc SpGEMM into csr: rows x columns merges), the fewest
    operand copies that give a row-workspace (Gustavson) order instead, put in
    ``copying`` and logged; True when there are such copies."""
    from .ir.lower import default_loop_order, uses_workspace, workspace_loop_order
    from .ir.operand_copies import dense_inner_products, lowers, plan_copies
    if isinstance(formats[assign.lhs.tensor], SumFormat) or \
            not dense_inner_products(assign, formats):
        return False                      # a sum output (hyb) is built by its parts' kernels

    def gustavson(a, f):
        try:
            return lowers(a, f) and not dense_inner_products(a, f) and \
                uses_workspace(a, f, default_loop_order(a, f))
        except UnsupportedError:
            return False
    last = assign.lhs.indices[formats[assign.lhs.tensor].order[-1]]

    def rows_then_reductions(a, f):          # Gustavson's order: the output's last index
        order = workspace_loop_order(a, f)   # innermost, under the reductions
        return tuple(v for v in order if v != last) + (last,)
    plan = plan_copies(assign, formats, gustavson, rows_then_reductions)
    if plan is None:
        return False
    reason = (f"'{assign.source}': the loop order without copies builds the sparse output "
              f"{assign.lhs.tensor} by inner products over every coordinate of its last index")
    plan = dataclasses.replace(plan, reason=in_user_names(UnsupportedError(reason),
                                                           display).message)
    copying.append(plan)
    _log.info("spc.compile('%s'): %s; because %s", assign.source,
              "; ".join(c.describe(display) for c in plan.copies), plan.reason)
    return True


def _plan_without_order(assign, formats):
    """The fewest operand copies that let the kernels compute ``assign``, else
    its sparse output computed in another format (with copies), else None."""
    from .ir.operand_copies import lowers, plan_copies, plan_output
    plan = plan_copies(assign, formats, lowers)
    if plan is None and not formats[assign.lhs.tensor].is_dense:
        plan = plan_output(assign, formats, lowers)
    return plan


def _copying_kernel(plan, assign, formats, inputs, display, target, value_type, knobs, label,
                    sums):
    """A CopyingKernel running ``plan``'s rewritten expression (see runtime/operand_copies)."""
    from .runtime.operand_copies import CopyingKernel
    kept = [n for n in inputs if any(a.tensor == n for a in plan.assign.accesses())]
    inner_inputs = tuple(dict.fromkeys(kept + [c.copy for c in plan.copies]))
    inner_display = dict(display)
    for c in plan.copies:
        inner_display[c.copy] = f"{display.get(c.source, c.source)} (its copy in {c.format})"
    kind = CompositeKernel if any(isinstance(f, SumFormat) for f in plan.formats.values()) \
        else CompiledKernel
    inner = kind(plan.assign, plan.formats, target, value_type, knobs, label, inner_inputs,
                 display=inner_display, accumulate=sums)
    return CopyingKernel(plan, inner, expression=assign, formats=formats, inputs=inputs,
                         display=display, name=inner.name)


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
