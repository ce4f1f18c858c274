"""Honest timing of one kernel call: warm-up, inputs rotated between calls so
caches do not flatter, the median of repeats; CUDA events on the current stream
when the operands live on a GPU."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Timing:
    """Seconds per call: ``median`` of ``samples`` (each one call), after ``warmup`` calls."""
    median: float
    samples: tuple[float, ...]
    warmup: int

    @property
    def best(self) -> float:
        return min(self.samples)


def time_call(fn: Callable, argument_sets: Sequence[tuple], *, repeats: int = 5,
              warmup: int = 1, device: str = "cpu") -> Timing:
    """Time ``fn(*args)``: ``warmup`` untimed calls, then ``repeats`` timed calls,
    the i-th on ``argument_sets[i % len(argument_sets)]`` (copies of the inputs in
    different memory, so one call does not find the last one's data in cache).

    Requires: repeats >= 1, argument_sets nonempty.  ``device``: "cpu" times with
    ``time.perf_counter``; "cuda" with CUDA events recorded on the current stream
    of the operands' library (torch or CuPy), synchronizing once per call.
    """
    if repeats < 1 or not argument_sets:
        raise ValueError("time_call needs repeats >= 1 and at least one argument set")
    for i in range(warmup):
        fn(*argument_sets[i % len(argument_sets)])
    clock = _cuda_clock(argument_sets[0]) if device == "cuda" else _cpu_clock
    samples = tuple(clock(fn, argument_sets[(warmup + i) % len(argument_sets)])
                    for i in range(repeats))
    return Timing(statistics.median(samples), samples, warmup)


def _cpu_clock(fn, args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _cuda_clock(args):
    """A clock timing one call with CUDA events of the operands' library."""
    if any(type(a).__module__.startswith("torch") for a in args):
        import torch

        def clock(fn, call_args):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*call_args)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return clock
    import cupy

    def clock(fn, call_args):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn(*call_args)
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3
    return clock


def rotated_copies(dense: Sequence, *, min_bytes: int = 32 << 20, most: int = 8) -> list[tuple]:
    """Argument sets for ``time_call``: ``dense`` (a tuple of arrays) and copies of
    it, enough that together they span ``min_bytes`` (larger than a last-level
    cache), at most ``most`` sets.  Arrays with a ``copy`` method are copied;
    anything else is shared."""
    size = sum(int(getattr(a, "nbytes", 0)) for a in dense)
    count = 1 if size == 0 else max(1, min(most, -(-min_bytes // size)))
    sets = [tuple(dense)]
    for _ in range(count - 1):
        sets.append(tuple(_copy(a) for a in dense))
    return sets


def _copy(a):
    """A copy of array ``a`` in new memory (torch: clone; numpy, CuPy: copy); other
    objects are shared."""
    if hasattr(a, "clone"):
        return a.clone()
    return a.copy() if hasattr(a, "copy") else a
