"""map_gpu: map a kernel's loops onto the CUDA grid (blocks, warps, lanes, threads).

The choices are made from the loop IR alone and recorded in it: loop kinds
(``@gpu_block``, ``@gpu_warp``, ``@gpu_thread``, ``@gpu_lane``,
``@gpu_lane_split``), ``warp_sum`` expressions, ``atomic+=`` stores and the
kernel's typed ``gpu`` field (``GpuMapping``: how the grid is launched,
``warp``, ``block``, ``thread`` or ``single_warp``; the unroll factor of lane
loops, which ``passes.unroll_jam`` applies at the end of the pipeline; the
lane-group and flat loops below).  The interpreter runs the result unchanged
(a warp sum of one lane is its value), so tests compare the numbers before
and after this pass.

The mapping:

* The outermost loop, when its iterations write disjoint output entries (the
  lowerer's ``outer_independent``), gets one warp per iteration, 8 warps to a
  256-thread block.  Inside it the innermost loop that can be spread over the
  warp's 32 lanes becomes a lane loop (lane-strided iterations, so neighbouring
  lanes touch neighbouring addresses):
  - an *output loop*, each iteration storing to its own entries (SpMM's ``j``:
    ``C[i*N + j]``), runs its iterations on separate lanes;
  - a *reduction loop*, accumulating into scalars declared outside it (SpMV's
    position loop, SDDMM's ``k``), accumulates per-lane partial sums that a
    warp-shuffle sum (``warp_sum``) combines.
  Statements outside lane loops run on every lane alike; their stores are done
  by lane 0 (the renderer's job).
* A serial loop whose body is only an output lane loop is interchanged with it
  and the lane loop's accumulating stores become register sums, stored once
  (SpMM: each lane keeps ``C[i, j]`` in a register across the row's nonzeros).
* When the warp's body is then one output lane loop over a range known from the
  sizes alone, that loop is cut into 32-iteration chunks, each a warp of its
  own (``@gpu_lane_split``): SpMM at N = 128 runs 4 warps per row.
* When the warp's body ends in a loop whose iterations write their own
  entries (SDDMM's nonzeros of a row) and whose one inner loop is a pure sum
  reduction (SDDMM's ``k``), the lanes go to that output loop instead: one
  iteration per lane, each lane running the reduction loop serially into its
  own scalar, and the warp's other lanes sharing the outer iteration's
  operands (the row of ``X``) through the cache.  ``GpuMapping.group``
  names the reduction loop: a group of 1 to 32 lanes may share each
  iteration of the output loop, the reduction loop then spread over the
  group's lanes and summed with shuffles inside the group (a group of 32 is a
  warp per nonzero with the lanes over ``k``), and several warps may share
  one outer iteration (long rows); ``passes/lane_groups.py`` records that on
  the lane loop (``LaneGroups``), its launch symbols ``spc_group`` and
  ``spc_split`` set per call.  When that loop runs over a compressed level's
  positions, ``[pos[i], pos[i + 1])``, ``GpuMapping.flat`` names it: the pairs
  (outer iteration, position) may then be enumerated flat, in equal chunks of
  positions per warp, each position's outer iteration found by search (skewed
  rows: no warp gets more than its chunk; short rows: no idle lanes);
  ``passes/flat_positions.py`` records that (``FlatPositions``, launch
  symbol ``spc_flat``).
* When that inner reduction runs over a row's positions instead and the
  output loop over a range of sizes (``C[i,j] = f(sum(k, A[i,k] * B[k,j]))``:
  SpMM with an epilogue, whose sum stays inside the column loop), the
  columns go to lanes, split into 32-column warps, each lane walking the row
  (``column_lanes``): SpMM's mapping, B's rows read coalesced.
* Otherwise, when the warp's body is one serial loop whose iterations write
  their own entries and which holds lane loops, the outer loop gets a block
  per iteration and that loop a warp per iteration.
* An outer loop with no lane loop inside gets one thread per iteration.
* An outer loop that is not independent (transposed access: ``y[j] += ...``)
  runs the same way with atomic additions for its accumulating stores; a
  scalar output (``s = sum ...``) accumulates per iteration and adds atomically.
  With ``deterministic=True`` neither happens: such kernels run on one warp,
  whose lane loops and warp sums have a fixed order, so results are
  bit-identical from run to run.
* Anything else runs on one warp (``single_warp``), with lane loops inside
  where they are safe.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import count

from ..ir.nodes import (Alloc, Assign, BinOp, CompareSwap, Block, Buffer, Const, DType, Expr, For,
                        GpuMapping, GridMode, If, Kernel, Let, Load, LoopKind, ParamRole,
                        Stmt, Store, Var, WarpSum, While, block, dtype_of)
from .map_parallel import _binds
from ..ir.affine import coefficient as _coefficient, inline, let_env, \
    signed_terms as _signed_terms, var_names
from ..ir.traverse import rewrite, statements, walk
from ..ir.lane_groups import contiguous_positions

WARP_SIZE = 32
WARPS_PER_BLOCK = 8
UNROLL = 4             # lane loops may run this many iterations per lane at once
THREADS_PER_BLOCK = WARP_SIZE * WARPS_PER_BLOCK
LANE_KINDS = (LoopKind.GPU_LANE, LoopKind.GPU_LANE_SPLIT)


# ---------------------------------------------------------------------------
# Small queries on statements
# ---------------------------------------------------------------------------

stmts_of = statements         # the statements of a Block, nested Blocks flattened


def all_stmts(s: Stmt):
    """Every statement in ``s``, parents first."""
    for n in walk(s):
        if isinstance(n, (Block, Let, Assign, Store, For, While, If, Alloc, CompareSwap)):
            yield n


def exprs_of(s: Stmt):
    """Every expression read by a statement of ``s`` (not the variables it defines)."""
    for n in all_stmts(s):
        if isinstance(n, (Let, Assign)):
            yield n.value
        elif isinstance(n, Store):
            yield n.index
            yield n.value
        elif isinstance(n, For):
            yield n.lo
            yield n.hi
        elif isinstance(n, While):
            yield n.cond
        elif isinstance(n, If):
            yield n.cond
        elif isinstance(n, CompareSwap):
            yield n.index
            yield n.expected
            yield n.desired


def reads(s: Stmt) -> list[str]:
    """The variable names read in ``s``, with repetition."""
    out = []
    for e in exprs_of(s):
        out.extend(n.name for n in walk(e) if isinstance(n, Var))
    return out


def declared(s: Stmt) -> set[str]:
    """Names that ``s`` declares (Let) or binds as a loop variable."""
    return {n.var.name for n in all_stmts(s) if isinstance(n, (Let, For, CompareSwap))}


def assigned(s: Stmt) -> set[str]:
    return {n.var.name for n in all_stmts(s) if isinstance(n, Assign)}


def loaded_buffers(s: Stmt) -> set[str]:
    return {n.buf.name for e in exprs_of(s) for n in walk(e) if isinstance(n, Load)}


def has_lane_loop(s: Stmt) -> bool:
    return any(isinstance(n, For) and n.kind in LANE_KINDS for n in all_stmts(s))


def injective(index: Expr, loop: For) -> bool:
    """True when ``index`` (as computed in ``loop``'s body) differs between any two
    iterations: it is c * var + (terms that do not change inside the loop), c != 0."""
    e = inline(index, let_env(loop.body))
    variant = declared(loop.body) | assigned(loop.body) | {loop.var.name}
    coef = 0
    for sign, term in _signed_terms(e):
        names = var_names(term)
        if loop.var.name in names:
            c = _coefficient(term, loop.var.name)
            if c is None:
                return False
            coef += sign * c
        elif names & variant:
            return False
    return coef != 0


# ---------------------------------------------------------------------------
# Which loops can be spread over lanes
# ---------------------------------------------------------------------------

def sum_reductions(loop: For) -> list[Var] | None:
    """The variables declared outside ``loop`` that its body assigns, when each
    one is only summed into (``r = r + e``, ``e`` not reading ``r``; not a
    boolean) and read nowhere else in the body; None when some outer variable
    is assigned otherwise (state carried from one iteration to the next)."""
    found = reductions_of(loop)
    if found is None or any(op != "+" for _, op in found):
        return None
    return [r for r, _ in found]


def reductions_of(loop: For) -> list[tuple[Var, str]] | None:
    """(variable, operator) for each variable declared outside ``loop`` that its
    body assigns, when each is only combined into by one associative operator
    and read nowhere else in the body: ``r = r + e``, ``r = max(r, e)``,
    ``r = min(r, e)`` (``e`` not reading ``r``; not a boolean), or a boolean
    ``r = true`` (operator "||"); None when some outer variable is assigned
    otherwise (state carried from one iteration to the next)."""
    body = loop.body
    local = declared(body) | {loop.var.name}
    outer = {}
    for n in all_stmts(body):
        if isinstance(n, Assign) and n.var.name not in local:
            outer.setdefault(n.var.name, []).append(n)
    uses = reads(body)
    reductions = []
    for name, assigns in outer.items():
        ops = {_combined_by(a) for a in assigns}
        if len(ops) != 1 or None in ops:
            return None
        op = ops.pop()
        if uses.count(name) != (0 if op == "||" else len(assigns)):
            return None                     # read other than by its own update
        reductions.append((assigns[0].var, op))
    return reductions


def _combined_by(a: Assign) -> str | None:
    """The operator of a reduction step ``a`` (see ``reductions_of``), or None."""
    v, name = a.value, a.var.name
    if a.var.dtype is DType.BOOL:
        return "||" if isinstance(v, Const) and v.value is True else None
    if isinstance(v, BinOp) and v.op in ("+", "max", "min") and isinstance(v.lhs, Var) \
            and v.lhs.name == name and name not in var_names(v.rhs):
        return v.op
    return None


def lane_parallel(loop: For, params: set[str], atomic: bool) -> list[Var] | None:
    """``lane_reductions`` where every reduction is a sum: the summed variables."""
    found = lane_reductions(loop, params, atomic)
    if found is None or any(op != "+" for _, op in found):
        return None
    return [r for r, _ in found]


def lane_reductions(loop: For, params: set[str], atomic: bool
                    ) -> list[tuple[Var, str]] | None:
    """The reductions of ``loop`` (variable, operator) if its iterations can run
    on different lanes (or warps), else None.

    Requires: ``params`` names the kernel's buffer parameters.  Ensures: the
    loop's iterations are independent except for (a) scalar reductions into
    variables declared outside it (``reductions_of``), returned with their
    operators (the per-lane partial results must be combined), and (b) atomic
    stores (when ``atomic``, every store must already be atomic or injective);
    an array the loop stores (injectively) it may load only at the entry the
    same iteration stores.
    """
    body = loop.body
    reductions = reductions_of(loop)
    if reductions is None:
        return None
    stored: dict[str, set] = {}
    for n in all_stmts(body):
        if isinstance(n, Store):
            if n.buf.name not in params:
                if n.buf.name in {a.buf.name for a in all_stmts(body) if isinstance(a, Alloc)}:
                    continue                # a lane's own local array
                return None
            if n.atomic:
                stored.setdefault(n.buf.name, set())
                continue
            if not injective(n.index, loop):
                return None
            stored.setdefault(n.buf.name, set()).add(inline(n.index, let_env(body)))
    if any(len(forms) > 1 for forms in stored.values()):
        return None                         # two index forms might meet across iterations
    env = let_env(body)
    for e in exprs_of(body):                # an iteration may read back only the entry it
        for n in walk(e):                   # stores (online_softmax's rescaled output row)
            if isinstance(n, Load) and n.buf.name in stored and \
                    inline(n.index, env) not in stored[n.buf.name]:
                return None
    return reductions


# ---------------------------------------------------------------------------
# Rewrites
# ---------------------------------------------------------------------------

class FreshNames:
    """Names no variable or parameter of a kernel has: ``fresh(stem, dtype)`` is
    ``stem``, else ``stem1``, ``stem2``... (each handed out once)."""

    def __init__(self, kernel: Kernel):
        self.taken = {n.name for n in walk(kernel.body) if isinstance(n, Var)}
        self.taken |= {p.name for p in kernel.params}

    def fresh(self, stem: str, dtype: DType) -> Var:
        for k in count():
            name = stem if k == 0 else f"{stem}{k}"
            if name not in self.taken:
                self.taken.add(name)
                return Var(name, dtype)
        raise AssertionError("unreachable")


def _zero(dtype: DType) -> Const:
    return Const(0.0 if dtype.is_float else 0, dtype)


def _identity(op: str, dtype: DType) -> Const:
    """The value a reduction by ``op`` starts from."""
    if op == "||":
        return Const(False, DType.BOOL)
    if op in ("max", "min"):
        if not dtype.is_float:
            raise AssertionError("integer max/min reductions are not lowered")
        return Const(float("-inf") if op == "max" else float("inf"), dtype)
    return _zero(dtype)


def _rename(s, old: str, new: Var):
    return rewrite(s, lambda n: new if isinstance(n, Var) and n.name == old else n)


def to_lanes(loop: For, reductions: list[tuple[Var, str]], names: FreshNames) -> Stmt:
    """``loop`` as a lane loop; each reduction gets a per-lane partial result
    (starting from its operator's identity) that is combined over the warp and
    into the reduction after the loop."""
    if not reductions:
        return replace(loop, kind=LoopKind.GPU_LANE)
    body = loop.body
    before, after = [], []
    for r, op in reductions:
        part = names.fresh(f"{r.name}_lane", r.dtype)
        body = _rename(body, r.name, part)
        before.append(Let(part, _identity(op, r.dtype)))
        after.append(Assign(r, BinOp(op, r, WarpSum(part, op))))
    return Block(tuple(before) + (replace(loop, body=body, kind=LoopKind.GPU_LANE),)
                 + tuple(after))


def interchange(outer: For, names: FreshNames) -> Stmt | None:
    """``for p: lets; for j @lane: ... C[idx(j)] += v`` as
    ``for j @lane: r = 0; for p: lets; ...; r += v; C[idx(j)] += r``, or None.

    Requires: the lane loop is the last statement of ``outer``'s body, after
    Lets only; its bounds and its stores' indices do not depend on ``outer``'s
    iteration; it only accumulates into float outputs and reads none of them.
    Ensures: the same sums, with one store per output entry instead of one per
    iteration of ``outer`` (float addition reassociated once: ``C + (v1 + v2 ...)``).
    """
    body = stmts_of(outer.body)
    if outer.kind is not LoopKind.SERIAL or not body:
        return None
    from .register_tile import _last_loop
    found = _last_loop(body[-1])         # the lane loop, maybe under padding guards
    if found is None:
        return None
    (lane, rebuild), lets = found, body[:-1]
    if lane.kind is not LoopKind.GPU_LANE or not all(isinstance(s, Let) for s in lets):
        return None
    outer_vars = {outer.var.name} | (declared(outer.body) - declared(lane.body) - {lane.var.name})
    if (var_names(lane.lo) | var_names(lane.hi)) & outer_vars:
        return None
    if assigned(outer.body) & outer_vars:
        return None
    stores = [n for n in all_stmts(lane.body) if isinstance(n, Store)]
    if not stores or any(not s.accumulate or not s.buf.dtype.is_float for s in stores):
        return None
    if loaded_buffers(outer.body) & {s.buf.name for s in stores}:
        return None
    inner_vars = declared(lane.body) | assigned(lane.body)
    env = let_env(lane.body)
    indices = []
    for s in stores:
        idx = inline(s.index, env)
        if var_names(idx) & (outer_vars | inner_vars):
            return None
        indices.append(idx)
    # a store under an If whose condition the lane can evaluate on its own (a
    # block-padding bound such as ``i < size_i``) keeps that condition when
    # hoisted; conditions that vary with ``outer`` (padding slots) only decide
    # what is added to the register
    guards = []
    for s in stores:
        conds = []
        for c in _conditions_to(lane.body, s) or []:
            c = inline(c, env)
            if not var_names(c) & (outer_vars | inner_vars):
                conds.append(c)
        guards.append(conds)
    regs = [names.fresh(f"{s.buf.name}_reg", dtype_of(s.value)) for s in stores]
    by_store = {id(s): r for s, r in zip(stores, regs)}

    def to_reg(n):
        if isinstance(n, Store) and id(n) in by_store:
            r = by_store[id(n)]
            return Assign(r, BinOp("+", r, n.value))
        return n

    new_lane_body = _replace_stores(lane.body, to_reg)
    inner = _drop_dead_lets(Block(stmts_of(new_lane_body)))
    new_outer = replace(outer, body=_drop_dead_lets(block(*lets, rebuild(inner))))
    inits = tuple(Let(r, _zero(r.dtype)) for r in regs)
    writes = []
    for s, idx, r, conds in zip(stores, indices, regs, guards):
        w = Store(s.buf, idx, r, accumulate=True, atomic=s.atomic)
        for c in reversed(conds):
            w = If(c, w)
        writes.append(w)
    return replace(lane, body=Block(inits + (new_outer,) + tuple(writes)))


def _conditions_to(s: Stmt, target: Stmt) -> list[Expr] | None:
    """The conditions of the Ifs enclosing ``target`` inside ``s`` (outermost
    first), or None when ``target`` is not in ``s``."""
    if s is target:
        return []
    if isinstance(s, Block):
        for c in s.body:
            found = _conditions_to(c, target)
            if found is not None:
                return found
        return None
    if isinstance(s, (For, While)):
        return _conditions_to(s.body, target)
    if isinstance(s, If):
        found = _conditions_to(s.then, target)
        if found is not None:
            return [s.cond] + found
        if s.otherwise is not None:
            found = _conditions_to(s.otherwise, target)
            if found is not None:
                from ..ir.nodes import Const as _C
                return [BinOp("==", s.cond, _C(False, DType.BOOL))] + found
    return None


def _drop_dead_lets(body: Block) -> Block:
    """``body`` without its top-level Lets of variables nothing reads (their
    values are loads and arithmetic, so dropping them changes no result)."""
    stmts = list(body.body)
    while True:
        used = set(reads(Block(tuple(stmts))))
        keep = [s for s in stmts if not (isinstance(s, Let) and s.var.name not in used)]
        if len(keep) == len(stmts):
            return Block(tuple(stmts))
        stmts = keep


def _replace_stores(s: Stmt, fn) -> Stmt:
    """``s`` with each Store statement ``n`` (identified by object) replaced by fn(n)."""
    if isinstance(s, Store):
        return fn(s)
    if isinstance(s, Block):
        return Block(tuple(_replace_stores(c, fn) for c in s.body))
    if isinstance(s, (For, While)):
        return replace(s, body=_replace_stores(s.body, fn))
    if isinstance(s, If):
        return replace(s, then=_replace_stores(s.then, fn),
                       otherwise=None if s.otherwise is None else _replace_stores(s.otherwise, fn))
    return s


def map_lanes(s: Stmt, ctx) -> tuple[Stmt, bool]:
    """Map the innermost loops of ``s`` that can be spread over a warp's lanes
    to lane loops (see the module docstring); returns (statement, mapped any)."""
    if isinstance(s, Block):
        parts = [map_lanes(c, ctx) for c in s.body]
        return Block(tuple(p for p, _ in parts)), any(m for _, m in parts)
    if isinstance(s, For):
        if s.kind is not LoopKind.SERIAL:
            return s, has_lane_loop(s)
        body, mapped = map_lanes(s.body, ctx)
        loop = replace(s, body=body)
        if mapped:
            swapped = interchange(loop, ctx.names)
            return (swapped if swapped is not None else loop), True
        reductions = lane_reductions(loop, ctx.params, ctx.atomic)
        if reductions is None:
            return loop, False
        return to_lanes(loop, reductions, ctx.names), True
    if isinstance(s, While):
        body, mapped = map_lanes(s.body, ctx)
        return replace(s, body=body), mapped
    if isinstance(s, If):
        then, m1 = map_lanes(s.then, ctx)
        other, m2 = (None, False) if s.otherwise is None else map_lanes(s.otherwise, ctx)
        return replace(s, then=then, otherwise=other), m1 or m2
    return s, False


class _Ctx:
    def __init__(self, kernel: Kernel, atomic: bool):
        self.names = FreshNames(kernel)
        self.params = {p.name for p in kernel.params if isinstance(p.value, Buffer)}
        self.sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
        self.atomic = atomic


def _make_atomic(s: Stmt) -> Stmt:
    return _replace_stores(s, lambda n: replace(n, atomic=True) if n.accumulate else n)


def _only_sizes(e: Expr, sizes: set[str]) -> bool:
    return all(not isinstance(n, Load) for n in walk(e)) and var_names(e) <= sizes


def group_reduction(loop: For, ctx: _Ctx) -> For | None:
    """For an outer loop whose body is ``lets; for p: (lets; for k: r = r + e;
    statements without loops)``, where the ``p`` loop's iterations write their
    own entries and ``k`` is a pure sum reduction over a range of sizes only
    (a dense index) into scalars declared inside the ``p`` loop: the ``k``
    loop (the one a lane group may share), else None."""
    found = _output_and_reduction(loop, ctx)
    if found is None or not (_only_sizes(found[1].lo, ctx.sizes)
                             and _only_sizes(found[1].hi, ctx.sizes)):
        return None
    return found[1]


def column_lanes(loop: For, ctx: _Ctx) -> For | None:
    """For an outer loop shaped as ``group_reduction`` wants but whose reduction
    runs over a row's positions (``C[i,j] = f(sum(k, A[i,k] * B[k,j]))``: an
    epilogue keeps the sum inside the column loop) and whose output loop runs
    over a range of sizes only: that output loop, whose iterations go to lanes
    (each lane walking the row, B's rows read coalesced: SpMM's mapping), else
    None."""
    found = _output_and_reduction(loop, ctx)
    if found is None:
        return None
    out_loop, red = found
    if _only_sizes(red.lo, ctx.sizes) and _only_sizes(red.hi, ctx.sizes):
        return None
    if not (_only_sizes(out_loop.lo, ctx.sizes) and _only_sizes(out_loop.hi, ctx.sizes)):
        return None
    return out_loop


def _output_and_reduction(loop: For, ctx: _Ctx) -> tuple[For, For] | None:
    """(the output loop, its one sum-reduction loop) of an outer loop whose body
    is ``lets; for p: (lets; for k: r = r + e; statements without loops)``, the
    ``p`` iterations writing their own entries and ``r`` declared inside the
    ``p`` loop; else None."""
    if ctx.atomic:
        return None
    parts = stmts_of(loop.body)
    if not parts or not isinstance(parts[-1], For) or not all(isinstance(s, Let)
                                                             for s in parts[:-1]):
        return None
    out_loop = parts[-1]
    if out_loop.kind is not LoopKind.SERIAL or lane_parallel(out_loop, ctx.params, False) != []:
        return None
    inner = [n for n in all_stmts(out_loop.body) if isinstance(n, (For, While, Alloc))]
    if len(inner) != 1 or not isinstance(inner[0], For) \
            or inner[0] not in stmts_of(out_loop.body):
        return None
    red = inner[0]
    if red.kind is not LoopKind.SERIAL:
        return None
    if any(isinstance(n, (Store, If, For, While, Alloc)) for n in all_stmts(red.body)):
        return None
    reductions = lane_parallel(red, ctx.params, False)
    if not reductions or not {r.name for r in reductions} <= declared(out_loop.body):
        return None
    if any(isinstance(n, WarpSum) for e in exprs_of(out_loop) for n in walk(e)):
        return None
    return out_loop, red


def map_outer(loop: For, ctx: _Ctx) -> tuple[For, GpuMapping]:
    """Map the outermost loop (one warp, block or thread per iteration) and the
    loops inside it; returns the loop and the launch shape."""
    red = group_reduction(loop, ctx)
    if red is not None:
        parts = stmts_of(loop.body)
        lanes = replace(parts[-1], kind=LoopKind.GPU_LANE)
        flat = lanes.var.name if contiguous_positions(loop, lanes) else None
        return replace(loop, body=Block(parts[:-1] + (lanes,)), kind=LoopKind.GPU_WARP), \
            _mapping(GridMode.WARP, group=red.var.name, flat=flat)
    cols = column_lanes(loop, ctx)
    if cols is not None:
        parts = stmts_of(loop.body)
        split = replace(parts[-1], kind=LoopKind.GPU_LANE_SPLIT)
        return replace(loop, body=Block(parts[:-1] + (split,)), kind=LoopKind.GPU_WARP), \
            _mapping(GridMode.WARP)
    body, mapped = map_lanes(loop.body, ctx)
    if not mapped:
        return replace(loop, body=body, kind=LoopKind.GPU_THREAD), _mapping(GridMode.THREAD)
    parts = stmts_of(body)
    if parts and isinstance(parts[-1], For) and all(isinstance(s, Let) for s in parts[:-1]):
        last = parts[-1]
        if last.kind is LoopKind.GPU_LANE and _only_sizes(last.lo, ctx.sizes) \
                and _only_sizes(last.hi, ctx.sizes):
            split = replace(last, kind=LoopKind.GPU_LANE_SPLIT)
            return replace(loop, body=Block(parts[:-1] + (split,)), kind=LoopKind.GPU_WARP), \
                _mapping(GridMode.WARP)
        if last.kind is LoopKind.SERIAL and has_lane_loop(last) \
                and lane_parallel(last, ctx.params, ctx.atomic) == []:
            per_warp = replace(last, kind=LoopKind.GPU_WARP)
            return (replace(loop, body=Block(parts[:-1] + (per_warp,)), kind=LoopKind.GPU_BLOCK),
                    _mapping(GridMode.BLOCK))
    return replace(loop, body=body, kind=LoopKind.GPU_WARP), _mapping(GridMode.WARP)


def _mapping(grid: GridMode, group: str | None = None, flat: str | None = None) -> GpuMapping:
    return GpuMapping(grid, UNROLL, group, flat)


def _privatized(prefix, rest, kernel: Kernel):
    """For ``let acc = 0; for ...: acc = acc + e; out[c] = acc`` (a scalar
    output), the loop with ``acc`` declared per iteration and added to ``out[c]``
    at its end; None when the kernel is not of that shape."""
    if len(rest) != 2 or not isinstance(rest[0], For) or not isinstance(rest[1], Store):
        return None
    loop, store = rest
    if not prefix or not isinstance(prefix[-1], Let):
        return None
    init = prefix[-1]
    acc = init.var
    if not (isinstance(init.value, Const) and init.value.value == 0
            and isinstance(store.value, Var) and store.value.name == acc.name):
        return None
    if var_names(store.index) & (declared(loop) | assigned(loop)):
        return None
    if assigned(loop) & {s.var.name for s in prefix[:-1]}:
        return None                         # state carried between iterations
    if any(acc.name in var_names(e) for e in (p.value for p in prefix[:-1])):
        return None
    if any(isinstance(n, Store) and not n.accumulate for n in all_stmts(loop)):
        return None
    # the loop's only effect on variables outside it must be the sum into acc
    outside = assigned(loop.body) - declared(loop.body)
    if outside != {acc.name}:
        return None
    for n in all_stmts(loop.body):
        if isinstance(n, Assign) and n.var.name == acc.name:
            v = n.value
            if not (isinstance(v, BinOp) and v.op == "+" and isinstance(v.lhs, Var)
                    and v.lhs.name == acc.name and acc.name not in var_names(v.rhs)):
                return None
    if reads(loop.body).count(acc.name) != sum(
            1 for n in all_stmts(loop.body) if isinstance(n, Assign) and n.var.name == acc.name):
        return None
    body = Block((Let(acc, init.value),) + stmts_of(_make_atomic(loop.body))
                 + (Store(store.buf, store.index, acc, accumulate=True, atomic=True),))
    return prefix[:-1], replace(loop, body=body)


def stores_follow(loop: For) -> bool:
    """True when every store in ``loop`` writes where the iteration's own values
    point (its index depends on the loop variable): a check of the lowerer's
    ``outer_independent`` claim that catches stores every iteration shares.
    Stores to arrays allocated inside the loop (each iteration's own) count as
    following it."""
    dep = {loop.var.name}
    changed = True
    while changed:
        changed = False
        for n in all_stmts(loop.body):
            if n.__class__ in (Let, Assign, For) and n.var.name not in dep and (
                    var_names(n.lo) | var_names(n.hi) if isinstance(n, For)
                    else var_names(n.value)) & dep:
                dep.add(n.var.name)
                changed = True
    private = {n.buf.name for n in all_stmts(loop.body) if isinstance(n, Alloc)}
    return all(var_names(n.index) & dep for n in all_stmts(loop.body)
               if isinstance(n, Store) and n.buf.name not in private)


def map_gpu(kernel: Kernel, *, deterministic: bool = False) -> Kernel:
    """Map ``kernel``'s loops to the GPU (see the module docstring).

    Requires: a verified kernel whose ``outer_independent`` (if any)
    names the outer loop's index.  Ensures: the interpreter computes the same
    results (up to float reassociation of sums); ``kernel.gpu`` says how to
    launch it; with ``deterministic`` no store is atomic.  A kernel an earlier
    pass mapped (``kernel.gpu`` set: tensorize's tiles) is returned unchanged.
    """
    if kernel.gpu is not None:
        return kernel
    stmts = stmts_of(kernel.body)
    k = 0
    while k < len(stmts) and isinstance(stmts[k], Let):
        k += 1
    prefix, rest = stmts[:k], stmts[k:]
    new_body, mode = None, None
    outside = {s.var.name for s in prefix}
    if len(rest) == 1 and isinstance(rest[0], For) and rest[0].kind in (
            LoopKind.SERIAL, LoopKind.PARALLEL) and not assigned(rest[0]) & outside:
        # (a loop that assigns a variable declared before it carries state from one
        # iteration to the next: a merge's position, a sparse output's append point)
        loop = replace(rest[0], kind=LoopKind.SERIAL)
        if _binds(loop, kernel.outer_independent) and stores_follow(loop):
            mapped, mode = map_outer(loop, _Ctx(kernel, atomic=False))
            new_body = Block(prefix + (mapped,))
        elif not deterministic and all(n.accumulate for n in all_stmts(loop)
                                       if isinstance(n, Store)):
            mapped, mode = map_outer(_make_atomic(loop), _Ctx(kernel, atomic=True))
            new_body = Block(prefix + (mapped,))
    if new_body is None and not deterministic:
        found = _privatized(prefix, rest, kernel)
        if found is not None:
            pre, loop = found
            mapped, mode = map_outer(loop, _Ctx(kernel, atomic=True))
            new_body = Block(pre + (mapped,))
    if new_body is None:
        new_body, _ = map_lanes(Block(stmts), _Ctx(kernel, atomic=False))
        mode = _mapping(GridMode.SINGLE_WARP)
    return replace(kernel, body=new_body, gpu=mode)
