"""vector_loads: a lane group's reduction loop reads 16-byte vectors.

SDDMM's dot products (``S[i,j] = A[i,j] * sum(k, X[i,k] * Y[j,k])``) run on
lane groups (``gpu.group``, map_gpu's), each lane taking every
``spc_group``-th iteration of the reduction loop over ``k``.  Where the loop's
summands read their arrays at unit stride in ``k`` (``X[i*K + k]``), four
float32 or two float64 iterations can share one 16-byte load per array.  This
pass records that on the loop as a typed ``VectorLoads`` (``ir/nodes.py``:
the width, the loads, the sums), which the printer shows, the interpreter runs
(vector steps summing into one partial sum per element, where the loads are
aligned) and the CUDA renderer spells out with ``spc_ldv`` (a run-time check
of the alignment, and a scalar loop for the rest).  Switched on by the
kernel's ``gpu.group`` alone: a kernel without lane groups is unchanged.

Requires: a kernel mapped by ``map_gpu``, after the passes that follow it (the
VectorLoads names the final loads and types).  Ensures: only the ``vector``
field of the ``gpu.group`` loop changes (None where ``ir.vector.vector_of``
refuses it); the interpreter's results agree up to the order of sums.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import For, Kernel, LoopKind
from ..ir.traverse import rewrite
from ..ir.vector import vector_of


def vector_loads(kernel: Kernel) -> Kernel:
    """``kernel`` with its lane group's reduction loop (``gpu.group``) reading
    vectors where ``vector_of`` allows it."""
    if kernel.gpu is None or kernel.gpu.group is None:
        return kernel
    group = kernel.gpu.group

    def visit(n):
        if isinstance(n, For) and n.var.name == group and n.kind is LoopKind.SERIAL:
            return replace(n, vector=vector_of(n))
        return n
    return replace(kernel, body=rewrite(kernel.body, visit))


__all__ = ["vector_loads"]
