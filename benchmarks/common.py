"""Shared pieces of the CPU benchmarks: the corpus, the cases, their inputs and
float64 references, FLOP and byte counts, the correctness check, the timers of
every benchmark (CPU and GPU: ``call_times``, ``burst_times``, ``cuda_event_times``,
and ``gpu_kernel_time``: triton's ``do_bench`` where triton is importable), the
machine's load (psutil where installed) and the geometric mean.

Nothing here imports torch or numba (the GPU timer takes torch as an argument), so the driver (``bench_cpu.py``) and every
per-system worker (``systems_cpu.py``) can import it without pulling in an
OpenMP runtime they do not measure.
"""
from __future__ import annotations

import gzip
import inspect
import math
import os
import statistics
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("SPC_DATA_DIR", REPO.parent / "shared" / "data"))

OPS = ("spmv", "spmm", "sddmm")
FAMILIES = ("dlmc-transformer", "dlmc-rn50", "graph")
FAMILY_LABEL = {"dlmc-transformer": "DLMC transformer", "dlmc-rn50": "DLMC rn50",
                "graph": "graphs"}
FAMILY_ALIASES = {"transformer": "dlmc-transformer", "dlmc-transformer": "dlmc-transformer",
                  "rn50": "dlmc-rn50", "resnet50": "dlmc-rn50", "dlmc-rn50": "dlmc-rn50",
                  "graph": "graph", "graphs": "graph"}

REL_TOL = 1e-3            # max |out - ref| / max |ref| allowed before a result is timed
DENSE_LIMIT = 4e8         # numpy dense is skipped when rows*cols exceeds this,
DENSE_WORK_LIMIT = 6e10   # or when rows*cols*N does (over ~1 s a call on 2 cores)


# -- the corpus -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One corpus matrix (the fields ``spc.corpus`` entries also carry)."""
    path: str          # absolute path of the .smtx.gz / .mtx.gz file
    family: str        # dlmc-transformer, dlmc-rn50, graph
    rows: int
    cols: int
    nnz: int

    @property
    def name(self) -> str:
        """A short, unique label: the path under the data dir without its suffix."""
        p = "/" + str(self.path).replace("\\", "/")
        for marker in ("/dlmc/", "/graphs/"):
            if marker in p:
                p = p.rsplit(marker, 1)[1]
                break
        else:
            p = p.rsplit("/", 1)[1]
        for suffix in (".gz", ".smtx", ".mtx"):
            p = p.removesuffix(suffix)
        return p


def _normalize_family(f: str) -> str:
    f = str(f).lower()
    return FAMILY_ALIASES.get(f, f)


def _spc_corpus():
    """``spc.corpus`` when it exists (and works), else None."""
    try:
        from spc import corpus          # noqa: PLC0415
        corpus.entries, corpus.load     # noqa: B018 - both must be there
        return corpus
    except (ImportError, AttributeError):
        return None


def corpus_source() -> str:
    return "spc.corpus" if _spc_corpus() is not None else "benchmarks.common (private loader)"


def entries(data_dir: Path = DEFAULT_DATA, families=None, max_nnz=None) -> list[Entry]:
    """The corpus matrices, sorted by (family, nnz, path).  ``families`` is an
    iterable of family names or aliases; ``max_nnz`` drops larger matrices."""
    fams = None if not families else {_normalize_family(f) for f in families}
    corpus = _spc_corpus()
    out: list[Entry] = []
    if corpus is not None and Path(data_dir) == DEFAULT_DATA:
        for e in corpus.entries(family=None, max_nnz=max_nnz):
            out.append(Entry(str(e.path), _normalize_family(e.family), int(e.rows),
                             int(e.cols), int(e.nnz)))
    else:
        lines = (Path(data_dir) / "MANIFEST.tsv").read_text().splitlines()
        header = lines[0].split("\t")
        col = {name: i for i, name in enumerate(header)}
        for line in lines[1:]:
            if not line.strip():
                continue
            f = line.split("\t")
            e = Entry(str(Path(data_dir) / f[col["path"]]), _normalize_family(f[col["family"]]),
                      int(f[col["rows"]]), int(f[col["cols"]]), int(f[col["nnz"]]))
            if max_nnz is None or e.nnz <= max_nnz:
                out.append(e)
    if fams is not None:
        out = [e for e in out if e.family in fams]
    return sorted(out, key=lambda e: (FAMILIES.index(e.family) if e.family in FAMILIES else 9,
                                      e.nnz, e.path))


