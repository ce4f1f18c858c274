"""The reference interpreter: the living definition of the loop IR's meaning.

Slow (pure Python, one statement at a time) and meant for small inputs: tests
run a kernel here and through a backend, and before and after a pass, and
compare the numbers.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np

from .traverse import statements
from .nodes import (Alloc, CompareSwap, Assign, BinOp, Block, Cast, Const, Contents, DType, For,
                    If, Jam, Kernel, LaneGroups, Let, Load, LoopKind, Neg, ParamRole, Select, Store, ToTF32, Var, Call,
                    WarpSum, While)

_NP = {DType.F32: np.float32, DType.F64: np.float64, DType.I8: np.int64, DType.I16: np.int64,
       DType.I32: np.int64,
       DType.I64: np.int64, DType.BOOL: np.bool_}


_MATH = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs}


def _array_dtype(dt: DType):
    """The numpy dtype of an array of ``dt`` (integers of any width as int64)."""
    return _NP[dt] if dt in _NP else dt.np


def to_tf32(x):
    """float32 ``x`` (a scalar or an array) rounded to TensorFloat-32: the low 13
    mantissa bits cleared, to nearest with ties away from zero (cvt.rna.tf32.f32);
    NaNs and infinities unchanged."""
    a = np.asarray(x, dtype=np.float32)
    bits = a.view(np.uint32)
    rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    out = np.where(np.isfinite(a), rounded, a).astype(np.float32)
    return out if out.ndim else np.float32(out)


def _eval(e, env, bufs):
    # dispatch on the exact node type (expression nodes are final dataclasses),
    # the commonest first: this function is most of the interpreter's time
    t = type(e)
    if t is BinOp:
        a = _eval(e.lhs, env, bufs)
        op = e.op
        if op == "&&":
            return bool(a) and bool(_eval(e.rhs, env, bufs))
        if op == "||":
            return bool(a) or bool(_eval(e.rhs, env, bufs))
        b = _eval(e.rhs, env, bufs)
        if op == "+": return a + b
        if op == "-": return a - b
        if op == "*": return a * b
        if op == "/": return a // b if isinstance(a, np.integer) else a / b
        if op == "min": return min(a, b)
        if op == "max": return max(a, b)
        if op == "&": return a & b
        if op == "<<":                           # wraps to 64 bits, as the targets do
            v = (int(a) << int(b)) & 0xFFFFFFFFFFFFFFFF
            return np.int64(v - (1 << 64) if v >= 1 << 63 else v)
        if op == "<": return a < b
        if op == "<=": return a <= b
        if op == "==": return a == b
        if op == "!=": return a != b
    elif t is Var:
        return env[e.name]
    elif t is Const:
        return _NP[e.dtype](e.value)
    elif t is Load:
        arr = bufs[e.buf.name]
        idx = int(_eval(e.index, env, bufs))
        if not 0 <= idx < len(arr):
            raise IndexError(f"{e.buf.name}[{idx}] is out of bounds (length {len(arr)})")
        v = arr[idx]
        wide = e.buf.dtype.widened
        return v if wide is e.buf.dtype else _NP[wide](v)    # loads widen
    elif t is Cast:
        return _NP[e.dtype](_eval(e.value, env, bufs))
    elif t is Select:
        return _eval(e.if_true if _eval(e.cond, env, bufs) else e.if_false, env, bufs)
    elif t is Neg:
        return -_eval(e.operand, env, bufs)
    elif t is WarpSum:
        return _eval(e.value, env, bufs)      # one lane: the sum over lanes is its value
    elif t is ToTF32:
        return to_tf32(_eval(e.value, env, bufs))
    elif t is Call:
        x = _eval(e.value, env, bufs)
        if e.fn == "ctz":
            v = int(x) & 0xFFFFFFFFFFFFFFFF
            return np.int64((v & -v).bit_length() - 1 if v else 64)
        with np.errstate(all="ignore"):          # log(0) = -inf, sqrt(-1) = nan: as C
            return type(x)(_MATH[e.fn](x))
    raise TypeError(f"cannot evaluate {e!r}")


CONCURRENT = frozenset({LoopKind.PARALLEL, LoopKind.GPU_BLOCK, LoopKind.GPU_WARP,
                        LoopKind.GPU_THREAD, LoopKind.GPU_LANE, LoopKind.GPU_LANE_SPLIT})


class ClaimError(AssertionError):
    """A workspace declared ``Contents.CLEAN`` left non-zero at the end of its block."""


class RaceError(AssertionError):
    """Two iterations of one concurrent loop store to the same entry without an
    atomic addition: the IR claims an independence it does not have."""


class _Races:
    """The iterations of concurrent loops (``CONCURRENT`` kinds) running now, and
    the last non-atomic writer of every buffer entry.  Two writers race when,
    at the outermost concurrent loop where their iteration paths differ, they
    are different iterations of the same loop.  A lane loop is told apart by
    each run of it, not by its node: a lane loop that stores is followed by a
    warp sync (the CUDA renderer's), so its runs one after another in a warp
    (passes of a sort) are ordered; other concurrent loops (the warps of a
    block) have no sync between runs, so a run races with the runs before."""

    def __init__(self):
        self.path: list[tuple[object, int]] = []       # (loop, iteration)
        self.runs = 0                                  # lane loop runs so far
        self.writers: dict[tuple[int, int], tuple] = {}
        self.arrays: dict[int, object] = {}            # keeps ids unique (allocs die)

    def store(self, arr, idx: int, s) -> None:
        self.arrays[id(arr)] = arr
        key, me = (id(arr), idx), tuple(self.path)
        other = self.writers.get(key)
        if other is not None and other != me:
            for (loop_a, it_a), (loop_b, it_b) in zip(other, me):
                if loop_a != loop_b:
                    break
                if it_a != it_b:
                    raise RaceError(f"{s.buf.name}[{idx}] is stored by iterations {it_a} and "
                                    f"{it_b} of one concurrent loop without an atomic addition")
        self.writers[key] = me


def _exec(s, env, bufs, races: _Races | None = None, launch: dict | None = None):
    if isinstance(s, Block):
        for c in s.body:
            _exec(c, env, bufs, races, launch)
        for c in s.body:
            if isinstance(c, Alloc) and c.contents is Contents.CLEAN \
                    and np.any(bufs[c.buf.name]):
                raise ClaimError(f"{c.buf.name} is declared clean but its block leaves "
                                 f"{int(np.count_nonzero(bufs[c.buf.name]))} non-zero entries")
    elif isinstance(s, (Let, Assign)):
        env[s.var.name] = _NP[s.var.dtype](_eval(s.value, env, bufs))
    elif isinstance(s, Store):
        arr = bufs[s.buf.name]
        idx = int(_eval(s.index, env, bufs))
        if not 0 <= idx < len(arr):
            raise IndexError(f"store {s.buf.name}[{idx}] is out of bounds (length {len(arr)})")
        v = _eval(s.value, env, bufs)
        if races is not None and races.path and not s.atomic:
            races.store(arr, idx, s)
        if s.accumulate:
            v = _NP[s.buf.dtype.widened](arr[idx]) + v
        arr[idx] = v                   # rounds to the array's type (16-bit floats)
    elif isinstance(s, CompareSwap):          # sequential here: trivially atomic
        arr = bufs[s.buf.name]
        idx = int(_eval(s.index, env, bufs))
        if not 0 <= idx < len(arr):
            raise IndexError(f"compare-and-swap {s.buf.name}[{idx}] is out of bounds "
                             f"(length {len(arr)})")
        old = env[s.var.name] = _NP[s.var.dtype](arr[idx])
        if old == _eval(s.expected, env, bufs):
            arr[idx] = _eval(s.desired, env, bufs)
    elif isinstance(s, Alloc):
        size = s.size if isinstance(s.size, int) else int(_eval(s.size, env, bufs))
        bufs[s.buf.name] = np.zeros(size, dtype=_array_dtype(s.buf.dtype))
        if s.contents is Contents.UNDEFINED:      # garbage: a read before a write shows
            bufs[s.buf.name][:] = np.nan if s.buf.dtype.is_float else -7777
    elif isinstance(s, For):
        lo, hi = int(_eval(s.lo, env, bufs)), int(_eval(s.hi, env, bufs))
        concurrent = races is not None and s.kind in CONCURRENT
        if concurrent:
            run = id(s)
            if s.kind is LoopKind.GPU_LANE:
                races.runs += 1
                run = ("lane run", races.runs)
        def iteration(v, group=None):
            env[s.var.name] = np.int64(v)
            if concurrent:
                races.path.append((run, v))
            if group is None:
                _exec(s.body, env, bufs, races, launch)
            else:                                 # a lane group's iteration
                _group_iteration(s, group, env, bufs, races, launch)
            if concurrent:
                races.path.pop()

        if s.flat is not None and _launch_value(launch, s.flat.steps, 0) > 0:
            _run_flat(s, lo, hi, env, bufs, races, launch)
        elif s.groups is not None:
            _run_lane_groups(s, lo, hi, env, bufs, races, launch, iteration)
        elif s.jam is not None and _jammed(s.jam, lo, hi, launch):
            _run_jammed(s.jam, lo, hi, env, iteration)
        elif s.vector is not None:
            _run_vectors(s, lo, hi, env, bufs, iteration)
        else:
            for v in range(lo, hi):
                iteration(v)
    elif isinstance(s, While):
        while _eval(s.cond, env, bufs):
            _exec(s.body, env, bufs, races, launch)
    elif isinstance(s, If):
        if _eval(s.cond, env, bufs):
            _exec(s.then, env, bufs, races, launch)
        elif s.otherwise is not None:
            _exec(s.otherwise, env, bufs, races, launch)
    else:
        raise TypeError(f"cannot execute {s!r}")


WARP = 32


def _launch_value(launch: dict | None, name: str, default: int) -> int:
    """The integer value ``launch`` gives the launch symbol ``name``, else ``default``."""
    value = (launch or {}).get(name)
    return default if value is None else int(value)


def _group_size(groups: LaneGroups, launch: dict | None) -> int:
    """The lanes per group a launch asks for (1 where it gives none); one of
    ``groups.sizes``."""
    g = _launch_value(launch, groups.group, 1)
    if g not in groups.sizes:
        raise ValueError(f"launch {groups.group}={g}: a lane group has one of "
                         f"{list(groups.sizes)} lanes")
    return g


def _run_lane_groups(s: For, lo: int, hi: int, env, bufs, races, launch, iteration) -> None:
    """A lane loop shared by lane groups (``LaneGroups``): the iterations of each
    of the ``split`` warps in turn (warp ``w`` takes runs of ``32 / group``
    iterations, every ``split``-th run), each iteration's reduction loop shared
    by the group (``_group_iteration``)."""
    groups = s.groups
    g = _group_size(groups, launch)
    split = _launch_value(launch, groups.split, 1)
    if split < 1:
        raise ValueError(f"launch {groups.split}={split}: at least one warp shares a row")
    per = WARP // g
    for w in range(split):
        for first in range(lo + w * per, hi, split * per):
            for v in range(first, min(first + per, hi)):
                iteration(v, g)


def _group_iteration(s: For, g: int, env, bufs, races, launch) -> None:
    """One iteration of a lane loop shared by groups of ``g`` lanes: its
    statements, the reduction loop over ``s.groups.reduction`` shared by the
    group (``_run_group_reduction``)."""
    for c in statements(s.body):
        if isinstance(c, For) and c.var.name == s.groups.reduction:
            _run_group_reduction(c, s.groups, g, env, bufs, races, launch)
        else:
            _exec(c, env, bufs, races, launch)


def _run_group_reduction(r: For, groups: LaneGroups, g: int, env, bufs, races, launch) -> None:
    """The reduction loop a lane group of ``g`` shares, as ``LaneGroups`` says:
    lane ``l`` sums its iterations (vector steps first, where ``r.vector`` runs)
    into partial sums of its own; each lane's partial sums added, then the
    lanes' by a butterfly, then the total added to each variable of ``sums``."""
    lo, hi = int(_eval(r.lo, env, bufs)), int(_eval(r.hi, env, bufs))
    width = r.vector.width if r.vector is not None else 1
    names = [v.name for v in groups.sums]
    own = {n: env[n] for n in names}
    zero = {v.name: _NP[v.dtype](0) for v in groups.sums}
    partial = {(lane, c): dict(zero) for lane in range(g) for c in range(width)}

    def into(lane: int, c: int, k: int) -> None:
        env.update(partial[lane, c])
        env[r.var.name] = np.int64(k)
        _exec(r.body, env, bufs, races, launch)
        partial[lane, c] = {n: env[n] for n in names}

    stop = _vector_stop(r, lo, hi, env, bufs) if r.vector is not None else lo
    for lane in range(g):
        for first in range(lo + width * lane, stop, width * g):
            for c in range(width):
                into(lane, c, first + c)
        for k in range(stop + lane, hi, g):
            into(lane, 0, k)
    for v in groups.sums:
        n = v.name
        lanes = []
        for lane in range(g):
            lanes.append(_vector_total([partial[lane, c][n] for c in range(width)]))
        offset = g // 2
        while offset > 0:
            lanes = [lanes[lane] + lanes[lane ^ offset] for lane in range(g)]
            offset //= 2
        env[n] = _NP[v.dtype](own[n] + _NP[v.dtype](lanes[0]))


def _run_flat(s: For, lo: int, hi: int, env, bufs, races, launch) -> None:
    """A warp loop's (row, position) pairs enumerated flat (``FlatPositions``):
    chunks of ``steps * 32 / group`` positions, one warp's each; each
    position's row the last whose start is at or before it, its Lets run, then
    the grouped lane loop's body for the position."""
    body = statements(s.body)
    lets, lane = body[:-1], body[-1]
    g = _group_size(lane.groups, launch)
    steps = _launch_value(launch, s.flat.steps, 0)
    if hi <= lo:
        return

    def row(v: int) -> None:
        env[s.var.name] = np.int64(v)
        for c in lets:
            _exec(c, env, bufs, races, launch)
    starts = []
    for v in range(lo, hi):
        row(v)
        starts.append(int(_eval(lane.lo, env, bufs)))
    p1 = int(_eval(lane.hi, env, bufs))          # the end of row hi - 1
    chunk = steps * (WARP // g)
    for c0 in range(starts[0], p1, chunk):
        if races is not None:
            races.path.append((id(s), c0))
        for p in range(c0, min(c0 + chunk, p1)):
            row(lo + bisect_right(starts, p) - 1)
            env[lane.var.name] = np.int64(p)
            if races is not None:
                races.runs += 1
                races.path.append((("lane run", races.runs), p))
            _group_iteration(lane, g, env, bufs, races, launch)
            if races is not None:
                races.path.pop()
        if races is not None:
            races.path.pop()


def _jammed(jam: Jam, lo: int, hi: int, launch: dict | None) -> bool:
    """Whether a loop of ``hi - lo`` iterations runs jammed (``Jam.min_trips``,
    ``Jam.launch`` read from ``launch``, a jammed loop where it names none)."""
    if hi - lo < jam.min_trips:
        return False
    return jam.launch is None or bool((launch or {}).get(jam.launch, True))


def _run_jammed(jam: Jam, lo: int, hi: int, env: dict, iteration) -> None:
    """The iterations of a jammed loop in steps of ``jam.factor`` (one lane:
    copies one iteration apart), copy ``u > 0`` summing into its own partial
    sums, added to the variables after the loop as the CUDA code adds them."""
    partial = {v.name: [_NP[v.dtype](0)] * (jam.factor - 1) for v in jam.sums}
    for first in range(lo, hi, jam.factor):
        for u in range(min(jam.factor, hi - first)):
            if u == 0:
                iteration(first)
                continue
            own = {name: env[name] for name in partial}
            for name, parts in partial.items():
                env[name] = parts[u - 1]
            iteration(first + u)
            for name, parts in partial.items():
                parts[u - 1] = env[name]
                env[name] = own[name]
    for v in jam.sums:
        parts = partial[v.name]
        total = parts[0]
        for x in parts[1:]:
            total = total + x
        env[v.name] = _NP[v.dtype](env[v.name] + total)


def _run_vectors(s: For, lo: int, hi: int, env: dict, bufs, iteration) -> None:
    """A loop reading vectors (``VectorLoads``): steps of ``width`` iterations,
    element ``c`` summing into partial sum ``c``, where the loop is long
    enough and every load's first element is aligned (its index a multiple
    of ``width``: arrays start 16-byte aligned); the rest into partial sum 0;
    the partial sums added to the variables after the loop."""
    vector = s.vector
    width = vector.width
    stop = _vector_stop(s, lo, hi, env, bufs)
    partial = {v.name: [_NP[v.dtype](0)] * width for v in vector.sums}

    def into(c, v):
        own = {name: env[name] for name in partial}
        for name, parts in partial.items():
            env[name] = parts[c]
        iteration(v)
        for name, parts in partial.items():
            parts[c] = env[name]
            env[name] = own[name]

    for first in range(lo, stop, width):
        for c in range(width):
            into(c, first + c)
    for v in range(stop, hi):
        into(0, v)
    for v in vector.sums:
        env[v.name] = _NP[v.dtype](env[v.name] + _vector_total(partial[v.name]))


def _vector_stop(s: For, lo: int, hi: int, env: dict, bufs) -> int:
    """The end of a ``VectorLoads`` loop's vector steps over ``[lo, hi)``: the last
    whole step where the loop is long enough and every load's first element is
    aligned (its index a multiple of the width), else ``lo`` (no vector step)."""
    width = s.vector.width
    if hi - lo < width:
        return lo
    env[s.var.name] = np.int64(lo)
    if all(int(_eval(x.index, env, bufs)) % width == 0 for x in s.vector.loads):
        return lo + (hi - lo) // width * width
    return lo


def _vector_total(p: list):
    """A vector loop's per-element partial sums added as the CUDA code adds them:
    ``(p0 + p1) + (p2 + p3)``, ``p0 + p1``, or ``p0`` alone."""
    if len(p) == 4:
        return (p[0] + p[1]) + (p[2] + p[3])
    return p[0] + p[1] if len(p) == 2 else p[0]


def run_kernel(kernel: Kernel, args: dict[str, object], *, check_races: bool = True,
               launch: dict[str, object] | None = None) -> None:
    """Execute ``kernel`` on ``args`` (name -> numpy array or int), in place.

    Requires: every parameter is in ``args``; arrays have the parameter's dtype.
    Ensures: OUTPUT arrays hold what the kernel writes; inputs are untouched.
    With ``check_races``, raises RaceError when two iterations of a concurrent
    loop (CPU threads, GPU blocks, warps, threads or lanes) store to one entry
    without an atomic addition: loops run in order here, so only this check
    sees the wrong answers such a kernel gives on parallel hardware.
    ``launch``: values of the launch choices a kernel's loops name (``Jam.launch``:
    ``{"wide": False}`` runs the loops that choice jams one iteration at a time,
    and a jam not given one runs jammed; ``LaneGroups.group`` and ``.split``:
    lanes per group and warps per row, 1 where not given;
    ``FlatPositions.steps``: a flat chunk, 0 (row by row) where not given).  An
    output the kernel claims to overwrite (``kernel.overwrites``) is poisoned
    first (NaN, or -1 for integers), as the runtime leaves it unzeroed: a wrong
    claim shows in the results.
    """
    env: dict[str, object] = {}
    bufs: dict[str, np.ndarray] = {}
    for p in kernel.params:
        if p.name not in args:
            raise KeyError(f"missing argument {p.name}")
        if p.role is ParamRole.SIZE:
            env[p.name] = np.int64(args[p.name])
        else:
            arr = args[p.name]
            bufs[p.name] = arr if p.role in (ParamRole.OUTPUT, ParamRole.SCRATCH) else arr.copy()
            if p.name in kernel.overwrites:
                arr.fill(np.nan if p.value.dtype.is_float else -1)
    _exec(kernel.body, env, bufs, _Races() if check_races else None, launch)
