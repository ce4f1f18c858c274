"""The backend interface: a target renders source from IR, builds it, and names
what shapes its binaries (for the cache).  Launching is the runtime's job.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from ..ir.nodes import Kernel


class Target(ABC):
    """One code generator + toolchain.  Instances are immutable and hashable."""

    name: str = "abstract"

    def pipeline(self, schedule) -> tuple[Callable[[Kernel], Kernel], ...]:
        """The passes this target runs after lowering for ``schedule``, in order
        (``spc/passes/pipeline.py``)."""
        from ..passes.pipeline import PIPELINES
        return PIPELINES[self.name](schedule)

    @abstractmethod
    def render(self, kernel: Kernel) -> str:
        """Source text (LLVM IR, CUDA C) for one kernel."""

    @abstractmethod
    def build(self, source: str, kernel: Kernel) -> bytes:
        """A binary (object code, cubin) from ``render``'s output."""

    @abstractmethod
    def load(self, binary: bytes, kernel: Kernel, schedule=None):
        """A launcher for a built binary: ``launcher(buffers, sizes, **launch)``;
        ``schedule``'s launch knobs steer its launches."""

    def check_schedule(self, schedule, kernels) -> None:
        """Raise ScheduleError for a knob of ``schedule`` that this target, or the
        scheduled IR ``kernels``, give no meaning (the default accepts all)."""

    def recognise(self, binary: bytes) -> bool:
        """Whether ``binary`` looks like one of this target's binaries (a cheap
        check before a cached file is loaded; the default accepts anything)."""
        return True

    @abstractmethod
    def cache_key(self) -> str:
        """Everything besides the IR that shapes the binary: arch, flags, versions."""
