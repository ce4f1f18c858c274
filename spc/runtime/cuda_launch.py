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
    """``launch(values, lengths, sizes, stream, device_id)`` for one kernel.

    Requires: ``launcher`` is the kernel's ``CudaLauncher``; ``values`` holds
    every kernel parameter in order (a buffer's device address, a size's
    value), ``lengths`` the buffers' element counts and ``sizes`` the integer
    parameters, each in parameter order; ``stream`` a raw ``cudaStream_t`` (0:
    the legacy default stream) of ``device_id``, the current device.
    Ensures: the kernel is enqueued on ``stream`` exactly as ``launcher``
    would launch it on CuPy arrays with the same contents; nothing waits.
    """

    def __init__(self, launcher):
        self.launcher = launcher
        self.plan = launcher.plan
        self.nparams = len(launcher.kinds)
        self._handles: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def _handle(self, device_id: int, narrow: bool, group: int, nextra: int):
        """(CUfunction address, argument storage, the array of pointers into it)
        for one variant.  Every argument takes an 8-byte slot: pointers and
        sizes are 64-bit, and a 32-bit launch choice is read from its slot's
        low half (CUDA targets are little-endian)."""
        key = (device_id, narrow, group)
        hit = self._handles.get(key)
        if hit is None:
            fn = self.launcher.function(device_id, narrow, group)
            n = self.nparams + nextra
            storage = (ctypes.c_int64 * max(1, n))()
            base = ctypes.addressof(storage)
            pointers = (ctypes.c_void_p * max(1, n))(*[base + 8 * k for k in range(n)])
            hit = (int(fn.ptr), storage, pointers, fn)
            self._handles[key] = hit
        return hit

    def launch(self, values, lengths, sizes, stream: int, device_id: int) -> None:
        blocks, extra, group, narrow = self.launcher.configure(sizes, lengths, device_id)
        if blocks <= 0:
            return
        n = self.nparams
        with self._lock:
            handle, storage, argv, _ = self._handle(device_id, narrow, group, len(extra))
            storage[:n] = values
            if extra:
                storage[n:n + len(extra)] = extra
            rc = _driver()(handle, blocks, 1, 1, self.plan.threads, 1, 1, 0, stream, argv, None)
        if rc != 0:
            raise SpcError(f"cuLaunchKernel failed for {self.launcher.name} (CUresult {rc})")
