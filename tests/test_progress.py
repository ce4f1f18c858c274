"""spc.progress: a tqdm bar where tqdm is installed (a fake tqdm module stands in
for it), else plain lines with the time left, always on stderr; result lines on
stdout."""
import sys
import types

import pytest

from spc import progress


@pytest.mark.parametrize("elapsed, done, total, expected", [
    (10.0, 1, 4, "eta 30 s"),       # 10 s per item, 3 left
    (60.0, 1, 3, "eta 2.0 min"),
    (5.0, 4, 4, "done"),
    (5.0, 0, 4, "eta ?"),
])
def test_eta(elapsed, done, total, expected):
    assert progress.eta(elapsed, done, total) == expected


def test_without_tqdm_each_update_prints_the_time_left_on_stderr(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)           # import tqdm raises ImportError
    clock = iter([100.0, 110.0, 120.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with progress.Progress(4, desc="bench") as bar:          # started at 100 s
        bar.write("[1/4] m1 ok")
        bar.update()                                         # 110 s: 10 s per item, 3 left
        bar.write("m2 failed", err=True)
        bar.update()                                         # 120 s
    out, err = capsys.readouterr()
    assert out == "[1/4] m1 ok\n"
    assert err == "bench: 1/4, 10 s, eta 30 s\nm2 failed\nbench: 2/4, 20 s, eta 20 s\n"


def test_without_tqdm_the_last_update_says_done(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    bar = progress.Progress(2)
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err.endswith("2/2, 0 s, done\n")


class FakeTqdm:
    """tqdm's class as spc.progress uses it, logging every call."""
    log: list = []

    def __init__(self, **kwargs):
        self.log.append(("init", kwargs))

    def update(self, n):
        self.log.append(("update", n))

    @classmethod
    def write(cls, line, file=None):
        cls.log.append(("write", line, file))

    def close(self):
        self.log.append(("close",))


def test_with_tqdm_a_bar_on_stderr_and_lines_written_above_it(monkeypatch, capsys):
    FakeTqdm.log = []
    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeTqdm))
    with progress.Progress(3, desc="spc tune", unit="case") as bar:
        bar.write("[1/3] a")
        bar.update()
        bar.write("skipped b", err=True)
        bar.update(2)
    assert FakeTqdm.log == [
        ("init", dict(total=3, desc="spc tune", unit="case", file=sys.stderr,
                      dynamic_ncols=True)),
        ("write", "[1/3] a", sys.stdout), ("update", 1),
        ("write", "skipped b", sys.stderr), ("update", 2), ("close",)]
    assert capsys.readouterr() == ("", "")                   # all of it went through tqdm
