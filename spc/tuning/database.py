"""The tuning database: the best format and schedule found per device, kernel,
value type, N and matrix signature, one JSON file per entry under
``config.cache_dir() / "tune"``.

Layout: ``tune/<device key>/<kernel>-<dtype>/<signature key>-n<N>.json``.  A
write goes to a temporary file in the same folder and is renamed over the
entry (``os.replace``, atomic), so concurrent tuners never leave a torn file
and, writing different entries, lose nothing; two writing the same entry
leave one of them whole.  An entry that does not parse, or was written by
another ``VERSION`` of this layout, is ignored with a CacheWarning (and the
next tuning of that matrix replaces it).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..errors import CacheWarning, SpcError
from ..schedule import Schedule
from .device import device_key
from .signature import Signature

VERSION = 1
N_WEIGHT = 2.0          # distance added per factor e of N between signatures


@dataclass(frozen=True)
class Entry:
    """One recorded tuning: ``fmt`` and ``schedule`` were best for a matrix of
    ``signature`` at N = ``n``, ``speedup`` times the default."""
    signature: Signature
    n: int
    fmt: str
    schedule: Schedule
    time_s: float
    speedup: float

    def distance(self, sig: Signature, n: int) -> float:
        import math
        return sig.distance(self.signature) + N_WEIGHT * abs(math.log(max(n, 1) / max(self.n, 1)))


class Database:
    """Tuning entries under ``root`` (default: the cache directory's ``tune``)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @classmethod
    def default(cls) -> "Database":
        return cls(config.cache_dir() / "tune")

    def folder(self, kernel: str, dtype: str, target: str = "cpu") -> Path:
        return self.root / device_key(target) / f"{kernel}-{dtype}"

    def record(self, report, target: str = "cpu") -> Path:
        """Write the chosen trial of ``report`` (a TuneReport) as its entry; returns the path."""
        chosen = report.chosen
        entry = {
            "version": VERSION, "device": device_key(target), "kernel": report.kernel,
            "dtype": report.dtype, "n": report.n, "signature": report.signature.to_json(),
            "fmt": chosen.candidate.fmt, "schedule": _schedule_json(chosen.candidate.schedule),
            "time_s": chosen.amortized, "speedup": chosen.speedup or 1.0,
            "calls": report.calls, "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        folder = self.folder(report.kernel, report.dtype, target)
        return write_atomic(folder / f"{report.signature.key()}-n{report.n}.json", entry)

    def entries(self, kernel: str, dtype: str, target: str = "cpu") -> list[Entry]:
        """Every readable entry of ``kernel`` and ``dtype`` on this device; the others
        are skipped with a CacheWarning naming the file and the problem."""
        folder = self.folder(kernel, dtype, target)
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            entry = read_entry(path)
            if entry is not None:
                out.append(entry)
        return out

    def lookup(self, kernel: str, dtype: str, sig: Signature, n: int, target: str = "cpu",
               fmt: str | None = None) -> tuple[Entry, bool] | None:
        """The entry for ``sig`` and ``n`` (exact: True), else the nearest one by
        signature distance and N (False); None when there is none (of format
        ``fmt``, when given)."""
        entries = [e for e in self.entries(kernel, dtype, target) if fmt is None or e.fmt == fmt]
        if not entries:
            return None
        for e in entries:
            if e.n == n and e.signature == sig:
                return e, True
        return min(entries, key=lambda e: e.distance(sig, n)), False


def read_entry(path: Path) -> Entry | None:
    """The Entry in ``path``, or None with a CacheWarning when it is corrupt or of
    another version."""
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict) or d.get("version") != VERSION:
            found = d.get("version") if isinstance(d, dict) else None
            warnings.warn(f"spc tuning database: {path} has version {found!r}, not {VERSION}; "
                          f"ignored (it will be tuned again)", CacheWarning, stacklevel=3)
            return None
        return Entry(Signature.from_json(d["signature"]), int(d["n"]), str(d["fmt"]),
                     _schedule_from_json(d["schedule"]), float(d["time_s"]),
                     float(d["speedup"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SpcError) as err:
        warnings.warn(f"spc tuning database: {path} is corrupt ({type(err).__name__}: {err}); "
                      f"ignored (it will be tuned again)", CacheWarning, stacklevel=3)
        return None


def write_atomic(path: Path, data: dict) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _schedule_json(s: Schedule) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in s.knobs().items()}


def _schedule_from_json(d: dict) -> Schedule:
    if not isinstance(d, dict):
        raise TypeError(f"schedule is a {type(d).__name__}, not an object")
    return Schedule(**{k: tuple(v) if k == "order" else v for k, v in d.items()})
