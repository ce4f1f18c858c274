"""The autotuner (issue 14): ``spc.tune`` searches formats and schedules for one
matrix and remembers the best per device, kernel, value type, N and matrix
signature; ``spc.compile(..., schedule="auto")`` reads what it remembered.

One idea per module: ``signature`` (what a matrix looks like), ``timing`` (one
honest timing), ``candidates`` (what is worth trying, and the rules pruning the
rest), ``reference`` (what the right answer is), ``search`` (successive
halving), ``report`` (what was tried), ``bound`` (a kernel bound to a choice),
``tune`` (``spc.tune``), ``device`` and ``database`` (the tuning database),
``auto`` (``schedule="auto"``).

The package is ``spc.tuning``, not ``spc.tune``: ``spc.tune`` is the function.
"""
from .report import Trial, TuneReport
from .signature import Signature, signature
from .tune import TunedKernel, tune

__all__ = ["Signature", "Trial", "TuneReport", "TunedKernel", "signature", "tune"]
