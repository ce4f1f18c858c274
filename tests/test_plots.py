"""Reports name a plot only once it is on disk (spc.plots, spc tune's report,
bench_cpu's summary), with matplotlib present and hidden."""
import sys
from pathlib import Path

import pytest

from spc import plots
from spc.tuning import sweep

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(params=["with-matplotlib", "without-matplotlib"])
def matplotlib_there(request, monkeypatch):
    """True with matplotlib importable; False with it hidden (import raises ImportError)."""
    if request.param == "with-matplotlib":
        pytest.importorskip("matplotlib")
        return True
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    return False


def draw_bars(fig):
    fig.subplots().bar([0, 1], [1.0, 2.0])


def test_save_figure_writes_the_file_or_says_why_not(tmp_path, matplotlib_there):
    path = tmp_path / "bars.png"
    why_not = plots.save_figure(path, draw_bars, figsize=(3, 2))
    if matplotlib_there:
        assert why_not is None
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert plots.plot_line(path, why_not) == "Plot: `bars.png`"
    else:
        assert why_not == plots.NO_MATPLOTLIB
        assert not path.exists()
        assert plots.plot_line(path, why_not) == f"No plot: {plots.NO_MATPLOTLIB}"


def test_a_failing_drawing_leaves_no_file_and_no_earlier_one(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bars.png"
    path.write_bytes(b"an earlier run's plot")

    def broken(fig):
        raise ValueError("no data")

    why_not = plots.save_figure(path, broken, figsize=(3, 2))
    assert why_not == "drawing it failed (ValueError: no data)"
    assert not path.exists()


def tune_rows():
    return [sweep.Row("a.npz", 32, 10, 10, 20, "csr", "default", 2e-6, 3e-6, 4e-6, 1.5, 0.1, 3),
            sweep.Row("b.npz", 32, 10, 10, 30, "bsr(2,2)", "default", 1e-6, 1e-6, 2e-6, 1.0,
                      0.1, 2)]


def test_tune_report_names_the_plot_only_when_written(tmp_path, matplotlib_there):
    (tmp_path / "speedup.png").write_bytes(b"an earlier run's plot")
    written = sweep.write_report(tmp_path, "spmm", "cpu", tune_rows(), [], [])
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "speedup.png").exists() == matplotlib_there
    assert ((tmp_path / "speedup.png") in written) == matplotlib_there
    if matplotlib_there:
        assert report.endswith("Plot: `speedup.png`\n")
    else:
        assert report.endswith(f"No plot: {plots.NO_MATPLOTLIB}\n")
        assert "speedup.png" not in report
    assert "tuned vs default 1.22x" in report          # geometric mean of 1.5 and 1.0


def test_tune_report_of_no_case_has_no_plot(tmp_path):
    sweep.write_report(tmp_path, "spmm", "cpu", [], [], ["x.mtx: no such file"])
    assert (tmp_path / "report.md").read_text().endswith("No plot: no case was tuned\n")
    assert not (tmp_path / "speedup.png").exists()


def bench_cpu_run():
    """A results set of bench_cpu.py with one matrix, two systems, SpMV."""
    sys.path.insert(0, str(BENCH))
    import bench_cpu
    rec = dict(matrix="m", family="graph", rows=4, cols=4, nnz=6, op="spmv", n=1, flops=12,
               bytes=100, status="ok", median_s=1e-6, gflops=12.0, floor_frac=0.5,
               external_load=0.0)
    records = [dict(rec, system="spc"), dict(rec, system="scipy", gflops=6.0)]
    meta = dict(date="2026-11-29", machine=dict(cpu="test", cores=2),
                bandwidth=dict(GBs=10.0, threads=2), matrices=1, per_family={"graph": 1},
                corpus_source="test", git="abc", spc_sources="def", timed_cases=2,
                noisy_cases=0, wall_s=1.0, skip_reasons={},
                args=dict(max_external_load=0.15, min_repeats=3, min_time=0.01, retries=0))
    return bench_cpu, records, meta


def test_bench_cpu_summary_names_the_plot_only_when_written(tmp_path, matplotlib_there, capsys):
    bench_cpu, records, meta = bench_cpu_run()
    (tmp_path / "gflops.png").write_bytes(b"an earlier run's plot")
    bench_cpu.report(records, meta, ["spc", "scipy"], ["graph"], [("spmv", 1)], tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    wrote = capsys.readouterr().out.splitlines()[-1]
    assert (tmp_path / "gflops.png").exists() == matplotlib_there
    if matplotlib_there:
        assert summary.endswith("Plot: `gflops.png`\n") and wrote.endswith("gflops.png")
    else:
        assert summary.endswith(f"No plot: {plots.NO_MATPLOTLIB}\n")
        assert "gflops.png" not in summary and "gflops.png" not in wrote
    assert "| spmv | 1 | 12 | 6.0 |" in summary
