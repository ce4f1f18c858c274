"""Producer inlining (``passes/inline_producer``): a sampled result recomputed
where later statements read it.  Golden printed IR, the interpreter giving the
same numbers before (producer, then reader, the result in an array) and after
(the reader alone), refusals, and the attention program as one kernel."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats.format import batched, resolve_format
from spc.frontend.check import check
from spc.frontend.parser import parse
from spc.ir.interp import run_kernel
from spc.ir.lower import lower
from spc.ir.nodes import BinOp, Const, DType, Load
from spc.ir.traverse import rewrite
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes.fuse_rows import fuse_rows
from spc.passes.inline_producer import NotInlinable, inline_batched, inline_sampled
from test_ir_golden import assert_golden
from test_programs import reference_attention

SCORES = "S[i,j] = 0.5 * A[i,j] * Q[i,k] * K[j,k]"
SOFTMAX = ("m[i] = max(j, S[i,j])",
           "r[i] = 1 / max(sum(j, stored(S[i,j]) * exp(S[i,j] - m[i])), 1e-30)",
           "O[i,d] = stored(S[i,j]) * exp(S[i,j] - m[i]) * V[j,d] * r[i]")
SPARSE = {"A": "csr", "S": "csr", "B": "csr"}


def _lowered(text: str, n: int = 0):
    a = parse(text)
    check(a)
    ranks = {a.lhs.tensor: len(a.lhs.indices), **{x.tensor: len(x.indices)
                                                   for x in a.accesses()}}
    formats = {t: resolve_format(SPARSE.get(t, "dense"), r) for t, r in ranks.items()}
    return verify(lower(a, formats, name=f"s{n}", value_dtype=DType.F64).compute)


def _operands(seed=0, rows=9, cols=7, d=3):
    A = sp.random(rows, cols, density=0.4, format="csr", random_state=seed).tolil()
    A[3, :] = 0                                      # an empty row
    A[5, :] = 1.5                                    # a full row
    A = A.tocsr()
    rng = np.random.default_rng(seed)
    Q, K, V = rng.standard_normal((rows, 4)), rng.standard_normal((cols, 4)), \
        rng.standard_normal((cols, d))
    return {"A1_pos": A.indptr.astype(np.int32), "A1_crd": A.indices.astype(np.int32),
            "A_vals": A.data.copy(), "Q_vals": Q.reshape(-1).copy(),
            "K_vals": K.reshape(-1).copy(), "V_vals": V.reshape(-1).copy(),
            "size_i": rows, "size_j": cols, "size_k": 4, "size_d": d}, A


def _softmax_readers():
    producer = _lowered(SCORES)
    return producer, [inline_sampled(producer, _lowered(t, n + 1), "S", "A", "s0")
                      for n, t in enumerate(SOFTMAX)]


def test_golden():
    _, readers = _softmax_readers()
    assert_golden("inline_producer_attention", format_kernel(verify(readers[-1])))


def test_interpreter_same_numbers_before_and_after():
    args, A = _operands()
    rows = args["size_i"]
    before = dict(args, S_vals=np.zeros(A.nnz), S1_pos=args["A1_pos"], S1_crd=args["A1_crd"],
                  m_vals=np.zeros(rows), r_vals=np.zeros(rows), O_vals=np.zeros(rows * 3))
    run_kernel(_lowered(SCORES), before)
    for n, text in enumerate(SOFTMAX):
        run_kernel(_lowered(text, n + 1), before)
    producer, readers = _softmax_readers()
    after = dict(args, m_vals=np.zeros(rows), r_vals=np.zeros(rows), O_vals=np.zeros(rows * 3))
    for k in readers:
        run_kernel(verify(k), after)
    np.testing.assert_allclose(after["O_vals"], before["O_vals"], rtol=1e-15)
    assert before["O_vals"].any()
    fused = dict(args, O_vals=np.zeros(rows * 3))
    run_kernel(verify(fuse_rows(readers, "attention")), fused)
    np.testing.assert_allclose(fused["O_vals"], before["O_vals"], rtol=1e-15)


def test_the_result_leaves_the_parameters_and_the_producers_inputs_join():
    _, readers = _softmax_readers()
    names = {p.name for p in readers[-1].params}
    assert {"S_vals", "S1_pos", "S1_crd"}.isdisjoint(names)
    assert {"A_vals", "A1_pos", "A1_crd", "Q_vals", "K_vals", "V_vals", "size_k"} <= names


def test_a_reader_that_does_not_read_the_result_is_unchanged():
    reader = _lowered("y[i] = B[i,j] * x[j]", 1)
    assert inline_sampled(_lowered(SCORES), reader, "S", "A", "s0") is reader


def test_a_reader_of_another_row_is_refused():
    reader = _lowered("y[i] = S[j,i] * x[j]", 1)      # S's column i: not the loop's row
    with pytest.raises(NotInlinable, match="rows are not|another row|outside a loop"):
        inline_sampled(_lowered(SCORES), reader, "S", "A", "s0")


def test_a_producer_not_over_rows_is_refused():
    SPARSE.update(A="coo", S="coo")                  # a coo producer walks positions, not rows
    try:
        producer = _lowered(SCORES)
    finally:
        SPARSE.update(A="csr", S="csr")
    with pytest.raises(NotInlinable):
        inline_sampled(producer, _lowered(SOFTMAX[0], 1), "S", "A", "s0")


# -- through spc.compile --------------------------------------------------------------

def test_attention_is_one_kernel_without_the_scores():
    att = spc.compile("attention", dtype="float64", fuse=True)
    (k,) = att.program.kernels
    assert "S_vals:" not in k.ir and "S1_pos" not in k.ir and "in A_vals:" in k.ir
    rows = spc.compile("attention", dtype="float64", fuse="rows")
    assert len(rows.program.kernels) == 2 and "out S_vals:" in rows.program.kernels[0].ir


@pytest.mark.parametrize("fuse", [True, "rows", False])
def test_attention_edge_rows_duplicates_and_unsorted_masks(fuse):
    args, A = _operands(seed=4, rows=9, cols=9)
    Q = args["Q_vals"].reshape(9, 4)
    K = args["K_vals"].reshape(9, 4)
    V = args["V_vals"].reshape(9, 3)
    # duplicate and unsorted entries in row 0: summed first, as scipy does
    messy = sp.csr_matrix((np.r_[[1.0, 2.0, 1.0], A.data[A.indptr[1]:]],
                           np.r_[[4, 1, 4], A.indices[A.indptr[1]:]],
                           np.r_[0, 3 + A.indptr[1:] - A.indptr[1]]), shape=A.shape)
    att = spc.compile("attention", dtype="float64", fuse=fuse)
    tidy = messy.copy()
    tidy.sum_duplicates()
    want = reference_attention(tidy.toarray() != 0, Q, K, V, scale=0.7, values=tidy.toarray())
    np.testing.assert_allclose(att(messy, Q, K, V, scale=0.7), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_fuse_defaults_to_stored_scores(target):
    assert len(spc.compile("attention", target=target).program.kernels) == 2
    assert len(spc.compile("attention", target=target, fuse=True).program.kernels) == 1


def test_fuse_takes_true_rows_or_false():
    with pytest.raises(spc.UnsupportedError, match="fuse must be"):
        spc.compile("attention", fuse="always")


def test_any_program_reading_a_sampled_result_by_rows_inlines_it():
    p = spc.compile("S[i,j] = A[i,j] * Q[i,k] * K[j,k]; y[i] = sum(j, S[i,j])",
                    formats={"A": "csr", "S": "csr"}, dtype="float64", fuse=True)
    args, A = _operands(seed=5)
    Q, K = args["Q_vals"].reshape(9, 4), args["K_vals"].reshape(7, 4)
    assert len(p.kernels) == 1
    np.testing.assert_allclose(p(A, Q, K), (A.toarray() * (Q @ K.T)).sum(1), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fused_attention_cuda_source_compiles_with_nvcc(dtype):
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    att = spc.compile("attention", target="cuda", dtype=dtype, fuse=True)
    (k,) = att.program.kernels
    code, log = nvcc(k.source)
    assert code == 0, log


@pytest.mark.cuda
@pytest.mark.parametrize("fuse", [True, "rows"])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_attention_on_the_gpu(fuse, dtype, tol):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rows, cols, d = 70, 53, 37                      # no multiple of a warp or a vector
    A = sp.random(rows, cols, density=0.2, format="csr", random_state=9).tolil()
    A[3, :] = 0                                     # an empty row
    A[5, :] = 1.0                                   # a dense row
    A = A.tocsr()
    rng = np.random.default_rng(9)
    Q, K, V = rng.standard_normal((rows, 40)), rng.standard_normal((cols, 40)), \
        rng.standard_normal((cols, d))
    t = getattr(torch, dtype)
    At = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices),
                                 torch.tensor(A.data, dtype=t), A.shape, device="cuda")
    att = spc.compile("attention", target="cuda", fuse=fuse)
    got = att(At, *(torch.tensor(x, dtype=t, device="cuda") for x in (Q, K, V)), 0.2)
    want = reference_attention(A.toarray() != 0, Q, K, V, scale=0.2, values=A.toarray())
    np.testing.assert_allclose(got.double().cpu().numpy(), want, rtol=tol, atol=tol)


# -- a batch of heads over one pattern (inline_batched) -------------------------------

HEADS_SCORES = "S[h,i,j] = 0.5 * A[i,j] * Q[h,i,k] * K[h,j,k]"
HEADS_SOFTMAX = ("m[h,i] = max(j, S[h,i,j])",
                 "r[h,i] = 1 / max(sum(j, stored(S[h,i,j]) * exp(S[h,i,j] - m[h,i])), 1e-30)",
                 "O[h,i,d] = stored(S[h,i,j]) * exp(S[h,i,j] - m[h,i]) * V[h,j,d] * r[h,i]")


def _lowered_heads(text: str, n: int = 0, stored: str = "dds"):
    """``text`` lowered with A csr and S (heads x rows x columns) in ``stored``."""
    a = parse(text)
    check(a)
    ranks = {a.lhs.tensor: len(a.lhs.indices), **{x.tensor: len(x.indices)
                                                   for x in a.accesses()}}
    names = {"A": "csr", "S": stored}
    formats = {t: resolve_format(names.get(t, "dense"), r) for t, r in ranks.items()}
    return verify(lower(a, formats, name=f"s{n}", value_dtype=DType.F64).compute)


def _heads_readers():
    producer = _lowered_heads(HEADS_SCORES, stored="dense")
    return [inline_batched(producer, _lowered_heads(t, n + 1), "S", "s0")
            for n, t in enumerate(HEADS_SOFTMAX)]


def _heads_operands(heads, seed=0):
    """The mask's operands (``_operands``: an empty and a full row) for ``heads``
    heads, and S stored as dds: row (h, i) holds row i of A's entries."""
    args, A = _operands(seed=seed, rows=9, cols=9)
    rng = np.random.default_rng(seed)
    Q, K, V = (rng.standard_normal((heads, 9, 4)), rng.standard_normal((heads, 9, 4)),
               rng.standard_normal((heads, 9, 3)))
    rows = np.repeat(np.arange(9), np.diff(A.indptr))
    S = np.concatenate([0.5 * A.data * np.einsum("pk,pk->p", Q[h][rows], K[h][A.indices])
                        for h in range(heads)])
    args.update(Q_vals=Q.reshape(-1).copy(), K_vals=K.reshape(-1).copy(),
                V_vals=V.reshape(-1).copy(), size_h=heads, size_k=4,
                S2_pos=np.concatenate([[0]] + [h * A.nnz + A.indptr[1:]
                                               for h in range(heads)]).astype(np.int32),
                S2_crd=np.tile(A.indices, heads).astype(np.int32), S_vals=S)
    return args, A, (Q, K, V)


