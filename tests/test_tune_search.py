"""spc.tune: the search chooses a correct candidate, rejects wrong ones, keeps to its budget."""
import time

import numpy as np
import pytest
import scipy.sparse as sp

import spc
import spc.tuning.candidates
from spc.tuning.candidates import Candidate


def matrix(m=60, k=50, density=0.1, seed=0):
    return sp.random(m, k, density=density, format="csr", dtype=np.float32, random_state=seed)


def dense(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class WrongKernel:
    """A 'kernel' that answers at once, and wrongly: the fastest candidate of all."""
    name = "wrong"

    def __init__(self, shape):
        self.shape = shape

    def __call__(self, A, B):
        return np.zeros((A.shape[0], B.shape[1]), np.float32)

    def prepare(self, A):
        return A


class FailingKernel(WrongKernel):
    def __call__(self, A, B):
        raise RuntimeError("boom")


@pytest.mark.parametrize("kernel, operands, ref", [
    ("spmm", lambda A: (dense(50, 8),), lambda A, B: A @ B),
    ("spmv", lambda A: (dense(50),), lambda A, x: A @ x),
], ids=["spmm", "spmv"])
def test_tuned_kernel_matches_scipy(kernel, operands, ref):
    A = matrix()
    ops = operands(A)
    k = spc.tune(kernel, A, *ops, budget_s=2, database=False)
    np.testing.assert_allclose(k(A, *ops), ref(A, *ops), rtol=1e-4, atol=1e-4)
    other = matrix(seed=5)
    np.testing.assert_allclose(k(other, *ops), ref(other, *ops), rtol=1e-4, atol=1e-4)
    assert k.report.chosen.status == "chosen"
    assert k.report.default.speedup is not None


def test_sddmm_tuned_returns_scipy_with_the_pattern():
    A = matrix()
    X, Y = dense(60, 4), dense(50, 4, seed=2)
    k = spc.tune("sddmm", A, X, Y, budget_s=2, database=False)
    S = k(A, X, Y)
    assert sp.issparse(S)
    r = np.repeat(np.arange(60), np.diff(A.indptr))
    want = A.data * np.einsum("ij,ij->i", X[r], Y[A.indices])
    np.testing.assert_allclose(S.toarray()[r, A.indices], want, rtol=1e-4, atol=1e-5)


def test_wrong_candidate_is_rejected_and_never_chosen():
    A, B = matrix(), dense(50, 8)
    fake = [Candidate("csr", spc.Schedule(parallel=False), build=lambda: WrongKernel(A.shape)),
            Candidate("csr", spc.Schedule(threads=1), build=lambda: FailingKernel(A.shape))]
    k = spc.tune("spmm", A, B, budget_s=5, database=False, candidates=fake)
    by_schedule = {t.candidate.schedule: t for t in k.report.trials}
    wrong = by_schedule[spc.Schedule(parallel=False)]
    assert wrong.status == "rejected" and wrong.reason.startswith("wrong result")
    failing = by_schedule[spc.Schedule(threads=1)]
    assert failing.status == "rejected" and "boom" in failing.reason
    assert k.report.chosen.candidate == Candidate("csr", spc.Schedule())
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-4, atol=1e-4)
    assert "rejected (wrong result" in str(k.report)


def test_budget_is_kept_loosely():
    A = matrix(200, 180, 0.05)
    B = dense(180, 16)
    t0 = time.perf_counter()
    k = spc.tune("spmm", A, B, fmt=["csr", "ell", "hyb"], budget_s=0.0, database=False)
    assert time.perf_counter() - t0 < 20          # only the default was compiled and timed
    statuses = {t.status for t in k.report.trials}
    assert statuses <= {"chosen", "skipped"}
    assert any(t.reason.startswith("budget") for t in k.report.trials)


def test_formats_the_matrix_does_not_suit_are_pruned_with_a_reason():
    A = matrix(64, 64, 0.3)
    k = spc.tune("spmm", A, dense(64, 8), budget_s=0, database=False)
    reasons = {t.candidate.fmt: t.reason for t in k.report.trials
               if t.candidate.schedule == spc.Schedule() and t.status == "skipped"}
    assert "block density" in reasons["bsr(16,16)"]
    assert "not 2:4" in reasons["nm(2,4)"]


