"""spc's exception types.

Every error spc raises on bad input is an ``SpcError``.  An error may carry the
source text of an index-notation expression and a span inside it; its message
then shows the text with a caret line under the offending part.
"""
from __future__ import annotations


class SpcError(Exception):
    """Base class of every error spc raises on purpose.

    ``source`` is the expression text the error refers to (or None) and
    ``span`` a ``(start, end)`` character range inside it (or None).
    """

    def __init__(self, message: str, *, source: str | None = None,
                 span: tuple[int, int] | None = None):
        self.message = message
        self.source = source
        self.span = span
        super().__init__(self._render())

    def _render(self) -> str:
        if self.source is None or self.span is None:
            return self.message
        start, end = self.span
        start = max(0, min(start, len(self.source)))
        end = max(start + 1, min(end, len(self.source) + 1))
        caret = " " * start + "^" * (end - start)
        return f"{self.message}\n    {self.source}\n    {caret}"


class ParseError(SpcError, ValueError):
    """The expression is not valid index notation (syntax or index use)."""


class ShapeError(SpcError, ValueError):
    """Operand shapes or ranks do not agree with the expression."""


class FormatError(SpcError, ValueError):
    """An unknown format, or a format that does not fit its tensor."""


class KernelNameError(SpcError, ValueError):
    """An unknown named kernel."""


class InputError(SpcError, ValueError):
    """An operand is malformed (index out of range, non-monotone pointers...)."""


class OutputError(InputError):
    """An ``out=`` array that cannot hold the result: wrong shape, dtype, device
    or memory layout, or one that overlaps an operand the kernel reads."""


class DTypeError(SpcError, TypeError):
    """An operand has a dtype spc cannot use for this kernel."""


class UnsupportedError(SpcError, NotImplementedError):
    """A valid request that spc does not implement (yet)."""


class ModeOrderConflict(UnsupportedError):
    """No loop order visits every sparse level after its parents: the operands'
    storage (mode) orders conflict.  ``spc.compile`` answers it by reading an
    operand through a copy stored in another order (``ir/operand_copies.py``);
    it reaches the user only when no such copy helps."""


class ScheduleError(UnsupportedError):
    """A schedule knob that is illegal or meaningless for this kernel and target;
    the message names the knob and says why (``knob`` holds its name)."""

    def __init__(self, message: str, *, knob: str | None = None, **where):
        self.knob = knob
        super().__init__(message, **where)

    @classmethod
    def of(cls, knob: str, why: str) -> "ScheduleError":
        """The error for ``knob``: "schedule <knob>: <why>"."""
        return cls(f"schedule {knob}: {why}", knob=knob)


class ExportError(UnsupportedError):
    """``spc.export`` cannot write a standalone artifact for this kernel (the
    message says which part of it needs spc's Python runtime)."""


class CompileError(SpcError, RuntimeError):
    """Code generation or building failed: a bug in spc, please report it."""


class CacheWarning(UserWarning):
    """A disk-cache entry was not used (damaged, foreign, unloadable) or the
    cache directory cannot be written; spc rebuilt or kept the kernel in memory."""


class ResourceError(SpcError, MemoryError):
    """The host or the GPU ran out of memory for a call's output or workspace."""


class PerformanceWarning(UserWarning):
    """A call does costly work a caller can avoid: converting an operand to a format
    that stores many times more entries than it holds (said once per operand,
    format and size), or copying a host operand of 16 MiB or more to the GPU on
    a call of a CUDA kernel (``runtime/device.py``, ``HOST_COPY_WARN_BYTES``)."""


class DTypeWarning(UserWarning):
    """An operand's values were converted to the value type a kernel was compiled
    for (``spc.compile(..., dtype=...)``), a conversion that loses nothing; spc
    says so once per kernel, operand and type."""
