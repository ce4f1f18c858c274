"""spc tune on real matrices of the corpus (skipped without it): one per family."""
import numpy as np
import pytest

from spc import corpus
from spc.cli import main

pytestmark = [pytest.mark.corpus,
              pytest.mark.skipif(not corpus.available(),
                                 reason=f"no corpus at {corpus.corpus_dir()} (set SPC_DATA_DIR)")]


def smallest_per_family():
    if not corpus.available():
        return []
    out = {}
    for e in corpus.entries():
        if e.family not in out or e.nnz < out[e.family].nnz:
            out[e.family] = e
    return list(out.values())


@pytest.mark.parametrize("entry", smallest_per_family(), ids=lambda e: e.family)
def test_tuned_spmm_on_real_matrices(entry, tmp_path, monkeypatch):
    import spc
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path))
    A = corpus.load(entry.path)
    B = np.random.default_rng(0).standard_normal((A.shape[1], 16)).astype(np.float32)
    k = spc.tune("spmm", A, B, budget_s=2)
    np.testing.assert_allclose(k(A, B), A.astype(np.float64) @ B, rtol=1e-3, atol=1e-3)
    auto = spc.compile("spmm", schedule="auto")
    assert auto.choice(A, B)[2] == "exact"


def test_cli_over_real_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPC_CACHE_DIR", str(tmp_path / "cache"))
    files = [str(e.path) for e in smallest_per_family()]
    assert main(["tune", *files, "--kernel", "sddmm", "--n", "8", "--budget", "1",
                 "--out", str(tmp_path / "out")]) == 0
    csv_lines = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(files)                 # a header and a row per file
    assert len(capsys.readouterr().out.splitlines()) == len(files) + 1
