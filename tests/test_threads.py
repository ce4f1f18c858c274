"""spc.set_num_threads / get_num_threads and OMP_NUM_THREADS: a process-wide cap on
the threads a CPU call uses, through spc's pool (kernels compiled already included)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc import config
from spc.codegen.cpu import threading_mode
from spc.codegen.cpu_pool import load_pool

pytestmark = pytest.mark.skipif(threading_mode() != "pool", reason="needs spc's thread pool")


@pytest.fixture
def restore():
    yield
    spc.set_num_threads(None)


def test_a_cap_of_one_keeps_every_chunk_on_the_caller(restore):
    A = sp.random(4000, 4000, density=0.01, format="csr", random_state=0, dtype=np.float32)
    B = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
    k = spc.compile("spmm", fmt="csr", threads=2)
    want = k(A, B)                                    # warm, and the reference
    spc.set_num_threads(1)
    assert spc.get_num_threads() == 1 and k.schedule.threads == 1
    before = load_pool().worker_chunks()
    for _ in range(5):
        np.testing.assert_array_equal(k(A, B), want)
    assert load_pool().worker_chunks() == before      # no worker ran a chunk
    spc.set_num_threads(None)
    assert spc.get_num_threads() == config.num_threads() and k.schedule.threads == 2
    np.testing.assert_array_equal(k(A, B), want)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(spc.ScheduleError, match="set_num_threads"):
        spc.set_num_threads(bad)


@pytest.mark.parametrize("env, want", [({"OMP_NUM_THREADS": "3"}, 3),
                                       ({"OMP_NUM_THREADS": "4,2"}, 4),
                                       ({"OMP_NUM_THREADS": "3", "SPC_NUM_THREADS": "5"}, 5),
                                       ({"OMP_NUM_THREADS": "zero"}, None)])
def test_the_default_follows_spc_then_openmp_conventions(env, want, monkeypatch):
    monkeypatch.delenv("SPC_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = config.num_threads()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert config.num_threads() == (want or cores)


def test_threadpoolctl_limits_cap_spcs_pool_like_an_openmp_runtime(restore):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    A = sp.random(4000, 4000, density=0.01, format="csr", random_state=1, dtype=np.float32)
    B = np.random.default_rng(1).standard_normal((4000, 64)).astype(np.float32)
    k = spc.compile("spmm", fmt="csr", threads=2)
    want = k(A, B)
    (info,) = [d for d in threadpoolctl.threadpool_info() if d["internal_api"] == "spc"]
    assert info["user_api"] == "openmp" and info["version"] == spc.__version__
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert spc.get_num_threads() == 1 and k.schedule.threads == 1
        before = load_pool().worker_chunks()
        np.testing.assert_array_equal(k(A, B), want)
        assert load_pool().worker_chunks() == before  # no worker ran a chunk
    assert spc.get_num_threads() == config.num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert spc.get_num_threads() == config.num_threads()
