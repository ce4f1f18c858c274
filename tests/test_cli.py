"""The ``spc`` command (spc/cli.py): --version, show, cache; errors as ``spc: error``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import spc
from spc.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"spc {spc.__version__}"


def test_show_prints_the_ir_schedule_and_source(capsys):
    assert main(["show", "spmv", "--fmt", "csr", "--source"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kernel spmv_csr")
    assert "# schedule: Schedule(order=('i', 'j')" in out and "define " in out   # LLVM IR
    assert main(["show", "y[i] = A[i,j] * x[j]", "--format", "A=csr", "--dtype",
                 "float64"]) == 0
    assert "A_vals: f64*" in capsys.readouterr().out


def test_show_prints_every_kernel_of_a_program(capsys):
    assert main(["show", "attention", "--fmt", "csr"]) == 0
    out = capsys.readouterr().out
    assert out.count("# schedule: Schedule(") == out.count("kernel ") >= 2


def test_show_renders_cuda_without_a_gpu(capsys):
    assert main(["show", "spmm", "--fmt", "bsr(16,16)", "--target", "cuda", "--arch",
                 "sm_90", "--dtype", "float16", "--source"]) == 0
    out = capsys.readouterr().out
    assert "@mma_m" in out and "spc_mma_16816" in out


def test_export_writes_the_artifact(tmp_path, capsys):
    assert main(["export", "spmv", "--fmt", "csr", "--dtype", "float64",
                 str(tmp_path / "out")]) == 0
    assert "example.c" in capsys.readouterr().out
    assert "const double *A_vals" in (tmp_path / "out" / "spmv_csr_dense_dense.h").read_text()
    assert main(["export", "spmv", "--fmt", "bsr(2,2)", "--no-example", "--index", "int64",
                 str(tmp_path / "bsr")]) == 0
    assert not (tmp_path / "bsr" / "Makefile").exists()


@pytest.mark.parametrize("argv, message", [
    (["show", "nope"], "unknown kernel 'nope'"),
    (["export", "spmv", "--fmt", "bsr(2,2)", "somewhere"], "pass example=False"),
    (["show", "spmv", "--fmt", "zzz"], "zzz"),
    (["show", "y[i] = A[i,j] * x[j]", "--format", "A"], "TENSOR=FORMAT"),
])
def test_bad_requests_print_an_error_and_return_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spc: error:") and message in err


def test_cache_info_and_clear(cache_dir, capsys):
    spc.cache.clear(disk=False)                   # so that the build writes to disk
    spc.compile("spmv", fmt="csr").build()
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"directory: {cache_dir}" in out and "entries: 1" in out
    assert main(["cache", "clear"]) == 0
    assert "removed" in capsys.readouterr().out
    assert spc.cache.info()["entries"] == 0


def test_python_dash_m_spc_runs_the_command():
    r = subprocess.run([sys.executable, "-m", "spc", "--version"], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"spc {spc.__version__}"


# -- spc bench ---------------------------------------------------------------------

def test_bench_lists_the_suites_of_the_checkout(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()]
    assert {"cpu", "gpu", "call-cpu", "attention-cpu", "spgemm-cpu"} <= set(names)
    assert all(len(line) < 120 for line in out.splitlines())


def test_bench_refuses_an_unknown_suite(capsys):
    assert main(["bench", "no-such-suite"]) == 2
    assert "no suite 'no-such-suite'" in capsys.readouterr().err


def test_bench_passes_the_suites_arguments_on():
    r = subprocess.run([sys.executable, "-m", "spc", "bench", "spmm-columns-cpu", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout and "--repeats" in r.stdout


def test_bench_without_a_checkout_says_where_the_suites_are(monkeypatch, capsys):
    from spc import bench_suites
    monkeypatch.setattr(bench_suites, "benchmarks_dir", lambda start=None: None)
    assert main(["bench", "cpu"]) == 2
    assert "source checkout" in capsys.readouterr().err
