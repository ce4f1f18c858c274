"""spc's CPU thread pool (spc/codegen/cpu_pool.py): every chunk runs exactly
once, whatever the thread count, the number of chunks or the number of callers;
kernels that run through it give one thread's results."""
from __future__ import annotations

import ctypes
import threading
import time

import llvmlite.binding as llvm
import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen import cpu_pool
from spc.codegen.cpu import CPUTarget
from spc.ir.nodes import DType

pool = cpu_pool.load_pool()
pytestmark = pytest.mark.skipif(pool is None, reason="the pool needs Linux")

CHUNK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
ENTRY = ctypes.CFUNCTYPE(None, CHUNK, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                         ctypes.c_int64)


def run_pool(lo: int, hi: int, nthreads: int) -> np.ndarray:
    """How many times the pool ran each index of [lo, hi) (through a Python callback)."""
    seen = np.zeros(max(0, hi - lo), dtype=np.int64)
    lock = threading.Lock()

    def chunk(ctx, first, last):
        assert lo <= first < last <= hi
        with lock:
            seen[first - lo:last - lo] += 1
    cb = CHUNK(chunk)
    ENTRY(pool.entry)(cb, None, lo, hi, nthreads)
    return seen


@pytest.mark.parametrize("nthreads", [1, 2, 3, 8, 64, 300])
@pytest.mark.parametrize("lo, hi", [(0, 0), (5, 5), (0, 1), (0, 7), (3, 1000), (-50, 50),
                                    (0, 20_000)])
def test_every_index_runs_exactly_once(lo, hi, nthreads):
    assert (run_pool(lo, hi, nthreads) == 1).all()


def test_an_empty_or_reversed_range_runs_nothing():
    calls = []
    cb = CHUNK(lambda ctx, first, last: calls.append((first, last)))
    ENTRY(pool.entry)(cb, None, 10, 3, 4)
    ENTRY(pool.entry)(cb, None, 0, 0, 4)
    assert calls == []