def quick_pick(es: list[Entry], per_family: int = 3) -> list[Entry]:
    """A few matrices per family, spread over its nnz range (10%, 50%, 90% quantiles)."""
    out = []
    for fam in dict.fromkeys(e.family for e in es):
        group = [e for e in es if e.family == fam]
        if len(group) <= per_family:
            out += group
            continue
        qs = np.linspace(0.1, 0.9, per_family)
        idx = sorted({int(round(q * (len(group) - 1))) for q in qs})
        out += [group[i] for i in idx]
    return out


def _load_smtx(path: str) -> sp.csr_matrix:
    with gzip.open(path, "rt") as fh:
        rows, cols, nnz = (int(t) for t in fh.readline().replace(",", " ").split())
        indptr = np.array(fh.readline().split(), dtype=np.int64)
        indices = np.array(fh.readline().split(), dtype=np.int64) if nnz else np.zeros(0, np.int64)
    if indptr.size != rows + 1 or indices.size != nnz or indptr[-1] != nnz:
        raise ValueError(f"{path}: malformed .smtx (rows={rows}, nnz={nnz})")
    return sp.csr_matrix((np.ones(nnz, np.float32), indices.astype(np.int32),
                          indptr.astype(np.int32)), shape=(rows, cols))


def _load_mtx(path: str) -> sp.csr_matrix:
    import scipy.io                      # noqa: PLC0415
    with gzip.open(path, "rb") as fh:
        m = scipy.io.mmread(fh)          # expands symmetric storage to both triangles
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def load(entry: Entry) -> sp.csr_matrix:
    """The matrix as canonical float32 CSR (int32 indices, sorted, no duplicates)
    with values uniform in [-1, 1), seeded from the file (the files store patterns
    only): ``spc.corpus.load``'s values when it exists, else the private loader's."""
    corpus = _spc_corpus()
    if corpus is not None:
        A = sp.csr_matrix(corpus.load(entry.path))
    else:
        A = _load_smtx(entry.path) if ".smtx" in entry.path else _load_mtx(entry.path)
        rng = np.random.default_rng(zlib.crc32(entry.name.encode()))
        A.data = (rng.random(A.nnz, dtype=np.float32) * 2 - 1).astype(np.float32)
    A = sp.csr_matrix((A.data.astype(np.float32), A.indices.astype(np.int32),
                       A.indptr.astype(np.int32)), shape=A.shape)
    A.sum_duplicates()
    A.sort_indices()
    if A.shape != (entry.rows, entry.cols) or A.nnz != entry.nnz:
        raise ValueError(f"{entry.name}: loaded {A.shape} with nnz {A.nnz}, manifest says "
                         f"{(entry.rows, entry.cols)} with nnz {entry.nnz}")
    return A


# -- cases: sizes, FLOPs, bytes ------------------------------------------------------------------
def flops(op: str, nnz: int, n: int) -> int:
    """SpMM and SDDMM 2*nnz*N, SpMV 2*nnz."""
    return 2 * nnz if op == "spmv" else 2 * nnz * n


def floor_bytes(op: str, rows: int, cols: int, nnz: int, n: int) -> int:
    """Bytes that must move once (float32 values, int32 indices and row pointers,
    dense inputs, output)."""
    sparse = 4 * nnz + 4 * nnz + 4 * (rows + 1)
    if op == "spmv":
        return sparse + 4 * cols + 4 * rows
    if op == "spmm":
        return sparse + 4 * cols * n + 4 * rows * n
    if op == "sddmm":
        return sparse + 4 * rows * n + 4 * cols * n + 4 * nnz
    raise ValueError(op)


