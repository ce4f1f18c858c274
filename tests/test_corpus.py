"""The real-matrix corpus: spc.corpus's readers, and the named kernels on real
matrices (float32) against scipy.

Tests marked ``corpus`` need the corpus (SPC_DATA_DIR) and are skipped without
it; the reader tests on small hand-written files always run.
"""
from __future__ import annotations

import functools
import gzip

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc import corpus
from matrices import assert_allclose, dense_operand

MAX_NNZ = 300_000
WIDTH = 32                          # spmm's N and sddmm's K'

needs_corpus = pytest.mark.skipif(not corpus.available(),
                                  reason=f"no corpus at {corpus.corpus_dir()} (set SPC_DATA_DIR)")

ALL = corpus.entries() if corpus.available() else []
SMALL = [e for e in ALL if e.nnz <= MAX_NNZ]


def few(entries):
    """The first file of each family: the subset also run in coo."""
    seen, out = set(), []
    for e in entries:
        if e.family not in seen:
            seen.add(e.family)
            out.append(e)
    return out


# ---------------------------------------------------------------- readers (no corpus needed)

SMTX = "4, 5, 6\n0 2 2 5 6 \n1 3 0 2 4 4 \n"


def write(path, text: str, gz: bool):
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_load_smtx(tmp_path, gz):
    path = write(tmp_path / ("m.smtx.gz" if gz else "m.smtx"), SMTX, gz)
    m = corpus.load(path)
    assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32
    assert m.shape == (4, 5)
    np.testing.assert_array_equal(m.indptr, [0, 2, 2, 5, 6])
    np.testing.assert_array_equal(m.indices, [1, 3, 0, 2, 4, 4])
    assert np.all((m.data >= -1) & (m.data < 1)) and np.all(m.data != 0)


def test_load_values_are_deterministic_and_ignore_gz(tmp_path):
    a = corpus.load(write(tmp_path / "m.smtx", SMTX, False))
    b = corpus.load(write(tmp_path / "m.smtx.gz", SMTX, True))
    c = corpus.load(tmp_path / "m.smtx")
    np.testing.assert_array_equal(a.data, c.data)
    np.testing.assert_array_equal(a.data, b.data)


def test_load_smtx_rejects_inconsistent_header(tmp_path):
    path = write(tmp_path / "bad.smtx", "4, 5, 7\n0 2 2 5 6\n1 3 0 2 4 4\n", False)
    with pytest.raises(ValueError):
        corpus.load(path)


MTX_SYM = ("%%MatrixMarket matrix coordinate pattern symmetric\n% a comment\n"
           "4 4 4\n1 1\n2 1\n4 2\n3 3\n")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_load_symmetric_mtx_expands_without_doubling_diagonal(tmp_path, gz):
    m = corpus.load(write(tmp_path / ("g.mtx.gz" if gz else "g.mtx"), MTX_SYM, gz))
    assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32
    want = {(0, 0), (1, 0), (0, 1), (3, 1), (1, 3), (2, 2)}
    coo = m.tocoo()
    assert set(zip(coo.row.tolist(), coo.col.tolist())) == want
    assert m.nnz == len(want)
    assert m.has_canonical_format


def test_load_general_mtx_is_one_based_and_not_symmetrized(tmp_path):
    text = "%%MatrixMarket matrix coordinate pattern general\n3 2 3\n1 2\n3 1\n2 2\n"
    m = corpus.load(write(tmp_path / "d.mtx", text, False))
    coo = m.tocoo()
    assert m.shape == (3, 2)
    assert set(zip(coo.row.tolist(), coo.col.tolist())) == {(0, 1), (2, 0), (1, 1)}


# ---------------------------------------------------------------- the real corpus

@needs_corpus
@pytest.mark.corpus
def test_manifest_families():
    assert {e.family for e in ALL} == {"dlmc-transformer", "dlmc-rn50", "graph"}
    assert corpus.entries(family="graph") == [e for e in ALL if e.family == "graph"]
    assert all(e.nnz <= 1000 for e in corpus.entries(max_nnz=1000))


@functools.lru_cache(maxsize=None)
def load_small(path):
    return corpus.load(path)


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("entry", ALL, ids=lambda e: e.name)
def test_load_matches_manifest(entry):
    m = load_small(entry.path) if entry.nnz <= MAX_NNZ else corpus.load(entry.path)
    assert m.shape == (entry.rows, entry.cols)
    assert m.nnz == entry.nnz
    assert m.has_canonical_format


def operands(kernel, A):
    m, k = A.shape
    tag = f"corpus-{m}x{k}"
    if kernel == "spmv":
        return (dense_operand(tag + "x", (k,), np.float32),)
    if kernel == "spmm":
        return (dense_operand(tag + "B", (k, WIDTH), np.float32),)
    return (dense_operand(tag + "X", (m, WIDTH), np.float32),
            dense_operand(tag + "Y", (k, WIDTH), np.float32))


def reference(kernel, A, ops):
    A64 = A.astype(np.float64)
    if kernel == "sddmm":                           # the values, in A's order
        X, Y = ops
        coo = A.tocoo()
        dots = np.einsum("ij,ij->i", X[coo.row].astype(np.float64), Y[coo.col].astype(np.float64))
        return coo.data * dots                      # in A's (canonical CSR) order
    return A64 @ ops[0].astype(np.float64)


def check(compiled, kernel, fmt, entry):
    A = load_small(entry.path)
    ops = operands(kernel, A)
    out = compiled(kernel, fmt=fmt)(A, *ops)
    expected = reference(kernel, A, ops)
    assert out.dtype == np.float32
    if kernel == "sddmm":
        assert sp.issparse(out) and out.nnz == A.nnz
        out = out.tocsr()
        out.sort_indices()
        np.testing.assert_array_equal(out.indptr, A.indptr)
        np.testing.assert_array_equal(out.indices, A.indices)
        assert_allclose(out.data, expected, np.float32)
    else:
        assert_allclose(out, expected, np.float32)


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
@pytest.mark.parametrize("entry", SMALL, ids=lambda e: e.name)
def test_corpus_csr(compiled, entry, kernel):
    check(compiled, kernel, "csr", entry)


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
@pytest.mark.parametrize("entry", few(SMALL), ids=lambda e: e.name)
def test_corpus_coo(compiled, entry, kernel):
    check(compiled, kernel, "coo", entry)
