"""``spc tune``: tune a kernel over matrix files, record the database, write a report.

Files: .smtx, .mtx (each optionally .gz; values drawn as ``spc.corpus.load``
draws them) and .npz (``scipy.sparse.save_npz``).  A folder stands for the
matrix files under it.  A file that is missing or does not parse is reported
and skipped; the others are still tuned.
"""
from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

SUFFIXES = (".smtx", ".smtx.gz", ".mtx", ".mtx.gz", ".npz")


@dataclass
class Row:
    """One (matrix, N) tuned: the choice and the times (seconds per call)."""
    matrix: str
    n: int
    rows: int
    cols: int
    nnz: int
    fmt: str
    schedule: str
    tuned_s: float
    default_s: float
    scipy_s: float
    speedup: float
    wall_s: float
    tried: int


def matrix_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files of ``paths`` in order, folders expanded (sorted) to their matrix files;
    a path that does not exist is kept, so the sweep reports it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES))
        else:
            out.append(p)
    return out


def load_matrix(path: Path):
    """The float32 csr matrix in ``path``; ValueError naming the file and the problem."""
    import scipy.sparse as sp
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if not path.name.endswith(SUFFIXES):
        raise ValueError(f"{path}: not a matrix file (expected one of {', '.join(SUFFIXES)})")
    try:
        if path.name.endswith(".npz"):
            A = sp.load_npz(path).tocsr().astype(np.float32)
            A.sum_duplicates()
            return A
        from .. import corpus
        return corpus.load(path)
    except ValueError as err:
        raise ValueError(str(err) if str(path) in str(err) else f"{path}: {err}") from None
    except Exception as err:                  # noqa: BLE001 - gzip, zip, parse errors
        raise ValueError(f"{path}: cannot read it as a matrix ({type(err).__name__}: "
                         f"{err})") from None


def operands(kernel: str, A, n: int, seed: int = 0) -> tuple:
    """Dense operands of ``kernel`` for ``A`` with N = ``n`` (fixed-seed normal values)."""
    rng = np.random.default_rng(seed)
    m, k = A.shape
    if kernel == "spmv":
        return (rng.standard_normal(k).astype(np.float32),)
    if kernel == "spmm":
        return (rng.standard_normal((k, n)).astype(np.float32),)
    return (rng.standard_normal((m, n)).astype(np.float32),
            rng.standard_normal((k, n)).astype(np.float32))


def scipy_time(kernel: str, A, dense: tuple) -> float:
    """Median seconds of scipy's (numpy's, for SDDMM: the sampled dot products) call."""
    from .timing import time_call
    if kernel in ("spmv", "spmm"):
        fn = lambda B: A @ B            # noqa: E731
        args = [dense[:1]]
    else:
        rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        fn = lambda X, Y: A.data * np.einsum("ij,ij->i", X[rows], Y[A.indices])  # noqa: E731
        args = [dense]
    first = time_call(fn, args, repeats=1).median
    return time_call(fn, args, repeats=max(3, min(50, math.ceil(0.05 / max(first, 1e-7))))).median


def sweep(files: list[Path], kernel: str, ns: list[int], *, target: str = "cpu",
          budget_s: float = 10.0, calls: int = 100, out: Path | None = None,
          space: str = "rules",
          say: Callable[[str], None] = print, warn: Callable[[str], None] = print,
          advance: Callable[[int], None] = lambda n: None) -> tuple[list[Row], list[str]]:
    """Tune ``kernel`` for every file and N; returns (rows, problems).  Writes the
    database (through ``spc.tune``) and, with ``out``, ``report.md``, ``report.csv``,
    ``trials.csv`` and, when matplotlib is importable, ``speedup.png``.  ``say``
    gets a line per result, ``warn`` one per problem, ``advance(k)`` the number of
    (file, N) cases each step finished (``spc.progress.Progress.update``)."""
    import spc
    rows: list[Row] = []
    problems: list[str] = []
    trials: list[dict] = []
    total = len(files) * len(ns)
    done = 0
    label = _labels(files)
    for path in files:
        try:
            A = load_matrix(path)
        except ValueError as err:
            problems.append(str(err))
            warn(f"spc tune: skipped {err}")
            done += len(ns)
            advance(len(ns))
            continue
        for n in ns:
            done += 1
            dense = operands(kernel, A, n)
            t0 = time.perf_counter()
            try:
                tuned = spc.tune(kernel, A, *dense, target=target, budget_s=budget_s, calls=calls,
                                 space=space)
            except spc.SpcError as err:
                problems.append(f"{path} N={n}: {err}")
                warn(f"spc tune: {path} N={n} failed: {err}")
                advance(1)
                continue
            wall = time.perf_counter() - t0
            rep = tuned.report
            chosen, default = rep.chosen, rep.default
            row = Row(label[path], n, A.shape[0], A.shape[1], A.nnz, chosen.candidate.fmt,
                      _knobs(chosen.candidate.schedule), chosen.amortized, default.amortized,
                      scipy_time(kernel, A, dense), chosen.speedup or 1.0, wall,
                      sum(t.status in ("chosen", "ok", "rejected") for t in rep.trials))
            rows.append(row)
            trials += [dict(matrix=label[path], n=n, **t) for t in rep.rows()]
            say(f"[{done}/{total}] {label[path]} N={n}: {row.fmt} [{row.schedule}] "
                f"{row.tuned_s * 1e6:.1f} us, {row.speedup:.2f}x default, "
                f"{row.scipy_s / row.tuned_s:.2f}x scipy ({wall:.1f} s, {row.tried} tried)")
            advance(1)
    if out is not None:
        write_report(out, kernel, target, rows, trials, problems)
    return rows, problems


