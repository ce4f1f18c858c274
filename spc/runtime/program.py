"""Programs of several statements: ``"S[i,j] = ...; m[i] = max(j, S[i,j]); ..."``.

Consecutive statements whose loops over rows line up compile to one kernel
(``passes/fuse_rows``, through ``compile_fused``); every other statement to its
own (``spc.compile`` of that statement, with the program's formats, target,
dtype and schedule).  A call runs the kernels in order, each reading the
program's operands and earlier results by name, and returns the last
statement's result.  Results read by a later kernel live in memory between
the kernels (in the operands' family, on their device).
"""
from __future__ import annotations

from ..errors import FormatError, ParseError
from ..frontend.parser import parse
from ..frontend.pattern_reads import program_pattern_reads
from .compiled import KernelSequence, call_option
from .pattern_kept import check_pattern_kept, may_change_pattern


def split_statements(text: str) -> list[str]:
    """The statements of ``text``, separated by ``;`` or newlines (empty ones dropped)."""
    return [s.strip() for line in text.splitlines() for s in line.split(";") if s.strip()]


class ProgramKernel(KernelSequence):
    """A compiled program: call it with its operands (positionally in
    ``input_names`` order, or by name); ``kernels`` are the statements' kernels
    in order, ``ir`` and ``source`` theirs, one after the other."""

    def __init__(self, text: str, compile_statement, formats: dict | None = None,
                 inputs: tuple[str, ...] | None = None, compile_fused=None):
        """``compile_statement(statement, formats)`` compiles one statement;
        ``compile_fused(statements, formats)`` a run of statements as one kernel
        (``passes/fuse_rows``), or returns None where they do not fuse;
        ``formats`` maps tensor names of any statement to formats; ``inputs``
        orders the operands (default: first appearance)."""
        statements = split_statements(text)
        self.source_text = text
        written: dict[str, str] = {}
        read: list[str] = []
        parsed = []
        for stmt in statements:
            assign = parse(stmt)
            out = assign.lhs.tensor
            for acc in assign.accesses():
                name = acc.tensor
                if name not in written and name not in read:
                    read.append(name)
            if out in written:
                raise ParseError(f"tensor '{out}' is written by two statements",
                                 source=stmt, span=assign.lhs.span)
            if out in read:
                raise ParseError(f"tensor '{out}' is read before this statement writes it",
                                 source=stmt, span=assign.lhs.span)
            written[out] = stmt
            parsed.append(assign)
        formats = dict(formats or {})
        unknown = sorted(set(formats) - set(written) - set(read))
        if unknown:
            raise FormatError(f"formats names {', '.join(map(repr, unknown))}, which is not "
                              f"a tensor of the program")
        self.kernels = []
        reads = []
        outputs = []
        start = 0
        while start < len(statements):
            end, kernel = _fused_run(statements, parsed, start, formats, compile_fused)
            group = parsed[start:end]
            if kernel is None:
                names = [group[0].lhs.tensor] + [a.tensor for a in group[0].accesses()]
                kernel = compile_statement(statements[start],
                                           {n: formats[n] for n in names if n in formats})
            made = {a.lhs.tensor for a in group}
            self.kernels.append(kernel)
            reads.append({a.tensor for g in group for a in g.accesses() if a.tensor not in made})
            outputs.append(group[-1].lhs.tensor)
            start = end
        self.output = parsed[-1].lhs.tensor
        self.outputs = tuple(outputs)
        self.input_names = tuple(inputs) if inputs is not None else tuple(read)
        if set(self.input_names) != set(read):
            raise ParseError(f"the program's operands are {sorted(read)}, not "
                             f"{sorted(self.input_names)}", source=text, span=(0, len(text)))
        self.name = "program"
        self.statements = tuple(statements)
        # results of earlier statements are well formed and canonical (spc built
        # them): a kernel whose sparse operands are all such results checks no
        # storage (shapes and types are always checked).  Each kernel checks the
        # caller's sparse operands it reads: whether one needs canonicalizing
        # depends on that kernel.
        self.checks = tuple(any(n in self.input_names and not _is_dense(k, n) for n in r)
                            for k, r in zip(self.kernels, reads))
        # operands whose pattern the program's result depends on (a mask whose pattern
        # the scores take, then read by stored() or max) in a format whose conversion may
        # change it: (name, the format the first kernel reading it takes it in)
        sensitive = program_pattern_reads(parsed)
        self.pattern_inputs = tuple(
            (n, fmt) for n in self.input_names if n in sensitive
            for fmt in [next(_format_of(k, n) for k, r in zip(self.kernels, reads) if n in r)]
            if fmt is not None and may_change_pattern(fmt))

    def _call(self, args, kwargs):
        validate = call_option(self.input_names, kwargs)
        if len(args) > len(self.input_names):
            raise TypeError(f"the program takes {len(self.input_names)} operands "
                            f"({', '.join(self.input_names)}), got {len(args)}")
        env = dict(zip(self.input_names, args))
        for name, value in kwargs.items():
            if name not in self.input_names:
                raise TypeError(f"the program has no operand '{name}' (its operands: "
                                f"{', '.join(self.input_names)})")
            if name in env:
                raise TypeError(f"operand '{name}' given twice")
            env[name] = value
        missing = [n for n in self.input_names if n not in env]
        if missing:
            raise TypeError(f"missing operand(s) {', '.join(missing)}")
        for name, fmt in self.pattern_inputs:
            _check_pattern_kept(env[name], fmt, name)
        result = None
        for out, kernel, check in zip(self.outputs, self.kernels, self.checks):
            args = [env[n] for n in kernel.input_names]     # positional: the fast call paths
            # a kernel with an operand named ``validate`` takes that keyword as the
            # operand (call_option): it validates, as a call naming it would
            result = kernel(*args) if validate and check or "validate" in kernel.input_names \
                else kernel(*args, validate=False)
            env[out] = result
        return result


    def __repr__(self) -> str:
        return f"ProgramKernel({'; '.join(self.statements)!r})"


