"""The device key of the tuning database: what makes timings of one machine
comparable (CPU model and features; GPU name and compute capability)."""
from __future__ import annotations

import functools
import hashlib
import re


@functools.lru_cache(maxsize=None)
def device_key(target: str = "cpu") -> str:
    """A short file-name-safe key of this machine's ``target`` device, e.g.
    ``cpu-znver5-1a2b3c4d`` (the hash covers the CPU features llvmlite reports)
    or ``cuda-nvidia-h200-sm90``."""
    if target == "cuda":
        name, arch = _gpu()
        return _safe(f"cuda-{name}-sm{arch}")
    import llvmlite.binding as llvm
    features = llvm.get_host_cpu_features().flatten()
    digest = hashlib.sha1(features.encode()).hexdigest()[:8]
    return _safe(f"cpu-{llvm.get_host_cpu_name()}-{digest}")


def _gpu() -> tuple[str, str]:
    """(name, compute capability) of the current CUDA device, through CuPy (spc's
    CUDA runtime)."""
    import cupy
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, str(dev.compute_capability)


def _safe(text: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-")