def _labels(files: list[Path]) -> dict[Path, str]:
    """Each file's path below the folder all of them share (its name when alone), so
    files of one name in different folders (DLMC layers) stay apart in the report."""
    import os
    parents = [str(f.resolve().parent) for f in files]
    try:
        base = Path(os.path.commonpath(parents)) if parents else None
    except ValueError:
        base = None
    out = {}
    for f in files:
        try:
            out[f] = f.resolve().relative_to(base).as_posix() if base else f.name
        except ValueError:
            out[f] = f.name
    return out


def _knobs(schedule) -> str:
    shown = {k: v for k, v in schedule.knobs().items() if k != "order"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "default"


def geomean(xs: list[float]) -> float:
    """``statistics.geometric_mean`` of ``xs`` (positive numbers); NaN when empty."""
    return statistics.geometric_mean(xs) if xs else float("nan")


def write_report(out: Path, kernel: str, target: str, rows: list[Row], trials: list[dict],
                 problems: list[str]) -> list[Path]:
    """``report.md`` (a table and geometric means), ``report.csv``, ``trials.csv`` and,
    with matplotlib, ``speedup.png`` under ``out``; returns the files written.
    report.md names ``speedup.png`` only when it was written, else says why not."""
    from ..plots import plot_line
    from .device import device_key
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.csv"]
    fields = list(Row.__dataclass_fields__)
    with open(out / "report.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r.__dict__)
    if trials:
        with open(out / "trials.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(trials[0]))
            w.writeheader()
            w.writerows(trials)
        written.append(out / "trials.csv")
    figure = out / "speedup.png"
    why_not = _plot(figure, kernel, rows)
    lines = [f"# spc tune {kernel} on {target} ({device_key(target)}), "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| matrix | N | rows x cols | nnz | format | schedule | tuned us | default us "
             "| scipy us | vs default | vs scipy | tune s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.matrix} | {r.n} | {r.rows}x{r.cols} | {r.nnz} | {r.fmt} | "
                     f"{r.schedule} | {r.tuned_s * 1e6:.1f} | {r.default_s * 1e6:.1f} | "
                     f"{r.scipy_s * 1e6:.1f} | {r.speedup:.2f} | {r.scipy_s / r.tuned_s:.2f} | "
                     f"{r.wall_s:.1f} |")
    lines += ["", f"Geometric means over {len(rows)} cases: tuned vs default "
                  f"{geomean([r.speedup for r in rows]):.2f}x, tuned vs scipy "
                  f"{geomean([r.scipy_s / r.tuned_s for r in rows]):.2f}x."]
    if problems:
        lines += ["", "Skipped:", *[f"- {p}" for p in problems]]
    lines += ["", plot_line(figure, why_not)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return written + ([figure] if why_not is None else []) + [out / "report.md"]


def _plot(path: Path, kernel: str, rows: list[Row]) -> str | None:
    """Bars of the tuned kernel's speedups per case, saved at ``path``; None when
    written, else why not (``spc.plots.save_figure``)."""
    from ..plots import save_figure
    if not rows:
        path.unlink(missing_ok=True)
        return "no case was tuned"

    def draw(fig):
        ax = fig.subplots()
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r.speedup for r in rows], 0.4, label="vs spc default")
        ax.bar(x + 0.2, [r.scipy_s / r.tuned_s for r in rows], 0.4, label="vs scipy")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{r.matrix[:18]} N={r.n}\n{r.fmt}" for r in rows], rotation=75,
                           ha="right", fontsize=6)
        ax.set_ylabel("speedup of the tuned kernel")
        ax.set_title(f"spc tune: {kernel}")
        ax.legend(fontsize=7)
        fig.tight_layout()

    return save_figure(path, draw, figsize=(max(6.0, 0.4 * len(rows)), 3.6))