def test_heads_golden():
    readers = _heads_readers()
    assert_golden("inline_producer_attention_heads", format_kernel(verify(readers[-1])))


@pytest.mark.parametrize("heads", [1, 3])
def test_heads_interpreter_same_numbers_before_and_after(heads):
    args, A, (Q, K, V) = _heads_operands(heads, seed=2)
    rows = heads * 9
    before = dict(args, m_vals=np.zeros(rows), r_vals=np.zeros(rows), O_vals=np.zeros(rows * 3))
    for n, text in enumerate(HEADS_SOFTMAX):
        run_kernel(_lowered_heads(text, n + 1), before)
    _fused_readers_match(_heads_readers(), "attention_heads", args, A, (Q, K, V), before)


def test_heads_reader_of_another_row_is_refused():
    # S read at row (h, j): not the reader's own row of S
    reader = _lowered_heads("y[h,i] = S[h,j,i]", 1)
    with pytest.raises(NotInlinable):
        inline_batched(_lowered_heads(HEADS_SCORES, stored="dense"), reader, "S", "s0")


def test_heads_producer_not_over_rows_is_refused():
    a = parse(HEADS_SCORES)
    check(a)
    formats = {"S": resolve_format("dense", 3), "A": resolve_format("coo", 2),
               "Q": resolve_format("dense", 3), "K": resolve_format("dense", 3)}
    producer = lower(a, formats, name="p", value_dtype=DType.F64).compute
    with pytest.raises(NotInlinable):
        inline_batched(producer, _lowered_heads(HEADS_SOFTMAX[0], 1), "S", "s0")


