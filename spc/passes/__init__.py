"""Passes: pure functions Kernel -> Kernel, applied in DEFAULT_PIPELINE order."""
from .map_parallel import map_parallel
from .simplify import simplify

DEFAULT_PIPELINE = (
    simplify,        # fold the 0 * n + i that level locates produce; flatten blocks
    map_parallel,    # outermost independent loop -> CPU threads
)

__all__ = ["DEFAULT_PIPELINE", "map_parallel", "simplify"]
