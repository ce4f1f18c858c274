"""Launching a built CUDA kernel from raw device pointers, through the driver API.

The steady-state call path (``torch_fast``) knows every operand's device
pointer and length; going through CuPy's ``Function.__call__`` would cost more
than the rest of the call.  ``RawLaunch`` asks the target's ``CudaLauncher``
for the grid and the function once per shape, keeps per shape the launch
choices' extra parameters, and per launch calls ``cuLaunchKernel`` on the
caller's stream from compiled code (``driver_launch``), with no
synchronization: 8.2 us of host time per launch through ctypes on the H200
host, ~5 us this way, ~4.3 us of it the driver (2026-11-29).
"""
from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

from ..codegen.cuda import NARROW_LIMIT
from ..errors import SpcError
from .driver_launch import launch as _launch

PARAM_SLOTS = 16       # a launch passes a multiple of this many 8-byte parameter slots


@lru_cache(maxsize=None)
def _libcuda():
    return ctypes.CDLL("libcuda.so.1")


@lru_cache(maxsize=None)
def _driver() -> int:
    """cuLaunchKernel's address in libcuda (loaded once)."""
    return ctypes.cast(_libcuda().cuLaunchKernel, ctypes.c_void_p).value


@lru_cache(maxsize=None)
def _memset32():
    fn = _libcuda().cuMemsetD32Async
    fn.argtypes = [ctypes.c_uint64, ctypes.c_uint, ctypes.c_size_t, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


def memset_zero(ptr: int, words: int, stream: int) -> None:
    """Enqueue zeroing ``words`` 32-bit words at device address ``ptr`` on ``stream``."""
    if words:
        rc = _memset32()(ptr, 0, words, stream)
        if rc != 0:
            raise SpcError(f"cuMemsetD32Async failed (CUresult {rc})")


class RawLaunch:
    """Launches of one kernel from raw device pointers.

    Requires: ``launcher`` is the kernel's ``CudaLauncher``.  Of a launch:
    ``values`` is a tuple of every kernel parameter in order (a buffer's device
    address, a size's value); ``sizes`` the integer parameters in order;
    ``stream`` a raw ``cudaStream_t`` (0: the legacy default stream) of
    ``device_id``, the current device.
    Ensures: the kernel is enqueued on ``stream`` exactly as ``launcher``
    would launch it on CuPy arrays with the same contents; nothing waits.
    """

    def __init__(self, launcher):
        self.launcher = launcher
        self.plan = launcher.plan
        self.nparams = len(launcher.kinds)
        self._ready: dict[tuple, tuple] = {}
        self._lock = threading.Lock()          # guards _ready's growth only

    def launch(self, values, lengths, sizes, stream: int, device_id: int) -> None:
        """As ``run``, with ``lengths`` the buffers' element counts in order."""
        plan = self.plan
        span = lengths[plan.lane_buffer] if plan.lane_buffer is not None else None
        items = lengths[plan.items_buffer] if plan.items_buffer is not None else None
        self.run(tuple(values), tuple(sizes), max(lengths, default=0), span, items, stream,
                 device_id)

    def run(self, values, sizes: tuple, longest: int, span, items, stream: int,
            device_id: int) -> None:
        """Enqueue one launch.  ``longest``: the largest buffer's element count;
        ``span`` / ``items``: the lengths of the plan's ``lane_buffer`` /
        ``items_buffer`` (None where it has none)."""
        key = (sizes, device_id, span, items, longest < NARROW_LIMIT)
        ready = self._ready.get(key)
        if ready is None:
            ready = self._prepare(key)
        launch, handle, blocks, extra, address, threads = ready
        self.launcher.last = launch
        if blocks <= 0:
            return
        rc = _launch(address, handle, blocks, threads, stream, values + extra)
        if rc != 0:
            raise SpcError(f"cuLaunchKernel failed for {self.launcher.name} (CUresult {rc})")

    def _prepare(self, key) -> tuple:
        """(the launcher's choice, CUfunction address, blocks, the launch
        choices' parameters that follow the kernel's own, cuLaunchKernel's
        address, threads per block) for one ``run`` key.
        Every argument takes an 8-byte slot: pointers and sizes are 64-bit, and
        a 32-bit launch choice is read from its slot's low half (CUDA targets
        are little-endian)."""
        sizes, device_id, span, items, short = key
        launch, narrow = self.launcher.settle(sizes, device_id, span, items)
        blocks, extra, group = launch
        fn = self.launcher.function(device_id, narrow and short, group)
        # padded with zero slots the kernel never reads, so that kernels of up to
        # PARAM_SLOTS parameters share one compiled launch (driver_launch compiles
        # once per tuple length: ~0.3-0.5 s at a cold start)
        extra = tuple(int(e) for e in extra)
        extra += (0,) * (-(self.nparams + len(extra)) % PARAM_SLOTS)
        ready = (launch, int(fn.ptr), blocks, extra,     # the launcher keeps fn
                 _driver(), self.plan.threads)
        with self._lock:
            if len(self._ready) > 64:
                self._ready.clear()
            self._ready[key] = ready
        return ready
