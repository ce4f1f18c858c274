"""Launching a built CUDA kernel from raw device pointers, through the driver API.

The steady-state call path (``torch_fast``) knows every operand's device
pointer and length; going through CuPy's ``Function.__call__`` would cost more
than the rest of the call.  ``RawLaunch`` asks the target's ``CudaLauncher``
for the grid and the function once per shape, packs the arguments into
``ctypes`` storage made once, and calls ``cuLaunchKernel`` on the caller's
stream, with no synchronization (about 10 us of host time per launch on
the H200 host measured, most of it the ctypes call and the driver).
"""
from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

from ..errors import SpcError


@lru_cache(maxsize=None)
def _libcuda():
    return ctypes.CDLL("libcuda.so.1")


@lru_cache(maxsize=None)
def _driver():
    """cuLaunchKernel from libcuda (loaded once)."""
    fn = _libcuda().cuLaunchKernel
    c_uint = ctypes.c_uint
    fn.argtypes = [ctypes.c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint,
                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


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
    """``launch(pointers, lengths, sizes, stream, device_id)`` for one kernel.

    Requires: ``launcher`` is the kernel's ``CudaLauncher``; ``pointers`` and
    ``lengths`` follow the kernel's buffer parameters (device addresses,
    element counts), ``sizes`` its integer parameters, ``stream`` a raw
    ``cudaStream_t`` (0: the legacy default stream) of ``device_id``, the
    current device.
    Ensures: the kernel is enqueued on ``stream`` exactly as ``launcher``
    would launch it on CuPy arrays with the same contents; nothing waits.
    """

    def __init__(self, launcher):
        self.launcher = launcher
        self.kinds = launcher.kinds                 # True: a buffer, False: a size
        self.plan = launcher.plan
        self._handles: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def _handle(self, device_id: int, narrow: bool, group: int, nextra: int):
        """(CUfunction, argument storage, the array of pointers to it) for one variant."""
        key = (device_id, narrow, group)
        hit = self._handles.get(key)
        if hit is None:
            fn = self.launcher.function(device_id, narrow, group)
            storage = [ctypes.c_uint64() if k else ctypes.c_int64() for k in self.kinds]
            storage += [ctypes.c_int32() for _ in range(nextra)]
            pointers = (ctypes.c_void_p * max(1, len(storage)))(
                *[ctypes.addressof(s) for s in storage])
            hit = (fn, int(fn.ptr), storage, pointers)
            self._handles[key] = hit
        return hit

    def launch(self, pointers, lengths, sizes, stream: int, device_id: int) -> None:
        blocks, extra, group, narrow = self.launcher.configure(sizes, lengths, device_id)
        if blocks <= 0:
            return
        threads = self.plan.threads
        with self._lock:
            _, handle, storage, argv = self._handle(device_id, narrow, group, len(extra))
            b, s = iter(pointers), iter(sizes)
            for slot, is_buf in zip(storage, self.kinds):
                slot.value = next(b) if is_buf else next(s)
            for slot, x in zip(storage[len(self.kinds):], extra):
                slot.value = x
            rc = _driver()(handle, blocks, 1, 1, threads, 1, 1, 0, stream, argv, None)
        if rc != 0:
            raise SpcError(f"cuLaunchKernel failed for {self.launcher.name} (CUresult {rc})")
