"""Compiled binaries, cached in memory and on disk.

The key hashes exactly what shapes a binary: the printed loop IR, the target's
cache key (arch, flags, toolchain versions) and spc's version.  Disk writes go
to a temporary file that is renamed into place, so processes writing the same
entry at once (or a writer killed half way) never expose a partial file.

An entry is ``MAGIC, sha256(key + payload), payload``: it is loaded only when
it was written for this very key by this entry format, its checksum holds, and
the target recognises the payload as one of its binaries; and if loading it
still fails, it is rebuilt.  Every entry that is not loaded (missing excepted)
is reported with a ``CacheWarning`` and replaced.  A cache directory that
cannot be written (read-only, full) leaves spc working from memory, and says
so once per process.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
import warnings
from typing import Callable

from .. import config
from ..errors import CacheWarning

SPC_VERSION = "0.1.0"
_memory: dict[str, bytes] = {}
_lock = threading.Lock()
_MAGIC = b"spc-cache-2\n"
_OLD_MAGICS = (b"spc-cache-1\n",)
_STALE_TMP_S = 3600           # temporary files older than this are a killed writer's
_said: set[str] = set()       # problems reported already (once per process)
log = logging.getLogger("spc")


def cache_key(ir_text: str, target_key: str) -> str:
    h = hashlib.sha256()
    for part in (SPC_VERSION, target_key, ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _path(key: str):
    return config.cache_dir() / key[:2] / f"{key}.bin"


def _say(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=4)


def _say_once(topic: str, message: str) -> None:
    """``_say`` the first time ``topic`` comes up in this process."""
    with _lock:
        if topic in _said:
            return
        _said.add(topic)
    _say(message)


def load_or_build(key: str, build: Callable[[], bytes], load: Callable[[bytes], object],
                  recognise: Callable[[bytes], bool] = lambda data: True):
    """``load(binary)`` for the binary of ``key``: from memory, else from disk,
    else ``build()`` (then written to disk).

    Requires: ``build`` returns the binary for ``key``; ``recognise`` tells
    whether bytes look like one of the target's binaries.
    Ensures: a disk entry is loaded only if it passes every check above; one
    that fails them, or whose loading raises, is reported and rebuilt.
    """
    with _lock:
        hit = _memory.get(key)
    if hit is not None:
        log.debug("cache hit in memory: %s", key[:16])
        return load(hit)
    use_disk = config.disk_cache_enabled()
    data = _read(key, recognise) if use_disk else None
    if data is not None:
        try:
            loaded = load(data)
        except Exception as err:  # noqa: BLE001 - any failure to load means: rebuild
            _say(f"spc cache entry {_path(key)} could not be loaded "
                 f"({type(err).__name__}: {err}); rebuilt")
        else:
            log.debug("cache hit on disk: %s", _path(key))
            _touch(_path(key))
            with _lock:
                _memory[key] = data
            return loaded
    t0 = time.perf_counter()
    data = build()
    log.info("built %s (%d bytes) in %.2f s", key[:16], len(data), time.perf_counter() - t0)
    loaded = load(data)
    if use_disk:
        _write(key, data)
        _cap(config.cache_max_bytes())
    with _lock:
        _memory[key] = data
    return loaded


def _read(key: str, recognise: Callable[[bytes], bool]) -> bytes | None:
    """The entry's payload, or None if it is missing or unusable (reported)."""
    path = _path(key)
    try:
        raw = path.read_bytes()
    except PermissionError as err:
        _say_once("read", f"spc cannot read its disk cache under {config.cache_dir()} "
                          f"({err}); kernels are rebuilt")
        return None
    except OSError:              # missing, or the cache directory is not one
        return None
    why = None
    head = len(_MAGIC) + 32
    if raw.startswith(_OLD_MAGICS):
        why = "it was written by another version of spc"
    elif len(raw) < head or not raw.startswith(_MAGIC):
        why = "it is truncated or not an spc cache entry"
    else:
        digest, payload = raw[len(_MAGIC):head], raw[head:]
        if hashlib.sha256(key.encode() + payload).digest() != digest:
            why = "its checksum does not match its key and contents"
        elif not recognise(payload):
            why = "its contents are not a binary of this target"
        else:
            return payload
    _say(f"spc cache entry {path} is not used: {why}; rebuilt")
    return None


def _write(key: str, data: bytes) -> None:
    path = _path(key)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(key.encode() + data).digest() + data)
        os.replace(tmp, path)
    except OSError as err:
        # a read-only or full cache dir costs speed, never correctness
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _say_once("write", f"spc cannot write its disk cache under {config.cache_dir()} "
                           f"({err}); compiled kernels are kept in memory only")


def _remove_stale_temporaries(folder) -> None:
    """Delete temporary files left by writers killed long ago."""
    now = time.time()
    try:
        for p in folder.glob(".tmp-*"):
            try:
                if now - p.stat().st_mtime > _STALE_TMP_S:
                    p.unlink()
            except OSError:
                pass
    except OSError:
        pass


def _touch(path) -> None:
    """Mark an entry used now: its access time (the size cap removes the least
    recently used; the modification time stays the write's)."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError:
        pass


def entries() -> list[tuple[object, int, float]]:
    """(path, bytes, last use: the access time) of every entry on disk, least
    recently used first."""
    out = []
    try:
        folders = [d for d in config.cache_dir().iterdir() if d.is_dir()]
    except OSError:
        return out
    for folder in folders:
        try:
            for f in folder.glob("*.bin"):
                try:
                    st = f.stat()
                except OSError:
                    continue
                out.append((f, st.st_size, st.st_atime))
        except OSError:
            continue
    return sorted(out, key=lambda e: e[2])


def _cap(limit: int) -> None:
    """Remove the least recently used entries until the disk cache holds at most
    ``limit`` bytes (90% of it, so that the next writes do not scan again)."""
    found = entries()
    total = sum(size for _, size, _ in found)
    if total <= limit:
        return
    target = int(limit * 0.9)
    for path, size, _ in found:
        try:
            path.unlink()
        except OSError:
            continue
        log.info("cache over %d bytes: removed %s", limit, path)
        total -= size
        if total <= target:
            break


def clear_memory() -> None:
    with _lock:
        _memory.clear()


def clear_disk() -> int:
    """Remove every entry on disk; the number removed."""
    removed = 0
    for path, _, _ in entries():
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def memory_entries() -> int:
    with _lock:
        return len(_memory)
