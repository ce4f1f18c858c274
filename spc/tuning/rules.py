"""The untuned default: a format-preserving schedule chosen from a matrix's
signature alone, by a few thresholds fitted on tuning results
(``default_rules.json`` beside this file; ``benchmarks/fit_default_rules.py``
refits them and says on which matrices).

Rules (CPU; other targets get ``Schedule()``):
* ``parallel=False`` when the call's work, nnz x N, is below
  ``serial_below_work`` (threads cost more than they share);
* ``split_rows=True`` (SpMM: with ``deterministic=False``) when the longest row
  holds ``split_from_skew`` times the mean or more (null: never).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from ..schedule import Schedule
from .signature import Signature

RULES_FILE = Path(__file__).with_name("default_rules.json")
RULES_VERSION = 1


@functools.lru_cache(maxsize=None)
def parameters(path: str = str(RULES_FILE)) -> dict:
    """The fitted thresholds (the file's "cpu" object)."""
    data = json.loads(Path(path).read_text())
    if data.get("version") != RULES_VERSION:
        raise ValueError(f"{path}: rules version {data.get('version')!r}, not {RULES_VERSION}")
    return data["cpu"]


def untuned_schedule(kernel: str, sig: Signature, n: int, target: str = "cpu",
                     params: dict | None = None) -> Schedule:
    """The schedule the rules pick for ``kernel`` on a matrix of signature ``sig`` and
    N = ``n``, keeping its format (csr-like knobs only).  Ensures: a legal schedule
    for csr; costs microseconds."""
    if target != "cpu":
        return Schedule()
    p = parameters() if params is None else params
    if sig.nnz * max(n, 1) < p["serial_below_work"]:
        return Schedule(parallel=False)
    skew = sig.row_max / sig.row_mean if sig.row_mean else 0.0
    if p.get("split_from_skew") is not None and skew >= p["split_from_skew"]:
        return Schedule(split_rows=True, deterministic=False if kernel == "spmm" else None)
    return Schedule()
