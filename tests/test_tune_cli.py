"""``spc tune``: a folder with one good and one malformed file; --help on every command."""
import csv
import gzip

import numpy as np
import pytest
import scipy.sparse as sp

from spc.cli import main
from spc.tuning.database import Database


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    A = sp.random(30, 20, density=0.2, format="csr", dtype=np.float32, random_state=0)
    sp.save_npz(data / "good.npz", A)
    with gzip.open(data / "good2.smtx.gz", "wt") as f:      # DLMC's 3-line layout
        f.write("3, 4, 3\n0 1 2 3\n0 2 3\n")
    (data / "broken.smtx").write_text("3, 4, 5\n0 1\n7\n")
    (data / "notes.txt").write_text("not a matrix")        # not a matrix suffix: not listed
    return tmp_path


def test_tune_keeps_going_past_a_malformed_file(folder, capsys):
    out = folder / "report"
    code = main(["tune", str(folder / "data"), str(folder / "missing.mtx"), "--kernel", "spmm",
                 "--n", "4", "8", "--budget", "0.5", "--out", str(out)])
    assert code == 1                                        # two files could not be read
    captured = capsys.readouterr()
    assert "broken.smtx" in captured.err and "missing.mtx: no such file" in captured.err
    assert "good.npz N=4" in captured.out and "good2.smtx.gz N=8" in captured.out
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["matrix"], r["n"]) for r in rows} == {      # paths below the shared folder
        ("data/good.npz", "4"), ("data/good.npz", "8"), ("data/good2.smtx.gz", "4"),
        ("data/good2.smtx.gz", "8")}
    report = (out / "report.md").read_text()
    assert "| data/good.npz | 4 |" in report and "broken.smtx" in report
    assert len(Database.default().entries("spmm", "float32")) == 4


def test_tune_shows_its_progress_on_stderr(folder, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tqdm", None)       # the plain lines, tqdm or not
    assert main(["tune", str(folder / "data"), "--n", "4", "--budget", "0.2"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("spc tune: ") and "/3, " in line]
    assert [line.split(",")[0] for line in err] == [f"spc tune: {i}/3" for i in (1, 2, 3)]
    assert err[-1].endswith(", done")


def test_tune_sddmm_on_one_file(folder, capsys):
    assert main(["tune", str(folder / "data" / "good.npz"), "--kernel", "sddmm", "--n", "4",
                 "--budget", "0.5"]) == 0
    assert "good.npz N=4" in capsys.readouterr().out
    assert len(Database.default().entries("sddmm", "float32")) == 1


def test_tune_with_no_matrix_files(tmp_path, capsys):
    assert main(["tune", str(tmp_path)]) == 1
    assert "no matrix files" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["show"], ["cache"], ["tune"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main(command + ["--help"])
    assert stop.value.code == 0
    assert "usage: spc" in capsys.readouterr().out


def test_eight_concurrent_spc_tune_processes_leave_the_database_consistent(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import warnings
    from pathlib import Path
    data = tmp_path / "data"
    data.mkdir()
    for i in range(9):                                     # file 8 is tuned by every process
        sp.save_npz(data / f"m{i}.npz", sp.random(20 + i, 16, density=0.2, format="csr",
                                                  dtype=np.float32, random_state=i))
    env = dict(os.environ, SPC_CACHE_DIR=str(tmp_path / "cache"), SPC_NUM_THREADS="1")
    repo = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([sys.executable, "-m", "spc", "tune", str(data / f"m{i}.npz"),
                               str(data / "m8.npz"), "--n", "4", "--budget", "0"],
                              env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(8)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, results
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # no torn or corrupt entry
        entries = Database.default().entries("spmm", "float32")
    assert sorted(e.signature.rows for e in entries) == [20 + i for i in range(9)]
