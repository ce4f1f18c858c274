"""Attention over a batch of heads (issue 12, parts 1 and 3): ``att(A, Q, K, V)``
with Q, K, V of shape (H, L, d) and one mask A shared by every head runs each
statement over all heads in one kernel (``api.HEADS_PROGRAMS``).  Checked
against a float64 numpy reference per head, on the mask formats and fuse modes
attention takes, with edge masks; shape errors; the CUDA kernels rendered and
compiled with nvcc (run on a GPU by the tests marked ``cuda``)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from test_ir_golden import assert_golden
from test_programs import reference_attention


def _band(n, width=2):
    return sp.csr_matrix((np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= width)
                         .astype(float))


def _edges(n=19, seed=3):
    """A random mask with an empty row (2), a fully dense row (5), an empty last row."""
    A = sp.random(n, n, density=0.25, format="lil", random_state=seed)
    A[2, :] = 0
    A[5, :] = 0.75
    A[n - 1, :] = 0
    return A.tocsr()


def _blocks(n=18, b=2, seed=3):
    rng = np.random.default_rng(seed)
    keep = rng.random((n // b, n // b)) < 0.4
    keep[1] = False                                   # an empty block row
    keep[3] = True                                    # a dense block row
    return sp.csr_matrix(np.kron(keep, np.ones((b, b))))


MASKS = {
    "band16": _band(16),
    "edges19": _edges(),                              # L a multiple of no tile
    "blocks18": _blocks(),
    "empty7": sp.csr_matrix((7, 7)),                  # nnz = 0: every row gives 0
}


def _heads(H, L, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((H, L, d)) for _ in range(3)]


def reference_heads(mask, Q, K, V, scale=None):
    """``reference_attention`` of each head (float64), stacked: (H, L, d)."""
    pattern = mask.toarray() != 0
    values = mask.toarray()
    return np.stack([reference_attention(pattern, Q[h], K[h], V[h], scale=scale,
                                         values=values) for h in range(Q.shape[0])]) \
        if Q.shape[0] else np.zeros(Q.shape)


_COMPILED: dict = {}


def _attention(**options):
    """spc.compile("attention", **options), once per options in this module."""
    key = tuple(sorted(options.items()))
    if key not in _COMPILED:
        _COMPILED[key] = spc.compile("attention", **options)
    return _COMPILED[key]


@pytest.mark.parametrize("fuse", ["rows", True, False])
@pytest.mark.parametrize("fmt, mask", [
    ("csr", "band16"), ("csr", "edges19"), ("csr", "blocks18"), ("csr", "empty7"),
    ("coo", "edges19"), ("dia", "band16"), ("ell", "edges19"), ("bsr(2,2)", "blocks18"),
])
@pytest.mark.parametrize("H", [1, 3])
def test_heads_match_a_per_head_reference(H, fmt, mask, fuse):
    A = MASKS[mask]
    Q, K, V = _heads(H, A.shape[0], 5, seed=H)        # d = 5: no multiple of a vector
    att = _attention(fmt=fmt, dtype="float64", fuse=fuse)
    got = att(A, Q, K, V, scale=0.4)
    assert got.shape == (H, A.shape[0], 5)
    np.testing.assert_allclose(got, reference_heads(A, Q, K, V, scale=0.4),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fuse", ["rows", True])
def test_float32_relative_error(fuse):
    A = _edges(n=37)
    Q, K, V = (x.astype(np.float32) for x in _heads(4, 37, 19, seed=5))
    got = _attention(fuse=fuse)(A.astype(np.float32), Q, K, V)
    assert got.dtype == np.float32
    want = reference_heads(A, *(x.astype(np.float64) for x in (Q, K, V)),
                           scale=1 / np.sqrt(19))
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_default_scale_reads_d_from_the_last_dimension():
    A = _band(16)
    Q, K, V = _heads(2, 16, 9)
    got = _attention(dtype="float64")(A, Q, K, V)
    np.testing.assert_allclose(got, reference_heads(A, Q, K, V, scale=1 / 3), rtol=1e-12,
                               atol=1e-12)


def test_two_and_three_dimensional_calls_share_one_compiled_attention():
    att = spc.compile("attention", dtype="float64")
    A = _band(16)
    Q, K, V = _heads(3, 16, 4)
    single = att(A, Q[1], K[1], V[1])
    batched = att(A, Q, K, V)
    assert single.shape == (16, 4) and batched.shape == (3, 16, 4)
    np.testing.assert_allclose(batched[1], single, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(att(A, Q[1], K[1], V[1]), single, rtol=0, atol=0)


def test_no_heads_and_no_rows():
    att = _attention(dtype="float64")
    Q = np.zeros((0, 16, 4))
    assert att(_band(16), Q, Q, Q).shape == (0, 16, 4)
    Q = np.zeros((2, 0, 4))
    assert att(sp.csr_matrix((0, 0)), Q, Q, Q).shape == (2, 0, 4)


@pytest.mark.parametrize("fuse", ["rows", True])
@pytest.mark.parametrize("fmt", ["csr", "coo", "dia", "ell", "bsr(2,2)"])
def test_no_heads_in_every_mask_format(fmt, fuse):
    A = MASKS["band16" if fmt == "dia" else "blocks18"]    # dia: diagonals it fills not
    n = A.shape[0]
    Q = np.zeros((0, n, 4))
    got = _attention(fmt=fmt, dtype="float64", fuse=fuse)(A, Q, Q, Q)
    assert got.shape == (0, n, 4)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("fmt, on_gpu", [("csr", "batched(csr)"), ("dia", "batched(dia)"),
                                         ("ell", "batched(ell)"), ("coo", "dds"),
                                         ("bsr(2,2)", "dds")])
def test_gpu_scores_share_the_masks_pattern_where_its_rows_come_first(fmt, on_gpu, target):
    """On the GPU, a mask storing whole rows at a dense first level: the scores are a
    batch of its pattern (no assembly, no device synchronization; the readers walk
    the mask's rows); else, and on the CPU, dds, assembled."""
    stored = on_gpu if target == "cuda" else "dds"
    program = _heads_program(fmt=fmt, dtype="float32", target=target)
    scores = program.kernels[0]
    assert scores.formats["S"].name == stored
    assembled = [k for k in scores.lowered_kernels() if k.name.endswith("_assemble")]
    assert bool(assembled) == (stored == "dds")


def test_torch_cpu_heads():
    torch = pytest.importorskip("torch")
    A = _edges()
    Q, K, V = _heads(3, 19, 4)
    At = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices),
                                 torch.tensor(A.data), A.shape)
    got = _attention(dtype="float64")(At, *(torch.tensor(x) for x in (Q, K, V)), 0.5)
    assert isinstance(got, torch.Tensor) and tuple(got.shape) == (3, 19, 4)
    np.testing.assert_allclose(got.numpy(), reference_heads(A, Q, K, V, scale=0.5),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_16_bit_heads(dtype, tol):
    torch = pytest.importorskip("torch")
    A = _band(16)
    t = getattr(torch, dtype)
    Q, K, V = (torch.tensor(x, dtype=t) for x in _heads(2, 16, 4, seed=8))
    At = torch.sparse_csr_tensor(torch.tensor(A.indptr), torch.tensor(A.indices),
                                 torch.tensor(A.data, dtype=t), A.shape)
    got = _attention()(At, Q, K, V)
    assert got.dtype == t
    want = reference_heads(A, *(x.double().numpy() for x in (Q, K, V)))
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("shapes, message", [
    (((2, 16, 4), (16, 4), (2, 16, 4)), r"Q \(2, 16, 4\), K \(16, 4\).*mix 2-d and 3-d"),
    (((2, 16, 4), (1, 16, 4), (2, 16, 4)), r"different numbers of heads"),
    (((1, 2, 16, 4), (2, 16, 4), (2, 16, 4)), r"operand\(s\) Q have shape\(s\) \(1, 2, 16, 4\)"),
    (((16,), (16, 4), (16, 4)), r"operand\(s\) Q have shape\(s\) \(16,\)"),
])
def test_shape_errors_name_the_operands(shapes, message):
    att = _attention(dtype="float64")
    with pytest.raises(spc.ShapeError, match=message):
        att(_band(16), *(np.zeros(s) for s in shapes))


def test_a_mask_of_another_size_is_a_shape_error():
    Q, K, V = _heads(2, 16, 4)
    with pytest.raises(spc.ShapeError, match="'i'"):
        _attention(dtype="float64")(_band(15), Q, K, V)


# -- the kernels ---------------------------------------------------------------------

def _heads_program(**options):
    return spc.compile("attention", **options).heads_program(0.5)


def test_heads_are_one_kernel_per_statement_run_over_head_row_pairs():
    program = _heads_program(dtype="float32")
    scores, rows = program.kernels
    assert "for h_i_flat in [0, size_h * size_i) @parallel:" in rows.ir
    assert "m_vals" not in rows.ir and "r_vals" not in rows.ir
    assert_golden("attention_heads_rows_cpu", rows.ir)
    assert len(_heads_program(fuse=False).kernels) == 4
    (inlined,) = _heads_program(fuse=True).kernels       # csr: the scores recomputed
    assert "S_vals" not in inlined.ir and "S2_pos" not in inlined.ir
    assert "for h_i_flat in [0, size_h * size_i) @parallel:" in inlined.ir


@pytest.mark.parametrize("fuse, fmt", [("rows", "csr"), (True, "csr"), (False, "csr"),
                                       ("rows", "dia"), ("rows", "ell")])
def test_heads_cuda_sources_compile_with_nvcc(fuse, fmt):
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    for k in _heads_program(target="cuda", dtype="float32", fuse=fuse, fmt=fmt).kernels:
        assert "size_h * size_i" in k.source      # warps take (head, row) pairs
        code, log = nvcc(k.source)
        assert code == 0, log


@pytest.mark.cuda
@pytest.mark.parametrize("fuse", ["rows", True])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("fmt, mask", [("csr", "edges19"), ("bsr(2,2)", "blocks18"),
                                       ("dia", "band16"), ("ell", "edges19"),
                                       ("coo", "edges19"), ("csr", "empty7")])
def test_heads_on_the_gpu(fmt, mask, dtype, tol, fuse):
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    A = MASKS[mask]
    Q, K, V = _heads(3, A.shape[0], 37, seed=9)      # d = 37: no multiple of a warp
    att = spc.compile("attention", fmt=fmt, target="cuda", fuse=fuse)
    got = att(A.astype(dtype), *(cp.asarray(x.astype(dtype)) for x in (Q, K, V)), 0.2)
    want = reference_heads(A, Q, K, V, scale=0.2)
    assert got.shape == (3, A.shape[0], 37)
    np.testing.assert_allclose(cp.asnumpy(got).astype(np.float64), want, rtol=tol,
                               atol=tol * np.abs(want).max())
