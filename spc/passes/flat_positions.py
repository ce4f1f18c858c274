"""flat_positions: a warp loop's (row, position) pairs may be enumerated flat.

With lane groups (``passes/lane_groups.py``) a warp, or ``spc_split`` warps,
take a row: skewed rows leave most warps idle while a few walk the long rows,
and short rows leave lanes idle.  Where the lane loop runs over a compressed
level's positions ``[pos[i], pos[i + 1])``, consecutive rows cover one range
of positions, and the launcher may instead cut that range into equal chunks,
one per warp, each position's row found by search.  This pass records that on
the warp loop as a typed ``FlatPositions`` (``ir/nodes.py``: the lane loop and
the launch symbol ``spc_flat``, the chunk in steps of ``32 / spc_group``
positions, 0 for row by row), which the printer shows, the verifier checks,
the interpreter runs for any chunk it is given and the CUDA renderer spells
out.  Switched on by the kernel's ``gpu.flat`` (map_gpu's: that lane loop's
bounds are contiguous positions).

Requires: ``lane_groups`` has run.  Ensures: only the ``flat`` field of the
top warp loop changes (None where ``ir.lane_groups.flat_positions_of`` refuses
it); the interpreter's results agree for every chunk, group size and split.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.lane_groups import flat_positions_of
from ..ir.nodes import Block, Kernel
from ..ir.traverse import top_loop


def flat_positions(kernel: Kernel) -> Kernel:
    """``kernel`` with its top warp loop's pairs enumerated flat on request
    (``FlatPositions``) where ``gpu.flat`` names its grouped lane loop."""
    if kernel.gpu is None or kernel.gpu.flat is None:
        return kernel
    found = top_loop(kernel)
    if found is None:
        return kernel
    loop = found[1]
    flat = flat_positions_of(loop)
    if flat is None or flat.lanes != kernel.gpu.flat or loop.flat == flat:
        return kernel
    return replace(kernel, body=_with_last(kernel.body, replace(loop, flat=flat)))


def _with_last(body, loop):
    """``body`` (Lets then one loop) with that loop replaced by ``loop``."""
    if isinstance(body, Block):
        return Block(body.body[:-1] + (loop,))
    return loop


__all__ = ["flat_positions"]
