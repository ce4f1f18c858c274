"""``spc.schedule_space``: the legal schedules of a kernel (the tuner's search space)."""
from __future__ import annotations

import itertools
import warnings

from .errors import PerformanceWarning, ScheduleError, UnsupportedError
from .passes.tensorize import tensorized
from .schedule import GROUPS, REORDERINGS, Schedule

SPLITS = (1, 2, 4, 8)          # warps per outer iteration tried for a lane-group kernel
PIECES = (True, 32, 256)       # split_rows tried: chosen from the matrix, short, long
TILES = (64, 128, 256)         # tile_cols tried on the CPU (the default is one of them)
TENSOR_TILES = (16, 32, 128)   # tile_cols tried for tensor-core tiles (besides the default, 64)
PANELS = (64, 128, 256)        # tile sizes tried on the CPU for an index whose panels go
                               # above the rows (SpMM's N panels; N is known only per call)
MAX_ORDERS = 720               # loop orders tried at most (6 indices)


def schedule_space(kernel: str, *, fmt=None, formats=None, target="cpu", dtype="float32",
                   **target_options) -> tuple[Schedule, ...]:
    """Every legal schedule of ``spc.compile(kernel, fmt=..., formats=..., target=...,
    dtype=...)``, the default schedule's choices first.

    Ensures: each schedule compiles (``spc.compile(..., schedule=s)`` raises no
    ScheduleError), and schedules giving the same IR and launch are listed once.
    Enumerated: every loop order the formats allow as stored (an order that only
    a copy of an operand serves is left out); ``parallel`` True and False;
    ``reorder_rows`` where the kernel has rows to reorder; ``split_rows`` in
    ``PIECES`` where it has rows to split (with ``deterministic=False`` where
    the pieces add atomically); on the CPU, ``tile_cols`` in ``TILES`` where
    the kernel has a row update to tile, and ``tile`` of an index in ``PANELS``
    where its panels go above the rows (``_panels``; in spc's loop order only); on CUDA, where the kernel has tensor-core
    tiles, ``tensor_cores=False``, ``tile_cols`` in ``TENSOR_TILES`` and
    ``stage_tiles=False`` with each width; and
    ``deterministic`` where it changes the IR, and the launch knobs
    where the kernel has the loop they steer (``wide``; ``group`` x (``flat`` or
    ``split`` in {1, 2, 4, 8})).  ``threads`` is left to the machine.
    """
    from .api import compile as spc_compile

    def build(schedule):
        with warnings.catch_warnings():      # an order only copies serve warns, and is
            warnings.simplefilter("ignore", PerformanceWarning)     # left out below
            return spc_compile(kernel, fmt=fmt, formats=formats, target=target, dtype=dtype,
                               schedule=schedule, **target_options)

    default = build(Schedule())
    indices = default.schedule.order
    orders = [indices] + [o for o in itertools.islice(itertools.permutations(indices), MAX_ORDERS)
                          if o != indices]
    space: list[Schedule] = []
    seen: set[str] = set()
    copies = _copies(default)
    for order in orders:
        _explore(build, order, indices, space, seen, copies)
    if not space:
        # no explicit order compiles (a kernel that reads an operand through a copy
        # only with spc's own order): the space of spc's order
        _explore(build, None, indices, space, seen, copies)
    return tuple(space)


def _copies(kernel) -> int:
    """How many operands ``kernel`` reads through copies in another format."""
    return len(getattr(kernel, "copies", ()))


