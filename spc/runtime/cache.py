"""Compiled binaries, cached in memory and on disk.

The key hashes exactly what shapes a binary: the printed loop IR, the target's
cache key (arch, flags, toolchain versions) and spc's version.  Disk writes go
to a temporary file that is renamed into place, so processes writing the same
entry at once never expose a partial file; each entry carries a checksum, so a
damaged file is rebuilt rather than loaded.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from typing import Callable

from .. import config

SPC_VERSION = "0.1.0"
_memory: dict[str, bytes] = {}
_lock = threading.Lock()


def cache_key(ir_text: str, target_key: str) -> str:
    h = hashlib.sha256()
    for part in (SPC_VERSION, target_key, ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _path(key: str):
    return config.cache_dir() / key[:2] / f"{key}.bin"


def get_or_build(key: str, build: Callable[[], bytes]) -> bytes:
    """The binary for ``key``: from memory, else from disk, else ``build()``."""
    with _lock:
        hit = _memory.get(key)
    if hit is not None:
        return hit
    data = None
    use_disk = config.disk_cache_enabled()
    if use_disk:
        data = _read(key)
    if data is None:
        data = build()
        if use_disk:
            _write(key, data)
    with _lock:
        _memory[key] = data
    return data


_MAGIC = b"spc-cache-1\n"


def _read(key: str) -> bytes | None:
    """The entry's payload, or None if it is missing or damaged (checksum)."""
    try:
        raw = _path(key).read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + 32
    if len(raw) < head or not raw.startswith(_MAGIC):
        return None
    digest, payload = raw[len(_MAGIC):head], raw[head:]
    if hashlib.sha256(payload).digest() != digest:
        return None
    return payload


def _write(key: str, data: bytes) -> None:
    path = _path(key)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(data).digest() + data)
        os.replace(tmp, path)
    except OSError:
        # a read-only or full cache dir costs speed, never correctness
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def clear_memory() -> None:
    with _lock:
        _memory.clear()
