"""Rounding a float32 (or float64) array to a narrower float type on the CPU, by a
kernel made from the loop IR (widen_outputs' outputs end here).

numpy's float32 -> float16 conversion is a scalar loop, about 1.5 ns an element
on this 2-core machine: 0.8 ms for a 4096 x 128 SpMM result whose kernel takes
0.3 ms.  The IR kernel ``y[i] = x[i]`` with ``y`` in 16 bits rounds with the
stores' rounding (``DType.widened``), which LLVM vectorizes (vcvtps2ph for
float16, integer arithmetic for bfloat16), on the CPU's threads.
"""
from __future__ import annotations

import numpy as np

from ..ir.nodes import Buffer, DType, For, Kernel, Load, LoopKind, Param, ParamRole, Store, Var, i64
from ..ir.printer import format_kernel
from ..ir.verify import verify
from . import cache

SMALL = 1 << 16           # elements below which one thread rounds
_LOADED: dict = {}


def narrow_kernel(dt: DType, src: DType = DType.F32) -> Kernel:
    """``for i in [0, n) @parallel: y[i] = x[i]`` with x of ``src`` (float32 or
    float64) and y of ``dt``, a narrower float type."""
    i, n = Var("i", DType.I64), Var("size_n", DType.I64)
    x, y = Buffer("x", src), Buffer("y", dt)
    body = For(i, i64(0), n, Store(y, i, Load(x, i)), LoopKind.PARALLEL)
    return verify(Kernel(f"spc_narrow_{src.value}_{dt.value}",
                         (Param(x, ParamRole.INPUT), Param(y, ParamRole.OUTPUT),
                          Param(n, ParamRole.SIZE)), body, overwrites=("y",)))


def narrow(target, a: np.ndarray, dt: DType, threads: int) -> np.ndarray:
    """Float32 or float64 array ``a`` rounded to nearest even in ``dt`` (a narrower
    float type; float64 to 16 bits through float32), by CPU ``target``'s build
    of ``narrow_kernel`` (built once, cached on disk)."""
    src = DType.F64 if a.dtype == np.float64 else DType.F32
    key = (target, dt, src)
    launcher = _LOADED.get(key)
    if launcher is None:
        kernel = narrow_kernel(dt, src)
        launcher = _LOADED[key] = cache.load_or_build(
            cache.cache_key(format_kernel(kernel), target.cache_key()),
            lambda: target.build(target.render(kernel), kernel),
            lambda binary: target.load(binary, kernel), target.recognise)
    flat = np.ascontiguousarray(a, dtype=src.np).reshape(-1)
    out = np.empty(a.shape, dt.np)
    bits = out.reshape(-1).view(np.uint16) if dt.np.itemsize == 2 else out.reshape(-1)
    launcher([flat, bits], [flat.size], nthreads=1 if flat.size < SMALL else threads)
    return out
