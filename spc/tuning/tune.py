"""``spc.tune``: search formats and schedules for one matrix, return the winner bound."""
from __future__ import annotations

from ..errors import InputError, UnsupportedError
from .bound import BoundKernel, inspects
from .candidates import Candidate, formats, schedules
from .reference import check_kernel, width
from .report import TuneReport
from .search import search
from .signature import signature

DEFAULT_BUDGET_S = 10.0
DEFAULT_CALLS = 100


class TunedKernel(BoundKernel):
    """What ``spc.tune`` returns: a kernel bound to the best format and schedule
    found (``fmt``, ``schedule``), called like a kernel, with ``report`` (a
    TuneReport) of everything tried."""

    def __init__(self, kernel, fmt, schedule, report: TuneReport):
        super().__init__(kernel, fmt, schedule)
        self.report = report

    def __repr__(self) -> str:
        return (f"<spc.tune {self.report.kernel}: {self.fmt} {self.schedule}, "
                f"{self.report.chosen.speedup or 1.0:.2f}x the default>")


def tune(kernel: str, *operands, fmt=None, target: str = "cpu", dtype=None,
         budget_s: float = DEFAULT_BUDGET_S, calls: int = DEFAULT_CALLS,
         database=True, candidates: list[Candidate] | None = None,
         space: str = "rules") -> TunedKernel:
    """Find the fastest correct format and schedule of named ``kernel`` ("spmv",
    "spmm", "sddmm") for ``operands`` (the sparse matrix first, as the kernel takes
    them), and return a kernel bound to it.

    ``fmt``: None lets the tuner choose among csr, bsr(r,c), ell, hyb and
    nm(2,4) where the matrix suits them (``candidates.py`` has the rules); a
    format name or a list restricts the choice to those formats (csr's default
    schedule is still timed, as the baseline).  ``calls``: the number of calls the
    one-off conversion is spread over.  ``budget_s``: no new candidate starts
    after this many seconds (compiling, checking and timing count; the
    default candidate always runs).  ``database``: True records the result in
    the tuning database of this machine (``spc/tuning/database.py``), a Database
    records it there, False nowhere.  ``candidates``: try these after the
    default instead of the rules' (tests inject their own).

    Ensures: the result computes what the default kernel computes (each
    candidate's result is checked against a float64 reference and rejected on
    a mismatch); ``result.report`` lists every candidate with its time,
    speedup over the default (csr, ``Schedule()``) and status.
    """
    import scipy.sparse as sp   # scipy is optional: imported on use
    import spc
    name = check_kernel(kernel)
    if space not in ("rules", "full"):
        raise UnsupportedError(f"spc.tune: space must be 'rules' or 'full', not {space!r}")
    if not (isinstance(calls, int) and calls >= 1) or not budget_s >= 0:
        raise InputError(f"spc.tune: calls must be a positive int and budget_s at least 0, "
                         f"not calls={calls!r}, budget_s={budget_s!r}")
    if not operands:
        raise InputError(f"spc.tune({name!r}, ...) needs the kernel's operands, the sparse "
                         f"matrix first")
    A, dense = operands[0], tuple(operands[1:])
    A_csr = _canonical_csr(A)
    sig = signature(A_csr)
    n = width(name, dense)
    dtype_name = str(dtype) if dtype is not None else str(A_csr.dtype)
    default = Candidate("csr", spc.Schedule())
    kept, pruned = formats(sig, fmt)
    allowed = None if fmt is None else set(kept)
    if candidates is None:
        listed = []
        for f in kept:
            if space == "full":
                listed += [Candidate(f, s) for s in spc.schedule_space(
                    name, fmt=f, target=target, dtype=dtype or "float32")]
                continue
            good, bad = schedules(name, f, sig, n, target)
            listed += [Candidate(f, s) for s in good]
            pruned += bad
        cands = [default] + [c for c in listed if c != default]
    else:
        cands, pruned = [default] + [c for c in candidates if c != default], []
        allowed = None
    report = TuneReport(name, target, dtype_name, n, calls, sig, budget_s=budget_s)
    compiled = {}

    def build(c: Candidate):
        if c.build is not None:
            return c.build()
        key = (c.fmt, c.schedule)
        if key not in compiled:
            compiled[key] = spc.compile(name, fmt=c.fmt, target=target, dtype=dtype,
                                        schedule=c.schedule)
        return compiled[key]

    def prepare(k, c: Candidate):
        if c.fmt == "csr" and not inspects(c.schedule) and target == "cpu":
            return A_csr                  # taken as it is, as the bound kernel will
        return BoundKernel(k, c.fmt, c.schedule).prepare(A_csr)

    build(default)(A_csr, *dense)           # bad operands: the kernel's own error, first
    best = search(name, A_csr, dense, cands, pruned, report, budget_s=budget_s,
                  build=build, prepare=prepare, device=target,
                  choosable=lambda c: allowed is None or c.fmt in allowed)
    chosen = best.trial.candidate
    tuned = TunedKernel(best.kernel, chosen.fmt, chosen.schedule, report)
    if sp.issparse(A):
        tuned.hold(A, best.prepared)        # A's values: those A_csr holds, canonical
    if database and chosen.build is None:
        from .database import Database
        db = database if isinstance(database, Database) else Database.default()
        db.record(report, target=target)
    return tuned


def _canonical_csr(A):
    """``A`` as a canonical scipy csr matrix (sorted indices, no duplicates); a copy
    only when needed."""
    import scipy.sparse as sp   # scipy is optional: imported on use
    if hasattr(A, "to_scipy") and not sp.issparse(A):
        A = A.to_scipy()
    elif not sp.issparse(A):
        if hasattr(A, "detach") or type(A).__module__.startswith("cupy"):
            import spc
            A = spc.tensor(A, "csr").to_scipy()
        else:
            import numpy as np
            arr = np.asarray(A)
            if arr.ndim != 2:
                raise InputError(f"spc.tune: the sparse operand must be a matrix, not shape "
                                 f"{arr.shape}")
            A = sp.csr_matrix(arr)
    csr = sp.csr_matrix(A) if A.format != "csr" or isinstance(A, sp.sparray) else A
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr
