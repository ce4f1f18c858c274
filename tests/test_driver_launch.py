"""driver_launch: the compiled call of cuLaunchKernel, checked on the CPU by
pointing it at a Python function of the driver's type that records what it
was given (no GPU, no libcuda needed)."""
from __future__ import annotations

import ctypes
import threading

import pytest

from spc.runtime.driver_launch import launch

_U = ctypes.c_uint
DRIVER_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, _U, _U, _U, _U, _U, _U, _U,
                               ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)


class FakeDriver:
    """A function of cuLaunchKernel's type recording its arguments and the
    first ``nparams`` 8-byte parameters its ``kernelParams`` point at."""

    def __init__(self, nparams: int, result: int = 0):
        self.nparams, self.result, self.calls = nparams, result, []
        self.fn = DRIVER_TYPE(self._record)
        self.address = ctypes.cast(self.fn, ctypes.c_void_p).value

    def _record(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        values = [ctypes.cast(params[k], ctypes.POINTER(ctypes.c_int64))[0]
                  for k in range(self.nparams)]
        self.calls.append(dict(f=f, grid=(gx, gy, gz), block=(bx, by, bz), shared=shared,
                               stream=stream, values=values, extra=extra))
        return self.result


def test_the_driver_gets_the_grid_the_stream_and_every_parameter_in_order():
    values = (0x7F00_1234_5678, 512, -3, 1 << 40, 0)
    drv = FakeDriver(len(values))
    rc = launch(drv.address, 0xABCDEF, 37, 256, 0x5555, values)
    assert rc == 0
    (call,) = drv.calls
    assert call["f"] == 0xABCDEF and call["grid"] == (37, 1, 1) and call["block"] == (256, 1, 1)
    assert call["shared"] == 0 and call["stream"] == 0x5555 and call["extra"] is None
    assert call["values"] == list(values)


def test_the_default_stream_is_a_null_pointer_and_the_drivers_error_comes_back():
    drv = FakeDriver(1, result=700)
    assert launch(drv.address, 1, 1, 32, 0, (9,)) == 700
    assert drv.calls[0]["stream"] is None and drv.calls[0]["values"] == [9]


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_any_number_of_parameters(n):
    values = tuple(range(100, 100 + n))
    drv = FakeDriver(n)
    launch(drv.address, 5, 2, 64, 3, values)
    assert drv.calls[0]["values"] == list(values)


def test_threads_launch_with_their_own_parameters():
    """The parameter slots are each call's own: concurrent launches never see
    another's values (the ctypes version shared one array under a lock)."""
    drv = FakeDriver(3)
    lock = threading.Lock()

    def work(t):
        for r in range(200):
            launch(drv.address, t + 1, 1, 32, 0, (t, r, t * 1000 + r))

    orig = drv._record

    def locked(*a):
        with lock:
            return orig(*a)
    drv.fn = DRIVER_TYPE(locked)
    drv.address = ctypes.cast(drv.fn, ctypes.c_void_p).value
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(drv.calls) == 800
    for c in drv.calls:
        t, r, tr = c["values"]
        assert c["f"] == t + 1 and tr == t * 1000 + r
