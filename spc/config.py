"""The one place that reads ``SPC_*`` environment variables.

SPC_CACHE_DIR  where compiled kernels are kept on disk (default: the platform's
               user cache folder: $XDG_CACHE_HOME/spc or ~/.cache/spc on Linux,
               ~/Library/Caches/spc on macOS, %LOCALAPPDATA%\\spc\\Cache on Windows)
SPC_CACHE_MAX_BYTES  the disk cache's size cap; the least recently used entries
               go first when a write passes it (default: 2 GiB)
SPC_DUMP       a directory; when set, every compilation stage is written there
SPC_DATA_DIR   the real-matrix corpus (default: ../shared/data beside the repo)
SPC_NUM_THREADS  threads used by CPU parallel loops (default: OMP_NUM_THREADS's
               first number, else all cores; spc.set_num_threads caps it later)
SPC_NO_DISK_CACHE  set to 1 to keep compiled kernels in memory only
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import SpcError


def cache_dir() -> Path:
    env = os.environ.get("SPC_CACHE_DIR")
    if env:
        return Path(env)
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        return Path(home) / "Library" / "Caches" / "spc"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return Path(base) / "spc" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return Path(base) / "spc"


DEFAULT_CACHE_MAX_BYTES = 2 << 30


def cache_max_bytes() -> int:
    env = os.environ.get("SPC_CACHE_MAX_BYTES")
    if not env:
        return DEFAULT_CACHE_MAX_BYTES
    try:
        return max(0, int(env))
    except ValueError:
        raise SpcError(f"SPC_CACHE_MAX_BYTES must be a whole number of bytes, not "
                       f"{env!r}") from None


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
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) >= 1:      # OpenMP's convention (a list: its first level)
        return int(omp)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
