"""widen_outputs: a 16-bit float output that a kernel adds into is held in float32.

Kernels compute in float32 whatever their arrays hold: loads of float16 and
bfloat16 widen, and stores round (``DType.widened``).  An output stored once
per entry (``Kernel.overwrites``) is rounded once, on that store.  An output
the kernel adds into -- SpMM's rows accumulated nonzero by nonzero on the CPU,
a csc SpMV's scatter, atomics, the later terms of a split sum -- would be
rounded at every addition, so that the sum would be computed in 16 bits.  This
pass gives such an output a float32 array instead:

    out C_vals: f16*   ...   C_vals[i * size_j + j] += ...
      ==>
    out C_vals: f32*   ...   C_vals[i * size_j + j] += ...

and the runtime rounds the result to the storage type once, after the
program's last kernel (``force``: widen regardless, for the other kernels of a
program one of whose kernels was widened: they share the output array).
Runs after overwrite_outputs, which decides what is stored once.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import Buffer, DType, Kernel, Param, ParamRole
from ..ir.traverse import rewrite

NARROW = (DType.F16, DType.BF16)


def widen_outputs(kernel: Kernel, force: bool = False) -> Kernel:
    """``kernel`` with each 16-bit float output it does not store once per entry
    (or every one, with ``force``) held in float32.  Requires: a verified
    kernel.  Ensures: the same values, rounded once instead of per addition."""
    wide = {p.name for p in kernel.params
            if p.role is ParamRole.OUTPUT and isinstance(p.value, Buffer)
            and p.value.dtype in NARROW
            and (force or kernel.adds_to_output or p.name not in kernel.overwrites)}
    if not wide:
        return kernel

    def widen(n):
        if isinstance(n, Buffer) and n.name in wide:
            return Buffer(n.name, n.dtype.widened)
        return n

    params = tuple(replace(p, value=widen(p.value)) if isinstance(p, Param) else p
                   for p in kernel.params)
    return replace(kernel, params=params, body=rewrite(kernel.body, widen))


def widened_outputs(kernel: Kernel) -> frozenset[str]:
    """The output arrays of ``kernel`` held wider than its input values (this pass's work)."""
    narrow = {p.value.dtype for p in kernel.params
              if p.role is ParamRole.INPUT and isinstance(p.value, Buffer)
              and p.value.dtype in NARROW}
    return frozenset(p.name for p in kernel.params if p.role is ParamRole.OUTPUT
                     and isinstance(p.value, Buffer) and narrow
                     and p.value.dtype is DType.F32)
