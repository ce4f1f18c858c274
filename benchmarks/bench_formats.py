"""CPU format benchmark: spc's storage formats (csr, bsr(r,c), ell, dia, nm(n,m),
hyb) side by side on the same matrices, with torch BSR/CSR (MKL), scipy CSR/BSR
and dense numpy/torch matmul as anchors; SpMV and SpMM (float32).

    cd /work/main && PYTHONPATH=. python benchmarks/bench_formats.py --quick
    PYTHONPATH=. python benchmarks/bench_formats.py --families block banded --n 128

Matrices: the corpus families (DLMC transformer, DLMC rn50, graphs), synthetic
banded matrices, block-sparse attention masks, and DLMC matrices magnitude-
pruned to N:M (``spc.prune.nm``).  Each matrix is converted once per format
(outside timing); every result is checked against a float64 scipy reference
before it is timed; each system runs in its own worker process
(``formats_workers.py``), as in ``bench_cpu.py``.  GFLOP/s count the logical
nonzeros (2 nnz N), never the padded storage.  A format whose storage would hold
more than --max-fill times the nonzeros is not built (its bytes are still
reported, from the exact formula).  Writes results.json and summary.md into
--out (default bench_out/formats/); see benchmarks/README.md.

This module also holds what the GPU script (``bench_formats_gpu.py``) shares:
the matrix set, the N:M pruning, the format estimates and the summary tables.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))     # this checkout's spc, as the workers'
sys.path.insert(0, str(HERE))
import common  # noqa: E402
from worker_protocol import start_workers  # noqa: E402

def CASE_FIELDS(case: dict) -> dict:
    """What identifies a case in a worker's answers."""
    return {"id": case["id"], "op": case["op"], "n": case["n"], "variant": case["variant"]}

SPC_FORMATS = ("csr", "bsr(1,4)", "bsr(4,4)", "bsr(16,16)", "bsr(32,32)", "ell", "dia",
               "nm(2,4)", "hyb")
SYSTEMS = ("spc", "scipy", "torch", "numpy")
CORPUS_FAMILIES = ("dlmc-transformer", "dlmc-rn50", "graph")
FAMILY_LABEL = {"dlmc-transformer": "DLMC transformer", "dlmc-rn50": "DLMC rn50",
                "graph": "graphs", "banded": "banded", "block": "block masks"}
FAMILY_ALIASES = {**common.FAMILY_ALIASES, "band": "banded", "banded": "banded",
                  "block": "block", "blocks": "block", "nm": "nm"}
BASELINE = "spc:csr"
NOT_FORMATS = {"spc:csr-scipy", "spc:csr-torch"}   # spc's csr kernel called on scipy/torch input


def family_label(f: str) -> str:
    if f.startswith("nm"):
        return f"N:M {f[2:]} (pruned DLMC)"
    return FAMILY_LABEL.get(f, f)


def family_order(f: str):
    fixed = list(CORPUS_FAMILIES) + ["banded", "block"]
    return (fixed.index(f), "") if f in fixed else (len(fixed), f)


# -- formats: names, estimates, storage -----------------------------------------------------------
def parse_format(fmt: str):
    """("bsr", (r, c)), ("nm", (n, m)), ("ell", ()), ... from a format name."""
    f = fmt.replace(" ", "").lower()
    m = re.fullmatch(r"([a-z]+)(?:\(([\d,]*)\))?", f)
    if not m:
        return f, ()
    args = tuple(int(a) for a in m.group(2).split(",")) if m.group(2) else ()
    return m.group(1), args


