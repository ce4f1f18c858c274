"""spc.tuning.signature: the numbers a matrix is tuned and looked up by."""
import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.tuning.signature import Signature, signature


def dense_row(m=6, n=9):
    a = np.zeros((m, n), np.float32)
    a[2, :] = 1.0
    return sp.csr_matrix(a)


@pytest.mark.parametrize("A, rows, cols, nnz, row_max, empty", [
    (sp.csr_matrix((0, 7), dtype=np.float32), 0, 7, 0, 0, 0.0),
    (sp.csr_matrix((5, 0), dtype=np.float32), 5, 0, 0, 0, 1.0),
    (sp.csr_matrix((4, 6), dtype=np.float32), 4, 6, 0, 0, 1.0),
    (dense_row(), 6, 9, 9, 9, 5 / 6),
], ids=["0xn", "mx0", "nnz0", "one-dense-row"])
def test_edge_cases(A, rows, cols, nnz, row_max, empty):
    s = signature(A)
    assert (s.rows, s.cols, s.nnz, s.row_max) == (rows, cols, nnz, row_max)
    assert s.empty_rows == pytest.approx(empty)
    assert all(0.0 < d <= 1.0 for _, d in s.block_density)


def test_one_dense_row_statistics():
    s = signature(dense_row())
    lengths = np.array([0, 0, 9, 0, 0, 0])
    assert s.row_mean == pytest.approx(1.5)
    assert s.row_cv == pytest.approx(lengths.std() / lengths.mean())
    assert s.density((1, 4)) == pytest.approx(9 / 12)       # 3 blocks of 1x4 hold 9
    assert s.density((4, 4)) == pytest.approx(9 / 48)


def test_duplicates_and_unsorted_input_count_once():
    rows, cols = np.array([1, 0, 1, 1]), np.array([3, 2, 0, 3])
    A = sp.coo_matrix((np.ones(4, np.float32), (rows, cols)), shape=(3, 5))
    s = signature(A)
    assert (s.nnz, s.row_max) == (3, 2)


def test_full_blocks_have_density_one():
    A = sp.csr_matrix(np.kron(np.eye(4), np.ones((16, 16))).astype(np.float32))
    s = signature(A)
    assert [d for _, d in s.block_density] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("mask, fits", [
    ([[1, 1, 0, 0, 1, 0, 1, 0]], True),
    ([[1, 1, 1, 0, 0, 0, 0, 0]], False),
    ([[0, 0, 0, 1], [1, 1, 0, 0]], True),                  # a group does not span rows
    ([[1, 0, 1, 1]], False),
])
def test_nm_2_4(mask, fits):
    assert signature(sp.csr_matrix(np.array(mask, np.float32))).nm_2_4 is fits


def test_pruned_matrix_is_2_4():
    W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    assert signature(sp.csr_matrix(spc.prune.nm(W, 2, 4))).nm_2_4


def test_json_round_trip_and_distance():
    A = sp.random(50, 40, density=0.1, format="csr", random_state=1)
    s = signature(A)
    assert Signature.from_json(s.to_json()) == s
    assert s.key() == Signature.from_json(s.to_json()).key()
    assert s.distance(s) == 0.0
    other = signature(sp.random(500, 40, density=0.1, format="csr", random_state=1))
    assert s.distance(other) > 0.5


def test_not_a_matrix():
    with pytest.raises(spc.InputError, match="2 dimensions"):
        signature(np.ones(3))