def _explore(build, order, indices, space: list, seen: set, copies: int) -> None:
    """Add to ``space`` the schedules of loop order ``order`` (None: spc's) that
    compile reading at most ``copies`` operands through copies (an order that
    only a copy of an operand serves costs a conversion every call, so the space
    keeps to the orders the formats serve as stored), each kernel once
    (``seen``: their IR without order lines)."""
    for parallel in (True, False):
        base = Schedule(order=order, parallel=parallel)
        try:
            k = build(base)
        except UnsupportedError:           # ScheduleError: the formats forbid this order
            continue
        if _copies(k) > copies:
            continue
        variants = [(base, k)]
        for how in REORDERINGS[1:]:
            try:
                variants.append((base.replace(reorder_rows=how),
                                 build(base.replace(reorder_rows=how))))
            except ScheduleError:          # no rows to reorder
                pass
        for size in PIECES:
            split = _split(build, base.replace(split_rows=size))
            if split is not None:
                variants.append(split)
        if k.target.name == "cpu":
            for width in TILES:
                try:
                    variants.append((base.replace(tile_cols=width),
                                     build(base.replace(tile_cols=width))))
                except ScheduleError:      # no row update to tile
                    break
            if order in (None, indices):   # panels in spc's order only: tried in every
                variants.extend(_panels(build, base, indices))   # order they doubled the
                                                                  # space of 4-index kernels
        if k.target.name == "cuda" and parallel:
            for s, kk in list(variants):
                if not any(tensorized(x) for x in kk.lowered_kernels()):
                    continue                   # tiles: other widths, or scalar loops
                variants.append((s.replace(tensor_cores=False),
                                 build(s.replace(tensor_cores=False))))
                tiled = [s]
                for w in TENSOR_TILES:
                    try:
                        variants.append((s.replace(tile_cols=w),
                                         build(s.replace(tile_cols=w))))
                        tiled.append(s.replace(tile_cols=w))
                    except ScheduleError:      # tiles that are the blocks (SDDMM)
                        break
                for t in tiled:                # operands read in place, not staged
                    try:
                        variants.append((t.replace(stage_tiles=False),
                                         build(t.replace(stage_tiles=False))))
                    except ScheduleError:
                        pass
            for s, kk in list(variants):
                try:
                    det = build(s.replace(deterministic=True))
                except ScheduleError:      # pieces of rows adding atomically
                    continue
                if det.ir != kk.ir:
                    variants.append((s.replace(deterministic=True), det))
        for s, kk in variants:
            same = _without_order(kk.ir)     # loop orders that reach the same
            if same in seen:                 # kernel (tensorize's tiles) are one
                continue
            seen.add(same)
            space.extend(_launch_variants(s, kk))


def _panels(build, base: Schedule, indices) -> list:
    """(schedule, kernel) with ``tile`` in ``PANELS`` for each index whose panels
    go above the rows of ``base``'s kernel (``passes/tile.py``: a panel of the
    dense operand stays in cache while the rows are walked); panels that stay
    inside a row or a sum change no memory traffic and are left out."""
    from .passes.tile import panels_above_rows
    out = []
    for index in indices:
        for size in PANELS:
            s = base.replace(tile={index: size})
            try:
                k = build(s)
            except ScheduleError:              # no dense loop over the index
                break
            if not any(index in panels_above_rows(x) for x in k.lowered_kernels()):
                break
            out.append((s, k))
    return out


def _without_order(ir: str) -> str:
    """The printed IR without its ``# order:`` lines (the loop order asked for):
    two schedules whose kernels differ only there run the same code."""
    return "\n".join(line for line in ir.split("\n")
                     if not line.lstrip().startswith("# order:"))


def _split(build, schedule: Schedule):
    """(schedule, kernel) with rows split as ``schedule`` asks, allowing
    atomic partial sums where the target needs ``deterministic=False`` to;
    None where the kernel has no rows to split."""
    for s in (schedule, schedule.replace(deterministic=False)):
        try:
            return s, build(s)
        except ScheduleError:
            continue
    return None


def _launch_variants(schedule: Schedule, k) -> list[Schedule]:
    """``schedule`` with each setting of the launch knobs ``k``'s kernels have."""
    if k.target.name != "cuda":
        return [schedule]
    from .codegen.cuda import launch_knobs
    from .codegen.cuda_c import launch_plan
    kernels = k.lowered_kernels()
    knobs = launch_knobs(kernels)
    out = [schedule]
    if "wide" in knobs:
        out = [s.replace(wide=w) for s in out for w in (False, True)]
    if "group" in knobs:
        flat = "flat" in knobs
        sizes = set(GROUPS)         # the group sizes every kernel's IR allows (LaneGroups.sizes)
        for plan in map(launch_plan, kernels):
            if plan.group is not None:
                sizes &= set(plan.group_sizes)
        out = [s.replace(group=g, **mode) for s in out for g in sorted(sizes)
               for mode in ([dict(flat=True)] if flat else [])
               + [dict(flat=False if flat else None, split=n) for n in SPLITS]]
    return out


__all__ = ["schedule_space"]