def test_a_2_4_matrix_tries_nm_and_stays_correct():
    W = spc.prune.nm(dense(32, 64, seed=3), 2, 4)
    A = sp.csr_matrix(W)
    B = dense(64, 8)
    sig = spc.tuning.signature(A)
    assert "nm(2,4)" in spc.tuning.candidates.formats(sig)[0]     # the rules keep it
    k = spc.tune("spmm", A, B, fmt="nm(2,4)", budget_s=1, database=False)
    assert k.report.chosen.candidate.fmt == "nm(2,4)"
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("A", [sp.csr_matrix((0, 5), dtype=np.float32),
                               sp.csr_matrix((4, 5), dtype=np.float32)], ids=["0xn", "nnz0"])
def test_empty_matrices(A):
    B = dense(5, 3)
    k = spc.tune("spmm", A, B, budget_s=1, database=False)
    np.testing.assert_array_equal(k(A, B), np.zeros((A.shape[0], 3), np.float32))


def test_not_a_named_kernel():
    with pytest.raises(spc.UnsupportedError, match="named kernels"):
        spc.tune("y[i] = A[i,j] * x[j]", matrix(), dense(50))


def test_report_rows_and_table():
    A, B = matrix(), dense(50, 4)
    k = spc.tune("spmm", A, B, budget_s=2, database=False)
    rows = k.report.rows()
    assert rows[0]["status"] == "chosen"
    assert {"format", "schedule", "time_s", "speedup", "status", "reason"} <= set(rows[0])
    assert str(k.report).splitlines()[0].startswith("spc.tune spmm N=4 float32 on cpu")


def test_a_format_asked_for_is_the_one_chosen():
    A, B = matrix(), dense(50, 8)
    k = spc.tune("spmm", A, B, fmt="ell", budget_s=3, database=False)
    assert k.fmt == "ell" and k.report.chosen.candidate.fmt == "ell"
    assert k.report.default.status == "ok"                    # timed as the baseline
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-4, atol=1e-4)


def test_unsorted_duplicate_input():
    rows, cols = np.array([3, 0, 3, 1, 0]), np.array([2, 4, 2, 0, 1])
    A = sp.coo_matrix((np.array([1, 2, 3, 4, 5], np.float32), (rows, cols)), shape=(5, 6))
    B = dense(6, 4)
    k = spc.tune("spmm", A, B, budget_s=1, database=False)
    np.testing.assert_allclose(k(A, B), A.toarray() @ B, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("A", [sp.csr_matrix((4, 5), dtype=np.float32),
                               sp.csr_matrix(np.vstack([np.ones((1, 5)), np.zeros((3, 5))])
                                             .astype(np.float32))],
                         ids=["nnz0", "one-dense-row"])
def test_sddmm_edge_cases(A):
    X, Y = dense(4, 3), dense(5, 3, seed=4)
    k = spc.tune("sddmm", A, X, Y, budget_s=1, database=False)
    S = k(A, X, Y)
    np.testing.assert_allclose(S.toarray(), A.toarray() * (X @ Y.T), rtol=1e-5, atol=1e-6)


def test_a_format_asked_for_is_tried_even_without_budget():
    A, B = matrix(), dense(50, 8)
    k = spc.tune("spmm", A, B, fmt="ell", budget_s=0, database=False)
    assert k.fmt == "ell"
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-4, atol=1e-4)


def test_full_space_tries_every_listed_schedule():
    A, X, Y = matrix(), dense(60, 4), dense(50, 4, seed=2)
    k = spc.tune("sddmm", A, X, Y, fmt="ell", space="full", budget_s=30, database=False)
    tried = {t.candidate.schedule for t in k.report.trials if t.candidate.fmt == "ell"}
    assert tried == set(spc.schedule_space("sddmm", fmt="ell"))
    assert k.fmt == "ell"
    with pytest.raises(spc.UnsupportedError, match="space"):
        spc.tune("spmm", A, dense(50, 4), space="all")


@pytest.mark.parametrize("kwargs", [dict(calls=0), dict(budget_s=-1), dict(budget_s=float("nan"))])
def test_bad_calls_or_budget(kwargs):
    with pytest.raises(spc.InputError, match="calls must be"):
        spc.tune("spmm", matrix(), dense(50, 4), database=False, **kwargs)


@pytest.mark.parametrize("kernel, operands", [
    ("spmm", (dense(40, 8),)),
    ("spmm", ()),
    ("sddmm", (dense(60, 4), dense(40, 4))),
], ids=["spmm-shape", "spmm-missing", "sddmm-shape"])
def test_bad_operands_get_the_kernels_own_error(kernel, operands):
    with pytest.raises(spc.SpcError):
        spc.tune(kernel, matrix(), *operands, database=False, budget_s=0)
