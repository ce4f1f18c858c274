"""Programs of several statements, reductions other than sum, ``stored()``, and the
named ``attention`` program (issue 12, part 1 and an unfused part 3)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc

RNG = np.random.default_rng(7)
L, D = 16, 4
Q, K, V = (RNG.standard_normal((L, D)) for _ in range(3))


def _band(width=2, n=L):
    return sp.csr_matrix((np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= width)
                         .astype(float))


def _blocks(seed=3, n=L, b=2):
    rng = np.random.default_rng(seed)
    keep = rng.random((n // b, n // b)) < 0.4
    keep[1] = False                                   # an empty block row
    return sp.csr_matrix(np.kron(keep, np.ones((b, b))))


def reference_attention(mask, Q, K, V, scale=None, values=None):
    """Row softmax over the stored entries of ``mask`` of scale * (Q K^T) * values."""
    scale = 1 / np.sqrt(Q.shape[1]) if scale is None else scale
    S = scale * (Q @ K.T) * (values if values is not None else 1.0)
    out = np.zeros((Q.shape[0], V.shape[1]))
    for i in range(Q.shape[0]):
        js = np.nonzero(mask[i])[0]
        if len(js):
            w = np.exp(S[i, js] - S[i, js].max())
            out[i] = (w / w.sum()) @ V[js]
    return out


# -- reductions --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "coo", "dcsr", "dense"])
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_and_min_reduce_over_stored_entries(op, fmt):
    # a row with no entries gives 0, whatever the format (as segment reductions do)
    A = sp.random(9, 7, density=0.4, format="csr", random_state=2)
    A.data -= 0.5
    A = A.tolil()
    A[4, :] = 0                                          # an empty row
    A = A.tocsr()
    k = spc.compile(f"m[i] = {op}(j, A[i,j])", formats={"A": fmt}, dtype="float64")
    operand = A.toarray() if fmt == "dense" else spc.tensor(A, fmt)
    got = k(A=operand)
    dense = A.toarray()
    for i in range(9):
        row = A.getrow(i).data if fmt != "dense" else dense[i]
        want = getattr(np, op)(row) if len(row) else 0.0
        assert got[i] == want


def test_max_reduction_of_an_expression():
    A = sp.random(6, 5, density=0.5, format="csr", random_state=4)
    x = np.linspace(-1, 1, 5)
    k = spc.compile("m[i] = max(j, A[i,j] * x[j] - 1)", formats={"A": "csr"}, dtype="float64")
    want = [max(v * x[j] - 1 for j, v in zip(A.getrow(i).indices, A.getrow(i).data))
            if A.getrow(i).nnz else 0.0 for i in range(6)]
    np.testing.assert_allclose(k(A=A, x=x), want)


def test_explicit_sum_is_the_implicit_one():
    A = sp.random(6, 5, density=0.5, format="csr", random_state=5)
    x = np.arange(5.0)
    k = spc.compile("y[i] = sum(j, A[i,j] * x[j])", formats={"A": "csr"}, dtype="float64")
    np.testing.assert_allclose(k(A=A, x=x), A @ x)


def test_max_reduction_over_columns_of_a_csc_matrix_reads_a_csr_copy():
    """Refused before issue 13 part 3 (the max needs the output's loop outside):
    A is read through a csr copy.  A row without entries gives 0."""
    k = spc.compile("m[i] = max(j, A[i,j])", formats={"A": "csc"}, dtype="float64")
    assert [c.format.name for c in k.copies] == ["csr"]
    a = sp.random(7, 5, density=0.3, format="csr", random_state=3)
    a.data -= 0.5
    want = [max(a.data[a.indptr[r]:a.indptr[r + 1]], default=0.0) for r in range(7)]
    np.testing.assert_allclose(k(A=a.tocsc()), want)


@pytest.mark.parametrize("text, message", [
    ("m[i] = max(j, A[i,j]) + sum(j, A[i,j])", "one reduction per statement"),
    ("m[i] = exp(max(j, A[i,j] * sum(k, B[j,k])))", "inside another one"),
    ("C[i,j] = relu(sum(k, A[i,k] * B[k,j]) + b[k])", "outside the reduction"),
    ("m[i] = max(i, A[i,j])", "which is an index of the output"),
    ("m[i] = max(j, A[i,j] * B[j,k])", "'k' is not an index of the output"),
    ("C[i] = stored(A[i] + B[i])", "stored() takes one tensor access"),
])
def test_bad_reductions_point_at_the_text(text, message):
    with pytest.raises(spc.ParseError) as err:
        spc.compile(text)
    assert message in str(err.value) and "^" in str(err.value)


# -- a reduction inside an expression: an epilogue per output entry ------------------

@pytest.mark.parametrize("fmt", ["csr", "coo", "dense"])
def test_spmm_with_bias_and_activation_is_one_kernel(fmt):
    A = sp.random(30, 20, density=0.2, format="csr", random_state=1)
    B, b = RNG.standard_normal((20, 8)), RNG.standard_normal(8)
    k = spc.compile("C[i,j] = relu(sum(k, A[i,k] * B[k,j]) + b[j])", formats={"A": fmt},
                    dtype="float64")
    assert k.ir.count("kernel ") == 1
    operand = A.toarray() if fmt == "dense" else spc.tensor(A, fmt)
    np.testing.assert_allclose(k(A=operand, B=B, b=b), np.maximum(A @ B + b, 0), atol=1e-12)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("text", ["C[i,j] = relu(sum(k, A[i,k] * B[k,j]) + b[j])",
                                  "C[i,j] = exp(sum(k, A[i,k] * B[k,j]))"])
def test_an_epilogue_under_an_order_that_reduces_first_is_refused(text, target):
    # the order (i, k, j) adds into C[i,j] position by position: there is no whole
    # sum to apply the function to (it used to be dropped: a wrong answer)
    with pytest.raises(spc.UnsupportedError, match=r"epilogue.*\('i', 'j', 'k'\)"):
        spc.compile(text, formats={"A": "csr"}, target=target,
                    schedule=spc.Schedule(order=("i", "k", "j")))


def test_sddmm_with_an_epilogue_keeps_the_pattern():
    A = sp.random(30, 20, density=0.2, format="csr", random_state=2)
    X, Y = RNG.standard_normal((30, 5)), RNG.standard_normal((20, 5))
    k = spc.compile("S[i,j] = A[i,j] * exp(sum(k, X[i,k] * Y[j,k]) / 2)",
                    formats={"A": "csr", "S": "csr"}, dtype="float64")
    assert "# output: pattern" in k.ir
    np.testing.assert_allclose(k(A=A, X=X, Y=Y).toarray(),
                               A.multiply(np.exp(X @ Y.T / 2)).toarray(), rtol=1e-12)


def test_max_reduction_with_an_epilogue():
    A = sp.random(9, 7, density=0.4, format="csr", random_state=3)
    k = spc.compile("m[i] = 2 * max(j, A[i,j]) + 1", formats={"A": "csr"}, dtype="float64")
    want = [2 * A.getrow(i).data.max() + 1 if A.getrow(i).nnz else 1.0 for i in range(9)]
    np.testing.assert_allclose(k(A=A), want)


@pytest.mark.cuda
def test_spmm_epilogue_on_the_gpu():
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    A = sp.random(300, 200, density=0.05, format="csr", random_state=1)
    B, b = RNG.standard_normal((200, 32)), RNG.standard_normal(32)
    k = spc.compile("C[i,j] = relu(sum(k, A[i,k] * B[k,j]) + b[j])", formats={"A": "csr"},
                    target="cuda", dtype="float64")
    got = cp.asnumpy(k(A=A, B=cp.asarray(B), b=cp.asarray(b)))
    np.testing.assert_allclose(got, np.maximum(A @ B + b, 0), atol=1e-12)


# -- stored() ----------------------------------------------------------------------

def test_stored_is_one_at_stored_entries_explicit_zeros_included():
    A = sp.csr_matrix((np.array([0.0, 2.0]), np.array([0, 2]), np.array([0, 2, 2])),
                      shape=(2, 3))
    k = spc.compile("C[i,j] = stored(A[i,j])", formats={"A": "csr"}, dtype="float64")
    np.testing.assert_array_equal(k(A=A), [[1, 0, 1], [0, 0, 0]])


def test_stored_masks_a_function_that_is_not_zero_at_zero():
    A = sp.random(7, 6, density=0.3, format="csr", random_state=8)
    k = spc.compile("C[i,j] = stored(A[i,j]) * exp(A[i,j])", formats={"A": "csr"},
                    dtype="float64")
    assert "for j in [0, size_j)" not in k.ir          # A's entries only
    dense = A.toarray()
    np.testing.assert_allclose(k(A=A), np.where(dense != 0, np.exp(dense), 0))


# -- programs ----------------------------------------------------------------------

def test_program_statements_read_earlier_results():
    A = sp.random(8, 6, density=0.4, format="csr", random_state=9)
    x = np.arange(6.0)
    p = spc.compile("y[i] = A[i,j] * x[j]; z[i] = relu(y[i] - 1)\nw[i] = z[i] * 2",
                    formats={"A": "csr"}, dtype="float64")
    assert p.input_names == ("A", "x")
    np.testing.assert_allclose(p(A, x), np.maximum(A @ x - 1, 0) * 2)
    np.testing.assert_allclose(p(A=A, x=x), np.maximum(A @ x - 1, 0) * 2)
    assert p.ir.count("kernel ") == 1                      # fused: y and z in registers
    q = spc.compile("y[i] = A[i,j] * x[j]; z[i] = relu(y[i] - 1)\nw[i] = z[i] * 2",
                    formats={"A": "csr"}, dtype="float64", fuse=False)
    assert q.ir.count("kernel ") == 3
    np.testing.assert_allclose(q(A, x), np.maximum(A @ x - 1, 0) * 2)


def test_program_sparse_intermediate():
    A = sp.random(8, 6, density=0.4, format="csr", random_state=10)
    X, Y = RNG.standard_normal((8, 3)), RNG.standard_normal((6, 3))
    p = spc.compile("S[i,j] = A[i,j] * X[i,k] * Y[j,k]; m[i] = max(j, S[i,j])",
                    formats={"A": "csr", "S": "csr"}, dtype="float64")
    S = A.multiply(X @ Y.T).tocsr()
    want = [S.getrow(i).data.max() if S.getrow(i).nnz else 0.0 for i in range(8)]
    np.testing.assert_allclose(p(A, X, Y), want)


@pytest.mark.parametrize("text, message", [
    ("y[i] = A[i,j] * x[j]; y[i] = x[i]", "written by two statements"),
    ("z[i] = y[i] * 2; y[i] = A[i,j] * x[j]", "read before this statement writes it"),
])
def test_bad_programs_are_refused(text, message):
    with pytest.raises(spc.ParseError, match=message):
        spc.compile(text, formats={"A": "csr"})


def test_program_formats_must_name_its_tensors():
    with pytest.raises(spc.FormatError, match="'B'"):
        spc.compile("y[i] = A[i,j] * x[j]; z[i] = y[i]", formats={"A": "csr", "B": "csr"})


def test_program_operands_are_checked():
    p = spc.compile("y[i] = A[i,j] * x[j]; z[i] = y[i]", formats={"A": "csr"})
    with pytest.raises(TypeError, match="missing operand"):
        p(A=sp.eye(3, format="csr"))
    with pytest.raises(TypeError, match="no operand 'q'"):
        p(A=sp.eye(3, format="csr"), x=np.ones(3), q=1)


# -- row fusion -----------------------------------------------------------------------

def test_rows_fuse_and_intermediates_stay_in_registers():
    p = spc.compile("m[i] = max(j, S[i,j]); r[i] = sum(j, exp(S[i,j] - m[i])); "
                    "O[i,d] = S[i,j] * V[j,d] * r[i]", formats={"S": "csr"}, dtype="float64")
    (k,) = p.kernels
    assert "m_vals" not in k.ir and "r_vals" not in k.ir and "let m_row" in k.ir
    S = sp.random(12, 9, density=0.3, format="csr", random_state=11)
    Vd = RNG.standard_normal((9, 3))
    dense = S.toarray()
    m = np.array([S.getrow(i).data.max() if S.getrow(i).nnz else 0.0 for i in range(12)])
    r = np.exp(dense - m[:, None]).sum(1)          # exp(0 - m) where S has no entry too
    np.testing.assert_allclose(p(S, Vd), (S @ Vd) * r[:, None], rtol=1e-12)
    unfused = spc.compile("m[i] = max(j, S[i,j]); r[i] = sum(j, exp(S[i,j] - m[i])); "
                          "O[i,d] = S[i,j] * V[j,d] * r[i]", formats={"S": "csr"},
                          dtype="float64", fuse=False)
    np.testing.assert_allclose(p(S, Vd), unfused(S, Vd), rtol=1e-13)


def test_statements_reading_a_result_at_other_entries_do_not_fuse():
    A = sp.random(7, 7, density=0.4, format="csr", random_state=12)
    x = np.arange(7.0)
    p = spc.compile("y[i] = A[i,j] * x[j]; z[i] = A[i,j] * y[j]", formats={"A": "csr"},
                    dtype="float64")
    assert len(p.kernels) == 2
    np.testing.assert_allclose(p(A, x), A @ (A @ x))


def test_fuse_is_for_programs():
    with pytest.raises(spc.UnsupportedError, match="fuse="):
        spc.compile("y[i] = A[i,j] * x[j]", fuse=False)


# -- attention ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt, mask", [
    ("csr", _band()), ("coo", _band()), ("dia", _band()), ("ell", _band()),
    ("bsr(2,2)", _blocks()), ("csr", _blocks()),
])
def test_attention_matches_a_row_softmax(fmt, mask):
    att = spc.compile("attention", fmt=fmt, dtype="float64")
    got = att(mask, Q, K, V)
    np.testing.assert_allclose(got, reference_attention(mask.toarray() != 0, Q, K, V),
                               rtol=1e-12, atol=1e-12)


def test_attention_rows_without_entries_give_zero_and_mask_values_scale_scores():
    mask = _band().tolil()
    mask[5, :] = 0
    mask = mask.tocsr()
    mask.data *= 0.5
    att = spc.compile("attention", dtype="float64")
    got = att(mask, Q, K, V, scale=0.3)
    want = reference_attention(mask.toarray() != 0, Q, K, V, scale=0.3, values=mask.toarray())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not got[5].any()


def test_attention_float32():
    att = spc.compile("attention")
    got = att(_band().astype(np.float32), Q.astype(np.float32), K.astype(np.float32),
              V.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference_attention(_band().toarray() != 0, Q, K, V),
                               rtol=1e-4, atol=1e-5)


def test_attention_torch_cpu():
    torch = pytest.importorskip("torch")
    mask = _band()
    tm = torch.sparse_csr_tensor(torch.tensor(mask.indptr), torch.tensor(mask.indices),
                                 torch.tensor(mask.data), mask.shape)
    att = spc.compile("attention", dtype="float64")
    got = att(tm, torch.tensor(Q), torch.tensor(K), torch.tensor(V))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), reference_attention(mask.toarray() != 0, Q, K, V),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("fmt, mask", [("csr", _band()), ("bsr(2,2)", _blocks()),
                                       ("dia", _band())])
def test_attention_on_the_gpu(fmt, mask):
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    att = spc.compile("attention", fmt=fmt, target="cuda", dtype="float64")
    got = att(mask, cp.asarray(Q), cp.asarray(K), cp.asarray(V))
    np.testing.assert_allclose(cp.asnumpy(got), reference_attention(mask.toarray() != 0, Q, K, V),
                               rtol=1e-12, atol=1e-12)


def test_each_statement_checks_the_callers_sparse_operands():
    # A has a duplicate: SpMV sums it as it reads, the max reduction needs it summed
    # first; each statement canonicalizes for itself
    A = sp.csr_matrix((np.array([1.0, 2.0, 5.0]), np.array([0, 0, 1]), np.array([0, 2, 3])),
                      shape=(2, 2))
    A.has_canonical_format = False
    p = spc.compile("y[i] = A[i,j] * x[j]; m[i] = max(j, A[i,j]); z[i] = m[i] + y[i] * 0",
                    formats={"A": "csr"}, dtype="float64")
    np.testing.assert_allclose(p(A, np.ones(2)), [3.0, 5.0])


@pytest.mark.parametrize("fuse", ["rows", True, False])
def test_attention_sums_in_float64_over_float32_arrays(fuse):
    """accumulate="float64": a fused row's intermediate (the row max, the normalizer,
    an inlined score) is the value the unfused kernel stored, rounded to float32; the
    fused kernels declared it float32 and assigned it the float64 sum (LLVM refused:
    "cannot store double to float*")."""
    rng = np.random.default_rng(11)
    A = sp.random(9, 9, density=0.4, format="csr", random_state=0, dtype=np.float32)
    Q, K, V = (rng.standard_normal((9, 4)).astype(np.float32) for _ in range(3))
    ref = spc.compile("attention", fmt="csr", fuse=False, dtype="float64")(
        A.astype(np.float64), Q.astype(np.float64), K.astype(np.float64), V.astype(np.float64))
    k = spc.compile("attention", fmt="csr", accumulate="float64", dtype="float32", fuse=fuse)
    out = k(A, Q, K, V)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_an_operand_named_validate_is_an_operand_of_every_statement():
    """As for a single kernel, a program operand named ``validate`` is an operand,
    not the call option, also where a statement reads it (fuzz seed 9317: it was
    taken as the option, then missing)."""
    p = spc.compile("X[hi,q] = validate[hi,q]*1; N[hi] = max(q, X[hi,q]); "
                    "half[hi] = N[hi]*A[hi] + 1")
    v = np.arange(6.0).reshape(2, 3)
    A = np.array([2.0, -1.0])
    want = v.max(axis=1) * A + 1
    np.testing.assert_allclose(p(validate=v, A=A), want)
    np.testing.assert_allclose(p(v, A), want)
    np.testing.assert_allclose(p(A=A, validate=v), want)
