"""Golden text of the scheduled loop IR (``CompiledKernel.ir``).

The golden files live in ``tests/golden/<id>.ir``.  After an intended change to
lowering or the passes, regenerate them and review the diff:

    SPC_UPDATE_GOLDEN=1 PYTHONPATH=. python -m pytest tests/test_ir_golden.py tests/test_passes.py
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

import spc

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def assert_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``tests/golden/<name>.ir``, or rewrite the file when
    SPC_UPDATE_GOLDEN=1.  A mismatch fails with a unified diff."""
    path = GOLDEN_DIR / f"{name}.ir"
    if os.environ.get("SPC_UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"no golden file {path}; create it with SPC_UPDATE_GOLDEN=1")
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"golden/{name}.ir", tofile="actual"))
        pytest.fail(f"IR differs from golden/{name}.ir (regenerate with SPC_UPDATE_GOLDEN=1 "
                    f"if the change is intended):\n{diff}", pytrace=False)


CSR3 = {"A": "csr", "B": "csr", "C": "csr"}

GOLDEN_KERNELS = [
    pytest.param("spmv", {"fmt": "csr"}, id="spmv_csr"),
    pytest.param("spmm", {"fmt": "csr"}, id="spmm_csr"),
    pytest.param("sddmm", {"fmt": "csr"}, id="sddmm_csr"),
    pytest.param("spmv", {"fmt": "coo"}, id="spmv_coo"),
    pytest.param("C[i,j] = A[i,j] + B[i,j]", {"formats": CSR3}, id="add_csr"),
    pytest.param("y[j] = A[i,j] * x[i]", {"formats": {"A": "csr"}}, id="spmv_transposed_csr"),
    pytest.param("spmm", {"fmt": "bsr(4,4)"}, id="spmm_bsr44"),
    pytest.param("spmv", {"fmt": "ell"}, id="spmv_ell"),
    pytest.param("spmv", {"fmt": "dia"}, id="spmv_dia"),
    pytest.param("spmm", {"fmt": "nm(2,4)"}, id="spmm_nm24"),
    pytest.param("spmv", {"fmt": "hyb"}, id="spmv_hyb"),
    pytest.param("C[i,j] = A[i,j] + B[i,j]", {"formats": {"A": "ell", "B": "csr", "C": "csr"}},
                 id="add_ell_csr"),
    pytest.param("C[i,j] = A[i,k]*B[k,j]", {"formats": CSR3}, id="spgemm_csr"),
    pytest.param("C[i,j] = M[i,j]*A[i,k]*B[k,j]", {"formats": {**CSR3, "M": "csr"}},
                 id="spgemm_masked_csr"),
]


AVX2 = "+avx,+avx2,+fma"      # the golden IR is an AVX2 machine's, whatever runs the test


@pytest.mark.parametrize("kernel, options", GOLDEN_KERNELS)
def test_ir_matches_golden(request, kernel, options):
    k = spc.compile(kernel, target="cpu", features=AVX2, **options)
    assert_golden(request.node.callspec.id, k.ir)


@pytest.mark.parametrize("kernel, options", GOLDEN_KERNELS)
def test_ir_is_deterministic(kernel, options):
    assert spc.compile(kernel, **options).ir == spc.compile(kernel, **options).ir


def test_golden_failure_shows_a_diff(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "GOLDEN_DIR", tmp_path)
    monkeypatch.delenv("SPC_UPDATE_GOLDEN", raising=False)
    (tmp_path / "demo.ir").write_text("kernel k():\n  let a: i64 = 1\n")
    with pytest.raises(pytest.fail.Exception) as info:
        assert_golden("demo", "kernel k():\n  let a: i64 = 2\n")
    message = str(info.value)
    assert "-  let a: i64 = 1" in message and "+  let a: i64 = 2" in message
    assert "SPC_UPDATE_GOLDEN=1" in message


def test_golden_update_writes_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "GOLDEN_DIR", tmp_path)
    monkeypatch.setenv("SPC_UPDATE_GOLDEN", "1")
    assert_golden("fresh", "kernel k():\n")
    assert (tmp_path / "fresh.ir").read_text() == "kernel k():\n"
