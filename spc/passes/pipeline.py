"""The pass order of every target, in one place.

Each target runs ``lower`` and then the passes below, in order, verifying the
IR after each (``CompiledKernel._variant``; ``SPC_DUMP`` writes every stage).
A pass runs or not, and takes its parameters, from the Schedule's fields only:
never from its own name or from the target.

    CPU                                         CUDA
    simplify                                    simplify
    online_softmax                              online_softmax
    collapse_rows                               collapse_rows
    epilogue_rows
                                                tensorize     (tensor_cores; tile_cols, tf32)
                                                tensorize_nm  (tensor_cores; tile_cols)
                                                tensorize_chunks (tensor_cores; tile_cols, tf32)
    split_rows            (split_rows)          collapse_blocks
    reorder_rows          (reorder_rows)        split_rows    (split_rows)
    tile                  (tile)                reorder_rows  (reorder_rows)
    tile_rows_for_registers (tile_cols)
    fold_epilogue
    bound_rows
    bitmap_workspaces                           workspaces_gpu
    map_parallel          (parallel)            map_gpu       (parallel; deterministic)
                                                stage_tiles   (stage_tiles)
    simplify                                    simplify
    mark_noncanonical                           mark_noncanonical
    block_reductions                            overwrite_outputs
    overwrite_outputs                           widen_outputs
    widen_outputs                               seed_sums
                                                lane_groups   (gpu.group, map_gpu's)
                                                flat_positions (gpu.flat, map_gpu's)
                                                unroll_jam    (gpu.unroll, map_gpu's)
                                                vector_loads  (LaneGroups)
"""
from __future__ import annotations

from typing import Callable

from ..ir.nodes import Kernel
from ..schedule import Schedule
from .bitmap_workspaces import bitmap_workspaces
from .bound_rows import bound_rows
from .block_reductions import block_reductions
from .collapse_blocks import collapse_blocks
from .collapse_rows import collapse_rows
from .epilogue_rows import epilogue_rows, fold_epilogue
from .flat_positions import flat_positions
from .lane_groups import lane_groups
from .map_gpu import map_gpu
from .map_parallel import map_parallel
from .online_softmax import online_softmax
from .overwrite_outputs import overwrite_outputs
from .mark_noncanonical import mark_noncanonical
from .seed_sums import seed_sums
from .reorder_rows import reorder_rows
from .register_tile import ACCUMULATOR_BYTES, tile_rows_for_registers
from .simplify import simplify
from .split_rows import AUTO, split_rows
from .stage_tiles import stage_tiles
from .tensorize import tensorize
from .tensorize_chunks import tensorize_chunks
from .tensorize_nm import tensorize_nm
from .tile import tile
from .unroll_jam import unroll_jam
from .vector_loads import vector_loads
from .widen_outputs import widen_outputs
from .workspaces_gpu import workspaces_gpu

Pass = Callable[[Kernel], Kernel]


def cpu_pipeline(schedule: Schedule, accumulator_bytes: int = ACCUMULATOR_BYTES
                 ) -> tuple[Pass, ...]:
    """The CPU target's passes for ``schedule``; ``accumulator_bytes``: the
    registers the target gives a row tile's accumulators by default."""
    return (
        simplify,                  # fold the 0 * n + i that level locates produce; flatten blocks
        online_softmax,            # a row's max, sum-of-exp and exp-weighted-sum loops -> one
                                   # loop with a running max and sum (by the IR's shape)
        collapse_rows,             # a batch loop (heads) around a sparse operand's rows -> one
                                   # loop over (head, row) pairs, so threads take pairs
        epilogue_rows,             # f(sum over a row's entries) per output entry -> the row
                                   # summed in SpMM's order, then f (before the tiles below)
        *_split(schedule),         # rows -> pieces of at most K nonzeros (atomic partial sums)
        *_reorder(schedule),       # rows in an inspector's order (before threads take rows,
                                   # and before panels go above them)
        *_tile(schedule),          # loops over an index -> panels, hoisted out where legal
                                   # (SpMM's N panels above the rows); before the register
                                   # tiles, which then tile a panel's columns
        bound(tile_rows_for_registers, widest=schedule.tile_cols,
              accumulator_bytes=accumulator_bytes),
                                   # SpMM-like row updates accumulate in registers (tile_cols)
        fold_epilogue,             # epilogue_rows' pass over the row -> the tiles' write-backs
        bound_rows,                # an assemble kernel sizes rows of few products by their
                                   # products (no marks; the runtime packs what the compute
                                   # kernel kept)
        bitmap_workspaces,         # a row workspace's marks -> bits, its row gathered by walking
                                   # them (SpGEMM: no sort where the words are few); before
                                   # map_parallel gives each chunk of rows its workspaces
        *((map_parallel,) if schedule.parallel else ()),
                                   # outermost independent loop -> CPU threads
        simplify,                  # tidy what tiling produced
        mark_noncanonical,         # which inputs may be unsorted / hold duplicates
        block_reductions,          # data-dependent reductions (SpMV rows) in guarded vector
                                   # blocks; after mark_noncanonical: it reads the loops as
                                   # lowered, and blocking visits the same entries
        overwrite_outputs,         # outputs stored once per entry need no zero fill; late:
                                   # it proves that of the loops the target will run
        widen_outputs,             # outputs added into are held in the sums' type (after
                                   # overwrite_outputs: what it proves is stored once stays)
    )


