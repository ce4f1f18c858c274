"""vector_loads: a lane group's reduction loop reads 16-byte vectors.

SDDMM's dot products (``S[i,j] = A[i,j] * sum(k, X[i,k] * Y[j,k])``) run on
lane groups (``LaneGroups``, ``passes/lane_groups.py``), each lane taking every
``spc_group``-th iteration of the reduction loop over ``k``.  Where the loop's
summands read their arrays at unit stride in ``k`` (``X[i*K + k]``), four
float32 or two float64 iterations can share one 16-byte load per array.  This
pass records that on the loop as a typed ``VectorLoads`` (``ir/nodes.py``:
the width, the loads, the sums), which the printer shows, the interpreter runs
(vector steps summing into one partial sum per element, where the loads are
aligned) and the CUDA renderer spells out with ``spc_ldv`` (a run-time check
of the alignment, and a scalar loop for the rest).  Switched on by the lane
loops' ``LaneGroups`` alone (``passes/lane_groups.py``): a kernel without lane
groups is unchanged.

Requires: a kernel mapped by ``map_gpu``, after the passes that follow it (the
VectorLoads names the final loads and types).  Ensures: only the ``vector``
field of a lane group's reduction loop changes (None where ``ir.vector.vector_of``
refuses it); the interpreter's results agree up to the order of sums.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import For, Kernel
from ..ir.traverse import rewrite, walk
from ..ir.vector import vector_of


def vector_loads(kernel: Kernel) -> Kernel:
    """``kernel`` with each lane group's reduction loop (``LaneGroups.reduction``
    of a lane loop) reading vectors where ``vector_of`` allows it."""
    shared = {n.groups.reduction for n in walk(kernel.body)
              if isinstance(n, For) and n.groups is not None}
    if not shared:
        return kernel

    def visit(n):
        if isinstance(n, For) and n.groups is not None:
            return replace(n, body=rewrite(n.body, lambda c: replace(c, vector=vector_of(c))
                                           if isinstance(c, For) and c.var.name
                                           == n.groups.reduction else c))
        return n
    return replace(kernel, body=rewrite(kernel.body, visit))


__all__ = ["vector_loads"]
