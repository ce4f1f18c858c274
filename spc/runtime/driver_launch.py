"""``cuLaunchKernel`` from compiled code: one numba dispatch per launch.

Calling the driver through ctypes costs ~7 us of host time per launch on an
H200 host (11 arguments converted one by one, then an argument array written
through ctypes), of which the driver itself takes ~4.3 us (measured 2026-11-29,
``.bench_data/host_parts.py``).  ``launch`` takes the parameter values as one
tuple of integers; compiled code stores them in stack slots, points the
``kernelParams`` array at them and calls the driver at its address, so the
argument storage is the call's own (no lock, nothing shared between threads).
The dispatcher is compiled once per tuple length and cached on disk.
"""
from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
# CUresult cuLaunchKernel(CUfunction f, unsigned gridX, gridY, gridZ, blockX, blockY, blockZ,
#                         unsigned sharedMemBytes, CUstream stream, void** params, void** extra)
LAUNCH_TYPE = ir.FunctionType(_I32, [_I8P, _I32, _I32, _I32, _I32, _I32, _I32, _I32, _I8P,
                                     _I8P.as_pointer(), _I8P.as_pointer()])


@intrinsic
def _call_driver(typingctx, address, function, blocks, threads, stream, values):
    """Call ``cuLaunchKernel`` at ``address`` for ``function`` (a CUfunction's
    address) on ``blocks`` x ``threads``, with ``values`` (a tuple of integers,
    each an 8-byte kernel parameter) as the kernel's parameters."""
    if not (isinstance(values, types.BaseTuple)
            and all(isinstance(t, types.Integer) for t in values)):
        return None

    def codegen(context, builder, sig, args):
        addr, fn, nb, nt, st, vals = args
        n = len(sig.args[5])
        items = [builder.extract_value(vals, k) for k in range(n)]
        slots = builder.alloca(_I64, size=ir.Constant(_I64, max(1, n)))
        argv = builder.alloca(_I8P, size=ir.Constant(_I64, max(1, n)))
        for k, (ty, val) in enumerate(zip(sig.args[5], items)):
            slot = builder.gep(slots, [ir.Constant(_I64, k)])
            builder.store(context.cast(builder, val, ty, types.int64), slot)
            builder.store(builder.bitcast(slot, _I8P), builder.gep(argv, [ir.Constant(_I64, k)]))

        def as_i32(v, ty):
            return builder.trunc(context.cast(builder, v, ty, types.int64), _I32)

        def as_ptr(v, ty):
            return builder.inttoptr(context.cast(builder, v, ty, types.int64), _I8P)

        driver = builder.inttoptr(context.cast(builder, addr, sig.args[0], types.int64),
                                  LAUNCH_TYPE.as_pointer())
        one, zero = ir.Constant(_I32, 1), ir.Constant(_I32, 0)
        rc = builder.call(driver, [as_ptr(fn, sig.args[1]), as_i32(nb, sig.args[2]), one, one,
                                   as_i32(nt, sig.args[3]), one, one, zero,
                                   as_ptr(st, sig.args[4]), argv,
                                   ir.Constant(_I8P.as_pointer(), None)])
        return builder.sext(rc, _I64)

    return types.int64(address, function, blocks, threads, stream, values), codegen


@numba.njit(cache=True, nogil=True)
def launch(address, function, blocks, threads, stream, values):  # pragma: no cover - jitted
    """The ``CUresult`` of ``cuLaunchKernel`` (at ``address``) launching
    ``function`` on ``blocks`` one-dimensional blocks of ``threads`` threads on
    ``stream``, no shared memory, each of ``values`` an 8-byte parameter.

    Requires: ``address`` is cuLaunchKernel's (or a function of its type),
    ``function`` a loaded CUfunction whose parameters are all 8 bytes wide
    or read from the low half of an 8-byte slot (CUDA targets are
    little-endian), ``values`` a tuple of integers in parameter order.
    """
    return _call_driver(address, function, blocks, threads, stream, values)


__all__ = ["LAUNCH_TYPE", "launch"]
