"""vector_loads: a lane group's reduction loop reading 16-byte vectors is a pass
over the IR (``passes/vector_loads.py``).

Golden printed IR (float32: 4 wide, float64: 2 wide); the interpreter's
numbers before and after the pass, and its vector steps' partial sums where the
loads are aligned (and not where they are not); the verifier refusing vectors
that do not match the loop or sit where the renderer prints none; the
renderer printing vector loads exactly where the IR has them.  No GPU needed.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cuda_c import render_body
from spc.ir.nodes import DType, For, LoopKind
from spc.ir.printer import format_kernel
from spc.ir.traverse import rewrite, walk
from spc.ir.verify import verify
from spc.passes.vector_loads import vector_loads

from matrices import assert_allclose
from test_cuda_render import SMALL, _run_with

CUDA = dict(target="cuda", arch="sm_90")


def _kernels(kernel, **kw):
    return spc.compile(kernel, **CUDA, **kw)._variant(DType.I32).kernels


def _vectors(kernel):
    return [n for n in walk(kernel.body) if isinstance(n, For) and n.vector is not None]


def _scalar(kernel):
    """``kernel`` as before the pass: no loop reads vectors."""
    return replace(kernel, body=rewrite(kernel.body, lambda n: replace(n, vector=None)
                                        if isinstance(n, For) and n.vector is not None else n))


@pytest.mark.parametrize("dtype, line", [
    ("float32", "for k in [0, size_k) vector(4, loads=[X_vals[X0_p1 * size_k + k], "
                "Y_vals[Y0_p5 * size_k + k]], sums=[acc: f32]):"),
    ("float64", "for k in [0, size_k) vector(2, loads=[X_vals[X0_p1 * size_k + k], "
                "Y_vals[Y0_p5 * size_k + k]], sums=[acc: f64]):"),
])
def test_golden_ir(dtype, line):
    (k,) = _kernels("sddmm", fmt="csr", dtype=dtype)
    lines = [s.strip() for s in format_kernel(k).splitlines()]
    assert "# gpu_group: k" in lines and line in lines
    assert vector_loads(_scalar(k)) == k          # the pass made exactly this


def test_kernels_without_lane_groups_are_unchanged():
    for kernel, fmt in (("spmv", "csr"), ("spmm", "csr"), ("sddmm", "ell")):
        (k,) = _kernels(kernel, fmt=fmt)
        assert k.gpu.group is None and _vectors(k) == []
        assert vector_loads(k) is k


def test_a_summand_reading_an_index_at_another_stride_reads_no_vectors():
    """``Y[k,j]`` moves by a row (size_j elements) per step of k, not by one: the
    lane group's loop stays scalar."""
    (k,) = _kernels("S[i,j] = A[i,j] * X[i,k] * Y[k,j]", formats={"A": "csr", "S": "csr"})
    assert k.gpu.group == "k" and _vectors(k) == []
    assert "spc_ldv(" not in render_body(k)


def test_the_interpreter_sums_each_vector_element_apart_where_aligned():
    """Two rows of X, 9 float32 values each, Y all ones.  Row 0 starts at element
    0 (aligned): vector steps sum elements 0, 4 (1e8 - 1e8) apart from 1..3 and
    5..7 (2 each), exactly 6.  Row 1 starts at element 9, not a multiple of 4:
    one at a time, 1e8 + 1 rounds back to 1e8 (float32's spacing there is 8),
    giving 3.  Without the pass both rows give 3."""
    row = [1e8, 1, 1, 1, -1e8, 1, 1, 1, 0]
    X = np.array([row, row], dtype=np.float32)
    Y = np.ones((1, 9), dtype=np.float32)
    A = sp.csr_matrix(np.ones((2, 1), dtype=np.float32))
    kw = dict(fmt="csr")
    ks = _kernels("sddmm", dtype="float32", **kw)
    assert _vectors(ks[0])
    vec = _run_with(ks, "sddmm", kw, "float32", A, X, Y)
    scalar = _run_with([_scalar(k) for k in ks], "sddmm", kw, "float32", A, X, Y)
    assert (vec.toarray().ravel().tolist(), scalar.toarray().ravel().tolist()) == \
        ([6.0, 3.0], [3.0, 3.0])


FORMATS = ["csr", "coo", "dcsr", "csc", "bsr(4,4)", "ell"]


@pytest.mark.parametrize("depth", [8, 9, 3])
@pytest.mark.parametrize("matrix", [c for c in SMALL if c.id in (
    "tall_60x17", "empty_rows_30x25", "nnz0_12x15", "dense_row_40x50")], ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_pass_keeps_interpreter_results(dtype, fmt, matrix, depth):
    """SDDMM with dot products of ``depth`` (vectors and a rest, or too short for
    a vector), before and after the pass, as the CPU kernel computes."""
    npt = np.dtype(dtype)
    A = matrix.build(npt)
    if A.shape[0] * A.shape[1] > 800:
        A = A[:20, :20].tocsr()
    rng = np.random.default_rng(depth)
    X = rng.standard_normal((A.shape[0], depth)).astype(npt)
    Y = rng.standard_normal((A.shape[1], depth)).astype(npt)
    kw = dict(fmt=fmt)
    ks = _kernels("sddmm", dtype=dtype, **kw)
    want = spc.compile("sddmm", fmt=fmt, dtype=dtype)(A, X, Y)
    for variant in (ks, [_scalar(k) for k in ks]):
        assert_allclose(_run_with(variant, "sddmm", kw, dtype, A, X, Y), want, npt)


def test_the_verifier_refuses_vectors_that_do_not_fit():
    (k,) = _kernels("sddmm", fmt="csr")
    (loop,) = _vectors(k)
    verify(k)

    def with_vector(vector):
        return replace(k, body=rewrite(k.body, lambda n: replace(n, vector=vector)
                                       if n == loop else n))
    with pytest.raises(spc.CompileError, match="do not match its body"):
        verify(with_vector(replace(loop.vector, width=2)))
    with pytest.raises(spc.CompileError, match="do not match its body"):
        verify(with_vector(replace(loop.vector, loads=loop.vector.loads[:1])))
    lane = next(n for n in walk(k.body) if isinstance(n, For) and n.kind is LoopKind.GPU_LANE)
    moved = replace(k, body=rewrite(k.body, lambda n: replace(n, vector=loop.vector)
                                    if n == lane else n))
    with pytest.raises(spc.CompileError, match="do not match its body"):
        verify(moved)
    ungrouped = replace(k, body=rewrite(k.body, lambda n: replace(n, groups=None, flat=None)
                                        if isinstance(n, For) else n))
    with pytest.raises(spc.CompileError, match="not the serial loop a lane group shares"):
        verify(ungrouped)


def test_the_renderer_reads_vectors_where_the_ir_has_them():
    (k,) = _kernels("sddmm", fmt="csr")
    assert "spc_ldv(" in render_body(k) and "float4" in render_body(k)
    assert "spc_ldv(" not in render_body(_scalar(k))
    (k64,) = _kernels("sddmm", fmt="csr", dtype="float64")
    assert "double2" in render_body(k64)
