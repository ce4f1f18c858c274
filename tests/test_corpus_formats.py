"""The deep-learning formats on the real-matrix corpus (float32) against scipy:
a few matrices of each family in every format whose storage stays within 4x
the nonzeros, plus N:M prunings of the densest DLMC weights.  Marked ``corpus``;
skipped without the corpus (SPC_DATA_DIR)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc import corpus
from matrices import assert_allclose, dense_operand

pytestmark = pytest.mark.corpus
needs_corpus = pytest.mark.skipif(not corpus.available(),
                                  reason=f"no corpus at {corpus.corpus_dir()} (set SPC_DATA_DIR)")

FORMATS = ["bsr(1,4)", "bsr(4,4)", "bsr(16,16)", "ell", "dia", "hyb"]
MAX_FILL = 4.0
ALL = corpus.entries(max_nnz=300_000) if corpus.available() else []


def _pick(entries, per_family=2):
    out = []
    for fam in sorted({e.family for e in entries}):
        group = sorted((e for e in entries if e.family == fam), key=lambda e: e.nnz)
        out += group[:: max(1, len(group) // per_family)][:per_family]
    return out


PICKED = _pick(ALL)
NM_SOURCES = [e for e in ALL if e.family.startswith("dlmc") and e.nnz >= 0.3 * e.rows * e.cols][:2]


@functools.lru_cache(maxsize=None)
def load(path):
    return corpus.load(path)


@functools.lru_cache(maxsize=None)
def kernel(name, fmt):
    return spc.compile(name, fmt=fmt)


def _check(A, fmt):
    t = spc.tensor(A, fmt)
    diff = t.to_scipy("csr") - A             # sparse: graphs are too big to densify
    assert abs(diff).max() == 0 if diff.nnz else True
    x = dense_operand(f"x{A.shape[1]}", (A.shape[1],), np.float32)
    B = dense_operand(f"B{A.shape[1]}", (A.shape[1], 32), np.float32)
    X = dense_operand(f"X{A.shape[0]}", (A.shape[0], 16), np.float32)
    Y = dense_operand(f"Y{A.shape[1]}", (A.shape[1], 16), np.float32)
    A64 = A.astype(np.float64)
    assert_allclose(kernel("spmv", fmt)(t, x), A64 @ x, np.float32)
    assert_allclose(kernel("spmm", fmt)(t, B), A64 @ B, np.float32)
    S = kernel("sddmm", fmt)(t, X, Y).to_scipy("csr")
    coo = A64.tocoo()                        # the reference, without a dense X @ Y.T
    dots = np.einsum("nk,nk->n", X[coo.row].astype(np.float64), Y[coo.col].astype(np.float64))
    want = sp.csr_matrix((coo.data * dots, (coo.row, coo.col)), shape=A.shape)
    assert abs(S - want).max() <= 1e-4 * max(1.0, abs(want).max())


@needs_corpus
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("entry", PICKED, ids=lambda e: e.name)
def test_formats_on_the_corpus(entry, fmt):
    A = load(entry.path)
    if fmt != "hyb":
        from spc.formats.format import resolve_format
        slots = _slots(A, resolve_format(fmt, 2))
        if slots > MAX_FILL * max(A.nnz, 1):
            pytest.skip(f"{fmt} would store {slots / max(A.nnz, 1):.0f}x the nonzeros")
    _check(A, fmt)


def _slots(A, fmt):
    """Value slots ``fmt`` stores for A, without building it."""
    name = fmt.name
    if name.startswith("bsr"):
        r, c = fmt.block
        rows, cols = A.nonzero()
        keys = (rows.astype(np.int64) // r) * (A.shape[1] // c + 1) + cols // c
        return len(np.unique(keys)) * r * c
    if name == "ell":
        return A.shape[0] * int(np.diff(A.indptr).max(initial=0))
    if name == "dia":
        rows, cols = A.nonzero()
        return A.shape[0] * len(np.unique(cols.astype(np.int64) - rows))
    return A.nnz


@needs_corpus
@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (2, 8), (4, 16)], ids=lambda p: f"{p[0]}:{p[1]}")
@pytest.mark.parametrize("entry", NM_SOURCES, ids=lambda e: e.name)
def test_nm_prunings_of_dlmc_weights(entry, nm):
    n, m = nm
    W = spc.prune.nm(load(entry.path), n, m)
    assert spc.prune.is_nm(W, n, m)
    _check(W.tocsr(), f"nm({n},{m})")