# -- a batch of the pattern (formats.batched: A's arrays, values h * nnz + p) ----------

def _batched_readers():
    batch = batched(resolve_format("csr", 2))
    producer = _lowered_heads(HEADS_SCORES, stored=batch)
    return [inline_sampled(producer, _lowered_heads(t, n + 1, stored=batch), "S", "A", "s0")
            for n, t in enumerate(HEADS_SOFTMAX)]


def test_batched_golden():
    readers = _batched_readers()
    text = format_kernel(verify(readers[-1]))
    assert "S_vals[" not in text and "S1_pos" not in text and "S2_parents" not in text
    assert_golden("inline_producer_attention_batched", text)


@pytest.mark.parametrize("heads", [1, 3])
def test_batched_interpreter_same_numbers_before_and_after(heads):
    args, A, (Q, K, V) = _heads_operands(heads, seed=4)
    rows = heads * 9
    batch = batched(resolve_format("csr", 2))
    before = {k: v for k, v in args.items() if not k.startswith("S")}
    before.update(S1_pos=args["A1_pos"], S1_crd=args["A1_crd"], S_vals=args["S_vals"],
                  S2_parents=A.nnz, m_vals=np.zeros(rows), r_vals=np.zeros(rows),
                  O_vals=np.zeros(rows * 3))
    for n, text in enumerate(HEADS_SOFTMAX):
        run_kernel(_lowered_heads(text, n + 1, stored=batch), before)
    _fused_readers_match(_batched_readers(), "attention_batched", args, A, (Q, K, V), before)


