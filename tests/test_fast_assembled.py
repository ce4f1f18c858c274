"""The CPU fast call path for assembled csr/csc outputs (SpGEMM): the general
path's result without its conversions, and the general path wherever the fast
one does not apply (spc Tensors, unsorted operands, more entries than int32
positions address)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.runtime import compiled

from matrices import MATRICES, Case

SPGEMM = "C[i,j] = A[i,k]*B[k,j]"


@pytest.fixture
def general_calls(monkeypatch):
    """Counts calls that reach the general CPU path (CompiledKernel.run)."""
    calls = []
    original = compiled.CompiledKernel.run

    def counting(self, bound, validate=True, out=None):
        calls.append(self.name)
        return original(self, bound, validate, out=out)

    monkeypatch.setattr(compiled.CompiledKernel, "run", counting)
    return calls


def _general(k, *operands):
    """``k(*operands)`` through the general path (CompiledKernel.run), which a call
    by tensor name no longer takes."""
    ck = k.specialize("float64") if hasattr(k, "specialize") else k
    return ck.run(ck.bind(operands, {}), True)


def _kernel(fmt: str, threads: int = 1):
    """SpGEMM with every operand in ``fmt`` (csr: Gustavson over rows, csc: over
    columns; both assemble the output without copies)."""
    return spc.compile(SPGEMM, formats={"A": fmt, "B": fmt, "C": fmt}, dtype="float64",
                       schedule=spc.Schedule(threads=threads))


def _assert_same(fast, general):
    assert type(fast) is type(general)
    assert fast.shape == general.shape
    assert np.array_equal(fast.indptr, general.indptr)
    assert np.array_equal(fast.indices, general.indices)
    assert np.array_equal(fast.data, general.data)
    assert fast.indices.dtype == general.indices.dtype == np.int32


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("out_fmt", ["csr", "csc"])
@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_fast_result_equals_the_general_paths(case: Case, out_fmt, threads, general_calls):
    a = sp.csr_matrix(case.build(np.float64))
    a.sum_duplicates()
    k = _kernel(out_fmt, threads)
    left, right = a.asformat(out_fmt), a.T.asformat(out_fmt)
    fast = k(left, right)
    assert general_calls == []
    general = _general(k, left, right)
    assert general_calls == [k.name]
    _assert_same(fast, general)
    expected = (a @ a.T).asformat(out_fmt)
    expected.eliminate_zeros()
    expected.sort_indices()
    assert np.array_equal(fast.indptr, expected.indptr)
    assert np.array_equal(fast.indices, expected.indices)
    np.testing.assert_allclose(fast.data, expected.data, rtol=1e-12, atol=1e-300)


def test_sparse_arrays_give_an_array_and_dropped_zeros_are_packed(general_calls):
    a = sp.csr_array(np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]]))
    b = sp.csr_array(np.array([[1.0, 0.0, 3.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 5.0]]))
    c = _kernel("csr")(a, b)                         # row 0: 1 - 1 cancels at column 0
    assert general_calls == [] and type(c) is sp.csr_array
    assert c.indptr.tolist() == [0, 1, 3]
    assert c.indices.tolist() == [2, 0, 2]
    assert c.data.tolist() == [4.0, -2.0, 2.0]


def test_tensors_and_unsorted_operands_take_the_general_path(general_calls):
    a = sp.random(30, 20, density=0.2, format="csr", random_state=4)
    k = _kernel("csr")
    k(spc.tensor(a, "csr"), a.T.tocsr())
    unsorted = a.copy()
    unsorted.indices[unsorted.indptr[1]:unsorted.indptr[2]] = \
        unsorted.indices[unsorted.indptr[1]:unsorted.indptr[2]][::-1].copy()
    unsorted.has_sorted_indices = False
    got = k(unsorted, a.T.tocsr())
    assert general_calls == [k.name, k.name]
    expected = (a @ a.T).tocsr()
    expected.sort_indices()
    assert np.array_equal(got.indices, expected.indices)


def test_more_entries_than_int32_positions_take_the_general_path(monkeypatch, general_calls):
    """With the limit lowered to 100 entries, a 40 x 40 product of 400+ entries
    is counted on the fast path, found too large, and run by the general path
    (int64 indices there)."""
    monkeypatch.setattr(compiled, "INDEX_LIMIT_32", 100)
    a = sp.random(40, 40, density=0.3, format="csr", random_state=5)
    k = _kernel("csr")
    c = k(a, a)
    assert general_calls == [k.name]
    expected = (a @ a).tocsr()
    expected.sort_indices()
    assert expected.nnz > 100
    assert np.array_equal(c.indptr, expected.indptr)
    assert np.array_equal(c.indices, expected.indices)
    np.testing.assert_allclose(c.data, expected.data, rtol=1e-12)


@pytest.mark.parametrize("density, wide", [(0.3, True), (0.02, False)])
def test_the_general_path_counts_before_it_widens_indices(monkeypatch, density, wide):
    """With the limit lowered to 100, a 40 x 40 output's dense bound (1,600) no
    longer chooses int64 indices by itself: the count does.  A product of more
    than 100 entries is run again with int64 indices; a sparser one keeps int32."""
    monkeypatch.setattr(compiled, "INDEX_LIMIT_32", 100)
    a = sp.random(40, 40, density=density, format="csr", random_state=6)
    k = _kernel("csr")
    widened = []
    original = compiled.with_index_dtype

    def spy(t, dtype):
        widened.append(dtype)
        return original(t, dtype)

    monkeypatch.setattr(compiled, "with_index_dtype", spy)
    c = _general(k, a, a)
    expected = (a @ a).tocsr()
    expected.sort_indices()
    assert (expected.nnz > 100) is wide
    assert bool(widened) is wide
    assert np.array_equal(c.indptr, expected.indptr)
    assert np.array_equal(c.indices, expected.indices)
    np.testing.assert_allclose(c.data, expected.data, rtol=1e-12)
