"""Record on a kernel which inputs it reads correctly when unsorted or duplicated."""
from __future__ import annotations

from dataclasses import replace

from ..ir.analysis import accepts_noncanonical
from ..ir.nodes import Kernel


def mark_noncanonical(kernel: Kernel) -> Kernel:
    """``kernel`` with ``accepts_noncanonical`` set from its IR (see ir.analysis).

    Runs last, on the IR that will be rendered: the runtime skips the sorted /
    unique check (and canonicalization) only for the tensors listed there.
    """
    return replace(kernel, accepts_noncanonical=accepts_noncanonical(kernel))