def _fused_readers_match(readers, name, args, A, QKV, before):
    """The readers fused into one kernel (no S operand) give ``before``'s O, and the
    float64 reference per head."""
    heads = QKV[0].shape[0]
    fused = {k: v for k, v in args.items() if not k.startswith("S")}
    fused["O_vals"] = np.zeros(heads * 9 * 3)
    run_kernel(verify(fuse_rows(readers, name)), fused)
    np.testing.assert_allclose(fused["O_vals"], before["O_vals"], rtol=1e-13, atol=1e-14)
    want = np.stack([reference_attention(A.toarray() != 0, Q, K, V, scale=0.5,
                                         values=A.toarray()) for Q, K, V in zip(*QKV)])
    np.testing.assert_allclose(fused["O_vals"], want.reshape(-1), rtol=1e-12, atol=1e-12)


def test_batched_reader_of_another_position_is_refused():
    # the reader loads S one position past the one its loop is at: nothing the
    # producer computes there, so it is left alone (NotInlinable)
    batch = batched(resolve_format("csr", 2))
    reader = _lowered_heads("y[h,i] = S[h,i,j]", 1, stored=batch)
    shifted = rewrite(reader, lambda n: Load(n.buf, BinOp("+", n.index, Const(1, DType.I64)))
                      if isinstance(n, Load) and n.buf.name == "S_vals" else n)
    producer = _lowered_heads(HEADS_SCORES, stored=batch)
    assert inline_sampled(producer, reader, "S", "A", "s0") is not reader
    with pytest.raises(NotInlinable):
        inline_sampled(producer, shifted, "S", "A", "s0")
