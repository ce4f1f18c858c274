"""The online-softmax rewrite (``passes/online_softmax``): golden printed IR, the
interpreter giving the same numbers before (three walks over each row) and after
(one walk, running max and sum), programs it leaves alone, attention against a
float64 numpy reference on the CPU (empty rows, a full row, sizes off every tile,
score ranges where a plain exp overflows, heads), and the CUDA rendering."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.interp import run_kernel
from spc.ir.nodes import BinOp, Block, Const, DType, For, Store, Var
from spc.ir.printer import format_kernel
from spc.ir.traverse import rewrite, walk
from spc.ir.verify import verify
from spc.passes.fuse_rows import fuse_rows
from spc.passes.map_gpu import map_gpu
from spc.passes.online_softmax import online_softmax
from spc.passes.simplify import simplify
from test_fuse_rows import BATCHED_FORMATS, BATCHED_SOFTMAX, SOFTMAX, _lowered
from test_inline_producer import _heads_operands, _heads_readers, _operands, _softmax_readers
from test_ir_golden import assert_golden
from test_programs import reference_attention

# the interpreter runs float64: before and after agree to this (rounding of the
# rescaled sums; the running max's rescale factors are exact powers only by chance)
RTOL_F64 = 1e-12
# spc in float32 against the float64 reference (issue 12's bound)
RTOL_F32 = 1e-5


def _stored_rows(seed=0, rows=9, cols=7, d=3, spread=1.0):
    """Operands of the softmax rows over a stored S: an empty row, a full row,
    scores scaled by ``spread``, and one row whose first entries are -inf."""
    S = sp.random(rows, cols, density=0.4, format="csr", random_state=seed).tolil()
    S[3, :] = 0                                      # an empty row
    S[5, :] = 1.0                                    # a full row
    S = S.tocsr()
    rng = np.random.default_rng(seed)
    S.data = rng.standard_normal(S.nnz) * spread
    S.data[S.indptr[5]:S.indptr[5] + 2] = -np.inf    # leading -inf scores, then finite
    V = rng.standard_normal((cols, d))
    return {"S1_pos": S.indptr.astype(np.int32), "S1_crd": S.indices.astype(np.int32),
            "S_vals": S.data.copy(), "V_vals": V.reshape(-1).copy(),
            "size_i": rows, "size_j": cols, "size_d": d}, S, V


def _rows_kernel():
    return verify(simplify(fuse_rows(_lowered(SOFTMAX), "softmax_rows")))


def test_golden():
    assert_golden("online_softmax_rows", format_kernel(verify(online_softmax(_rows_kernel()))))


def _walks_of_rows(kernel) -> int:
    """How many loops walk a row's stored entries (loops over a sparse level's
    positions, which the lowerer names ``<tensor><level>_p<n>``)."""
    return sum(1 for n in walk(kernel.body)
               if isinstance(n, For) and re.match(r"[A-Z]\w*\d_p\d+", n.var.name))


def test_three_walks_become_one():
    before = _rows_kernel()
    after = online_softmax(before)
    assert _walks_of_rows(before) == 3 and _walks_of_rows(after) == 1


@pytest.mark.parametrize("spread", [1.0, 80.0, 300.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_interpreter_same_numbers_before_and_after(seed, spread):
    args, S, V = _stored_rows(seed=seed, spread=spread)
    rows = args["size_i"]
    before, after = dict(args, O_vals=np.zeros(rows * 3)), dict(args, O_vals=np.zeros(rows * 3))
    kernel = _rows_kernel()
    run_kernel(kernel, before)
    run_kernel(verify(online_softmax(kernel)), after)
    np.testing.assert_allclose(after["O_vals"], before["O_vals"], rtol=RTOL_F64, atol=1e-300)
    assert np.isfinite(after["O_vals"]).all()
    assert not after["O_vals"].reshape(rows, 3)[3].any()       # the empty row gives 0


def test_a_row_of_minus_inf_scores_gives_what_three_walks_give():
    args, S, V = _stored_rows()
    args["S_vals"][S.indptr[0]:S.indptr[1]] = -np.inf          # row 0: every score -inf
    rows = args["size_i"]
    before, after = dict(args, O_vals=np.zeros(rows * 3)), dict(args, O_vals=np.zeros(rows * 3))
    run_kernel(_rows_kernel(), before)
    run_kernel(verify(online_softmax(_rows_kernel())), after)
    np.testing.assert_array_equal(np.isnan(after["O_vals"]), np.isnan(before["O_vals"]))
    ok = ~np.isnan(before["O_vals"])
    np.testing.assert_allclose(after["O_vals"][ok], before["O_vals"][ok], rtol=RTOL_F64)


def test_inlined_scores_one_walk_matches_before_and_the_reference():
    args, A = _operands(seed=3)
    rows = args["size_i"]
    _, readers = _softmax_readers()
    fused = verify(simplify(fuse_rows(readers, "attention")))
    online = verify(online_softmax(fused))
    assert _walks_of_rows(online) == 1
    assert sum(1 for n in walk(online.body) if isinstance(n, For) and n.var.name.startswith("k")) == 1
    before, after = dict(args, O_vals=np.zeros(rows * 3)), dict(args, O_vals=np.zeros(rows * 3))
    run_kernel(fused, before)
    run_kernel(online, after)
    np.testing.assert_allclose(after["O_vals"], before["O_vals"], rtol=RTOL_F64)
    Q, K, V = (args["Q_vals"].reshape(rows, 4), args["K_vals"].reshape(-1, 4),
               args["V_vals"].reshape(-1, 3))
    want = reference_attention(A.toarray() != 0, Q, K, V, scale=0.5, values=A.toarray())
    np.testing.assert_allclose(after["O_vals"], want.reshape(-1), rtol=RTOL_F64, atol=1e-13)


@pytest.mark.parametrize("heads", [1, 3])
def test_heads_interpreter_same_numbers_before_and_after(heads):
    args, A, (Q, K, V) = _heads_operands(heads, seed=2)
    fused = verify(simplify(fuse_rows(_heads_readers(), "attention_heads")))
    online = verify(online_softmax(fused))
    assert _walks_of_rows(online) == 1
    given = {k: v for k, v in args.items() if not k.startswith("S")}
    before, after = dict(given, O_vals=np.zeros(heads * 27)), dict(given, O_vals=np.zeros(heads * 27))
    run_kernel(fused, before)
    run_kernel(online, after)
    np.testing.assert_allclose(after["O_vals"], before["O_vals"], rtol=RTOL_F64)


def test_heads_over_stored_scores():
    kernel = verify(simplify(fuse_rows(_lowered(BATCHED_SOFTMAX, BATCHED_FORMATS), "rows")))
    online = verify(online_softmax(kernel))
    assert _walks_of_rows(kernel) == 3 and _walks_of_rows(online) == 1


# -- what it leaves alone -----------------------------------------------------------

@pytest.mark.parametrize("statements", [
    SOFTMAX[:2],                                                      # no weighted sum
    (SOFTMAX[0], SOFTMAX[1], "O[i,d] = stored(S[i,j]) * exp(S[i,j] - m[i]) * V[j,d] * r[i] * r[i]"),
    (SOFTMAX[0], SOFTMAX[1], "O[i,d] = stored(S[i,j]) * exp(S[i,j] - m[i]) * V[j,d] * m[i] * r[i]"),
    (SOFTMAX[0], "r[i] = 1 / max(sum(j, exp(S[i,j] - m[i]) + m[i]), 1e-30)", SOFTMAX[2]),
    ("m[i] = min(j, S[i,j])", SOFTMAX[1], SOFTMAX[2]),                # not a max
    ("m[i] = max(j, S[i,j])", "r[i] = 1 / max(sum(j, exp(S[i,j] - m[i])), 1e-30)",
     "O[i,d] = exp(2 * S[i,j] - m[i]) * exp(S[i,j] - m[i]) * V[j,d] * r[i]"),  # m twice
], ids=["two-statements", "r-twice", "m-outside-exp", "sum-not-of-exp", "min", "two-exps"])
def test_other_programs_are_unchanged(statements):
    kernel = verify(simplify(fuse_rows(_lowered(statements), "rows")))
    assert online_softmax(kernel) is kernel


def test_rows_not_claimed_independent_are_unchanged():
    # another iteration of the loop might add to the same output entries, which the
    # rescaling would scale too
    kernel = _rows_kernel()
    assert online_softmax(replace(kernel, outer_independent=None)) == \
        replace(kernel, outer_independent=None)
    assert online_softmax(replace(kernel, adds_to_output=True)).body == kernel.body


def test_an_output_written_outside_the_third_loop_is_unchanged():
    kernel = _rows_kernel()
    (top,) = [s for s in walk(kernel.body) if isinstance(s, For) and s.var.name == "i"]
    out = kernel.param("O_vals").value
    first = Store(out, BinOp("*", top.var, Var("size_d", DType.I64)), Const(1.0, DType.F64))
    body = rewrite(kernel.body, lambda n: replace(n, body=Block((first,) + tuple(n.body.body)))
                   if n is top or (isinstance(n, For) and n.var.name == "i") else n)
    changed = verify(replace(kernel, body=body))
    assert changed != kernel and online_softmax(kernel) != kernel
    assert online_softmax(changed) is changed


def test_a_single_statement_kernel_is_unchanged():
    (kernel,) = _lowered(SOFTMAX[:1])
    assert online_softmax(kernel) is kernel


# -- attention through spc.compile on the CPU ---------------------------------------

def _masks():
    rng = np.random.default_rng(7)
    L = 37                                                    # a multiple of no tile
    random = (rng.random((L, L)) < 0.3)
    random[4] = False                                         # an empty row
    random[6] = True                                          # a fully dense row
    band = np.abs(np.subtract.outer(np.arange(L), np.arange(L))) <= 3
    blocks = np.kron(rng.random((9, 9)) < 0.35, np.ones((4, 4), bool))
    blocks[8:12] = False                                      # a block row with no entries
    blocks[20:24] = True                                      # fully dense rows
    return {"random": random, "band": band, "blocks": blocks}


CASES = [("csr", "random"), ("csr", "band"), ("dia", "band"), ("bsr(4,4)", "blocks"),
         ("csr", "blocks"), ("coo", "random"), ("csc", "random"), ("dcsr", "random")]


@pytest.mark.parametrize("fuse", [True, "rows"])
@pytest.mark.parametrize("spread", [1.0, 80.0])
@pytest.mark.parametrize("d", [13, 64])
@pytest.mark.parametrize("fmt, mask_name", CASES)
def test_attention_matches_float64_reference(fmt, mask_name, d, spread, fuse):
    mask = _masks()[mask_name]
    L = mask.shape[0]
    rng = np.random.default_rng(d)
    # scores scale * q.k spread over about +-spread: exp of the raw scores overflows float32
    Q = rng.standard_normal((L, d)).astype(np.float32)
    K = rng.standard_normal((L, d)).astype(np.float32)
    V = rng.standard_normal((L, d)).astype(np.float32)
    qk = (Q.astype(np.float64) @ K.T.astype(np.float64))
    scale = spread / np.abs(qk).max()
    k = spc.compile("attention", fmt=fmt, fuse=fuse)
    out = k(sp.csr_matrix(mask.astype(np.float32)), Q, K, V, scale=scale)
    want = reference_attention(mask, Q.astype(np.float64), K.astype(np.float64),
                               V.astype(np.float64), scale=scale)
    err = np.abs(out - want).max() / np.abs(want).max()
    assert err <= RTOL_F32, err
    assert not out[~mask.any(1)].any()


@pytest.mark.parametrize("fmt", ["csr", "dia", "ell", "bsr(4,4)", "coo", "csc"])
def test_attention_walks_each_row_once(fmt):
    k = spc.compile("attention", fmt=fmt)
    fused = [x for x in k.program.kernels if "O_vals" in x.ir]
    assert len(fused) == 1
    (kernel,) = fused[0].lowered_kernels()
    assert _walks_of_rows(kernel) == 1


def test_attention_inlined_stores_no_scores_and_walks_once():
    k = spc.compile("attention", fmt="csr", fuse=True)
    (kernel,) = k.program.kernels
    assert "S_vals[" not in kernel.ir and "S1_pos" not in kernel.ir and "m_vals" not in kernel.ir
    (lowered,) = kernel.lowered_kernels()
    assert _walks_of_rows(lowered) == 1


@pytest.mark.parametrize("fuse", [True, "rows"])
def test_attention_bsr_counts_the_zeros_its_blocks_store(fuse):
    # the scores take csr, assembled from the mask's stored entries: a zero a bsr
    # block stores is an entry (score 0) as before, when S was bsr
    mask = _masks()["blocks"]
    A = sp.bsr_matrix(sp.csr_matrix(mask.astype(np.float32)), blocksize=(4, 4))
    A.data[0, 1, 2] = 0.0
    L, d = mask.shape[0], 13
    rng = np.random.default_rng(5)
    # small scores: the stored zero's entry weighs about as much as any other
    Q, K, V = (rng.standard_normal((L, d)).astype(np.float32) * 0.3 for _ in range(3))
    k = spc.compile("attention", fmt="bsr(4,4)", fuse=fuse)
    out = np.asarray(k(spc.tensor(A, "bsr(4,4)"), Q, K, V))
    want = reference_attention(mask, Q.astype(np.float64), K.astype(np.float64),
                               V.astype(np.float64), values=A.toarray())
    assert np.abs(out - want).max() / np.abs(want).max() <= RTOL_F32
    assert any("_old" in x.ir for x in k.program.kernels)          # the one-walk loop
    dropped = mask.copy()
    dropped[1, A.indices[0] * 4 + 2] = False   # the answer if the stored zero were not an entry
    other = reference_attention(dropped, Q.astype(np.float64), K.astype(np.float64),
                                V.astype(np.float64), values=A.toarray())
    assert np.abs(other - want).max() / np.abs(want).max() > 100 * RTOL_F32


@pytest.mark.parametrize("fuse", [True, "rows"])
def test_attention_heads_match_reference(fuse):
    rng = np.random.default_rng(1)
    mask = _masks()["random"]
    L, d, H = mask.shape[0], 13, 3
    Q, K, V = (rng.standard_normal((H, L, d)).astype(np.float32) * 3 for _ in range(3))
    out = spc.compile("attention", fmt="csr", fuse=fuse)(sp.csr_matrix(mask.astype(np.float32)),
                                                        Q, K, V)
    want = np.stack([reference_attention(mask, Q[h].astype(np.float64), K[h].astype(np.float64),
                                         V[h].astype(np.float64)) for h in range(H)])
    assert np.abs(out - want).max() / np.abs(want).max() <= RTOL_F32


# -- CUDA: the mapping the fused row kernel gets, rendered and compiled -------------

def test_gpu_mapping_keeps_the_numbers_and_owns_each_output_entry():
    args, S, V = _stored_rows(seed=1, spread=80.0)
    rows = args["size_i"]
    before, after = dict(args, O_vals=np.zeros(rows * 3)), dict(args, O_vals=np.zeros(rows * 3))
    online = verify(online_softmax(_rows_kernel()))
    mapped = verify(map_gpu(online))
    run_kernel(online, before)
    run_kernel(mapped, after, check_races=True)
    np.testing.assert_allclose(after["O_vals"], before["O_vals"], rtol=RTOL_F64)
    text = format_kernel(mapped)
    assert text.count("@gpu_lane") == 3          # rescale, accumulate, normalize: lanes over d


@pytest.mark.parametrize("fuse, fmt", [(True, "csr"), ("rows", "csr"), ("rows", "dia")])
def test_cuda_sources_compile_with_nvcc(fuse, fmt):
    from cuda_env import NVCC, nvcc_many
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    k = spc.compile("attention", fmt=fmt, target="cuda", fuse=fuse)
    kernels = [x for x in k.program.kernels if "O_vals" in x.ir]
    # the online loop where the row computes its scores; rows reading stored scores
    # keep their three walks on the GPU (the CUDA pipeline's recomputed_only)
    assert ("_old" in kernels[0].ir) == (fuse is True)
    for code, log in nvcc_many([x.source for x in k.program.kernels]):
        assert code == 0, log


@pytest.mark.cuda
@pytest.mark.parametrize("fmt, mask_name", [("csr", "random"), ("dia", "band")])
def test_cuda_attention_matches_reference(fmt, mask_name):
    from cuda_env import cupy_or_skip_module
    cupy_or_skip_module()
    mask = _masks()[mask_name]
    L, d = mask.shape[0], 13
    rng = np.random.default_rng(3)
    Q, K, V = (rng.standard_normal((L, d)).astype(np.float32) * 4 for _ in range(3))
    out = spc.compile("attention", fmt=fmt, target="cuda")(sp.csr_matrix(mask.astype(np.float32)),
                                                          Q, K, V)
    want = reference_attention(mask, Q.astype(np.float64), K.astype(np.float64),
                               V.astype(np.float64))
    assert np.abs(np.asarray(out) - want).max() / np.abs(want).max() <= RTOL_F32


# -- softmax-like programs: one walk (fused) against one kernel per statement --------

VARIANTS = {
    # the plain softmax rows with extra factors in the sum and the weighted sum
    "weights": ("S[i,j] = 0.25 * A[i,j] * Q[i,k] * K[j,k]; m[i] = max(j, S[i,j]); "
                "r[i] = 1 / max(sum(j, stored(S[i,j]) * b[j] * exp(S[i,j] - m[i])), 1e-30); "
                "O[i,d] = 2 * stored(S[i,j]) * exp(S[i,j] - m[i]) * V[j,d] * c[j] * r[i]"),
    # a sum with no floor, a scaled exponent, the factors in another order
    "scaled": ("S[i,j] = A[i,j] * Q[i,k] * K[j,k]; m[i] = max(j, S[i,j]); "
               "r[i] = 1 / sum(j, stored(S[i,j]) * exp(0.5 * S[i,j] - m[i])); "
               "O[i,d] = r[i] * stored(S[i,j]) * exp(0.5 * S[i,j] - m[i]) * V[j,d]"),
    # the max of one thing, the exponent of another (still exact: m only rescales)
    "other-exponent": ("S[i,j] = A[i,j] * Q[i,k] * K[j,k]; m[i] = max(j, S[i,j]); "
                       "r[i] = 1 / max(sum(j, stored(S[i,j]) * exp(b[j] - m[i])), 1e-30); "
                       "O[i,d] = stored(S[i,j]) * exp(b[j] - m[i]) * V[j,d] * r[i]"),
}


@pytest.mark.parametrize("fuse", [True, "rows"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_programs_walked_once_match_one_kernel_per_statement(name, fuse):
    rng = np.random.default_rng(11)
    L, d = 23, 5
    mask = rng.random((L, L)) < 0.3
    mask[2] = False
    mask[7] = True
    A = sp.csr_matrix(mask.astype(np.float64))
    Q, K, V = (rng.standard_normal((L, 4)) * 3, rng.standard_normal((L, 4)) * 3,
               rng.standard_normal((L, d)))
    extra = {"b": rng.standard_normal(L) * 20, "c": rng.standard_normal(L)}
    text = VARIANTS[name]
    formats = {"A": "csr", "S": "csr"}
    args = dict(A=A, Q=Q, K=K, V=V, **{t: v for t, v in extra.items() if f"{t}[" in text})
    walked = spc.compile(text, formats=formats, dtype="float64", fuse=fuse)
    assert any("_old" in k.ir for k in walked.kernels)
    apart = spc.compile(text, formats=formats, dtype="float64", fuse=False)
    assert not any("_old" in k.ir for k in apart.kernels)
    np.testing.assert_allclose(walked(**args), apart(**args), rtol=RTOL_F64, atol=1e-13)
