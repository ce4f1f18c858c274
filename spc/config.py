"""The one place that reads ``SPC_*`` environment variables.

SPC_CACHE_DIR  where compiled kernels are kept on disk
               (default: $XDG_CACHE_HOME/spc or ~/.cache/spc)
SPC_DUMP       a directory; when set, every compilation stage is written there
SPC_DATA_DIR   the real-matrix corpus (default: ../shared/data beside the repo)
SPC_NUM_THREADS  threads used by CPU parallel loops (default: all cores)
SPC_NO_DISK_CACHE  set to 1 to keep compiled kernels in memory only
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import SpcError


def cache_dir() -> Path:
    env = os.environ.get("SPC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spc"


def disk_cache_enabled() -> bool:
    return os.environ.get("SPC_NO_DISK_CACHE", "") not in ("1", "true", "yes")


def dump_dir() -> Path | None:
    env = os.environ.get("SPC_DUMP")
    return Path(env) if env else None


def data_dir() -> Path:
    env = os.environ.get("SPC_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def num_threads() -> int:
    env = os.environ.get("SPC_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise SpcError(f"SPC_NUM_THREADS must be a whole number of threads, not "
                           f"{env!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
