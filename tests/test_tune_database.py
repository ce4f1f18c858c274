"""The tuning database: round trip, concurrent writers, corrupt entries, schedule="auto"."""
import json
import multiprocessing
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.tuning.candidates import Candidate
from spc.tuning.database import VERSION, Database
from spc.tuning.report import Trial, TuneReport
from spc.tuning.rules import untuned_schedule
from spc.tuning.signature import signature


def matrix(m=40, k=30, density=0.15, seed=0):
    return sp.random(m, k, density=density, format="csr", dtype=np.float32, random_state=seed)


def report_for(A, n=8, fmt="ell", schedule=spc.Schedule(parallel=False), kernel="spmm"):
    """A TuneReport as spc.tune leaves it, choosing ``fmt`` and ``schedule``."""
    r = TuneReport(kernel, "cpu", "float32", n, 100, signature(A))
    r.trials = [Trial(Candidate(fmt, schedule), "chosen", time=1e-5, amortized=1e-5, speedup=2.0)]
    return r


def test_round_trip(tmp_path):
    db = Database(tmp_path)
    A = matrix()
    path = db.record(report_for(A))
    assert path.is_file() and path.parent.parent.parent == tmp_path
    (entry,) = db.entries("spmm", "float32")
    assert (entry.fmt, entry.schedule, entry.n) == ("ell", spc.Schedule(parallel=False), 8)
    assert entry.signature == signature(A)
    hit, exact = db.lookup("spmm", "float32", signature(A), 8)
    assert exact and hit == entry


def test_nearest_signature_when_no_exact_one(tmp_path):
    db = Database(tmp_path)
    small, big = matrix(40, 30), matrix(4000, 3000, 0.001)
    db.record(report_for(small, fmt="ell"))
    db.record(report_for(big, fmt="hyb"))
    near_big = matrix(3900, 3000, 0.001, seed=3)
    hit, exact = db.lookup("spmm", "float32", signature(near_big), 8)
    assert not exact and hit.fmt == "hyb"
    assert db.lookup("spmm", "float32", signature(near_big), 8, fmt="csr") is None
    assert db.lookup("sddmm", "float32", signature(near_big), 8) is None


def _write_many(root, seed):
    db = Database(root)
    for i in range(5):
        db.record(report_for(matrix(30 + i, 20 + seed, seed=seed)))
        db.record(report_for(matrix(20, 20, seed=99)))    # all processes write this one too


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(tmp_path, s)) for s in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # no torn or corrupt entry
        entries = Database(tmp_path).entries("spmm", "float32")
    assert len(entries) == 8 * 5 + 1
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.parametrize("content, problem", [
    ("{not json", "corrupt"),
    (json.dumps({"version": VERSION + 1}), "version"),
    (json.dumps({"version": VERSION, "n": 8}), "corrupt"),
    (json.dumps({"version": VERSION, "n": 8, "fmt": "csr", "time_s": 1, "speedup": 1,
                 "schedule": {"group": 3}, "signature": {}}), "corrupt"),
], ids=["json", "version", "missing-keys", "bad-knob"])
def test_bad_entries_are_ignored_with_a_warning(tmp_path, content, problem):
    db = Database(tmp_path)
    A = matrix()
    db.record(report_for(A))
    bad = db.folder("spmm", "float32") / "bad-n8.json"
    bad.write_text(content)
    with pytest.warns(spc.CacheWarning, match=problem):
        entries = db.entries("spmm", "float32")
    assert len(entries) == 1


def test_a_corrupt_entry_is_tuned_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path))
    A, B = matrix(), np.ones((30, 8), np.float32)
    spc.tune("spmm", A, B, budget_s=1)
    (path,) = (tmp_path / "tune").rglob("*.json")
    path.write_text("garbage")
    with pytest.warns(spc.CacheWarning, match="corrupt"):
        assert spc.compile("spmm", schedule="auto").choice(A, B)[2] == "rules"
    spc.tune("spmm", A, B, budget_s=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spc.compile("spmm", schedule="auto").choice(A, B)[2] == "exact"


def test_auto_uses_the_database_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path))
    A, B = matrix(), np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    auto = spc.compile("spmm", schedule="auto")
    assert auto.choice(A, B) == ("csr", untuned_schedule("spmm", signature(A), 8), "rules")
    np.testing.assert_allclose(auto(A, B), A @ B, rtol=1e-5, atol=1e-5)
    Database.default().record(report_for(A, fmt="ell", schedule=spc.Schedule(parallel=False)))
    auto = spc.compile("spmm", schedule="auto")
    assert auto.choice(A, B) == ("ell", spc.Schedule(parallel=False), "exact")
    np.testing.assert_allclose(auto(A, B), A @ B, rtol=1e-5, atol=1e-5)
    assert auto.schedule.parallel is False                 # the kernel that ran
    other = matrix(seed=7)
    assert auto.choice(other, B)[2] == "nearest"
    np.testing.assert_allclose(auto(other, B), other @ B, rtol=1e-5, atol=1e-5)
    assert spc.compile("spmm", fmt="csr", schedule="auto").choice(A, B)[2] == "rules"


def test_auto_sees_values_changed_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path))
    A, B = matrix(), np.ones((30, 4), np.float32)
    Database.default().record(report_for(A, n=4, fmt="ell"))
    auto = spc.compile("spmm", schedule="auto")
    auto(A, B)
    A.data *= 2                                            # the kept ell copy is stale now
    np.testing.assert_allclose(auto(A, B), A @ B, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, error", [
    (dict(schedule="fast"), spc.ScheduleError),
    (dict(schedule="auto", accumulate="float64"), spc.UnsupportedError),
])
def test_auto_refuses_what_it_does_not_take(kwargs, error):
    with pytest.raises(error):
        spc.compile("spmm", **kwargs)
