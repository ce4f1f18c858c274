"""What the CUDA tests share: nvcc (no GPU needed), the module-level skip of
tests that need CuPy and a GPU, their memoized compile, and the fast-path tests'
matrix."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NVCC = shutil.which("nvcc")


def nvcc(source: str, arch: str = "sm_90") -> tuple[int, str]:
    """Compile CUDA C ``source`` with ``nvcc -arch=<arch> -cubin``: (exit code, log)."""
    with tempfile.TemporaryDirectory() as d:
        cu = os.path.join(d, "k.cu")
        Path(cu).write_text(source)
        r = subprocess.run([NVCC, f"-arch={arch}", "-cubin", "-o", os.path.join(d, "k.cubin"), cu],
                           capture_output=True, text=True, timeout=300)
        return r.returncode, r.stdout + r.stderr


def cupy_or_skip_module():
    """CuPy, or skip the calling test module when CuPy or a usable GPU is missing."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device", allow_module_level=True)
    except Exception as err:  # noqa: BLE001 - no driver, no device
        pytest.skip(f"no usable CUDA device: {err}", allow_module_level=True)
    return cupy


_COMPILED: dict = {}


def gpu(kernel, **kw):
    """spc.compile(..., target="cuda"), memoized for the session."""
    import spc
    key = (kernel, repr(sorted(kw.items())))
    if key not in _COMPILED:
        _COMPILED[key] = spc.compile(kernel, target="cuda", **kw)
    return _COMPILED[key]


def fast_path_matrix(m=300, n=200, density=0.03, seed=0):
    """A canonical float64 scipy CSR matrix with one dense row (7) and one empty
    row (11): the device fast paths' tests (torch and CuPy) share it."""
    import numpy as np
    import scipy.sparse as sp
    A = sp.random(m, n, density=density, format="csr", random_state=seed, dtype=np.float64)
    A.data[:] = np.random.default_rng(seed).standard_normal(A.nnz)
    A[7, :] = 1.5                       # one dense row
    A[11, :] = 0                        # an empty row
    A.eliminate_zeros()
    A.sort_indices()
    return A
