"""lane_groups: groups of lanes share a lane loop and its reduction loop.

SDDMM (``S[i,j] = A[i,j] * sum(k, X[i,k] * Y[j,k])``) maps a row to a warp and
the row's nonzeros to its lanes, each lane running the dot product over ``k``
(map_gpu; ``GpuMapping.group`` names the ``k`` loop).  How many lanes share a
nonzero (1 to 32) and how many warps share a row are best chosen per call, from
the matrix and ``K``, so this pass records them as two launch symbols on the
lane loop, a typed ``LaneGroups`` (``ir/nodes.py``: its docstring says what
each value means): the printer shows it, the verifier checks it against the
loops, the interpreter runs it for any values it is given, and the CUDA
renderer spells it out as the template parameter ``spc_group`` (one kernel per
size in ``LaneGroups.sizes``) and the argument ``spc_split``.  The launcher
picks the values (``codegen/cuda.py``, ``CudaLauncher.group_grid``).

Switched on by the kernel's ``gpu.group`` alone (map_gpu's): a kernel without
one is unchanged.

Requires: a kernel mapped by ``map_gpu``, after the passes that follow it (the
LaneGroups names the final variables).  Ensures: only the ``groups`` field of
the lane loop holding the ``gpu.group`` loop changes (None where
``ir.lane_groups.lane_groups_of`` refuses the shape); the interpreter's results
agree for every group size and split, up to the order of sums.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.lane_groups import lane_groups_of
from ..ir.nodes import For, Kernel, LoopKind
from ..ir.traverse import rewrite


def lane_groups(kernel: Kernel) -> Kernel:
    """``kernel`` with the lane loop that holds its ``gpu.group`` loop shared
    by lane groups of any size in ``LANE_GROUP_SIZES`` (``spc.schedule.GROUPS``)."""
    if kernel.gpu is None or kernel.gpu.group is None:
        return kernel
    group = kernel.gpu.group

    def visit(n):
        if isinstance(n, For) and n.kind is LoopKind.GPU_LANE and n.groups is None:
            groups = lane_groups_of(n, group)
            if groups is not None:
                return replace(n, groups=groups)
        return n
    return replace(kernel, body=rewrite(kernel.body, visit))


__all__ = ["lane_groups"]
