"""Diagonal reads (an index repeated in one access): the text rewrite, and the
kernels' results against numpy's einsum over formats and edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.frontend.diagonals import rewrite_diagonals
from spc.frontend.parser import parse
from spc.runtime.diagonal_reads import DiagonalKernel

FORMATS = ["dense", "csr", "csc", "coo", "dcsr", "dia", "ell", "hyb", "bsr(2,2)", "sd"]


@pytest.mark.parametrize("src, text, reads", [
    ("y[i] = A[i,i]*x[i]", "y[i] = A_diag[i]*x[i]", [("A", (0, 0), (0,))]),
    ("t = A[i,i]", "t = A_diag[i]", [("A", (0, 0), (0,))]),
    ("C[i,j] = T[i,j,i] + A[j,j]", "C[i,j] = T_diag[i,j] + A_diag[j]",
     [("T", (0, 1, 0), (0, 1)), ("A", (0, 0), (0,))]),
    ("y[i] = A[i,i] + A[i,i]*A_diag[i]", "y[i] = A_diag2[i] + A_diag2[i]*A_diag[i]",
     [("A", (0, 0), (0,))]),
    ("y[i] = sum(j, A[j,j]*A[i,j])", "y[i] = sum(j, A_diag[j]*A[i,j])", [("A", (0, 0), (0,))]),
    ("c[k] = T[k,i,k,i]", "c[k] = T_diag[k,i]", [("T", (0, 1, 0, 1), (0, 1))]),
])
def test_rewrite(src, text, reads):
    new, got = rewrite_diagonals(parse(src))
    assert new == text
    assert [(r.source, r.groups, r.keep) for r in got] == reads
    parse(new)                                   # the rewritten text parses


def test_rewrite_leaves_other_expressions_alone():
    assert rewrite_diagonals(parse("y[i] = A[i,j]*x[j]")) is None
    assert rewrite_diagonals(parse("C[i,i] = A[i,j]")) is None     # check() refuses it


def _matrix(n, density, seed, explicit_zero=False):
    A = sp.random(n, n, density=density, format="csr", random_state=seed)
    A.data = np.round(A.data * 4 - 2, 2)
    if explicit_zero and A.nnz:
        A.data[0] = 0.0                          # stored, value zero
    return A


MATRICES = {
    "random": _matrix(7, 0.5, 1),
    "full diagonal": sp.csr_matrix(np.diag(np.arange(1.0, 7.0)) + np.eye(6, k=1)),
    "empty": sp.csr_matrix((5, 5)),
    "0x0": sp.csr_matrix((0, 0)),
    "one dense row": sp.csr_matrix(np.vstack([np.ones(6), np.zeros((5, 6))])),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(MATRICES))
def test_diagonal_times_vector_matches_einsum(fmt, name):
    A = MATRICES[name]
    if fmt.startswith("bsr") and A.shape[0] % 2:
        A = sp.csr_matrix(sp.block_diag([A, sp.csr_matrix((1, 1))]))
    n = A.shape[0]
    x = np.linspace(-1, 1, n)
    k = spc.compile("y[i] = A[i,i] * x[i]", formats={"A": fmt})
    assert isinstance(k, DiagonalKernel)
    np.testing.assert_allclose(k(A, x), np.einsum("ii,i->i", A.toarray(), x), rtol=1e-6)
    t = spc.compile("t = A[i,i]", formats={"A": fmt})
    np.testing.assert_allclose(float(t(A)), np.trace(A.toarray()), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("fmt", ["dense", "coo", "csf"])
def test_three_mode_diagonals(fmt):
    rng = np.random.default_rng(4)
    T = np.where(rng.random((4, 3, 4)) < 0.5, rng.uniform(-1, 1, (4, 3, 4)), 0.0)
    k = spc.compile("C[i,j] = T[i,j,i]", formats={"T": fmt})
    np.testing.assert_allclose(k(T), np.einsum("iji->ij", T), rtol=1e-6)
    k2 = spc.compile("c[j] = T[i,j,i] * w[i]", formats={"T": fmt})
    w = rng.uniform(-1, 1, 4)
    np.testing.assert_allclose(k2(T, w), np.einsum("iji,i->j", T, w), rtol=1e-6)


def test_an_operand_read_both_ways():
    A = _matrix(6, 0.6, 3)
    k = spc.compile("y[i] = sum(j, A[j,j] * A[i,j])", formats={"A": "csr"})
    np.testing.assert_allclose(k(A), A @ A.diagonal(), rtol=1e-6)
    assert k.input_names == ("A",)


def test_stored_reads_explicit_zeros_on_the_diagonal():
    A = sp.csr_matrix((np.array([0.0, 2.0, 3.0]), np.array([0, 1, 0]), np.array([0, 2, 3])),
                      shape=(2, 2))                     # (0,0) stored as 0, (1,1) not stored
    k = spc.compile("c = sum(i, stored(A[i,i]))", formats={"A": "csr"})
    assert float(k(A)) == 1.0


def test_keywords_validate_and_errors():
    A = _matrix(5, 0.5, 2)
    x = np.arange(5.0)
    k = spc.compile("y[i] = A[i,i] * x[i]", formats={"A": "csr"})
    want = A.diagonal() * x
    np.testing.assert_allclose(k(x=x, A=A), want)
    np.testing.assert_allclose(k(A, x, validate=False), want)
    with pytest.raises(spc.ShapeError, match="modes 0 and 1"):
        k(sp.random(3, 4, density=0.5, format="csr"), np.ones(3))
    with pytest.raises(spc.InputError):
        k(A)
    with pytest.raises(spc.ParseError, match="output index 'i' is repeated"):
        spc.compile("C[i,i] = A[i,j]")
    with pytest.raises(spc.ParseError, match="program"):
        spc.compile("y[i] = A[i,i]; z[i] = y[i] * 2")


def test_ir_shows_the_rewritten_kernel(caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="spc"):
        k = spc.compile("y[i] = A[i,i] * x[i]", formats={"A": "csr"})
    assert "A_diag" in k.ir or "Adiag" in k.ir
    assert any("diagonal" in r.message for r in caplog.records)


def test_the_cuda_kernel_renders():
    k = spc.compile("y[i] = A[i,i] * x[i]", formats={"A": "csr"}, target="cuda", arch="sm_90")
    assert "__global__" in k.source


def test_a_torch_sparse_operand_for_a_dense_format():
    """The fuzzer's case (seed 5101): a dense-format operand given as a torch csr/csc tensor."""
    torch = pytest.importorskip("torch")
    A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    k = spc.compile("y[i] = A[i,i] * x[i]")
    for given in (A.to_sparse_csr(), A.to_sparse_csc(), A.to_sparse_coo(), A):
        np.testing.assert_allclose(np.asarray(k(given, torch.ones(2))), [1.0, 4.0])
