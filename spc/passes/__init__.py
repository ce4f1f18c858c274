"""Passes: pure functions Kernel -> Kernel, applied in DEFAULT_PIPELINE order."""
from .block_reductions import block_reductions
from .collapse_blocks import collapse_blocks
from .map_parallel import map_parallel
from .mark_noncanonical import mark_noncanonical
from .register_tile import register_tile, tile_rows_for_registers
from .simplify import simplify

DEFAULT_PIPELINE = (
    simplify,                  # fold the 0 * n + i that level locates produce; flatten blocks
    tile_rows_for_registers,   # SpMM-like row updates accumulate in registers
    map_parallel,              # outermost independent loop -> CPU threads
    simplify,                  # tidy what tiling produced
    mark_noncanonical,         # which inputs may be unsorted / hold duplicates
    block_reductions,          # data-dependent reductions (SpMV rows) in guarded vector blocks;
                               # after mark_noncanonical: it reads the loops as lowered, and
                               # blocking visits the same entries
)

__all__ = ["DEFAULT_PIPELINE", "block_reductions", "collapse_blocks", "map_parallel", "mark_noncanonical", "register_tile", "simplify",
           "tile_rows_for_registers"]