def cuda_pipeline(schedule: Schedule) -> tuple[Pass, ...]:
    """The CUDA target's passes for ``schedule``."""
    return (
        simplify,                  # as on the CPU
        bound(online_softmax, recomputed_only=True),
                                   # as on the CPU where the row computes its scores
                                   # (fuse=True); rows reading stored scores keep their three
                                   # walks: the one-walk form rescales the output row in
                                   # global memory per entry, 2.1x slower on the H200
                                   # (BigBird L=4096: 2.31 vs 1.10 ms), while recomputed
                                   # scores gain 2x (8.54 -> 4.14 ms), 2026-11-29
        collapse_rows,             # as on the CPU: warps take (head, row) pairs
        *_tensorize(schedule),     # block x dense products -> warp tiles on tensor cores;
                                   # 2:4 x dense -> tiles on sparse tensor cores (mma.sp);
                                   # condensed x dense: chunks of gathered columns -> tiles
        collapse_blocks,           # a blocked level's dense block loops -> one flat loop
        *_split(schedule),         # as on the CPU (after collapse: a block row's positions)
        *_reorder(schedule),       # rows in an inspector's order (before warps take rows)
        bound(workspaces_gpu, parallel=schedule.parallel,
              deterministic=bool(schedule.deterministic)),
                                   # rows built in workspaces: tables sized by each row's
                                   # products, a warp per row (parallel; deterministic: a
                                   # thread per row, no atomics; else one thread)
        *((bound(map_gpu, deterministic=bool(schedule.deterministic)),)
          if schedule.parallel else ()),
                                   # loops -> blocks, warps, lanes, threads (else one warp);
                                   # deterministic: no atomics
        *_stage(schedule),         # a tensor-core tile's operands copied into the warp's
                                   # shared memory by 16-byte moves before the instructions
                                   # read them (after map_gpu: shared arrays live in a warp)
        simplify,
        mark_noncanonical,
        overwrite_outputs,         # as on the CPU
        widen_outputs,
        seed_sums,                 # a sum an epilogue only adds a term to starts at that term
                                   # (SpMM + bias: 1.46x faster on the H200); after
                                   # widen_outputs (the sums' final types), before the jams
                                   # copy the sums
        lane_groups,               # the lane loop holding the gpu.group reduction (SDDMM's
                                   # nonzeros, each a dot product) shared by lane groups of
                                   # spc_group lanes, spc_split warps per row: launch symbols
                                   # the launcher sets per call; late, so that it names the
                                   # final variables
        flat_positions,            # where that lane loop runs over a row's positions
                                   # (gpu.flat), the (row, position) pairs may run flat in
                                   # equal chunks per warp (launch symbol spc_flat)
        unroll_jam,                # lane (or a block's warp) loops run gpu.unroll
                                   # iterations at once where their bodies allow (not a lane
                                   # loop that lane groups share); last, so that the jam names
                                   # the final variables and types
        vector_loads,              # a lane group's reduction loop (LaneGroups) reads 16-byte
                                   # vectors where its loads move at unit stride; last too
    )


def _tensorize(schedule: Schedule) -> tuple[Pass, ...]:
    whole_rows = schedule.split_rows in (None, False) and \
        schedule.reorder_rows in (None, "none")
    if schedule.tensor_cores is False or not schedule.parallel or not whole_rows:
        return ()
    return (bound(tensorize, tile_cols=schedule.tile_cols, tf32=bool(schedule.tf32)),
            bound(tensorize_nm, tile_cols=schedule.tile_cols),
            bound(tensorize_chunks, tile_cols=schedule.tile_cols, tf32=bool(schedule.tf32)))


def _stage(schedule: Schedule) -> tuple[Pass, ...]:
    if schedule.stage_tiles is False or not _tensorize(schedule):
        return ()
    return (stage_tiles,)


def _tile(schedule: Schedule) -> tuple[Pass, ...]:
    return (bound(tile, sizes=schedule.tile),) if schedule.tile else ()


def _reorder(schedule: Schedule) -> tuple[Pass, ...]:
    how = schedule.reorder_rows
    return (bound(reorder_rows, how=how),) if how not in (None, "none") else ()


def _split(schedule: Schedule) -> tuple[Pass, ...]:
    k = schedule.split_rows
    if k in (None, False):
        return ()
    return (bound(split_rows, max_nnz=AUTO if k is True else k),)


def bound(pass_fn, **params) -> Pass:
    """``pass_fn`` with its keyword ``params`` fixed: a one-argument pass with
    ``pass_fn``'s name (dumps and tests list passes by name)."""
    def run(kernel: Kernel) -> Kernel:
        return pass_fn(kernel, **params)
    run.__name__ = run.__qualname__ = pass_fn.__name__
    return run


PIPELINES = {"cpu": cpu_pipeline, "cuda": cuda_pipeline}

# Passes over a program's kernels, before the per-kernel pipelines above, in this order
# (api._compile_fused): with fuse=True a sampled result that later statements read row by
# row is recomputed in each reader (inline_sampled; inline_batched for a batch of heads
# over one pattern); then consecutive statements whose loops over rows, or over (head,
# row) nests, line up become one kernel (fuse_rows; fuse="rows" runs this one only)
from .fuse_rows import fuse_rows  # noqa: E402
from .inline_producer import inline_batched, inline_sampled  # noqa: E402
PROGRAM_PASSES = (inline_sampled, inline_batched, fuse_rows)

__all__ = ["PIPELINES", "PROGRAM_PASSES", "Pass", "bound", "cpu_pipeline", "cuda_pipeline"]