def make_inputs(op: str, A: sp.csr_matrix, n: int, seed: int) -> dict[str, np.ndarray]:
    """Dense float32 operands, uniform in [-1, 1): spmv {x: K}, spmm {B: K x N},
    sddmm {X: M x N, Y: K x N} (row-major)."""
    rng = np.random.default_rng(seed)
    M, K = A.shape

    def u(*shape):
        return rng.random(shape, dtype=np.float32) * np.float32(2) - np.float32(1)

    if op == "spmv":
        return {"x": u(K)}
    if op == "spmm":
        return {"B": u(K, n)}
    if op == "sddmm":
        return {"X": u(M, n), "Y": u(K, n)}
    raise ValueError(op)


def reference(op: str, A: sp.csr_matrix, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The float64 result (rounded to float32 for storage): spmv y (M,), spmm C
    (M, N), sddmm the values of S in A's (sorted CSR) order (nnz,)."""
    A64 = A.astype(np.float64)
    if op == "spmv":
        return (A64 @ inputs["x"].astype(np.float64)).astype(np.float32)
    if op == "spmm":
        B = inputs["B"].astype(np.float64)
        M, K = A.shape
        if A.nnz > 0.05 * M * K and M * K <= DENSE_LIMIT:     # dense GEMM is faster here
            out = np.empty((M, B.shape[1]), np.float32)
            step = max(1, int(2e7 // max(1, K)))
            for r in range(0, M, step):
                out[r:r + step] = A64[r:r + step].toarray() @ B
            return out
        return np.asarray(A64 @ B).astype(np.float32)
    if op == "sddmm":
        X = inputs["X"].astype(np.float64)
        Y = inputs["Y"].astype(np.float64)
        M, K = A.shape
        n = X.shape[1]
        rows = np.repeat(np.arange(M, dtype=np.int64), np.diff(A.indptr))
        cols = A.indices.astype(np.int64)
        dots = np.empty(A.nnz, np.float64)
        if A.nnz > 0.05 * M * K:                  # dense row blocks of X @ Y.T
            step = max(1, int(2e7 // max(1, K)))
            for r in range(0, M, step):
                D = X[r:r + step] @ Y.T
                lo, hi = A.indptr[r], A.indptr[min(M, r + step)]
                dots[lo:hi] = D[rows[lo:hi] - r, cols[lo:hi]]
        else:                                      # gather rows, in chunks
            chunk = max(1, int(4e6 // max(1, n)))
            for s in range(0, A.nnz, chunk):
                e = min(A.nnz, s + chunk)
                dots[s:e] = np.einsum("ij,ij->i", X[rows[s:e]], Y[cols[s:e]])
        return (A64.data * dots).astype(np.float32)
    raise ValueError(op)


def rel_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref| (inf if shapes differ or out has NaN/inf)."""
    out = np.asarray(out)
    if out.shape != ref.shape:
        return math.inf
    if out.size == 0:
        return 0.0
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    if not np.all(np.isfinite(diff)):
        return math.inf
    scale = float(np.abs(ref).max()) or 1.0
    return float(diff.max()) / scale


# -- timing ----------------------------------------------------------------------------------------
# The timers of every benchmark: call_times (call by call, wall clock),
# burst_times (back-to-back calls, optionally synchronized), cuda_event_times
# (CUDA events around each call: the caller's view) and gpu_kernel_time (device
# time: triton's do_bench, else cuda_event_times).  Callers take medians
# (statistics.median).
def call_times(fn, *, min_repeats: int = 5, min_time: float = 0.0, max_repeats: int = 200_000,
               warmup: int = 0, warmup_s: float = 0.0) -> list[float]:
    """Seconds of each timed call of ``fn()``, timed call by call (perf_counter).

    Requires: ``fn`` takes no argument.
    Ensures: ``warmup`` untimed calls, then untimed calls until ``warmup_s``
    seconds have passed, then timed calls until there are at least
    ``min_repeats`` of them and they add up to ``min_time`` seconds (but never
    more than ``max_repeats``); the list is in call order.
    """
    pc = time.perf_counter
    for _ in range(warmup):
        fn()
    t_end = pc() + warmup_s
    while warmup_s > 0 and pc() < t_end:
        fn()
    times: list[float] = []
    total = 0.0
    while (len(times) < min_repeats or total < min_time) and len(times) < max_repeats:
        t = pc()
        fn()
        dt = pc() - t
        times.append(dt)
        total += dt
    return times


def burst_times(fn, *, calls: int, bursts: int, warmup: int = 0, sync=None,
                sync_timed: bool = True) -> list[float]:
    """Seconds per call of each of ``bursts`` bursts of ``calls`` back-to-back calls.

    Requires: ``calls`` and ``bursts`` >= 1; ``sync`` is None or a function that
    waits for the calls' work (``torch.cuda.synchronize``).
    Ensures: ``warmup`` untimed calls (then ``sync()``), and around each burst
    ``sync()`` before it (untimed) and after it (inside the timed span when
    ``sync_timed``: what a caller waits for; else outside it: the host's time
    to issue the calls).
    """
    pc = time.perf_counter
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    out = []
    for _ in range(bursts):
        if sync is not None:
            sync()
        t = pc()
        for _ in range(calls):
            fn()
        if sync is not None and sync_timed:
            sync()
        out.append((pc() - t) / calls)
        if sync is not None and not sync_timed:
            sync()
    return out


def cuda_event_times(torch, fn, reps: int, *, warmup: int = 0) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn()`` between two CUDA events,
    the device idle before each (``torch``: the torch module).

    Ensures: ``warmup`` untimed calls first; each timed call starts after a
    synchronization and is read after its end event completes.
    """
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) * 1e-3)
    return out


# the timer a GpuTime came from, as report columns name it
DO_BENCH = "do_bench median"     # triton.testing.do_bench: L2 flushed before each call
EVENTS = "events median"         # cuda_event_times: idle stream before each call, L2 warm


@dataclass(frozen=True)
class GpuTime:
    """Median device seconds per call, and the timer that measured them
    (``DO_BENCH`` or ``EVENTS``), so a report can say which."""
    seconds: float
    timer: str


def gpu_kernel_time(torch, fn, *, reps: int = 30, warmup: int = 1, warmup_ms: float = 25.0,
                    rep_ms: float = 100.0) -> GpuTime:
    """The median device time of one call of ``fn()`` (``torch``: the torch module).

    Requires: ``fn`` takes no argument and launches its work on torch's current
    stream.
    Ensures: where triton is importable (and its ``do_bench`` takes
    ``return_mode``), ``triton.testing.do_bench(fn, warmup=warmup_ms,
    rep=rep_ms, return_mode="median")``: about ``warmup_ms`` of untimed calls,
    then about ``rep_ms`` of timed ones, each after zeroing a buffer larger than
    L2 (so no call finds the last one's data in cache) and between two CUDA
    events, with no synchronization between calls (a launch shorter than the
    flush hides behind it); timer ``DO_BENCH``.  Else the median of
    ``cuda_event_times(torch, fn, reps, warmup=warmup)``: the stream idle before
    each call, L2 as the last call left it, the host's launch time included
    when it exceeds the kernel's; timer ``EVENTS``.
    """
    do_bench = _do_bench()
    if do_bench is not None:
        ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
        return GpuTime(float(ms) * 1e-3, DO_BENCH)
    return GpuTime(statistics.median(cuda_event_times(torch, fn, reps, warmup=warmup)), EVENTS)


def _do_bench():
    """``triton.testing.do_bench`` when triton is importable and its ``do_bench``
    takes ``return_mode`` (triton >= 2.1), else None."""
    try:
        from triton.testing import do_bench      # noqa: PLC0415
    except ImportError:
        return None
    try:
        params = inspect.signature(do_bench).parameters
    except (TypeError, ValueError):
        return None
    return do_bench if "return_mode" in params else None


def progress(total: int, *, desc: str = "", unit: str = "matrix"):
    """``spc.progress.Progress`` over ``total`` items: a tqdm bar on stderr where
    tqdm is installed, else a line with the time left after each item (imported
    here, on use, so the workers importing this module never import spc)."""
    from spc.progress import Progress             # noqa: PLC0415
    return Progress(total, desc=desc, unit=unit)


def time_calls(fn, *, min_time: float = 0.2, min_repeats: int = 5,
               max_repeats: int = 200_000, warmup: int = 1) -> dict:
    """Median wall time of ``fn()``, timed call by call after ``warmup`` calls
    (callers have made one call already, for the check),
    repeated until at least ``min_repeats`` calls and ``min_time`` seconds of
    timed calls (at most ``max_repeats`` calls): ``call_times`` summarized."""
    times = sorted(call_times(fn, min_repeats=min_repeats, min_time=min_time,
                              max_repeats=max_repeats, warmup=warmup))
    return {"median_s": statistics.median(times), "min_s": times[0],
            "p25_s": times[len(times) // 4], "p75_s": times[(3 * len(times)) // 4],
            "repeats": len(times), "total_s": sum(times)}


_TICK_NS = 1e9 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def machine_busy_ns() -> float:
    """CPU time (ns) every process has used so far, steal included (psutil's
    ``cpu_times``, else /proc/stat; clock-tick resolution, 10 ms)."""
    psutil = _psutil()
    if psutil is not None:
        t = psutil.cpu_times()
        return sum(getattr(t, f, 0.0) for f in _BUSY_FIELDS) * 1e9
    try:
        with open("/proc/stat") as fh:
            f = fh.readline().split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[1:9])
    return (user + nice + system + irq + softirq + steal) * _TICK_NS


_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


def _psutil():
    """The psutil module (the bench extra installs it), or None."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def machine_load() -> dict:
    """The machine's load now: ``loadavg`` (1, 5, 15 min), ``cpus`` (logical) and,
    with psutil, ``cpu_percent`` (the machine's CPU use, %, since the previous
    call of this function; None at the first)."""
    psutil = _psutil()
    if psutil is None:
        return {"loadavg": list(os.getloadavg()), "cpus": os.cpu_count(), "cpu_percent": None}
    first = not _LOAD_PRIMED
    _LOAD_PRIMED.append(True)
    pct = psutil.cpu_percent(interval=None)
    return {"loadavg": list(psutil.getloadavg()), "cpus": psutil.cpu_count(),
            "cpu_percent": None if first else pct}


_LOAD_PRIMED: list = []


def process_cpu_ns(pid: int | str = "self", skip_tid: int | None = None) -> int:
    """CPU time (ns) used so far by the threads of ``pid`` (but ``skip_tid``)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        if skip_tid is not None and int(tid) == skip_tid:
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def time_guarded(fn, *, min_time=0.2, min_repeats=5, max_external_load=0.15, retries=2,
                 pause=0.25, retry_budget_s=math.inf) -> dict:
    """``time_calls``, timed again (up to ``retries`` times, after ``pause`` s,
    within ``retry_budget_s`` seconds) while other processes used more than
    ``max_external_load`` cores during the timing; keeps the least disturbed
    attempt.  Adds ``external_load`` (cores), ``attempts`` and ``retry_s``."""
    best = None
    retry_s = 0.0
    attempt = 0
    while True:
        attempt += 1
        b0, o0, t0 = machine_busy_ns(), process_cpu_ns(), time.perf_counter()
        timing = time_calls(fn, min_time=min_time, min_repeats=min_repeats)
        wall = time.perf_counter() - t0
        other = (machine_busy_ns() - b0) - (process_cpu_ns() - o0)
        timing["external_load"] = max(0.0, other / (wall * 1e9))
        if attempt > 1:
            retry_s += wall
        if best is None or timing["external_load"] <= best["external_load"]:
            best = timing
        if (timing["external_load"] < max_external_load or attempt > retries
                or retry_s + pause + wall > retry_budget_s):
            break
        time.sleep(pause)
        retry_s += pause
    best["attempts"] = attempt
    best["retry_s"] = retry_s
    return best


def _copy_worker(nbytes, repeats, barrier, conn):
    n = nbytes // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    np.copyto(dst, src)
    spans = []
    for _ in range(repeats):
        barrier.wait()
        t = time.perf_counter()
        np.copyto(dst, src)
        spans.append((t, time.perf_counter()))
    conn.send(spans)
    conn.close()


def copy_bandwidth(nbytes: int = 256 << 20, procs: int | None = None, repeats: int = 7) -> dict:
    """Copy bandwidth in GB/s, counting read + write (2 x size per copy), from
    large numpy copies: one process copying ``nbytes``, and ``procs`` processes
    (default: every core) each copying ``nbytes / procs`` at the same moment
    (numpy copies on one thread, holding the GIL, so threads would not overlap).
    Best of ``repeats``; ``GBs`` is the larger of the two."""
    import multiprocessing as mp                # noqa: PLC0415
    procs = procs or os.cpu_count() or 1
    n = nbytes // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    np.copyto(dst, src)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    single = 2 * nbytes / best / 1e9
    del src, dst
    multi = None
    if procs > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        barrier = ctx.Barrier(procs)
        pipes = [ctx.Pipe(duplex=False) for _ in range(procs)]
        ps = [ctx.Process(target=_copy_worker, args=(nbytes // procs, repeats, barrier, w))
              for _, w in pipes]
        for p in ps:
            p.start()
        spans = [r.recv() for r, _ in pipes]
        for p in ps:
            p.join()
        per_rep = [max(s[i][1] for s in spans) - min(s[i][0] for s in spans)
                   for i in range(repeats)]
        multi = 2 * (nbytes // procs) * procs / min(per_rep) / 1e9
    return {"single_thread_GBs": single, "threads": procs, "multi_thread_GBs": multi,
            "GBs": max(single, multi or 0.0), "bytes": nbytes}


def spc_tree_hash() -> str:
    """A short hash of spc's Python sources (spc/ changes under a long run when
    others edit it; workers import it once, at their start)."""
    import hashlib                               # noqa: PLC0415
    h = hashlib.sha1()
    for p in sorted((REPO / "spc").rglob("*")):
        if p.is_file() and p.suffix in (".py", ".lark", ".j2", ".h", ".cuh", ".ll"):
            h.update(str(p.relative_to(REPO)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def geomean(xs) -> float:
    """``statistics.geometric_mean`` of the finite positive values of ``xs``
    (NaN when there are none): failed or empty cases do not poison the mean."""
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return statistics.geometric_mean(xs) if xs else math.nan


def write_cases(name: str, A, ops, ns, scratch):
    """Write ``A`` (CSR arrays), each case's inputs and its float64 reference to
    ``scratch``; return (the .npz path, the cases: op, n, input and reference
    paths, flops and the bandwidth floor's bytes)."""
    import zlib
    tag = f"{zlib.crc32(name.encode()):08x}"
    npz = scratch / f"{tag}.npz"
    np.savez(npz, indptr=A.indptr, indices=A.indices, data=A.data, shape=np.array(A.shape))
    cases = []
    for op in ops:
        for n in ([1] if op == "spmv" else ns):
            seed = zlib.crc32(f"{name}|{op}|{n}".encode())
            inputs = make_inputs(op, A, n, seed)
            paths = {}
            for k, arr in inputs.items():
                paths[k] = str(scratch / f"{tag}_{op}_{n}_{k}.npy")
                np.save(paths[k], arr)
            ref_path = str(scratch / f"{tag}_{op}_{n}_ref.npy")
            np.save(ref_path, reference(op, A, inputs))
            del inputs
            cases.append({"op": op, "n": n, "inputs": paths, "ref": ref_path,
                          "flops": flops(op, A.nnz, n),
                          "bytes": floor_bytes(op, *A.shape, A.nnz, n)})
    return str(npz), cases


def numpy_info() -> dict:
    """numpy's version and its BLAS thread pools (when threadpoolctl is there)."""
    cfg = {}
    try:
        from threadpoolctl import threadpool_info
        cfg = {"blas": [(i.get("internal_api"), i.get("num_threads"))
                        for i in threadpool_info()]}
    except ImportError:
        pass
    return {"version": np.__version__, **cfg}
