"""Passes: pure functions Kernel -> Kernel.  Their order per target, and which
Schedule fields switch them, is in ``pipeline.py``."""
from ..schedule import Schedule
from .block_reductions import block_reductions
from .collapse_blocks import collapse_blocks
from .map_parallel import map_parallel
from .mark_noncanonical import mark_noncanonical
from .pipeline import PIPELINES, cpu_pipeline, cuda_pipeline
from .register_tile import register_tile, tile_rows_for_registers
from .simplify import simplify

DEFAULT_PIPELINE = cpu_pipeline(Schedule())   # the CPU passes of the default schedule

__all__ = ["DEFAULT_PIPELINE", "PIPELINES", "block_reductions", "collapse_blocks",
           "cpu_pipeline", "cuda_pipeline", "map_parallel", "mark_noncanonical",
           "register_tile", "simplify", "tile_rows_for_registers"]
