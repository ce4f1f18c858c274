"""The fuzzer's CUDA modes.

``--cuda-render`` (no GPU needed): each case's program is compiled for
``target="cuda", arch="sm_90"`` in a worker process and its ``.source`` handed to
``nvcc -arch=sm_90 -cubin``, several sources concatenated into one translation
unit per nvcc call (spc's header has an include guard for that); a batch that
fails is compiled again one source at a time to attribute the failure.  Render
exceptions and nvcc errors are failures.

``--cuda-run`` (a GPU with CuPy or torch CUDA): the CPU differential check with
``target="cuda"``; host operands are moved to the device in the family that
matches (numpy -> CuPy, canonical scipy CSR/CSC/COO -> cupyx.scipy.sparse,
torch -> torch CUDA; others stay on the host, which spc copies itself).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import traceback
from pathlib import Path

from .pool import Pool

ARCH = "sm_90"


def render_case(case: dict) -> dict:
    """Compile ``case``'s program for CUDA (no GPU) and return its source."""
    from .execute import _err, compile_case, register_user_formats
    register_user_formats()
    try:
        k = compile_case(dict(case, target="cuda"), arch=ARCH)
        src = k.source
    except Exception as err:  # noqa: BLE001
        return _err("render", err)
    if not isinstance(src, str) or "__global__" not in src:
        return {"outcome": "failure", "kind": "render", "stage": "render", "error": "",
                "message": f"source without a __global__ kernel ({type(src).__name__})"}
    return {"outcome": "ok", "kind": "ok", "source": src}


def nvcc(source: str, timeout: float = 300.0) -> tuple[int, str]:
    """``nvcc -arch=sm_90 -cubin`` on ``source``: (exit code, log)."""
    exe = shutil.which("nvcc")
    if exe is None:
        raise RuntimeError("nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as d:
        cu = os.path.join(d, "k.cu")
        Path(cu).write_text(source)
        try:
            r = subprocess.run([exe, f"-arch={ARCH}", "-cubin", "-o", os.path.join(d, "k.cubin"),
                                cu], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, f"nvcc ran past {timeout:.0f} s"
        return r.returncode, r.stdout + r.stderr


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if "error" in line:
            return line.split("k.cu", 1)[-1].strip()[:300]
    return log.strip().splitlines()[0][:300] if log.strip() else ""


def _compile_batch(items: list) -> list:
    """items: [(case, result with source)] -> [(case, final result)]."""
    sources = list(dict.fromkeys(r["source"] for _, r in items))
    rc, log = nvcc("\n".join(sources))
    verdict = {}
    if rc == 0:
        verdict = {s: None for s in sources}
    else:
        for s in sources:
            rc1, log1 = nvcc(s)
            verdict[s] = None if rc1 == 0 else (rc1, log1)
    out = []
    for case, res in items:
        v = verdict[res["source"]]
        res = {k: v2 for k, v2 in res.items() if k != "source"}
        if v is not None:
            res = {"outcome": "failure", "kind": "nvcc", "stage": "nvcc",
                   "error": f"nvcc exit {v[0]}", "message": _first_error(v[1]),
                   "log": v[1][-3000:]}
        out.append((case, res))
    return out


def render_batches(cases, *, jobs: int, batch: int, timeout: float, env: dict):
    """Render in worker processes, nvcc in batches; yields (case, result)."""
    pending = []
    for case, res in Pool(jobs, timeout, env=env, mode="cuda-render", group=1).run(cases):
        if res["outcome"] == "ok" and "source" in res:
            pending.append((case, res))
            if len(pending) >= batch:
                yield from _compile_batch(pending)
                pending = []
        else:
            yield case, res
    if pending:
        yield from _compile_batch(pending)


# --------------------------------------------------------------------- on a GPU


def device_mapper():
    """A function taking a host operand to the device family that matches it."""
    import numpy as np
    import scipy.sparse as sp
    try:
        import cupy
        import cupyx.scipy.sparse as cpsp
    except ImportError:
        cupy = cpsp = None
    try:
        import torch
        has_torch = torch.cuda.is_available()
    except ImportError:
        torch, has_torch = None, False

    def to_device(x):
        if torch is not None and isinstance(x, torch.Tensor):
            return x.cuda() if has_torch else x
        if cupy is None:
            return x
        if isinstance(x, np.ndarray) and x.ndim > 0 and x.dtype in (np.float32, np.float64):
            return cupy.asarray(x)
        if sp.issparse(x) and x.format in ("csr", "csc", "coo") and \
                x.dtype in (np.float32, np.float64) and getattr(x, "has_canonical_format", False):
            return {"csr": cpsp.csr_matrix, "csc": cpsp.csc_matrix,
                    "coo": cpsp.coo_matrix}[x.format](x)
        return x
    return to_device


_MAPPER = None


def run_case_gpu(case: dict) -> dict:
    """The differential check of ``case`` on the GPU (never raises)."""
    global _MAPPER
    from .execute import run_case
    try:
        if _MAPPER is None:
            _MAPPER = device_mapper()
    except Exception as err:  # noqa: BLE001
        return {"outcome": "harness", "kind": "harness", "stage": "setup",
                "error": type(err).__name__, "message": str(err)[:300],
                "trace": traceback.format_exc()}
    return run_case(dict(case, target="cuda"), device=_MAPPER)


def gpu_available() -> str | None:
    """None when a GPU can run cases, else why not."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() >= 1:
            return None
    except Exception:  # noqa: BLE001
        pass
    try:
        import torch
        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    return "no CuPy device and no torch CUDA"
