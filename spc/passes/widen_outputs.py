"""widen_outputs: an output a kernel adds into is held in the type it sums in.

Kernels sum in float32 whatever their arrays hold (loads of float16 and bfloat16
widen), or in float64 where asked (``spc.compile(..., accumulate="float64")``:
loads are cast up), and stores round to the array's type.  An output stored
once per entry (``Kernel.overwrites``), or only ever stored, never added into
nor read back (a tensor-core tile's write), is rounded once, on its store.  An
output the kernel adds into -- SpMM's rows accumulated nonzero by nonzero on the
CPU, a csc SpMV's scatter, atomics, the later terms of a split sum -- would be
rounded at every addition, so that the sum would be computed in the storage
type.  This pass gives such an output an array of the sums' type instead:

    out C_vals: f16*   ...   C_vals[i * size_j + j] += ...
      ==>
    out C_vals: f32*   ...   C_vals[i * size_j + j] += ...

and the runtime rounds the result to the storage type once, after the
program's last kernel (``to``: widen to that type regardless, for the kernels
of a program one of whose kernels was widened: they share the output array).
Runs after overwrite_outputs, which decides what is stored once.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import Buffer, DType, Kernel, Load, Param, ParamRole, Store, dtype_of
from ..ir.traverse import rewrite, walk


def _nbytes(dt: DType) -> int:
    return dt.nbytes


def widen_outputs(kernel: Kernel, to: DType | None = None) -> Kernel:
    """``kernel`` with each float output it adds into (or does not store once per
    entry, unless it only ever stores it) held in
    the type of the sums it stores (at least float32; float64 where the kernel
    sums in float64: ``spc.compile(..., accumulate="float64")``), or with ``to``,
    every float output held in that type.  Requires: a verified kernel.  Ensures:
    the same values, rounded once instead of per addition."""
    sums: dict[str, DType] = {}              # output -> the widest value stored into it
    for n in walk(kernel.body):
        if isinstance(n, Store) and n.buf.dtype.is_float:
            vt = dtype_of(n.value)
            sums[n.buf.name] = max(sums.get(n.buf.name, vt), vt, key=_nbytes)
    added = {n.buf.name for n in walk(kernel.body) if isinstance(n, Store) and n.accumulate}
    added |= {n.buf.name for n in walk(kernel.body) if isinstance(n, Load)}   # read back
    plain = set(sums) - added                # outputs only ever stored, never read back
    wide: dict[str, DType] = {}
    for p in kernel.params:
        if p.role is not ParamRole.OUTPUT or not isinstance(p.value, Buffer) \
                or not p.value.dtype.is_float:
            continue
        dt = p.value.dtype
        if to is not None:
            target = to
        elif not kernel.adds_to_output and (p.name in kernel.overwrites or p.name in plain):
            continue                         # every value stored is rounded once
        else:
            target = max(sums.get(p.name, dt.widened), dt.widened, key=_nbytes)
        if target is not dt:
            wide[p.name] = target
    if not wide:
        return kernel

    def widen(n):
        if isinstance(n, Buffer) and n.name in wide:
            return Buffer(n.name, wide[n.name])
        return n

    params = tuple(replace(p, value=widen(p.value)) if isinstance(p, Param) else p
                   for p in kernel.params)
    return replace(kernel, params=params, body=rewrite(kernel.body, widen))
