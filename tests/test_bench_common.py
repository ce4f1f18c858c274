"""The benchmarks' shared timers, geometric mean and load reading
(benchmarks/common.py), and that every benchmark script imports without a GPU,
torch, matplotlib or psutil (the GPU scripts' CPU side stays importable)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


class Counter:
    """A callable that counts its calls and logs them with the syncs between."""

    def __init__(self, log: list):
        self.log = log

    def __call__(self):
        self.log.append("call")


@pytest.mark.parametrize("min_repeats, warmup", [(1, 0), (5, 1), (7, 3)])
def test_call_times_makes_the_repeats_and_warmup_asked(min_repeats, warmup):
    log = []
    times = common.call_times(Counter(log), min_repeats=min_repeats, warmup=warmup)
    assert len(times) == min_repeats
    assert len(log) == min_repeats + warmup
    assert all(t >= 0 for t in times)


def test_call_times_runs_until_min_time():
    times = common.call_times(lambda: sum(range(1000)), min_repeats=1, min_time=0.02)
    assert sum(times) >= 0.02 and len(times) > 1


def test_call_times_stops_at_max_repeats():
    assert len(common.call_times(lambda: None, min_repeats=1, min_time=60.0, max_repeats=50)) == 50


def test_time_calls_summarizes_call_times():
    r = common.time_calls(lambda: None, min_time=0.0, min_repeats=9, warmup=0)
    assert r["repeats"] == 9
    assert r["min_s"] <= r["p25_s"] <= r["median_s"] <= r["p75_s"]


@pytest.mark.parametrize("sync_timed", [True, False])
def test_burst_times_syncs_around_each_burst(sync_timed):
    log = []
    per_call = common.burst_times(Counter(log), calls=3, bursts=2, warmup=1,
                                  sync=lambda: log.append("sync"), sync_timed=sync_timed)
    assert len(per_call) == 2
    burst = ["sync", "call", "call", "call", "sync"]
    assert log == ["call", "sync"] + burst + burst


@pytest.mark.parametrize("sync_timed", [True, False])
def test_burst_times_counts_the_sync_only_when_timed(sync_timed):
    per_call = common.burst_times(lambda: None, calls=1, bursts=2,
                                  sync=lambda: time.sleep(0.05), sync_timed=sync_timed)
    assert all((t >= 0.05) == sync_timed for t in per_call), per_call


def test_burst_times_without_sync_only_calls():
    log = []
    assert len(common.burst_times(Counter(log), calls=4, bursts=3)) == 3
    assert log == ["call"] * 12


class FakeCuda:
    """torch.cuda's events and synchronize, on a fake clock that advances 2 ms
    per timed call, logging what happens."""

    def __init__(self):
        self.log, self.now = [], 0.0
        cuda = self

        class Event:
            def __init__(self, enable_timing):
                assert enable_timing
                self.t = None

            def record(self):
                self.t = cuda.now
                cuda.log.append("record")

            def synchronize(self):
                cuda.log.append("event-sync")

            def elapsed_time(self, other):      # milliseconds, as torch's
                return (other.t - self.t) * 1e3

        self.Event = Event

    def synchronize(self):
        self.log.append("sync")

    def call(self):
        self.log.append("call")
        self.now += 0.002


def test_cuda_event_times_reads_events_around_each_call():
    fake = FakeCuda()
    torch = type("torch", (), {"cuda": fake})
    times = common.cuda_event_times(torch, fake.call, 3, warmup=1)
    assert times == pytest.approx([0.002] * 3)
    assert fake.log == ["call"] + ["sync", "record", "call", "record", "event-sync"] * 3


def fake_triton(monkeypatch, do_bench):
    """Make ``from triton.testing import do_bench`` give ``do_bench``."""
    import types
    triton = types.ModuleType("triton")
    testing = types.ModuleType("triton.testing")
    testing.do_bench = do_bench
    triton.testing = testing
    monkeypatch.setitem(sys.modules, "triton", triton)
    monkeypatch.setitem(sys.modules, "triton.testing", testing)


def test_gpu_kernel_time_uses_do_bench_when_triton_is_there(monkeypatch):
    calls = []

    def do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        calls.append(dict(fn=fn, warmup=warmup, rep=rep, quantiles=quantiles,
                          return_mode=return_mode))
        fn()
        return 0.25                                   # milliseconds, as triton's

    fake_triton(monkeypatch, do_bench)
    fake = FakeCuda()
    t = common.gpu_kernel_time(type("torch", (), {"cuda": fake}), fake.call, reps=3,
                               warmup_ms=5.0, rep_ms=40.0)
    assert t == common.GpuTime(0.25e-3, common.DO_BENCH)
    assert calls == [dict(fn=fake.call, warmup=5.0, rep=40.0, quantiles=None,
                          return_mode="median")]
    assert fake.log == ["call"]                       # no event loop of ours besides


def test_gpu_kernel_time_falls_back_to_events_without_triton(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)   # import triton raises ImportError
    fake = FakeCuda()
    t = common.gpu_kernel_time(type("torch", (), {"cuda": fake}), fake.call, reps=3, warmup=1)
    assert t.timer == common.EVENTS
    assert t.seconds == pytest.approx(0.002)
    assert fake.log == ["call"] + ["sync", "record", "call", "record", "event-sync"] * 3


def test_gpu_kernel_time_falls_back_when_do_bench_lacks_return_mode(monkeypatch):
    def old_do_bench(fn, warmup=25, rep=100, percentiles=(0.5, 0.2, 0.8)):
        raise AssertionError("an old do_bench must not be called")

    fake_triton(monkeypatch, old_do_bench)
    fake = FakeCuda()
    t = common.gpu_kernel_time(type("torch", (), {"cuda": fake}), fake.call, reps=2, warmup=0)
    assert t == common.GpuTime(pytest.approx(0.002), common.EVENTS)


@pytest.mark.cuda
def test_gpu_kernel_time_of_a_copy_on_a_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    a = torch.ones(1 << 24, device="cuda")               # 64 MiB, beyond any L2
    b = torch.empty_like(a)
    t = common.gpu_kernel_time(torch, lambda: b.copy_(a), reps=5, rep_ms=20.0)
    assert t.timer == (common.DO_BENCH if common._do_bench() else common.EVENTS)
    gbs = 2 * a.numel() * 4 / t.seconds / 1e9
    assert 50 < gbs < 20_000, (t, gbs)                   # a copy at some GPU's bandwidth
    torch.cuda.synchronize()
    assert torch.equal(a, b)


@pytest.mark.parametrize("xs, expected", [
    ([1.0, 4.0], 2.0),
    ([2.0, 8.0, 0.0, -1.0, math.nan, math.inf, None], 4.0),   # failed cases dropped
    ([3.0], 3.0),
])
def test_geomean(xs, expected):
    assert common.geomean(xs) == pytest.approx(expected)


@pytest.mark.parametrize("xs", [[], [0.0, math.nan]], ids=["empty", "nothing-valid"])
def test_geomean_of_nothing_is_nan(xs):
    assert math.isnan(common.geomean(xs))


def test_machine_load_and_busy_time():
    first = common.machine_load()
    assert len(first["loadavg"]) == 3 and first["cpus"] >= 1
    second = common.machine_load()
    assert second["cpu_percent"] is None or 0.0 <= second["cpu_percent"] <= 100.0
    a = common.machine_busy_ns()
    sum(range(200_000))
    assert common.machine_busy_ns() >= a >= 0


SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py"))

IMPORT_ALL = """
import json, sys
for name in ("torch", "cupy", "matplotlib", "psutil", "tqdm", "triton"):
    sys.modules[name] = None                 # absent, as on a machine without them
sys.path[:0] = [{repo!r}, {bench!r}]
failed = {{}}
for name in {names!r}:
    try:
        __import__(name)
    except Exception as err:
        failed[name] = f"{{type(err).__name__}}: {{err}}"
print(json.dumps(failed))
"""


def test_every_benchmark_script_imports_without_gpu_packages():
    code = IMPORT_ALL.format(repo=str(BENCH.parent), bench=str(BENCH), names=SCRIPTS)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=BENCH.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {}


def _has_main(script: Path) -> bool:
    return 'if __name__ == "__main__"' in script.read_text()


RUNNABLE = [p.name for p in sorted(BENCH.glob("*.py")) if _has_main(p)]


@pytest.mark.parametrize("script", RUNNABLE)
def test_every_benchmark_script_answers_help(script):
    r = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True,
                       text=True, timeout=120, cwd=BENCH.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: "), r.stdout[:500]
