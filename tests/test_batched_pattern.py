"""A batch of one sparse pattern (issue 12): ``formats.batched`` (a format's levels
and a ``Batch`` level, positions ``h * nnz + p``) and results in it that take an
operand's pattern (``ir/lower.stores_pattern_of``): attention's scores over heads,
``S[h,i,j] = c * A[i,j] * Q[h,i,k] * K[h,j,k]``, written at A's positions with no
assembly.  The level's storage, golden printed IR of the lowered and scheduled
kernels, the interpreter against numpy per head (before and after the CPU
pipeline), and the formats whose results stay assembled."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats.format import batched, resolve_format
from spc.frontend.check import check
from spc.frontend.parser import parse
from spc.ir.interp import run_kernel
from spc.ir.lower import OutputKind, lower
from spc.ir.nodes import DType
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes.pipeline import cpu_pipeline
from test_ir_golden import assert_golden
from test_passes import run_pipeline

SCORES = "S[h,i,j] = 0.5 * A[i,j] * Q[h,i,k] * K[h,j,k]"


def _mask(n=9, seed=0):
    """A random mask with an empty row (3) and a full row (5)."""
    A = sp.random(n, n, density=0.35, format="lil", random_state=seed)
    A[3, :] = 0
    A[5, :] = 1.5
    return A.tocsr()


def _program(text: str, mask_fmt: str = "csr", out=None):
    a = parse(text)
    check(a)
    ranks = {a.lhs.tensor: len(a.lhs.indices), **{x.tensor: len(x.indices)
                                                   for x in a.accesses()}}
    fmts = {t: resolve_format("dense", r) for t, r in ranks.items()}
    fmts["A"] = resolve_format(mask_fmt, 2)
    fmts["S"] = out if out is not None else batched(fmts["A"])
    return lower(a, fmts, name="k", value_dtype=DType.F64)


def test_batched_keeps_the_levels_and_adds_a_batch_level_below():
    csr = resolve_format("csr", 2)
    f = batched(csr)
    assert f.levels[:2] == csr.levels and repr(f.levels[2]) == "batch"
    assert f.order == (1, 2, 0) and f.rank == 3 and str(f) == "batched(csr)"
    bsr = batched(resolve_format("bsr(2,3)", 2))
    assert bsr.block == (1, 2, 3) and bsr.order == (1, 2, 1, 2, 0)


def test_batch_values_are_one_run_per_batch_entry():
    D = np.zeros((2, 3, 4))
    D[:, 0, 1] = [1, 2]
    D[:, 2, 3] = [3, 4]
    D[:, 2, 0] = [5, 6]
    t = spc.tensor(D, batched(resolve_format("csr", 2)))
    np.testing.assert_array_equal(t.arrays[1]["pos"], [0, 1, 1, 3])
    np.testing.assert_array_equal(t.arrays[1]["crd"], [1, 0, 3])
    np.testing.assert_array_equal(t.vals, [1, 5, 3, 2, 6, 4])    # head 0, then head 1
    np.testing.assert_array_equal(t.to_numpy(), D)
    assert t.scalars("S") == {"S2_parents": 3}


@pytest.mark.parametrize("mask_fmt", ["csr", "coo", "dia", "ell", "bsr(3,3)"])
def test_scores_take_the_masks_pattern(mask_fmt):
    program = _program(SCORES, mask_fmt)
    assert program.output_kind == OutputKind.PATTERN and program.pattern_source == "A"
    assert len(program.kernels) == 1                      # no assemble kernel


def test_a_result_per_head_in_dds_is_assembled():
    program = _program(SCORES, out=resolve_format("dds", 3))
    assert program.output_kind == OutputKind.ASSEMBLED and len(program.kernels) == 2


def test_a_result_over_other_indices_is_no_batch_of_the_pattern():
    # S stores (k, j, i) but A (i, k): not A's positions, and no format spc assembles
    a = parse("S[i,k,j] = A[i,k] * Q[j,i,k]")
    check(a)
    fmts = {"A": resolve_format("csr", 2), "Q": resolve_format("dense", 3),
            "S": batched(resolve_format("csr", 2))}
    from spc.ir.lower import classify_output
    with pytest.raises(spc.UnsupportedError, match="cannot be assembled"):
        classify_output(a, fmts)


def test_golden_lowered_scores():
    program = _program(SCORES)
    assert program.index_order == ("h", "i", "j", "k")    # heads around the rows
    (kernel,) = program.kernels
    assert kernel.outer_independent == "h" and kernel.rows_independent == "i"
    assert_golden("batched_pattern_scores", format_kernel(verify(kernel)))


def _operands(A, heads, seed=1):
    rng = np.random.default_rng(seed)
    Q, K = rng.standard_normal((heads, 9, 4)), rng.standard_normal((heads, 9, 4))
    args = {"A1_pos": A.indptr.astype(np.int32), "A1_crd": A.indices.astype(np.int32),
            "A_vals": A.data.copy(), "Q_vals": Q.reshape(-1).copy(),
            "K_vals": K.reshape(-1).copy(), "size_h": heads, "size_i": 9, "size_j": 9,
            "size_k": 4, "S2_parents": A.nnz, "S_vals": np.zeros(heads * A.nnz)}
    rows = np.repeat(np.arange(9), np.diff(A.indptr))
    want = np.concatenate([0.5 * A.data * np.einsum("pk,pk->p", Q[h][rows], K[h][A.indices])
                           for h in range(heads)]) if heads else np.zeros(0)
    return args, want


@pytest.mark.parametrize("heads", [0, 1, 3])
def test_interpreter_gives_each_heads_sddmm_in_its_run(heads):
    A = _mask()
    args, want = _operands(A, heads)
    (kernel,) = _program(SCORES).kernels
    run_kernel(verify(kernel), args)
    np.testing.assert_allclose(args["S_vals"], want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("heads", [1, 3])
def test_cpu_pipeline_keeps_the_numbers(heads):
    A = _mask(seed=2)
    args, want = _operands(A, heads, seed=3)
    (kernel,) = _program(SCORES).kernels
    scheduled = run_pipeline(kernel, cpu_pipeline(spc.Schedule()))
    assert "for h_i_flat in [0, size_h * size_i) @parallel:" in format_kernel(scheduled)
    run_kernel(scheduled, args)
    np.testing.assert_allclose(args["S_vals"], want, rtol=1e-13, atol=1e-14)


def test_compiled_scores_share_the_masks_index_arrays():
    A = _mask(seed=4).astype(np.float64)
    rng = np.random.default_rng(5)
    Q, K = rng.standard_normal((3, 9, 4)), rng.standard_normal((3, 9, 4))
    k = spc.compile(SCORES, formats={"A": "csr", "S": batched(resolve_format("csr", 2))},
                    dtype="float64")
    S = k(A=A, Q=Q, K=K)
    assert S.format == batched(resolve_format("csr", 2)) and S.shape == (3, 9, 9)
    np.testing.assert_array_equal(S.arrays[1]["pos"], A.indptr)
    np.testing.assert_array_equal(S.arrays[1]["crd"], A.indices)
    for h in range(3):
        want = A.multiply(0.5 * Q[h] @ K[h].T).toarray()
        np.testing.assert_allclose(S.to_numpy()[h], want, rtol=1e-13, atol=1e-14)


# -- the heads attention program with its scores batched (the GPU's layout), run on the CPU --

def _band(n, width=2):
    return sp.csr_matrix((np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= width)
                         .astype(float))


def _reference_heads(A, Q, K, V, scale):
    from test_attention_heads import reference_heads
    return reference_heads(A, Q, K, V, scale=scale)


@pytest.mark.parametrize("fuse", ["rows", True, False])
@pytest.mark.parametrize("fmt", ["csr", "dia", "ell"])
@pytest.mark.parametrize("heads", [0, 1, 3])
def test_heads_program_with_batched_scores_matches_the_reference(heads, fmt, fuse):
    from spc.api import HEADS_PROGRAMS
    # dia stores whole diagonals (a partial one's gaps are stored zeros, entries of
    # the pattern): a band for dia, an empty row and a full row for the others
    A = _band(11) if fmt == "dia" else _mask(n=11, seed=6)
    rng = np.random.default_rng(heads)
    Q, K, V = (rng.standard_normal((heads, 11, 5)) for _ in range(3))
    text = HEADS_PROGRAMS["attention"][0].format(scale="0.4")
    program = spc.compile(text, formats={"A": fmt, "S": batched(resolve_format(fmt, 2))},
                          dtype="float64", fuse=fuse)
    kernels = program.kernels
    assert not any(k.name.endswith("_assemble") for c in kernels for k in c.lowered_kernels())
    if fuse is True and fmt == "csr":
        assert len(kernels) == 1                          # the scores recomputed, never stored
    got = program(A=A, Q=Q, K=K, V=V)
    assert got.shape == (heads, 11, 5)
    if heads:
        np.testing.assert_allclose(got, _reference_heads(A, Q, K, V, 0.4), rtol=1e-12,
                                   atol=1e-12)