def _is_dense(kernel, name: str) -> bool:
    """Whether ``kernel`` (a TypedKernel) takes operand ``name`` (a user name) dense."""
    fmt = _format_of(kernel, name)
    return fmt is not None and fmt.is_dense


def _format_of(kernel, name: str):
    """The format ``kernel`` takes operand ``name`` (a user name) in, or None."""
    internal = {v: k for k, v in kernel.display.items()}.get(name, name)
    return kernel.formats.get(internal)


def _check_pattern_kept(x, fmt, name: str) -> None:
    """``check_pattern_kept`` for program operand ``x``, converted to ``fmt`` on the
    host here (the kernel converts it again: a cost only where the check applies)."""
    from ..formats.composite import SumFormat, SumTensor, sum_tensor
    from ..formats.tensor import Tensor, tensor
    from .operand_copies import host_copy
    from .operands import on_device, operand_errors
    if isinstance(x, (Tensor, SumTensor)) and x.format == fmt:
        return
    host = host_copy(x) if on_device(x) else x
    with operand_errors(name):
        converted = sum_tensor(host, fmt) if isinstance(fmt, SumFormat) else tensor(host, fmt)
    check_pattern_kept(host, converted, fmt, name)


def _fused_run(statements, parsed, start: int, formats: dict, compile_fused):
    """(end, kernel): the longest run ``statements[start:end]`` of two or more that
    ``compile_fused`` makes one kernel of, whose results but the last no later
    statement reads; or (start + 1, None)."""
    if compile_fused is None:
        return start + 1, None
    for end in range(len(parsed), start + 1, -1):
        inner = {a.lhs.tensor for a in parsed[start:end - 1]}
        later = {a.tensor for g in parsed[end:] for a in g.accesses()}
        if inner & later:
            continue
        names = {n for g in parsed[start:end] for n in
                 [g.lhs.tensor] + [a.tensor for a in g.accesses()]}
        kernel = compile_fused(statements[start:end],
                               {n: f for n, f in formats.items() if n in names})
        if kernel is not None:
            return end, kernel
    return start + 1, None