def test_callers_from_several_python_threads_at_once():
    """More concurrent callers than job slots: those without a slot run alone."""
    results, errors = [], []

    def caller():
        try:
            for _ in range(20):
                results.append(bool((run_pool(0, 3000, 4) == 1).all()))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=caller) for _ in range(cpu_pool.NSLOTS + 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [True] * (20 * (cpu_pool.NSLOTS + 4))


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(7)
    A = sp.random(4000, 3000, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    B = rng.random((3000, 48), dtype=np.float32)
    return A, B


@pytest.mark.parametrize("threads", [2, 3, 8, 64])
def test_spmm_on_the_pool_matches_one_thread(big, threads):
    A, B = big
    one = spc.compile("spmm", fmt="csr", schedule=spc.Schedule(threads=1))(A, B)
    for _ in range(5):                       # repeated calls reuse slots and workers
        many = spc.compile("spmm", fmt="csr", schedule=spc.Schedule(threads=threads))(A, B)
        np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows", [0, 1, 5, 5000])
@pytest.mark.parametrize("nthreads", [2, 200])
def test_kernel_launch_with_few_or_many_chunks(rows, nthreads):
    """The launcher forced onto many threads, on no rows, fewer rows than threads
    and one row per chunk."""
    A = sp.random(rows, 40, density=0.2, format="csr", dtype=np.float32, random_state=1)
    x = np.arange(40, dtype=np.float32)
    k = spc.compile("spmv", fmt="csr")
    k(sp.random(3, 40, density=0.5, format="csr", dtype=np.float32), x)      # build
    launcher = k._variants[DType.I32].launchers[0]
    y = np.full(rows, np.nan, dtype=np.float32)
    launcher([A.indices, A.indptr, A.data, x, y], [rows, 40], nthreads=nthreads)
    np.testing.assert_allclose(y, A @ x, rtol=1e-5)


def test_spmm_from_several_python_threads(big):
    A, B = big
    k = spc.compile("spmm", fmt="csr", schedule=spc.Schedule(threads=2))
    ref = k(A, B)
    outs = [None] * 6

    def run(i):
        outs[i] = [k(A, B) for _ in range(10)]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for calls in outs:
        for C in calls:
            np.testing.assert_array_equal(C, ref)


def test_kernels_call_the_pool_not_libgomp():
    src = spc.compile("spmm", fmt="csr", target=CPUTarget(threading="pool")).source
    assert cpu_pool.ENTRY in src and "GOMP_parallel" not in src


@pytest.mark.parametrize("threading_", ["pthread", "pool"])
def test_other_threading_modes_give_the_same_result(big, threading_):
    A, B = big
    k = spc.compile("spmm", fmt="csr", target=CPUTarget(threading=threading_),
                    schedule=spc.Schedule(threads=3))
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64", "riscv64"])
def test_pool_module_verifies_for_each_machine(machine):
    """Without a known futex number (riscv64 here) idle workers yield instead."""
    text = cpu_pool.emit_pool_module(machine=machine)
    llvm.parse_assembly(text).verify()
    calls_futex = 'call i64 (i64, ...) @"syscall"' in text
    assert calls_futex == (machine != "riscv64")


def test_calls_take_two_threads_where_they_pay():
    """The thresholds measured on the 2-core machine (see ``call_work``)."""
    from spc.runtime.compiled import SMALL_WORK, call_work
    assert call_work(12_000, 512, 1) >= SMALL_WORK > call_work(8_000, 512, 1)        # SpMV
    assert call_work(6_554, 2_048, 8) >= SMALL_WORK > call_work(1_311, 4_096, 32)    # SpMM
    assert call_work(205, 2 * 64 * 32, 32) < SMALL_WORK                              # tiny SDDMM


@pytest.fixture
def probe(tmp_path):
    """Point the pool's load probe at a file the test writes (``write(text, cpus)``);
    back to the machine's /proc/loadavg afterwards."""
    def write(text: str, cpus: int = 2) -> None:
        path = tmp_path / f"loadavg{len(list(tmp_path.iterdir()))}"
        path.write_text(text)
        assert cpu_pool.watch_load(pool, str(path), cpus)
    yield write
    pool.set_probe(-1, 0)
    cpu_pool.watch_load(pool)


@pytest.mark.parametrize("text, cpus, crowded", [
    ("0.50 0.40 0.30 3/120 9701\n", 2, True),     # three runnable threads on two cores
    ("0.50 0.40 0.30 2/120 9701\n", 2, False),
    ("4.00 3.00 2.00 12/300 1\n", 16, False),
    ("4.00 3.00 2.00 17/300 1\n", 16, True),
    ("4.00 3.00 2.00 123/300 1\n", 8, True),       # several digits
    ("0.50 0.40\n", 2, False),                     # no fourth field
    ("", 2, False),
])
def test_the_load_probe_reads_the_runnable_count(probe, text, cpus, crowded):
    probe(text, cpus)
    assert pool.crowded() is crowded


def test_without_a_probe_file_the_machine_is_never_crowded(probe):
    assert not cpu_pool.watch_load(pool, "/nonexistent/loadavg", 2)
    pool.set_probe(-1, 2)
    assert pool.crowded() is False


def test_workers_nap_instead_of_spinning_on_a_crowded_machine(probe, tmp_path):
    """A worker that finds more threads runnable than cores sleeps at once
    (counted by ``naps``); every chunk still runs exactly once.  The machine
    turns crowded after the caller's look (which then still shares its calls
    until its next look, CROWD_EVERY calls on)."""
    path = tmp_path / "loadavg"
    path.write_text("0.10 0.10 0.10 1/100 1\n")
    assert cpu_pool.watch_load(pool, str(path), 2)
    run_pool(0, 20_000, 2)                           # the caller looks: not crowded
    path.write_text("9.00 9.00 9.00 50/100 1\n")    # the workers' next looks: crowded
    before = pool.naps()
    for _ in range(20):
        assert (run_pool(0, 20_000, 2) == 1).all()
    deadline = time.monotonic() + 10
    while pool.naps() == before and time.monotonic() < deadline:
        run_pool(0, 20_000, 2)
        time.sleep(0.01)
    assert pool.naps() > before


@pytest.fixture
def quiet(probe):
    """A machine with a core to spare, whatever the real one's load: callers
    share their calls with workers."""
    probe("0.10 0.10 0.10 1/100 1\n", 2)


def test_callers_on_a_crowded_machine_run_alone(probe):
    """More runnable threads than cores: the caller runs every chunk itself (no
    worker takes one) and counts the call; every index still runs once."""
    probe("9.00 9.00 9.00 50/100 1\n", 2)
    alone, by_workers = pool.alone_calls(), pool.worker_chunks()
    for _ in range(cpu_pool.CROWD_EVERY + 1):
        assert (run_pool(0, 20_000, 2) == 1).all()
    assert pool.alone_calls() - alone == cpu_pool.CROWD_EVERY + 1
    assert pool.worker_chunks() == by_workers


def test_callers_share_again_once_the_machine_has_a_core_to_spare(probe):
    probe("9.00 9.00 9.00 50/100 1\n", 2)
    run_pool(0, 20_000, 2)
    probe("0.10 0.10 0.10 1/100 1\n", 2)         # set_probe: the next call looks again
    alone = pool.alone_calls()
    assert (run_pool(0, 20_000, 2) == 1).all()
    assert pool.alone_calls() == alone


def test_a_caller_waiting_for_a_held_worker_sleeps_and_finishes(quiet):
    """A worker is held inside its chunk until the test lets it go: the caller
    runs every chunk no worker started, then waits for the held one asleep
    (its CPU time stays low while the worker is held), and every index runs
    exactly once."""
    lo, hi = 0, 6_400
    seen = np.zeros(hi - lo, dtype=np.int64)
    lock = threading.Lock()
    worker_in, release = threading.Event(), threading.Event()
    caller = {}

    def chunk(ctx, first, last):
        if threading.get_ident() != caller["ident"]:
            worker_in.set()
            release.wait(30)
        else:
            worker_in.wait(30)              # make sure a worker takes one chunk
        with lock:
            seen[first - lo:last - lo] += 1
    cb = CHUNK(chunk)

    def call():
        caller["ident"] = threading.get_ident()
        caller["clock"] = time.pthread_getcpuclockid(caller["ident"])
        ENTRY(pool.entry)(cb, None, lo, hi, 2)
        caller["returned"] = True
    t = threading.Thread(target=call)
    t.start()
    assert worker_in.wait(30), "no worker joined the call"
    deadline = time.monotonic() + 30
    while seen.sum() < hi - lo - 2 * (hi - lo) // (2 * cpu_pool.CHUNKS_PER_THREAD) \
            and time.monotonic() < deadline:
        time.sleep(0.01)                    # the caller runs the chunks no one holds
    time.sleep(0.05)
    cpu0 = time.clock_gettime(caller["clock"])
    time.sleep(0.4)
    used = time.clock_gettime(caller["clock"]) - cpu0
    assert "returned" not in caller          # it waits for the held chunk
    release.set()
    t.join(30)
    assert caller.get("returned")
    assert (seen == 1).all()
    assert used < 0.1, f"the waiting caller used {used:.3f} s of CPU in 0.4 s"
