"""SpGEMM on CUDA without a GPU: the workspaces_gpu pass's IR (a thread per
chunk of rows, workspaces in global scratch), the reference interpreter on the
CUDA pipeline's kernels through the runtime (scratch allocated and zeroed as
on the GPU), and nvcc compiling what the renderer prints."""
from __future__ import annotations

import numpy as np
import pytest

import spc
from spc.ir.nodes import Alloc, DType, GridMode, ParamRole
from spc.ir.traverse import walk
from spc.passes.workspaces_gpu import workspaces_gpu

from cuda_env import NVCC, nvcc
from matrices import MATRICES, from_mask, random_mask, rng_for
from test_cuda_render import InterpLauncher   # (the interpreter checks races: chunks own slices)
from test_spgemm import CSR3, SPGEMM, assert_canonical_product, right_operand

MASKED = ("C[i,j] = M[i,j]*A[i,k]*B[k,j]", {**CSR3, "M": "csr"})
KERNELS = [pytest.param(SPGEMM, CSR3, id="spgemm"), pytest.param(*MASKED, id="masked"),
           pytest.param(SPGEMM, {"A": "csc", "B": "csc", "C": "csc"}, id="spgemm-csc"),
           pytest.param("C[i,j] = A[i,k]*B[k,j] + D[i,j]", {**CSR3, "D": "csr"}, id="ab-plus-d")]


def _cuda(expr, formats, dtype="float64"):
    return spc.compile(expr, formats=formats, target="cuda", arch="sm_90", dtype=dtype)


@pytest.mark.parametrize("expr, formats", KERNELS)
def test_rows_map_to_threads_with_scratch_workspaces(expr, formats):
    ck = _cuda(expr, formats)
    for kernel in ck.lowered_kernels():
        assert kernel.gpu is not None and kernel.gpu.grid is GridMode.THREAD
        assert not any(isinstance(n, Alloc) and n.is_workspace for n in walk(kernel.body))
        scratch = [p for p in kernel.params if p.role is ParamRole.SCRATCH]
        assert scratch and all(p.extent is not None for p in scratch)
    assert "@gpu_thread" in ck.ir and "scratch C1_ws_mark: i8*" in ck.ir


def test_kernels_without_workspaces_are_left_alone():
    ck = spc.compile("C[i,j] = A[i,j]+B[i,j]", formats=CSR3)
    for kernel in ck.lowered_kernels():
        assert workspaces_gpu(kernel) is kernel




def _interpreted(expr, formats, *operands):
    """Call a CPU CompiledKernel of ``expr`` whose kernels are the CUDA pipeline's,
    run by the interpreter."""
    gpu_kernels = _cuda(expr, formats).lowered_kernels()
    ck = spc.compile(expr, formats=formats, dtype="float64")
    v = ck._variant(DType.I32)
    v.kernels = gpu_kernels
    v.launchers = [InterpLauncher(k) for k in gpu_kernels]
    ck._plan = None
    return ck(*operands)


SMALL = [c for c in MATRICES if c.id in ("tall_60x17", "empty_rows_30x25", "nnz0_12x15",
                                          "rows0_0x9", "cols0_9x0", "dense_row_40x50",
                                          "one_1x1")]


@pytest.mark.parametrize("case", SMALL, ids=str)
def test_interpreter_on_cuda_kernels_gives_scipys_product(case):
    a = case.build(np.float64)
    b = right_operand(a, f"{case.id}-cuda-B", 21, 0.2, np.float64)
    c = _interpreted(SPGEMM, CSR3, a, b)
    assert_canonical_product(c, a @ b, np.float64)


def test_interpreter_on_cuda_masked_kernels():
    rng = rng_for("cuda-masked")
    a = from_mask(random_mask(rng, (25, 18), 0.2), rng, np.float64)
    b = from_mask(random_mask(rng, (18, 30), 0.2), rng, np.float64)
    m = from_mask(random_mask(rng, (25, 30), 0.3), rng, np.float64)
    c = _interpreted(*MASKED, m, a, b)
    assert_canonical_product(c, m.multiply(a @ b).tocsr(), np.float64)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("expr, formats", KERNELS)
def test_nvcc_compiles_the_rendered_kernels(expr, formats, dtype):
    ck = _cuda(expr, formats, dtype)
    code, log = nvcc(ck.source)
    assert code == 0, log


def test_a_workspace_no_thread_can_own_reads_a_copy_on_cuda():
    """A sparse vector built under a reduction (one row, shared by every
    iteration of the top loop) has no rows to give threads, a workspace CUDA
    does not generate; since issue 13 part 3 A is read through a csc copy
    instead (no workspace), and nvcc compiles it."""
    ck = _cuda("y[j] = A[i,j]*x[i]", {"A": "csr", "y": "s"})
    assert [c.format.name for c in ck.copies] == ["csc"]
    assert "not generated for CUDA" in ck.ir
    if NVCC is not None:
        code, log = nvcc(ck.source)
        assert code == 0, log


def test_serial_schedule_runs_every_row_on_one_thread():
    ck = spc.compile(SPGEMM, formats=CSR3, target="cuda", arch="sm_90",
                     schedule=spc.Schedule(parallel=False))
    assert "let i_chunks: i64 = min(max(size_i, 0), 1)" in ck.ir
