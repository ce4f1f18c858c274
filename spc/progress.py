"""Progress of a long loop (``spc tune`` over a folder, the benchmark drivers): a
tqdm bar on stderr where tqdm is installed (``pip install 'spc-compiler[bench]'``),
else a plain line on stderr after each item with the time left.  Result lines go
to stdout either way, above the bar."""
from __future__ import annotations

import sys
import time


def eta(elapsed: float, done: int, total: int) -> str:
    """The time left of a loop over ``total`` items, ``done`` of them finished
    ``elapsed`` seconds after it began: "eta 3.2 min" (the mean time per item
    so far times the items left; "done" at the end, "eta ?" before the first)."""
    if done >= total:
        return "done"
    if done <= 0:
        return "eta ?"
    left = elapsed / done * (total - done)
    return f"eta {left:.0f} s" if left < 90 else f"eta {left / 60:.1f} min"


def _tqdm():
    """The ``tqdm.tqdm`` class, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """A loop over ``total`` items: ``write`` a result line, ``update`` when items finish.

    Requires: ``total`` >= 0.
    Ensures: with tqdm importable, a tqdm bar (``desc``, ``unit``) on stderr that
    ``write`` prints above (``tqdm.write``); else each ``update`` prints
    "desc: done/total, elapsed s, eta ..." on stderr.  ``close`` (or leaving the
    ``with`` block) ends the bar.
    """

    def __init__(self, total: int, *, desc: str = "", unit: str = "it"):
        self.total, self.desc, self.done = total, desc, 0
        self.started = time.perf_counter()
        tqdm = _tqdm()
        self.bar = (tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
                    if tqdm is not None else None)

    def write(self, line: str, *, err: bool = False) -> None:
        """Print ``line`` on stdout (stderr with ``err``) without breaking the bar."""
        stream = sys.stderr if err else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def update(self, n: int = 1) -> None:
        """``n`` more items are done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        elapsed = time.perf_counter() - self.started
        print(f"{self.desc + ': ' if self.desc else ''}{self.done}/{self.total}, "
              f"{elapsed:.0f} s, {eta(elapsed, self.done, self.total)}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
