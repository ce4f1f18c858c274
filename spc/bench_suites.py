"""The benchmark suites ``spc bench`` runs: the scripts in a source checkout's
``benchmarks/`` folder, each by a short name (``bench_cpu.py`` is ``cpu``).

The scripts compare spc with the anchors (scipy, torch, numba, cuSPARSE...)
and need a checkout (and the matrices of ``../shared/data`` or ``--data``); an
installed wheel has no ``benchmarks/`` folder, and ``spc bench`` says so.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PREFIX = "bench_"


def benchmarks_dir(start: Path | None = None) -> Path | None:
    """The ``benchmarks/`` folder of the source checkout spc is imported from
    (or of ``start``), or None where there is none (an installed wheel)."""
    root = Path(start) if start is not None else Path(__file__).resolve().parent.parent
    folder = root / "benchmarks"
    return folder if (folder / "common.py").is_file() else None


def suites(folder: Path) -> dict[str, Path]:
    """Short name -> script, for every ``bench_*.py`` in ``folder`` (sorted)."""
    return {p.stem[len(PREFIX):].replace("_", "-"): p
            for p in sorted(folder.glob(f"{PREFIX}*.py"))}


def summary(script: Path, width: int = 90) -> str:
    """The first sentence of ``script``'s module docstring, at most ``width``
    characters ('' where it has none)."""
    try:
        doc = ast.get_docstring(ast.parse(script.read_text()))
    except (OSError, SyntaxError):
        return ""
    first = " ".join((doc or "").strip().split("\n\n")[0].split())
    first = first.split(". ")[0].split(": ")[0]
    return first if len(first) <= width else first[:width - 3].rstrip() + "..."


def run(script: Path, args: list[str]) -> int:
    """Run ``script`` with ``args`` in this Python, the checkout on its path; its
    exit status."""
    env = dict(os.environ)
    root = str(script.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call([sys.executable, str(script), *args], cwd=root, env=env)
