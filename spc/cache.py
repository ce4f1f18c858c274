"""``spc.cache``: what the compiled-kernel cache holds, and emptying it.

    spc.cache.info()     # {'directory': ..., 'entries': 12, 'bytes': ..., ...}
    spc.cache.clear()    # memory and disk

Compiled binaries are cached in memory (per process) and on disk under
``spc.cache.info()['directory']`` (``SPC_CACHE_DIR``, else the platform's user
cache folder), capped at ``SPC_CACHE_MAX_BYTES`` (2 GiB by default; the least
recently used entries go first).  Compiles, cache hits and removals are logged
on the ``spc`` logger (``logging.getLogger("spc")``).
"""
from __future__ import annotations

from . import config
from .runtime import cache as _cache


def info() -> dict[str, object]:
    """The cache's directory, its disk entries and their bytes, the cap, whether
    the disk cache is on (``SPC_NO_DISK_CACHE``), and the entries in memory."""
    found = _cache.entries()
    return {"directory": str(config.cache_dir()), "entries": len(found),
            "bytes": sum(size for _, size, _ in found), "max_bytes": config.cache_max_bytes(),
            "disk": config.disk_cache_enabled(), "memory_entries": _cache.memory_entries()}


def clear(memory: bool = True, disk: bool = True) -> int:
    """Empty the cache (kernels compiled already keep working); the number of
    disk entries removed."""
    if memory:
        _cache.clear_memory()
    return _cache.clear_disk() if disk else 0


__all__ = ["clear", "info"]
