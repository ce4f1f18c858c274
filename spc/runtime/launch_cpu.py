"""The cheap way to call a CPU kernel entry from Python: one numba dispatch.

A kernel entry is ``void entry(i8** bufs, i64* sizes, i64 nthreads)`` (see
codegen/llvm_ir.py).  Calling it through ctypes costs ~2.5 us (a data pointer
from numpy is ~0.75 us an array); numba's dispatcher types a tuple of arrays
in C and reads their data pointers in compiled code, ~0.5 us for a whole call.
The launcher is compiled once per tuple of array types and cached on disk.
"""
from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..formats.inspect_numba import compressed_in_bounds, looks_valid

_I8P = ir.IntType(8).as_pointer()
_I64 = ir.IntType(64)
_ENTRY = ir.FunctionType(ir.VoidType(), [_I8P.as_pointer(), _I64.as_pointer(), _I64])


@intrinsic
def _call_entry(typingctx, address, nthreads, bufs, sizes):
    """Call the entry at ``address`` with the data pointers of the arrays in
    ``bufs`` and the integers in ``sizes``."""
    if not (isinstance(bufs, types.BaseTuple) and all(isinstance(t, types.Array) for t in bufs)):
        return None
    if not (isinstance(sizes, types.BaseTuple) and all(isinstance(t, types.Integer) for t in sizes)):
        return None

    def codegen(context, builder, sig, args):
        addr, nt, tup, ints = args
        arrays = cgutils.unpack_tuple(builder, tup, len(sig.args[2]))
        ptrs = cgutils.alloca_once(builder, _I8P, size=max(1, len(arrays)))
        for k, (ty, val) in enumerate(zip(sig.args[2], arrays)):
            data = context.make_array(ty)(context, builder, val).data
            builder.store(builder.bitcast(data, _I8P), builder.gep(ptrs, [ir.Constant(_I64, k)]))
        values = cgutils.unpack_tuple(builder, ints, len(sig.args[3]))
        slots = cgutils.alloca_once(builder, _I64, size=max(1, len(values)))
        for k, (ty, val) in enumerate(zip(sig.args[3], values)):
            builder.store(context.cast(builder, val, ty, types.int64),
                          builder.gep(slots, [ir.Constant(_I64, k)]))
        entry = builder.inttoptr(context.cast(builder, addr, sig.args[0], types.intp),
                                 _ENTRY.as_pointer())
        builder.call(entry, [ptrs, slots, context.cast(builder, nt, sig.args[1], types.int64)])
        return context.get_dummy_value()

    return types.void(address, nthreads, bufs, sizes), codegen


@numba.njit(cache=True, nogil=True)
def launch(address, nthreads, bufs, sizes):  # pragma: no cover - jitted
    """Run the kernel entry at ``address`` on ``nthreads`` threads.

    Requires: ``bufs`` is a tuple of contiguous arrays in the order of the
    kernel's buffer parameters (dtypes matching), ``sizes`` a tuple of its
    integer parameters, and ``address`` an entry that stays loaded.
    Releases the GIL while the kernel runs.
    """
    _call_entry(address, nthreads, bufs, sizes)


@numba.njit(cache=True, nogil=True)
def launch_in_bounds(address, nthreads, bufs, sizes, pos, crd, parents,
                     dim):  # pragma: no cover - jitted
    """``launch`` when the compressed level (``pos``, ``crd``) below ``parents``
    parents is in bounds (``compressed_in_bounds``); whether it launched.

    Requires what ``launch`` requires.  Ensures: nothing runs otherwise, so a
    malformed operand never reaches the kernel.  One numba dispatch for the
    check and the launch (the check's own dispatch cost ~0.15-0.25 us a call).
    """
    ok = compressed_in_bounds(pos, crd, parents, dim)
    if ok:
        _call_entry(address, nthreads, bufs, sizes)
    return ok


@numba.njit(cache=True, nogil=True)
def launch_valid(address, nthreads, bufs, sizes, pos, crd, parents,
                 dim):  # pragma: no cover - jitted
    """``launch_in_bounds`` for a level that must also be sorted without
    duplicates (``looks_valid``).  A function of its own, so that a call
    compiles only the check it uses (each costs ~0.2 s at a cold start)."""
    ok = looks_valid(pos, crd, parents, dim, True, True)
    if ok:
        _call_entry(address, nthreads, bufs, sizes)
    return ok
