"""unroll_jam: run several iterations of a GPU loop at once in one lane (or warp).

A lane that runs ``factor`` iterations of its loop together, one copy of the
body per iteration with the copies' statements interleaved, has that many
independent loads and multiply-adds in flight instead of one chain: SpMM's
columns, SpMV's positions.  This pass records where that is done as a typed
``Jam`` on the loop (``ir/nodes.py``), which the printer shows, the
interpreter runs (copy by copy, partial sums added after the loop) and the
CUDA renderer spells out.  ``kernel.gpu.unroll`` (map_gpu's) is the factor; 1
jams nothing.

Which loops, by how they are launched:

* a ``@gpu_lane`` loop (a warp's lanes share its iterations, 32 apart):
  jammed when it has at least ``32 * (factor - 1)`` iterations
  (``Jam.min_trips``), one at a time otherwise;
* a top warp loop's ``@gpu_lane_split`` loop (a warp per 32 iterations)
  whose body sums into nothing outside it: jammed when the launch chooses
  ``wide`` (``Jam.launch``), each warp then taking ``32 * factor`` iterations;
* a ``@gpu_warp`` loop inside a ``@gpu_block`` loop (the block's 8 warps share
  its iterations) whose body sums into nothing outside it: always jammed, and
  the lane loops inside it are not jammed again;
* never a lane loop that lane groups share (``For.groups``, whose lanes are
  shared out at launch: ``passes/lane_groups.py`` runs first), nor a loop whose body ``ir.jam.jam_of`` refuses
  (control flow that depends on the iteration, local arrays, assignments
  other than sums to variables outside the loop).

Requires: a kernel mapped by ``map_gpu``, run after the passes that follow it
(the Jam names the final variables and types).  Ensures: only ``Jam`` fields
change; the interpreter computes the same results up to the order of sums.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.jam import jam_of
from ..ir.nodes import Block, For, If, Kernel, LoopKind, Stmt, While
from .map_gpu import WARP_SIZE


def unroll_jam(kernel: Kernel) -> Kernel:
    """``kernel`` with its GPU loops jammed ``kernel.gpu.unroll`` iterations at a
    time where the module docstring says (unchanged for a factor of 1 or a
    kernel map_gpu has not mapped)."""
    if kernel.gpu is None or kernel.gpu.unroll < 2:
        return kernel
    return replace(kernel, body=_jam(kernel.body, kernel.gpu.unroll, in_block=False))


def _jam(s: Stmt, factor: int, in_block: bool) -> Stmt:
    if isinstance(s, Block):
        return Block(tuple(_jam(c, factor, in_block) for c in s.body))
    if isinstance(s, (While,)):
        return replace(s, body=_jam(s.body, factor, in_block))
    if isinstance(s, If):
        return replace(s, then=_jam(s.then, factor, in_block),
                       otherwise=None if s.otherwise is None
                       else _jam(s.otherwise, factor, in_block))
    if not isinstance(s, For) or s.groups is not None:
        return s
    if s.kind is LoopKind.GPU_LANE:
        return replace(s, jam=jam_of(s, factor, min_trips=WARP_SIZE * (factor - 1)))
    if s.kind is LoopKind.GPU_LANE_SPLIT:
        return replace(s, jam=_without_sums(jam_of(s, factor, launch="wide")))
    if s.kind is LoopKind.GPU_WARP and in_block:
        jam = _without_sums(jam_of(s, factor))
        if jam is not None:
            return replace(s, jam=jam)          # its lane loops run inside each copy
    body = _jam(s.body, factor, in_block or s.kind is LoopKind.GPU_BLOCK)
    return replace(s, body=body)


def _without_sums(jam):
    """``jam`` when its body sums into nothing outside the loop, else None (a
    warp or 32-iteration chunk has no place to add partial sums up)."""
    return jam if jam is not None and not jam.sums else None


__all__ = ["unroll_jam"]
