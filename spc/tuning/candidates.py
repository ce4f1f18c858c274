"""The candidates the tuner weighs for one matrix: the formats it allows, and for
each the schedules a small cost model keeps (the others are reported as pruned,
with the reason)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..schedule import Schedule
from .signature import BLOCKS, Signature

MIN_BLOCK_DENSITY = 0.5      # bsr(r,c) only when it stores at most 2x the nonzeros
MAX_ELL_PADDING = 2.0        # ell only when rows x longest row <= 2 x nnz
MIN_HYB_CV = 0.3             # hyb only when row lengths vary (else ell or csr do)
MIN_REORDER_CV = 0.5         # reorder rows only when their lengths vary this much
MIN_SPLIT_SKEW = 4.0         # split rows only when the longest is 4x the mean or more
MAX_SERIAL_NNZ = 20_000      # one thread only for matrices this small
TILES = (64, 128, 256)       # CPU register tiles tried (narrower than N only)


@dataclass(frozen=True)
class Candidate:
    """One choice the tuner may make: ``fmt`` and ``schedule`` for the kernel.
    ``build`` compiles it (None: ``spc.compile(kernel, fmt=fmt, schedule=schedule,
    ...)``); tests inject a candidate with their own ``build``."""
    fmt: str
    schedule: Schedule
    build: Callable | None = field(default=None, compare=False)

    def __str__(self) -> str:
        knobs = {k: v for k, v in self.schedule.knobs().items() if k != "order"}
        shown = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "default"
        return f"{self.fmt} [{shown}]"


@dataclass(frozen=True)
class Pruned:
    """A candidate not tried, and why."""
    candidate: Candidate
    reason: str


def formats(sig: Signature, fmt=None) -> tuple[list[str], list[Pruned]]:
    """The formats worth trying on a matrix of signature ``sig`` (csr first), and
    those pruned with the reason.  ``fmt``: a format name or a list of them to
    try instead (each tried whatever the rules say)."""
    if fmt is not None:
        return ([fmt] if isinstance(fmt, str) else list(fmt)), []
    keep, pruned = ["csr"], []

    def prune(name, why):
        pruned.append(Pruned(Candidate(name, Schedule()), why))

    if sig.nnz == 0:
        for name in [f"bsr({r},{c})" for r, c in BLOCKS] + ["ell", "hyb", "nm(2,4)"]:
            prune(name, "the matrix has no nonzeros")
        return keep, pruned
    for r, c in BLOCKS:
        d = sig.density((r, c))
        if d >= MIN_BLOCK_DENSITY:
            keep.append(f"bsr({r},{c})")
        else:
            prune(f"bsr({r},{c})", f"block density {d:.2f}: would store {1 / d:.1f}x the "
                                   f"nonzeros (tried from {MIN_BLOCK_DENSITY})")
    padding = sig.rows * sig.row_max / sig.nnz
    if padding <= MAX_ELL_PADDING:
        keep.append("ell")
    else:
        prune("ell", f"rows padded to the longest would store {padding:.1f}x the nonzeros")
    if sig.row_cv >= MIN_HYB_CV:
        keep.append("hyb")
    else:
        prune("hyb", f"row lengths vary little (cv {sig.row_cv:.2f} < {MIN_HYB_CV})")
    if sig.nm_2_4:
        keep.append("nm(2,4)")
    else:
        prune("nm(2,4)", "the matrix is not 2:4 sparse")
    return keep, pruned


def schedules(kernel: str, fmt: str, sig: Signature, n: int,
              target: str) -> tuple[list[Schedule], list[Pruned]]:
    """Schedules of ``kernel`` on ``fmt`` worth trying for ``sig`` and N = ``n``,
    the default first, and those pruned with the reason.  Each is in the loop
    order spc chooses (storage order); a schedule that does not compile for the
    kernel (ScheduleError) is dropped by the search, not listed here."""
    keep, pruned = [Schedule()], []

    def consider(s: Schedule, why_not: str | None):
        if why_not is None:
            keep.append(s)
        else:
            pruned.append(Pruned(Candidate(fmt, s), why_not))

    varied = sig.row_cv >= MIN_REORDER_CV
    for how in ("length", "similarity"):
        consider(Schedule(reorder_rows=how),
                 None if varied else f"row lengths vary little (cv {sig.row_cv:.2f})")
    skew = sig.row_max / sig.row_mean if sig.row_mean else 0.0
    for size in (True, 32, 256):
        s = Schedule(split_rows=size, deterministic=False if kernel == "spmm" else None)
        consider(s, None if skew >= MIN_SPLIT_SKEW else
                 f"longest row is {skew:.1f}x the mean (split from {MIN_SPLIT_SKEW}x)")
    if target == "cpu":
        if kernel == "spmm":
            for width in TILES:
                consider(Schedule(tile_cols=width),
                         None if width < n else f"a tile of {width} columns covers N={n}")
        consider(Schedule(parallel=False),
                 None if sig.nnz <= MAX_SERIAL_NNZ else
                 f"{sig.nnz} nonzeros: one thread (tried up to {MAX_SERIAL_NNZ})")
    elif kernel == "spmm":                      # CUDA launch knobs (see spc.Schedule)
        for wide in (True, False):
            consider(Schedule(wide=wide), None)
    elif kernel == "sddmm":
        for group in (4, 8, 32):
            consider(Schedule(group=group), None)
        consider(Schedule(flat=True), None)
    return keep, pruned
