"""The search: every candidate compiled, checked against a float64 reference and
timed, then successive halving (the faster half timed again with twice the
repeats) until one is left or the budget is spent."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass


from ..errors import ScheduleError, SpcError
from .candidates import Candidate, Pruned
from .reference import host, mismatch, reference
from .report import Trial, TuneReport
from .timing import rotated_copies, time_call

TARGET_ROUND_S = 0.01        # seconds of calls a candidate gets in the first round (at least)
MIN_REPEATS, MAX_REPEATS = 3, 64


@dataclass
class Contender:
    """A candidate that compiled and gave the right result: what timing it needs."""
    trial: Trial
    kernel: object
    prepared: object
    estimate: float


def search(kernel: str, A_csr, dense: tuple, candidates: list[Candidate], pruned: list[Pruned],
           report: TuneReport, *, budget_s: float, build, prepare,
           device: str = "cpu", choosable=lambda candidate: True) -> Contender:
    """Try ``candidates`` (the default, csr with Schedule(), first) on the canonical
    csr matrix ``A_csr`` with dense operands ``dense``; fill ``report.trials`` and
    return the winner.

    ``build(candidate)`` compiles a candidate (ScheduleError: it does not apply,
    reported as skipped); ``prepare(kernel, candidate)`` converts ``A_csr`` for
    it (called twice: the second is timed as the conversion; the kernel's first
    call, which builds its binary, is untimed too).  A candidate whose result
    differs from the float64 reference is rejected and never chosen.  Only
    candidates ``choosable`` accepts may win (the default is always timed, as
    the speedups' baseline).

    Ensures: the first candidate, and the candidates up to the first right one
    that may win, are tried whatever the budget (it may be 0); others start
    only while less than ``budget_s`` has passed; the winner has the least
    amortized time (kernel + conversion / report.calls) in the last round.
    Raises the default candidate's error when it fails, and SpcError when no
    candidate that may win is right.
    """
    t_start = time.perf_counter()
    host_dense = tuple(host(d) for d in dense)
    want = reference(kernel, A_csr, host_dense)
    arg_sets = rotated_copies(dense, min_bytes=(128 if device == "cuda" else 32) << 20)
    trials = [Trial(p.candidate, "skipped", f"pruned: {p.reason}") for p in pruned]
    alive: list[Contender] = []
    for i, cand in enumerate(candidates):
        have_winner = any(choosable(c.trial.candidate) for c in alive)
        if i > 0 and have_winner and time.perf_counter() - t_start > budget_s:
            trials.append(Trial(cand, "skipped", f"budget of {budget_s:g} s spent"))
            continue
        trial = Trial(cand, "rejected")
        contender = _try(kernel, cand, trial, want, dense, report, build, prepare,
                         first=(i == 0))
        trials.append(trial)
        if contender is not None:
            alive.append(contender)
            _time(contender, arg_sets, _repeats(contender.estimate, 1), report.calls, device)
    default = alive[0] if alive and alive[0].trial.candidate == candidates[0] else None
    pool = [c for c in alive if choosable(c.trial.candidate)]
    if not pool:
        reasons = "; ".join(f"{t.candidate}: {t.reason}" for t in trials
                            if t.status in ("rejected", "skipped") and choosable(t.candidate))
        raise SpcError(f"spc.tune: no candidate of {kernel} that may be chosen computed the "
                       f"reference's result ({reasons or 'none was tried'})")
    rounds = 1
    while len(pool) > 1 and time.perf_counter() - t_start < budget_s:
        pool.sort(key=lambda c: c.trial.amortized)
        pool = pool[:math.ceil(len(pool) / 2)]
        rounds += 1
        for c in pool:
            _time(c, arg_sets, _repeats(c.estimate, 2 ** (rounds - 1)), report.calls, device)
    best = min(pool, key=lambda c: c.trial.amortized)
    if default is not None and best is not default:     # the baseline, timed beside the winner
        finals = (best, default)
        for c in finals:
            _time(c, arg_sets, _repeats(c.estimate, 2 ** rounds), report.calls, device)
        if choosable(default.trial.candidate):
            best = min(finals, key=lambda c: c.trial.amortized)
    baseline = default.trial.amortized if default is not None else None
    for t in trials:
        if t.status == "ok" and baseline and t.amortized:
            t.speedup = baseline / t.amortized
    best.trial.status = "chosen"
    order = {"chosen": 0, "ok": 1, "rejected": 2, "skipped": 3}
    trials.sort(key=lambda t: (order[t.status], t.amortized if t.amortized is not None else 0.0))
    report.trials = trials
    report.wall_s = time.perf_counter() - t_start
    return best


def _try(kernel, cand, trial, want, dense, report, build, prepare, first: bool):
    """Compile, convert and check ``cand``, recording the outcome in ``trial``;
    a Contender when it is right, else None."""
    try:
        k = build(cand)
    except ScheduleError as err:
        if first:
            raise
        trial.status, trial.reason = "skipped", f"does not apply: {_first_line(err)}"
        return None
    except SpcError as err:
        if first:
            raise
        trial.reason = f"does not compile: {_first_line(err)}"
        return None
    try:
        prepare(k, cand)                      # untimed: lowers the kernel on first use
        t0 = time.perf_counter()
        prepared = prepare(k, cand)
        trial.convert = time.perf_counter() - t0
        out = k(prepared, *dense)             # untimed: builds the binary on first use
        t0 = time.perf_counter()
        k(prepared, *dense)
        estimate = time.perf_counter() - t0
    except Exception as err:                  # noqa: BLE001 - any failure rejects a candidate
        if first:
            raise
        trial.reason = f"failed: {type(err).__name__}: {_first_line(err)}"
        return None
    wrong = mismatch(out, want, report.dtype)
    if wrong is not None:
        trial.reason = f"wrong result: {wrong}"
        return None
    trial.status = "ok"
    return Contender(trial, k, prepared, estimate)


def _time(c: Contender, arg_sets, repeats: int, calls: int, device: str) -> None:
    k, p = c.kernel, c.prepared
    timing = time_call(lambda *d: k(p, *d), arg_sets, repeats=repeats, warmup=1, device=device)
    c.trial.time = timing.median
    c.trial.amortized = timing.median + (c.trial.convert or 0.0) / calls
    c.trial.rounds += 1
    c.estimate = timing.median


def _repeats(estimate: float, factor: int) -> int:
    base = math.ceil(TARGET_ROUND_S / max(estimate, 1e-7))
    return int(min(MAX_REPEATS, max(MIN_REPEATS, base)) * factor)


def _first_line(err) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
