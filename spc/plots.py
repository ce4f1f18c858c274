"""The optional figures of spc's reports (``spc tune``, the benchmarks): drawn with
matplotlib where it is installed (``pip install 'spc-compiler[bench]'``), and a
report names a figure only once it is on disk; else it says why there is none."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

NO_MATPLOTLIB = "matplotlib is not installed (pip install 'spc-compiler[bench]')"


def save_figure(path: Path, draw: Callable, *, figsize: tuple[float, float],
                dpi: int = 120) -> str | None:
    """Draw a figure and save it at ``path``; None when it was written, else why not.

    Requires: ``draw(fig)`` draws on a ``matplotlib.figure.Figure`` of ``figsize``
    (``fig.subplots`` ...); it need not save it.
    Ensures: a file at ``path`` only when the result is None: a file left there by
    an earlier run is removed first, and when matplotlib is missing or drawing or
    saving fails the result names the reason.  No pyplot: the figure never
    touches matplotlib's global backend or state.
    """
    path = Path(path)
    path.unlink(missing_ok=True)
    try:
        import matplotlib.figure           # a None entry for matplotlib in sys.modules hides it
    except ImportError:
        return NO_MATPLOTLIB
    try:
        fig = matplotlib.figure.Figure(figsize=figsize)
        draw(fig)
        fig.savefig(path, dpi=dpi)
    except Exception as err:  # noqa: BLE001 - the numbers matter more than the picture
        path.unlink(missing_ok=True)
        return f"drawing it failed ({type(err).__name__}: {err})"
    if not path.is_file():
        return "matplotlib wrote no file"
    return None


def plot_line(path: Path, why_not: str | None) -> str:
    """The report's line about the figure at ``path``: "Plot: `name`" when it was
    written (``why_not`` None), else "No plot: <reason>"."""
    return f"Plot: `{Path(path).name}`" if why_not is None else f"No plot: {why_not}"
