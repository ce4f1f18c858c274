"""What the CUDA tests share: nvcc (no GPU needed), the module-level skip of
tests that need CuPy and a GPU, their memoized compile, and the fast-path tests'
matrix."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
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


_HEADER_END = "#endif  // SPC_CUDA_H\n"
_KERNEL_NAME = re.compile(r'extern "C" __global__ void __launch_bounds__\(\d+\)\n(\w+)\(')
_BODY_NAME = re.compile(r"__device__ __forceinline__ void (\w+_body)\(")
# the lines at column 0 an spc source has after its header: comments, braces, the
# body template and the kernels' heads; the rest of its text is indented
_TOP_LINE = re.compile(r'(//.*|[{}]|template <[\w ,]*>|__device__ __forceinline__ void \w+_body\(.*'
                       r'|extern "C" __global__ void __launch_bounds__\(\d+\)|\w+\(.*)?')


def _header_and_names(source: str) -> tuple[str, list[str]] | None:
    """(the inlined spc_cuda.h, the names the source defines) of a source that can
    share a translation unit: one whose text after the header defines, at file
    scope, only ``*_body`` templates and extern "C" kernels, under names the header
    does not use, and nothing else (no macro, no include, no variable: every other
    line is indented).  None otherwise."""
    start, end = source.find("#ifndef SPC_CUDA_H\n"), source.find(_HEADER_END)
    if start < 0 or end < start:
        return None
    if any(line.strip() and not line.startswith("//") for line in source[:start].splitlines()):
        return None
    header = source[start:end + len(_HEADER_END)]
    rest = source[end + len(_HEADER_END):].replace(header, "")   # later copies: guarded out
    kernels, bodies = _KERNEL_NAME.findall(rest), _BODY_NAME.findall(rest)
    names = kernels + bodies
    for line in rest.splitlines():
        if line[:1].isspace() or not line:
            continue
        if not _TOP_LINE.fullmatch(line):
            return None
        head = re.match(r"(\w+)\(", line)
        if head and head.group(1) not in kernels:
            return None
    if rest.count('extern "C"') != len(kernels) or \
            any(re.search(rf"\b{n}\b", header) for n in names):
        return None
    return header, names


def _unit(header: str, batch: list[tuple[str, list[str]]]) -> str:
    """One translation unit: the header once, then each source verbatim (its header
    copy is skipped by the include guard), the names it defines renamed by macros
    for the duration of its text, so that equal names of two sources do not collide
    and no source can name what another defines."""
    parts = [header]
    for i, (source, names) in enumerate(batch):
        parts += [f"#define {n} {n}__spc_unit{i}\n" for n in dict.fromkeys(names)]
        parts.append(f"{source}\n")
        parts += [f"#undef {n}\n" for n in dict.fromkeys(names)]
    return "".join(parts)


def nvcc_many(sources: list[str], arch: str = "sm_90", per_unit: int = 16
              ) -> list[tuple[int, str]]:
    """``[nvcc(s, arch) for s in sources]``'s verdicts, from fewer nvcc processes.

    Requires: spc-rendered CUDA sources.  Ensures: every source is compiled by
    ``nvcc -arch=<arch> -cubin`` at file scope, its text unchanged but for the names
    of its kernels and body templates (``_unit``); sources sharing one inlined
    spc_cuda.h go up to ``per_unit`` to a translation unit, which pays nvcc's fixed
    cost (its runtime headers, ~0.3 s) once.  A unit that fails is compiled again
    source by source, so each failing source gets its own exit code and log, the
    same as ``nvcc`` alone; a source that cannot share a unit is compiled alone.
    """
    results: list[tuple[int, str] | None] = [None] * len(sources)
    groups: dict[str, list[int]] = {}
    alone: list[int] = []
    for i, s in enumerate(sources):
        shape = _header_and_names(s)
        if shape is None:
            alone.append(i)
        else:
            groups.setdefault(shape[0], []).append(i)
    units = [(header, idx[k:k + per_unit]) for header, idx in groups.items()
             for k in range(0, len(idx), per_unit)]

    def run_unit(header, idx):
        if len(idx) == 1:
            return [(idx[0], nvcc(sources[idx[0]], arch))]
        batch = [(sources[i], _header_and_names(sources[i])[1]) for i in idx]
        code, log = nvcc(_unit(header, batch), arch)
        if code == 0:
            return [(i, (0, log)) for i in idx]
        return [(i, nvcc(sources[i], arch)) for i in idx]

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = [pool.submit(run_unit, h, idx) for h, idx in units]
        futures += [pool.submit(lambda i: [(i, nvcc(sources[i], arch))], i) for i in alone]
        for f in futures:
            for i, verdict in f.result():
                results[i] = verdict
    return results


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