def hyb_width(lengths: np.ndarray) -> int:
    """spc's hyb ELL width (Bell & Garland: the largest w that at least a third
    of the rows reach); spc's own function when importable."""
    try:
        from spc.formats.composite import hyb_width as spc_hyb_width
        return int(spc_hyb_width(lengths))
    except ImportError:
        if len(lengths) == 0 or lengths.max() == 0:
            return 0
        at_least = np.cumsum(np.bincount(lengths)[::-1])[::-1]
        return int(np.nonzero(at_least >= max(1, len(lengths) // 3))[0].max())


def nm_group_max(A: sp.csr_matrix, m: int) -> int:
    """The most nonzeros any row holds in one group of m consecutive columns."""
    if A.nnz == 0:
        return 0
    rows = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr))
    keys = np.sort(rows * (-(-A.shape[1] // m)) + A.indices // m)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    return int(np.diff(starts).max())


def estimate(A: sp.csr_matrix, fmt: str) -> dict:
    """What ``spc.tensor(A, fmt)`` stores, without building it: ``slots`` (value
    slots, padding and explicit zeros included), ``bytes`` (values and int32
    index arrays), ``fill`` (slots / nnz), and ``fits`` False with ``why`` when
    A cannot be stored in fmt (an N:M pattern it does not have)."""
    M, K = A.shape
    nnz = max(A.nnz, 1)
    kind, args = parse_format(fmt)
    out = {"fits": True, "why": ""}
    lengths = np.diff(A.indptr)
    if kind == "csr":
        slots, nbytes = A.nnz, 8 * A.nnz + 4 * (M + 1)
    elif kind == "bsr":
        r, c = args
        rows = np.repeat(np.arange(M, dtype=np.int64), lengths)
        nblocks = len(np.unique(rows // r * (-(-K // c)) + A.indices // c)) if A.nnz else 0
        slots = nblocks * r * c
        # spc stores int64 indices when the product of the level sizes passes 2^31
        # (inner dense levels: positions are bounded by that product)
        levels = (-(-M // r)) * (-(-K // c)) * (r * c if r * c > 1 else 0)
        ib = 8 if levels > 2**31 - 1 else 4
        nbytes = 4 * slots + ib * nblocks + ib * (-(-M // r) + 1)
    elif kind == "ell":
        w = args[0] if args else int(lengths.max(initial=0))
        slots, nbytes = M * w, 8 * M * w
    elif kind == "dia":
        rows = np.repeat(np.arange(M, dtype=np.int64), lengths)
        ndiag = len(np.unique(A.indices.astype(np.int64) - rows)) if A.nnz else 0
        slots, nbytes = M * ndiag, 4 * M * ndiag + 4 * ndiag
    elif kind == "nm":
        n, m = args
        most = nm_group_max(A, m)
        if most > n:
            out.update(fits=False, why=f"not {n}:{m} (a group holds {most} nonzeros)")
        slots = M * (-(-K // m)) * n
        nbytes = 5 * slots                       # float32 values + int8 offsets
    elif kind == "hyb":
        w = args[0] if args else hyb_width(lengths)
        resid = int(np.maximum(lengths - w, 0).sum())
        slots = M * w + resid
        nbytes = 8 * M * w + 8 * resid + 4 * (M + 1)
    elif kind == "dense":
        slots, nbytes = M * K, 4 * M * K
    else:
        return {"fits": True, "why": "", "slots": None, "bytes": None, "fill": None}
    out.update(slots=int(slots), bytes=int(nbytes), fill=slots / nnz)
    return out


def guard(est: dict, max_fill: float, max_bytes: float) -> str | None:
    """Why a format is not built for a matrix (None: build it)."""
    if not est["fits"]:
        return est["why"]
    if est.get("fill") is not None and est["fill"] > max_fill:
        return f"fill {est['fill']:.1f}x > --max-fill {max_fill:g}"
    if est.get("bytes") is not None and est["bytes"] > max_bytes:
        return f"storage {est['bytes'] / 2**20:.0f} MiB > --max-storage-mb {max_bytes / 2**20:.0f}"
    return None


def hyb_status(target: str = "cpu", ops=("spmm", "spmv")) -> str | None:
    """None when spc compiles hyb kernels, else why not (hyb is being built)."""
    try:
        import spc
        for op in ops:
            spc.compile(op, fmt="hyb", target=target)
        return None
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"


# -- N:M pruning ------------------------------------------------------------------------------------
def prune_nm(A: sp.csr_matrix, n: int, m: int) -> tuple[sp.csr_matrix, str]:
    """A magnitude-pruned to N:M (the n largest |a| of every m consecutive
    columns of a row), via ``spc.prune.nm`` when it exists, else a local
    version; returns (matrix, which pruner)."""
    how = pruner()
    if how == "spc.prune.nm":
        from spc import prune as spc_prune
        P = spc_prune.nm(A, n, m)
    else:
        P = _prune_nm_local(A, n, m)
    P = sp.csr_matrix(P, dtype=np.float32)
    P.eliminate_zeros()
    P.sum_duplicates()
    P.sort_indices()
    P = sp.csr_matrix((P.data, P.indices.astype(np.int32), P.indptr.astype(np.int32)),
                      shape=P.shape)
    if nm_group_max(P, m) > n:
        raise RuntimeError(f"{how}({n},{m}) returned a matrix that is not {n}:{m}")
    return P, how


def pruner() -> str:
    try:
        from spc import prune as spc_prune
        spc_prune.nm                                    # noqa: B018
        return "spc.prune.nm"
    except (ImportError, AttributeError):
        return "local magnitude pruning"


def _prune_nm_local(A: sp.csr_matrix, n: int, m: int) -> sp.csr_matrix:
    C = A.tocoo()
    r, c, v = C.row.astype(np.int64), C.col.astype(np.int64), C.data
    grp = r * (-(-A.shape[1] // m)) + c // m
    order = np.lexsort((c, -np.abs(v), grp))
    grp = grp[order]
    start = np.ones(len(grp), dtype=bool)
    start[1:] = grp[1:] != grp[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(grp)), 0))
    keep = order[(np.arange(len(grp)) - first) < n]
    return sp.csr_matrix((v[keep], (r[keep], c[keep])), shape=A.shape)


# -- the matrix set -----------------------------------------------------------------------------------
@dataclass
class Mat:
    name: str
    family: str
    rows: int
    cols: int
    build: Callable[[], sp.csr_matrix]
    source: str = ""
    nnz: int | None = None          # known for corpus matrices before building


def _values(rng, k):
    v = rng.uniform(-1.0, 1.0, k).astype(np.float32)
    v[v == 0] = np.float32(0.5)
    return v


def banded(n: int, b: int) -> sp.csr_matrix:
    """n x n, every entry with |i - j| <= b, values uniform in [-1, 1)."""
    rng = np.random.default_rng(zlib.crc32(f"band{n}_{b}".encode()))
    offs = np.arange(-b, b + 1)
    rows = np.repeat(np.arange(n), len(offs))
    cols = rows + np.tile(offs, n)
    ok = (cols >= 0) & (cols < n)
    rows, cols = rows[ok], cols[ok]
    A = sp.csr_matrix((_values(rng, len(rows)), (rows, cols)), shape=(n, n))
    A.sort_indices()
    return A


def block_mask(n: int, bs: int, density: float) -> sp.csr_matrix:
    """Block-sparse attention mask: n x n in bs x bs blocks, the diagonal blocks
    (local attention) plus random others up to ``density`` of all blocks, every
    entry of a kept block nonzero (values uniform in [-1, 1))."""
    rng = np.random.default_rng(zlib.crc32(f"block{n}_{bs}_{density}".encode()))
    nb = n // bs
    want = max(nb, int(round(density * nb * nb)))
    keep = np.zeros((nb, nb), dtype=bool)
    keep[np.arange(nb), np.arange(nb)] = True
    off = np.flatnonzero(~keep.reshape(-1))
    keep.reshape(-1)[rng.choice(off, size=want - nb, replace=False)] = True
    bi, bj = np.nonzero(keep)
    ii, jj = np.meshgrid(np.arange(bs), np.arange(bs), indexing="ij")
    rows = (bi[:, None] * bs + ii.reshape(-1)[None, :]).reshape(-1)
    cols = (bj[:, None] * bs + jj.reshape(-1)[None, :]).reshape(-1)
    A = sp.csr_matrix((_values(rng, len(rows)), (rows, cols)), shape=(n, n))
    A.sort_indices()
    return A


def _corpus_loader(entry):
    return lambda: common.load(entry)


def _dense_weight(size: int) -> sp.csr_matrix:
    rng = np.random.default_rng(2048)
    return sp.csr_matrix(rng.standard_normal((size, size)).astype(np.float32))


def _nm_loader(entry, n, m):
    return lambda: prune_nm(common.load(entry), n, m)[0]


def normalize_family(f: str) -> str:
    f = f.lower()
    if re.fullmatch(r"nm\d+:\d+", f):
        return f
    return FAMILY_ALIASES.get(f, f)


def matrix_set(quick: bool, families=None, max_nnz=None, matrices=None, nm_patterns=None,
               per_family: int | None = None, data=common.DEFAULT_DATA) -> list[Mat]:
    """The benchmark's matrices.  ``families``: corpus families, ``banded``,
    ``block``, ``nm`` (every N:M pattern) or ``nm2:4``...; None: all.
    Quick: 2 corpus matrices per family (10% and 90% nnz quantiles), banded
    b = 8 and 64, block masks 16x16 at 10% and 32x32 at 30%, and 2:4 pruned
    versions of 2 DLMC matrices per DLMC family; full: every corpus matrix,
    banded b = 2, 8, 64, 256, block masks 16x16 and 32x32 at 10% and 30%, and
    2:4, 1:4, 2:8, 4:16 prunings of 4 DLMC matrices per DLMC family."""
    fams = None if not families else {normalize_family(f) for f in families}

    def want(f):
        return fams is None or f in fams or (f.startswith("nm") and "nm" in fams)

    out: list[Mat] = []
    try:
        es = common.entries(data, max_nnz=max_nnz)
    except OSError:
        es = []
    for fam in CORPUS_FAMILIES:
        if not want(fam):
            continue
        group = [e for e in es if e.family == fam]
        if quick or per_family:
            group = common.quick_pick(group, per_family or 2)
        out += [Mat(e.name, fam, e.rows, e.cols, _corpus_loader(e), "corpus", e.nnz)
                for e in group]
    if want("banded"):
        for b in ((8, 64) if quick else (2, 8, 64, 256)):
            out.append(Mat(f"band4096_b{b}", "banded", 4096, 4096,
                           (lambda b=b: banded(4096, b)), f"|i-j| <= {b}"))
    if want("block"):
        for bs, d in (((16, 0.1), (32, 0.3)) if quick else
                      ((16, 0.1), (16, 0.3), (32, 0.1), (32, 0.3))):
            out.append(Mat(f"blockattn4096_bs{bs}_d{int(d * 100)}", "block", 4096, 4096,
                           (lambda bs=bs, d=d: block_mask(4096, bs, d)),
                           f"{bs}x{bs} blocks, {d:.0%} of blocks"))
    patterns = nm_patterns or (["2:4"] if quick else ["2:4", "1:4", "2:8", "4:16"])
    src = [e for e in es if e.family in ("dlmc-transformer", "dlmc-rn50")
           and e.nnz >= 0.3 * e.rows * e.cols]          # the densest DLMC matrices (sparsity <= 0.7)
    src = common.quick_pick(src, 2 if quick else (per_family or 4))
    for pat in patterns:
        n, m = (int(x) for x in pat.split(":"))
        fam = f"nm{n}:{m}"
        if not want(fam):
            continue
        out += [Mat(f"{e.name}@{n}:{m}", fam, e.rows, e.cols, _nm_loader(e, n, m),
                    f"{e.name} pruned to {n}:{m}") for e in src]
        # the case N:M is made for: a dense layer pruned to exactly n of every m
        out.append(Mat(f"dense2048@{n}:{m}", fam, 2048, 2048,
                       (lambda n=n, m=m: prune_nm(_dense_weight(2048), n, m)[0]),
                       f"dense 2048x2048 normal weights pruned to {n}:{m}"))
    if matrices:
        out = [x for x in out if any(s in x.name for s in matrices)]
    if max_nnz is not None:
        out = [x for x in out if x.nnz is None or x.nnz <= max_nnz]
    return out


def formats_for(mat: Mat, formats) -> list[str]:
    """The spc formats to try on a matrix: the list, plus the nm format of an
    N:M family."""
    fs = list(formats)
    if mat.family.startswith("nm"):
        n, m = mat.family[2:].split(":")
        f = f"nm({n},{m})"
        if f not in fs:
            fs.append(f)
    return fs


# -- summaries (shared with the GPU script) -----------------------------------------------------------
def _fmt(x, digits=None):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if digits is not None:
        return f"{x:.{digits}f}"
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def label_order(labels, formats=SPC_FORMATS):
    """spc formats first (in format-list order), then the other systems."""
    def key(lb):
        sys_, _, var = lb.partition(":")
        rank = {"spc": 0, "scipy": 2, "torch": 1, "numpy": 3}.get(sys_, 4)
        kind, args = parse_format(var)
        fidx = list(formats).index(var) if var in formats else 50
        return (rank, fidx, kind, args, var)
    return sorted(set(labels), key=key)


def aggregate(records, key="gflops", baseline=BASELINE):
    """Per (op, n, label, family): median of ``key`` over matrices, and the
    geometric-mean speedup over ``baseline`` (per matrix, both timed)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get(key) == r.get(key)
          and r.get(key) is not None]
    groups = defaultdict(list)
    for r in ok:
        groups[(r["op"], r["n"], r["label"], r["family"])].append(r)
    by_mat = defaultdict(dict)
    for r in ok:
        by_mat[(r["op"], r["n"], r["family"], r["matrix"])][r["label"]] = r
    total = defaultdict(set)
    for r in records:
        total[(r["op"], r["n"], r["label"], r["family"])].add(r["matrix"])
    out = {}
    for (op, n, lb, fam), rs in groups.items():
        ratios = []
        for r in rs:
            base = by_mat[(op, n, fam, r["matrix"])].get(baseline)
            if base:
                ratios.append(r[key] / base[key])
        out[(op, n, lb, fam)] = {
            "median": statistics.median(r[key] for r in rs), "count": len(rs),
            "total": len(total[(op, n, lb, fam)]),
            "speedup": common.geomean(ratios) if ratios else math.nan,
            "wins": sum(1 for x in ratios if x > 1), "paired": len(ratios)}
    return out


def pair_speedups(records, pairs, key="gflops"):
    """{(op, n, fam, a, b): (geomean a/b, count)} over matrices where both ran;
    ``a`` may be "spc:best" (the fastest spc format on each matrix)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get(key) == r.get(key)]
    by_mat = defaultdict(dict)
    for r in ok:
        by_mat[(r["op"], r["n"], r["family"], r["matrix"])][r["label"]] = r[key]
    acc = defaultdict(list)
    for (op, n, fam, _m), d in by_mat.items():
        spc_vals = {lb: v for lb, v in d.items() if lb.startswith("spc:")
                    and lb not in NOT_FORMATS}
        if spc_vals:
            d = {**d, "spc:best": max(spc_vals.values())}
        for a, b in pairs:
            if a in d and b in d:
                acc[(op, n, fam, a, b)].append(d[a] / d[b])
    return {k: (common.geomean(v), len(v)) for k, v in acc.items()}


def best_format_counts(records, key="gflops"):
    """{(op, n, fam): {spc label: matrices where it is the fastest spc format}}."""
    by_mat = defaultdict(dict)
    for r in records:
        if r.get("status") == "ok" and r["label"].startswith("spc:") \
                and r["label"] not in NOT_FORMATS and r.get(key) == r.get(key):
            by_mat[(r["op"], r["n"], r["family"], r["matrix"])][r["label"]] = r[key]
    out = defaultdict(lambda: defaultdict(int))
    for (op, n, fam, _m), d in by_mat.items():
        out[(op, n, fam)][max(d, key=d.get)] += 1
    return out


def op_label(op, n):
    return "SpMV" if op == "spmv" else f"SpMM N={n}"


def tables(records, storage, op_ns, families, formats, key="gflops", margin=1.05,
           pairs=(), unit="GFLOP/s") -> list[str]:
    """The markdown tables of a run: GFLOP/s and speedups, the "beats spc CSR"
    table, head-to-head pairs, best formats, storage.  ``storage``: list of
    {matrix, family, nnz, rows, cols, formats: {fmt: {bytes, built, fill}}}."""
    agg = aggregate(records, key)
    fams = sorted(families, key=family_order)
    labels = label_order([r["label"] for r in records], formats)
    nmat = {f: len({s["matrix"] for s in storage if s["family"] == f}) for f in fams}
    lines = []
    head = " | ".join(f"{family_label(f)} ({nmat.get(f, 0)})" for f in fams)
    for op, n in op_ns:
        lines += [f"### {op_label(op, n)}: median {unit} · geomean speedup over spc csr "
                  f"[matrices timed / tried]", "",
                  f"| system:format | {head} |", "|---|" + "---|" * len(fams)]
        for lb in labels:
            cells, any_ = [], False
            for f in fams:
                a = agg.get((op, n, lb, f))
                if not a:
                    cells.append("–")
                    continue
                any_ = True
                sp_ = "" if lb == BASELINE or a["paired"] == 0 else f" · {a['speedup']:.2f}x"
                part = "" if a["count"] == a["total"] else f" [{a['count']}/{a['total']}]"
                cells.append(f"{_fmt(a['median'])}{sp_}{part}")
            if any_:
                lines.append(f"| {lb} | " + " | ".join(cells) + " |")
        lines.append("")
    # the verdict table
    lines += [f"### Format beats spc CSR on (geomean speedup over spc csr > {margin:g}; "
              f"[matrices where both ran / matrices of the family])", "",
              "| spc format | " + " | ".join(op_label(o, n) for o, n in op_ns) + " |",
              "|---|" + "---|" * len(op_ns)]
    spc_labels = [lb for lb in labels if lb.startswith("spc:") and lb != BASELINE
                  and lb not in NOT_FORMATS]
    verdict = {}
    for lb in spc_labels:
        cells = []
        for op, n in op_ns:
            wins = []
            for f in fams:
                a = agg.get((op, n, lb, f))
                if a and a["paired"] and a["speedup"] > margin:
                    wins.append(f"{family_label(f)} {a['speedup']:.2f}x "
                                f"[{a['paired']}/{nmat.get(f, a['total'])}]")
                    verdict.setdefault(lb, {}).setdefault(f, []).append(
                        (op_label(op, n), a["speedup"]))
            cells.append("; ".join(wins) if wins else "none")
        lines.append(f"| {lb[4:]} | " + " | ".join(cells) + " |")
    lines.append("")
    # head-to-head pairs
    if pairs:
        ps = pair_speedups(records, pairs, key)
        for op, n in op_ns:
            rows = []
            for a, b in pairs:
                cells = []
                for f in fams:
                    v = ps.get((op, n, f, a, b))
                    cells.append(f"{v[0]:.2f}x [{v[1]}]" if v else "–")
                if any(c != "–" for c in cells):
                    rows.append(f"| {a} / {b} | " + " | ".join(cells) + " |")
            if rows:
                lines += [f"### Head to head, {op_label(op, n)}: geomean of per-matrix "
                          f"{unit} ratios (>1: the first is faster) [matrices]", "",
                          f"| pair | {head} |", "|---|" + "---|" * len(fams)] + rows + [""]
    # best spc format per matrix
    best = best_format_counts(records, key)
    lines += ["### Fastest spc format per matrix (how many matrices each format wins)", "",
              "| op | " + " | ".join(family_label(f) for f in fams) + " |",
              "|---|" + "---|" * len(fams)]
    for op, n in op_ns:
        cells = []
        for f in fams:
            d = best.get((op, n, f), {})
            cells.append(", ".join(f"{k[4:]} {v}" for k, v in
                                   sorted(d.items(), key=lambda kv: -kv[1])) or "–")
        lines.append(f"| {op_label(op, n)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += storage_tables(storage, fams, formats)
    lines += closing_note(verdict, spc_labels, fams, agg, op_ns, margin, nmat, records)
    return lines


def storage_tables(storage, fams, formats) -> list[str]:
    if not storage:
        return []
    fmts = list(dict.fromkeys(f for s in storage for f in s["formats"]))
    fmts = [f for f in formats if f in fmts] + [f for f in fmts if f not in formats]
    lines = ["### Storage per format: median bytes / CSR bytes per family "
             "[formats built / matrices; the rest from the exact formula]", "",
             "| format | " + " | ".join(family_label(f) for f in fams) + " |",
             "|---|" + "---|" * len(fams)]
    for fmt in fmts:
        cells = []
        for f in fams:
            ss = [s for s in storage if s["family"] == f and fmt in s["formats"]
                  and s["formats"][fmt].get("bytes") is not None
                  and s["formats"][fmt].get("fits", True)]
            if not ss:
                cells.append("–")
                continue
            ratio = statistics.median(s["formats"][fmt]["bytes"] / s["formats"]["csr"]["bytes"]
                                      for s in ss if s["formats"].get("csr", {}).get("bytes"))
            built = sum(1 for s in ss if s["formats"][fmt].get("built"))
            cells.append(f"{ratio:.2f}x" + ("" if built == len(ss) else f" [{built}/{len(ss)}]"))
        lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
    lines += ["", "### Storage per matrix: KiB (CSR) and each format's bytes / CSR bytes "
              "(* not built: over the fill or size guard, bytes from the formula; "
              "n/a: the matrix is not N:M)", "",
              "| matrix | family | shape | nnz | csr KiB | " + " | ".join(
                  f for f in fmts if f != "csr") + " |",
              "|---|---|---|---|---|" + "---|" * (len(fmts) - 1)]
    for s in sorted(storage, key=lambda s: (family_order(s["family"]), s["nnz"])):
        csr_b = s["formats"]["csr"]["bytes"]
        cells = []
        for fmt in fmts:
            if fmt == "csr":
                continue
            d = s["formats"].get(fmt)
            if not d or d.get("bytes") is None:
                cells.append("n/a" if d and not d.get("fits", True) else "–")
                continue
            if not d.get("fits", True):
                cells.append("n/a")
                continue
            cells.append(f"{d['bytes'] / csr_b:.2f}" + ("" if d.get("built") else "*"))
        lines.append(f"| {s['matrix']} | {family_label(s['family'])} | {s['rows']}x{s['cols']} | "
                     f"{s['nnz']} | {csr_b / 1024:.0f} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _why(r) -> str:
    """A short reason for a record that was not timed."""
    msg = r.get("message", "")
    if r["status"] != "skip":
        return r["status"]
    for key, short in (("fill", "fill guard"), ("not ", "not N:M"), ("storage", "size guard"),
                       ("hyb", "hyb unavailable")):
        if msg.startswith(key) or (key == "hyb" and key in msg):
            return short
    return "skipped"


def closing_note(verdict, spc_labels, fams, agg, op_ns, margin, nmat, records) -> list[str]:
    lines = ["### Where each format beats CSR in spc", ""]
    for lb in spc_labels:
        v = verdict.get(lb, {})
        if v:
            parts = []
            for f in sorted(v, key=family_order):
                parts.append(f"{family_label(f)} (" + ", ".join(
                    f"{o} {s:.2f}x" for o, s in v[f]) + ")")
            text = "beats spc CSR on " + "; ".join(parts)
        else:
            text = "beats spc CSR on no family"
        never = []
        for f in fams:
            if any(agg.get((op, n, lb, f)) for op, n in op_ns):
                continue
            whys = {_why(r) for r in records if r["label"] == lb and r["family"] == f
                    and r["status"] != "ok"}
            never.append(f"{family_label(f)} ({', '.join(sorted(whys)) or 'not run'})")
        if never:
            text += f"; not timed on {'; '.join(never)}"
        lines.append(f"- **{lb[4:]}**: {text}.")
    lines.append("")
    return lines


# -- workers --------------------------------------------------------------------------------------------
# -- one matrix ------------------------------------------------------------------------------------------
def plan_matrix(mat: Mat, A, formats, systems, args, hyb_note):
    """(variants per system, guard records, storage entry) for one matrix."""
    ests = {f: estimate(A, f) for f in formats}
    ests["dense"] = estimate(A, "dense")
    max_bytes = args.max_storage_mb * 2**20
    plan = {s: [] for s in systems}
    skipped = []
    storage = {"matrix": mat.name, "family": mat.family, "rows": A.shape[0],
               "cols": A.shape[1], "nnz": A.nnz, "formats": {}}
    for f in formats:
        e = ests[f]
        why = guard(e, args.max_fill, max_bytes)
        if f.startswith("hyb") and hyb_note:
            why = f"hyb not available in this spc ({hyb_note})"
        storage["formats"][f] = {"bytes": e["bytes"], "fill": e["fill"], "fits": e["fits"],
                                 "built": False, "estimated_bytes": e["bytes"]}
        for s in systems:
            supports = (s == "spc" or (s in ("scipy", "torch") and
                                       (f == "csr" or f.startswith("bsr("))))
            if not supports:
                continue
            if why and f != "csr":
                skipped.append((s, f, why))
            else:
                plan[s].append(f)
    if "spc" in systems and args.scipy_path:
        plan["spc"].insert(1, "csr-scipy")
    for s in ("torch", "numpy"):
        if s in systems:
            plan[s].append("dense")
    storage["formats"]["dense"] = {"bytes": ests["dense"]["bytes"], "fill": ests["dense"]["fill"],
                                   "fits": True, "built": True,
                                   "estimated_bytes": ests["dense"]["bytes"]}
    return plan, skipped, storage


def prepare_inputs(mat: Mat, A, ops, ns, scratch: Path):
    npz, cases = common.write_cases(mat.name, A, ops, ns, scratch)
    return str(npz), cases


# -- main --------------------------------------------------------------------------------------------------
PAIRS = (("spc:bsr(4,4)", "torch:bsr(4,4)"), ("spc:bsr(16,16)", "torch:bsr(16,16)"),
         ("spc:bsr(32,32)", "torch:bsr(32,32)"), ("spc:bsr(1,4)", "scipy:bsr(1,4)"),
         ("spc:bsr(4,4)", "scipy:bsr(4,4)"), ("spc:bsr(16,16)", "scipy:bsr(16,16)"),
         ("spc:csr", "torch:csr"), ("spc:csr", "scipy:csr"), ("spc:best", "spc:csr"),
         ("spc:best", "torch:dense"), ("spc:best", "numpy:dense"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="2 corpus matrices per family, 2 banded, 2 block masks, 4 N:M 2:4 "
                         "(~4-5 min on 2 cores)")
    ap.add_argument("--families", nargs="+", default=None,
                    help="dlmc-transformer (transformer), dlmc-rn50 (rn50), graph, banded, "
                         "block, nm (all N:M) or nm2:4 ...")
    ap.add_argument("--per-family", type=int, default=None,
                    help="corpus matrices per family (quantiles of nnz); default 2 with "
                         "--quick, all otherwise")
    ap.add_argument("--nm-patterns", nargs="+", default=None,
                    help="N:M prunings of DLMC matrices (default 2:4 with --quick, else "
                         "2:4 1:4 2:8 4:16)")
    ap.add_argument("--matrices", nargs="+", default=None, help="names containing a substring")
    ap.add_argument("--max-nnz", type=int, default=None)
    ap.add_argument("--formats", nargs="+", default=list(SPC_FORMATS),
                    help="spc formats (csr is always included)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--ops", nargs="+", default=["spmv", "spmm"], choices=("spmv", "spmm"))
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every system (SPC_NUM_THREADS, OMP/OPENBLAS/MKL_NUM_THREADS "
                         "in the workers); default: each library's default (all cores)")
    ap.add_argument("--n", type=int, nargs="+", default=[32, 128], help="SpMM widths")
    ap.add_argument("--no-scipy-path", dest="scipy_path", action="store_false",
                    help="do not also time spc csr called on the scipy matrix (spc's fast "
                         "path; label spc:csr-scipy)")
    ap.add_argument("--max-fill", type=float, default=4.0,
                    help="do not build a format storing more than this many slots per nonzero")
    ap.add_argument("--max-storage-mb", type=float, default=1024.0,
                    help="do not build a format storing more than this many MiB")
    ap.add_argument("--margin", type=float, default=1.05,
                    help="a format 'beats' CSR on a family when its geomean speedup exceeds this")
    ap.add_argument("--out", type=Path, default=common.REPO / "bench_out" / "formats")
    ap.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of timed calls per case (default 0.05 with --quick, else 0.2)")
    ap.add_argument("--min-repeats", type=int, default=None,
                    help="default 3 with --quick, else 5")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--max-external-load", type=float, default=0.15)
    ap.add_argument("--retries", type=int, default=None, help="default 1 with --quick, else 2")
    ap.add_argument("--retry-budget", type=float, default=None,
                    help="seconds for all retries, shared by the systems (default 60 with "
                         "--quick, else 120)")
    ap.add_argument("--resummarize", type=Path, default=None, metavar="RESULTS_JSON")
    args = ap.parse_args(argv)
    for name, quick, full in (("min_time", 0.05, 0.2), ("min_repeats", 3, 5), ("retries", 1, 2),
                              ("retry_budget", 60.0, 120.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.formats = list(dict.fromkeys(["csr"] + [f.replace(" ", "").lower() for f in args.formats]))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.resummarize:
        data = json.loads(args.resummarize.read_text())
        write_report(data["records"], data["storage"], data["meta"], args.out)
        return
    import bench_cpu                       # quiesce, machine info (no torch import)
    t_start = time.time()
    common.machine_load()          # starts psutil's CPU-use count for the run's record
    spc_hash = common.spc_tree_hash()
    mats = matrix_set(args.quick, args.families, args.max_nnz, args.matrices, args.nm_patterns,
                      args.per_family, args.data)
    if not mats:
        sys.exit("no matrices selected")
    hyb_note = hyb_status() if any(f.startswith("hyb") for f in args.formats) else None
    systems = list(dict.fromkeys(args.systems))
    ns = sorted(set(args.n))
    op_ns = [(op, n) for op in ("spmv", "spmm") if op in args.ops
             for n in ([1] if op == "spmv" else ns)]
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("worker_*.log"):
        old.unlink()
    fams = sorted({m.family for m in mats}, key=family_order)
    print(f"{len(mats)} matrices ({', '.join(f'{family_label(f)} {sum(m.family == f for m in mats)}' for f in fams)}); "
          f"spc formats {args.formats}; systems {systems}; {[op_label(*x) for x in op_ns]}"
          + (f"\nhyb skipped: {hyb_note}" if hyb_note else ""), flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(common.REPO)] + [p for p in
                                         env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONWARNINGS", "ignore")
    if args.threads:
        for var in ("SPC_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="spc_fmt_", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                    else None))
    workers, records, storage = {}, [], []
    retry_used = defaultdict(float)
    retry_budget = args.retry_budget / max(1, len(systems))
    prune_how = set()
    bar = common.progress(len(mats), desc="bench_formats")
    try:
        start_workers(systems, args.out, env, HERE / "formats_workers.py", CASE_FIELDS, common.REPO,
                      workers)
        for mi, mat in enumerate(mats):
            t0 = time.perf_counter()
            A = mat.build()
            if mat.family.startswith("nm"):
                prune_how.add(pruner())
            formats = formats_for(mat, args.formats)
            plan, skipped, st = plan_matrix(mat, A, formats, systems, args, hyb_note)
            npz, base_cases = prepare_inputs(mat, A, args.ops, ns, scratch)
            t_prep = time.perf_counter() - t0
            meta_common = {"matrix": mat.name, "family": mat.family, "rows": A.shape[0],
                           "cols": A.shape[1], "nnz": A.nnz}
            for s, f, why in skipped:
                for c in base_cases:
                    records.append({**meta_common, "op": c["op"], "n": c["n"], "system": s,
                                    "variant": f, "label": f"{s}:{f}", "status": "skip",
                                    "message": why, "guard": True})
            order = systems[mi % len(systems):] + systems[:mi % len(systems)]
            sys_time = {}
            for s in order:
                if not plan[s]:
                    continue
                cases = [{**c, "variant": v, "id": f"{c['op']}|{c['n']}|{v}"}
                         for v in plan[s] for c in base_cases]
                req = {"matrix": mat.name, "npz": npz, "cases": cases,
                       "min_time": args.min_time, "min_repeats": args.min_repeats,
                       "max_external_load": args.max_external_load, "retries": args.retries,
                       "retry_budget_s": max(0.0, retry_budget - retry_used[s])}
                bench_cpu.quiesce([os.getpid()] + [w.proc.pid for w in workers.values()])
                t_sys = time.perf_counter()
                results = workers[s].run(req, args.timeout)
                sys_time[s] = time.perf_counter() - t_sys
                retry_used[s] += sum(r.get("retry_s", 0.0) for r in results)
                for r in results:
                    flops = next(c["flops"] for c in base_cases
                                 if (c["op"], c["n"]) == (r["op"], r["n"]))
                    r.update(meta_common, label=f"{s}:{r['variant']}", flops=flops)
                    if r["status"] != "error":
                        r.pop("traceback", None)
                    records.append(r)
                    if (s == "spc" and r.get("storage_bytes") is not None
                            and r["label"] not in NOT_FORMATS):
                        d = st["formats"].setdefault(r["variant"], {})
                        d.update(bytes=r["storage_bytes"], built=True,
                                 fill=r.get("stored", 0) / max(1, A.nnz),
                                 convert_s=r.get("convert_s"))
            storage.append(st)
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True, exist_ok=True)
            mine = [r for r in records if r["matrix"] == mat.name and r["status"] == "ok"]
            best = {}
            for op, n in op_ns:
                rs = [r for r in mine if (r["op"], r["n"]) == (op, n)]
                if rs:
                    b = max(rs, key=lambda r: r["gflops"])
                    base = next((r for r in rs if r["label"] == BASELINE), None)
                    best[op_label(op, n)] = (f"{b['label']} {_fmt(b['gflops'])}"
                                             + (f" (csr {_fmt(base['gflops'])})" if base else ""))
            bar.write(f"[{mi + 1}/{len(mats)}] {family_label(mat.family)} {mat.name} "
                      f"{A.shape[0]}x{A.shape[1]} nnz={A.nnz} ({time.perf_counter() - t0:.1f} s: "
                      f"prep {t_prep:.1f}, " + ", ".join(f"{s} {v:.1f}" for s, v in sys_time.items())
                      + ") best: " + "; ".join(f"{k}: {v}" for k, v in best.items()))
            for r in records:
                if r["matrix"] == mat.name and r["status"] in ("fail", "error"):
                    bar.write(f"    {r['label']} {op_label(r['op'], r['n'])}: {r['status']}: "
                              f"{r.get('message', '')[:300]}")
            bar.update()
    finally:
        bar.close()
        for w in workers.values():
            w.close()
        shutil.rmtree(scratch, ignore_errors=True)
    ok = [r for r in records if r["status"] == "ok"]
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": bench_cpu.machine_info(), "git": bench_cpu.git_rev(),
        "spc_sources": spc_hash if common.spc_tree_hash() == spc_hash
        else f"{spc_hash} (changed to {common.spc_tree_hash()} during the run)",
        "matrices": len(mats), "families": fams,
        "per_family": {f: sum(m.family == f for m in mats) for f in fams},
        "systems": {s: {"info": w.info, "restarts": w.restarts} for s, w in workers.items()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "op_ns": op_ns, "hyb": hyb_note or "available", "pruning": sorted(prune_how),
        "wall_s": time.time() - t_start, "machine_load": common.machine_load(),
        "timed_cases": len(ok),
        "noisy_cases": sum(1 for r in ok if r.get("external_load", 0) >= args.max_external_load),
        "retry_s": dict(retry_used),
    }
    write_report(records, storage, meta, args.out)


def write_report(records, storage, meta, out: Path):
    args = meta["args"]
    op_ns = [tuple(x) for x in meta["op_ns"]]
    lines = [f"# spc format benchmark (CPU), {meta['date']}", "",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; float32; "
             f"{meta['matrices']} matrices ("
             + ", ".join(f"{family_label(f)} {c}" for f, c in meta["per_family"].items())
             + f"); threads: {args.get('threads') or 'each library default'}; spc at git "
             f"{meta['git']}, sources {meta['spc_sources']}; hyb: {meta['hyb']}"
             + (f"; N:M pruning: {', '.join(meta['pruning'])}" if meta.get("pruning") else "")
             + ".", "",
             "GFLOP/s = 2 nnz N / median time, nnz = the matrix's nonzeros (not the padded "
             "storage). spc formats are called on tensors converted once (`spc.tensor(A, fmt)`), "
             "first call checked with validation, timed calls with `validate=False`; torch/scipy "
             "on their own BSR/CSR built once; dense = `A.toarray()` @ B (numpy: OpenBLAS, torch: "
             "`torch.mm`). Formats whose storage would exceed "
             f"{args['max_fill']:g}x the nonzeros are not built (see storage tables).", ""]
    lines += tables(records, storage, op_ns, meta["families"], args["formats"],
                    margin=args["margin"], pairs=PAIRS)
    bad = defaultdict(lambda: defaultdict(set))
    for r in records:
        if r["status"] in ("fail", "error") or (r["status"] == "skip" and not r.get("guard")):
            bad[(r["label"], r["status"])][r.get("message", "")[:200]].add(r["matrix"])
    if bad:
        lines += ["### Not timed (besides the storage guard)", ""]
        for (lb, st), msgs in sorted(bad.items()):
            for msg, ms in msgs.items():
                lines.append(f"- {lb}: {st} on {len(ms)} matrices ({', '.join(sorted(ms)[:3])}"
                             f"{', ...' if len(ms) > 3 else ''}): {msg}")
        lines.append("")
    if meta.get("noisy_cases"):
        lines += [f"Note: {meta['noisy_cases']} of {meta['timed_cases']} timed cases ran while "
                  f"other processes used more than {args['max_external_load']} cores even after "
                  f"retries (records carry `external_load`); treat them as pessimistic.", ""]
    lines += [f"Timing: median of call-by-call wall time after warm-up, >= {args['min_repeats']} "
              f"repeats and >= {args['min_time']} s per case; each system in its own process; "
              f"results checked against float64 scipy (max rel. error < {common.REL_TOL:g}) "
              f"before timing. Total wall time {meta['wall_s'] / 60:.1f} min.", ""]
    write_outputs(out, lines, meta, storage, records)


def write_outputs(out: Path, lines: list[str], meta, storage, records) -> None:
    """results.json and summary.md into ``out``; the summary printed too."""
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "storage": storage, "records": records}, indent=1, default=str))
    (out / "summary.md").write_text(text)
    print()
    print(text)
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'}")


if __name__ == "__main__":
    main()
