"""``spc.TuneReport``: everything one tuning tried, as rows and as a table."""
from __future__ import annotations

from dataclasses import dataclass, field

from .candidates import Candidate
from .signature import Signature


@dataclass
class Trial:
    """One candidate's fate.  ``status``: "chosen", "ok", "rejected" (its result
    differed from the reference, or it failed), "skipped" (pruned by the rules,
    not compiling here, or out of budget).  Times in seconds per call:
    ``time`` the kernel's median at the last round it reached, ``convert`` the
    one-off conversion and inspection, ``amortized`` = time + convert / calls;
    ``speedup`` = the default's amortized time / this one's."""
    candidate: Candidate
    status: str
    reason: str = ""
    time: float | None = None
    convert: float | None = None
    amortized: float | None = None
    speedup: float | None = None
    rounds: int = 0

    def as_dict(self) -> dict:
        return {"format": self.candidate.fmt, "schedule": str(self.candidate.schedule),
                "status": self.status, "reason": self.reason, "time_s": self.time,
                "convert_s": self.convert, "amortized_s": self.amortized,
                "speedup": self.speedup, "rounds": self.rounds}


@dataclass
class TuneReport:
    """The trials of one ``spc.tune`` call (the chosen one first, then by time),
    with what was tuned and how long it took (``wall_s``)."""
    kernel: str
    target: str
    dtype: str
    n: int
    calls: int
    signature: Signature
    trials: list[Trial] = field(default_factory=list)
    wall_s: float = 0.0
    budget_s: float = 0.0

    @property
    def chosen(self) -> Trial:
        """The trial the tuner chose (the fastest correct one)."""
        return next(t for t in self.trials if t.status == "chosen")

    @property
    def default(self) -> Trial:
        """The trial of csr with the default schedule (the speedups' baseline)."""
        return next(t for t in self.trials if t.candidate == Candidate("csr", _default()))

    def rows(self) -> list[dict]:
        """Every trial as a dict, in the report's order (the chosen one first)."""
        return [t.as_dict() for t in self.trials]

    def __str__(self) -> str:
        s = self.signature
        head = (f"spc.tune {self.kernel} N={self.n} {self.dtype} on {self.target}: "
                f"{s.rows}x{s.cols}, nnz {s.nnz}; {len(self.trials)} candidates in "
                f"{self.wall_s:.2f} s (budget {self.budget_s:g} s); conversion amortized "
                f"over {self.calls} calls")
        lines = [head, f"{'candidate':48s} {'us/call':>9s} {'conv us':>9s} {'speedup':>8s}  status"]
        for t in self.trials:
            us = lambda x: f"{x * 1e6:9.1f}" if x is not None else f"{'-':>9s}"  # noqa: E731
            sp = f"{t.speedup:8.2f}" if t.speedup is not None else f"{'-':>8s}"
            status = t.status + (f" ({t.reason})" if t.reason else "")
            lines.append(f"{str(t.candidate)[:48]:48s} {us(t.time)} {us(t.convert)} {sp}  {status}")
        return "\n".join(lines)


def _default():
    from ..schedule import Schedule
    return Schedule()
