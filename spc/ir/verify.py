"""IR invariants, checked after lowering and after every pass."""
from __future__ import annotations

from ..errors import CompileError
from .nodes import (Alloc, CompareSwap, Assign, BinOp, Block, Buffer, Cast, Const, DType, For, GridMode, If, Kernel, LANE_GROUP_SIZES,
                    Let, Load, LoopKind, Neg, ParamRole, Select, Store, ToTF32, Var, WarpSum, Call,
                    MATH_FUNCTIONS, INT_FUNCTIONS, BIT_OPS,
                    While, dtype_of)
from .analysis import sparse_slot
from .jam import jam_of
from .printer import format_expr
from .moves import moves_of
from .vector import vector_of
from .traverse import statements, top_loop, walk
from .lane_groups import flat_positions_of, grouped_lane_loop, lane_groups_of

LANE_GROUP_SYMBOLS = ("group", "split")     # LaneGroups' launch symbols (spc_group, spc_split)
FLAT_SYMBOL = "flat"                        # FlatPositions' (spc_flat)


def verify(kernel: Kernel, stage: str = "") -> Kernel:
    """Raise CompileError unless: every variable is defined before use and
    assigned only after its Let; every buffer read is a parameter or Alloc;
    only OUTPUT buffers and Allocs are stored to; loop bounds and indices are
    integers; conditions are booleans; a PARALLEL loop is the kernel's only
    top-level statement; GPU lane loops are not nested in lane loops, and a
    warp sum is not taken inside one (the warp's lanes must all reach it);
    a loop's ``jam`` is one the CUDA renderer prints (``_check_jam``), and its
    ``vector`` too (``_check_vector``);
    an atomic store accumulates; parameter names are distinct and no Let or loop
    variable redeclares a visible name; ``kernel.gpu``'s group and flat loops
    exist, of the kinds the mapping needs; ``kernel.overwrites`` names output
    buffers that no store accumulates into.  Returns the kernel unchanged.
    """
    where = f" (after {stage})" if stage else ""
    bufs = {p.name: p for p in kernel.params if isinstance(p.value, Buffer)}
    local_bufs: set[str] = set()

    def fail(msg):
        raise CompileError(f"invalid IR in kernel {kernel.name}{where}: {msg}")

    def expr(e, scope):
        if isinstance(e, (Const, Var, Cast)) and e.dtype.widened is not e.dtype \
                and e.dtype.is_float:
            fail(f"{e!r}: {e.dtype.value} is a storage type (arrays hold it; loads "
                 f"widen it to {e.dtype.widened.value})")
        if isinstance(e, Const):
            return
        if isinstance(e, Var):
            if e.name not in scope:
                fail(f"variable '{e.name}' is used before it is defined")
            return
        if isinstance(e, Load):
            if e.buf.name not in bufs and e.buf.name not in local_bufs:
                fail(f"load from unknown buffer '{e.buf.name}'")
            expr(e.index, scope)
            if dtype_of(e.index) not in (DType.I64, DType.I32):
                fail(f"index of {e.buf.name} is not an integer")
            return
        if isinstance(e, BinOp):
            expr(e.lhs, scope)
            expr(e.rhs, scope)
            if e.op in ("&&", "||") and (dtype_of(e.lhs) is not DType.BOOL
                                         or dtype_of(e.rhs) is not DType.BOOL):
                fail(f"operands of {e.op} must be booleans")
            if e.op in BIT_OPS and not (dtype_of(e.lhs).is_int and dtype_of(e.rhs).is_int):
                fail(f"operands of {e.op} must be integers")
            return
        if isinstance(e, Neg):
            expr(e.operand, scope)
            return
        if isinstance(e, Cast):
            expr(e.value, scope)
            return
        if isinstance(e, Select):
            for x in (e.cond, e.if_true, e.if_false):
                expr(x, scope)
            if dtype_of(e.cond) is not DType.BOOL:
                fail("select condition is not a boolean")
            return
        if isinstance(e, Call):
            expr(e.value, scope)
            if e.fn in INT_FUNCTIONS:
                if dtype_of(e.value) is not DType.I64:
                    fail(f"{e.fn}() of a value that is not an i64")
            elif e.fn not in MATH_FUNCTIONS:
                fail(f"unknown function {e.fn}()")
            elif not dtype_of(e.value).is_float:
                fail(f"{e.fn}() of a non-float value")
            return
        if isinstance(e, ToTF32):
            expr(e.value, scope)
            if dtype_of(e.value) is not DType.F32:
                fail("tf32() rounds float32 values only")
            return
        if isinstance(e, WarpSum):
            if in_lanes[0]:
                fail("a warp sum inside a lane loop")
            expr(e.value, scope)
            return
        fail(f"unknown expression {e!r}")

    lane_kinds = (LoopKind.GPU_LANE, LoopKind.GPU_LANE_SPLIT)
    in_lanes = [False]
    in_warp = [False]          # inside a @gpu_warp loop

    def stmt(s, scope: set, top: bool):
        if isinstance(s, Block):
            inner = set(scope)
            for c in s.body:
                stmt(c, inner, top and len(s.body) == 1)
        elif isinstance(s, Let):
            expr(s.var, {s.var.name})
            expr(s.value, scope)
            if dtype_of(s.value) is not s.var.dtype:
                fail(f"'{s.var.name}' is declared {s.var.dtype.value} but given a "
                     f"{dtype_of(s.value).value} value (a Cast says how to convert)")
            if s.var.name in scope:
                fail(f"'{s.var.name}' is declared again where it is already visible")
            scope.add(s.var.name)
            fixed.discard(s.var.name)
        elif isinstance(s, Assign):
            if s.var.name not in scope:
                fail(f"assignment to undeclared variable '{s.var.name}'")
            if s.var.name in fixed:
                fail(f"assignment to '{s.var.name}', a loop variable or size parameter")
            expr(s.value, scope)
        elif isinstance(s, Store):
            p = bufs.get(s.buf.name)
            if s.buf.name not in local_bufs and (p is None or p.role not in (
                    ParamRole.OUTPUT, ParamRole.SCRATCH)):
                fail(f"store to '{s.buf.name}', which is not an output")
            if s.atomic and not s.accumulate:
                fail(f"atomic store to '{s.buf.name}' that does not accumulate")
            expr(s.index, scope)
            expr(s.value, scope)
            if dtype_of(s.index) not in (DType.I64, DType.I32):
                fail(f"index of store to '{s.buf.name}' is not an integer")
            if s.buf.dtype.is_float and dtype_of(s.value) is DType.F32 \
                    and s.buf.dtype.widened is DType.F64:
                fail(f"store of a float32 value to '{s.buf.name}', a float64 array "
                     f"(stores may round values, never widen them)")
        elif isinstance(s, CompareSwap):
            p = bufs.get(s.buf.name)
            if s.buf.name not in local_bufs and (p is None or p.role not in (
                    ParamRole.OUTPUT, ParamRole.SCRATCH)):
                fail(f"compare-and-swap on '{s.buf.name}', which is not an output")
            if not s.buf.dtype.is_int or s.var.dtype is not DType.I64:
                fail(f"compare-and-swap on '{s.buf.name}': an integer array, an i64 result")
            for e in (s.index, s.expected, s.desired):
                expr(e, scope)
                if not dtype_of(e).is_int:
                    fail(f"compare-and-swap on '{s.buf.name}' with a non-integer operand")
            if s.var.name in scope:
                fail(f"'{s.var.name}' is declared again where it is already visible")
            scope.add(s.var.name)
        elif isinstance(s, Alloc):
            if s.is_workspace:
                expr(s.size, scope)
                if dtype_of(s.size) is not DType.I64:
                    fail(f"size of workspace '{s.buf.name}' is not an int64 expression")
            elif s.size < 0:
                fail(f"negative size of local array '{s.buf.name}'")
            if s.shared and (s.is_workspace or not in_warp[0]):
                fail(f"shared array '{s.buf.name}' of a size known only at run time, or "
                     f"outside a warp loop")
            local_bufs.add(s.buf.name)
        elif isinstance(s, For):
            expr(s.lo, scope)
            expr(s.hi, scope)
            if any(dtype_of(b) not in (DType.I64, DType.I32) for b in (s.lo, s.hi)):
                fail(f"loop bound of '{s.var.name}' is not an integer")
            if s.var.name in scope:
                fail(f"loop variable '{s.var.name}' shadows a visible name")
            fixed.add(s.var.name)
            if s.kind is LoopKind.PARALLEL and not top:
                fail("a parallel loop must be the kernel's only top-level statement")
            if s.jam is not None:
                _check_jam(s, fail)
            if s.vector is not None:
                _check_vector(s, fail)
            if s.groups is not None:
                _check_groups(s, fail)
            if s.flat is not None:
                _check_flat(s, fail)
            if s.moves is not None and not moves_of(s, s.moves.width, s.moves.cols):
                fail(f"moves({s.moves.width}, cols={s.moves.cols}) on the loop over "
                     f"'{s.var.name}', which is not a lane loop copying rows of that many "
                     f"elements, that width 16 bytes of its type (ir.moves.moves_of)")
            if s.kind in MMA_KINDS:
                _check_tile(s, id(s) in tile_inner, in_lanes[0], fail)
                if s.kind is LoopKind.MMA_M:
                    tile_inner.update(id(n) for n in walk(s.body)
                                      if isinstance(n, For) and n.kind in MMA_KINDS)
            outer_warp = in_warp[0]
            in_warp[0] = outer_warp or s.kind is LoopKind.GPU_WARP
            lanes = s.kind in lane_kinds
            if lanes and in_lanes[0]:
                fail(f"lane loop over '{s.var.name}' inside another lane loop")
            in_lanes[0] = in_lanes[0] or lanes
            stmt(s.body, scope | {s.var.name}, False)
            if lanes:
                in_lanes[0] = False
            in_warp[0] = outer_warp
        elif isinstance(s, While):
            expr(s.cond, scope)
            if dtype_of(s.cond) is not DType.BOOL:
                fail("while condition is not a boolean")
            stmt(s.body, set(scope), False)
        elif isinstance(s, If):
            expr(s.cond, scope)
            if dtype_of(s.cond) is not DType.BOOL:
                fail("if condition is not a boolean")
            stmt(s.then, set(scope), False)
            if s.otherwise is not None:
                stmt(s.otherwise, set(scope), False)
        else:
            fail(f"unknown statement {s!r}")

    tile_inner: set[int] = set()       # the @mma_n and @mma_k loops of tiles seen
    names = [p.name for p in kernel.params]
    if len(set(names)) != len(names):
        fail(f"parameters share a name: {sorted(n for n in set(names) if names.count(n) > 1)}")
    sizes = {p.name for p in kernel.params if not isinstance(p.value, Buffer)}
    fixed = set(sizes)          # names that may be read but never assigned
    stmt(kernel.body, set(sizes), True)
    if kernel.gpu is not None:
        _check_gpu(kernel, fail)
    _check_group_places(kernel, fail)
    for name in kernel.overwrites:
        if name not in bufs or bufs[name].role is not ParamRole.OUTPUT:
            fail(f"overwrites '{name}', which is not an output buffer")
        if kernel.adds_to_output:
            fail(f"overwrites '{name}' but adds to the output's prior contents")
        if any(isinstance(n, Store) and n.buf.name == name and n.accumulate
               for n in walk(kernel.body)):
            fail(f"overwrites '{name}' but accumulates into it")
    return kernel


MMA_KINDS = (LoopKind.MMA_M, LoopKind.MMA_N, LoopKind.MMA_K, LoopKind.MMA_SPARSE_K)
_TILE_STEP = {LoopKind.MMA_M: 16, LoopKind.MMA_N: 8, LoopKind.MMA_K: 8,
              LoopKind.MMA_SPARSE_K: 16}


def _check_tile(loop: For, nested: bool, in_lanes: bool, fail) -> None:
    """A tensor-core tile's loop (``LoopKind.MMA_M``'s docstring): @mma_m at the
    head of a tile, not inside lane loops, holding exactly one @mma_n loop
    whose body is one @mma_k loop holding one accumulating store, or statements
    without loops; each over ``[0, a multiple of its instruction step)``."""
    kind = loop.kind.value
    if (loop.kind is LoopKind.MMA_M) == nested:
        fail(f"@{kind} loop over '{loop.var.name}' "
             + ("inside a tile" if nested else "outside a tile (an @mma_m loop's)"))
    if in_lanes:
        fail(f"@{kind} loop over '{loop.var.name}' inside a lane loop (a tile needs the warp)")
    step = _TILE_STEP[loop.kind]
    if not (isinstance(loop.lo, Const) and loop.lo.value == 0 and isinstance(loop.hi, Const)
            and loop.hi.value > 0 and loop.hi.value % step == 0):
        fail(f"@{kind} loop over '{loop.var.name}' must run over [0, a multiple of {step})")
    body = loop.body.body if isinstance(loop.body, Block) else (loop.body,)
    loops = [n for n in walk(loop.body) if isinstance(n, (For, While))]
    if loop.kind is LoopKind.MMA_M:
        if len(body) != 1 or not isinstance(body[0], For) or body[0].kind is not LoopKind.MMA_N:
            fail(f"@mma_m loop over '{loop.var.name}' must hold exactly one @mma_n loop")
    elif loop.kind is LoopKind.MMA_N:
        if loops and not (len(body) == 1 and isinstance(body[0], For)
                          and body[0].kind in (LoopKind.MMA_K, LoopKind.MMA_SPARSE_K)):
            fail(f"@mma_n loop over '{loop.var.name}' must hold one @mma_k loop or no loops")
    elif loop.kind is LoopKind.MMA_SPARSE_K:
        if not (len(body) == 2 and isinstance(body[0], Let) and sparse_slot(body[0].value,
                                                                            loop.var.name)
                and isinstance(body[1], Store) and body[1].accumulate):
            fail(f"@mma_sparse_k loop over '{loop.var.name}' must hold "
                 f"'let k = {loop.var.name} / 2 * 4 + index' and one accumulating store")
    elif len(body) != 1 or not isinstance(body[0], Store) or not body[0].accumulate:
        fail(f"@mma_k loop over '{loop.var.name}' must hold one accumulating store")


JAM_KINDS = (LoopKind.GPU_LANE, LoopKind.GPU_LANE_SPLIT, LoopKind.GPU_WARP)
JAM_LAUNCH_CHOICES = ("wide",)


def _check_jam(loop: For, fail) -> None:
    """A loop's Jam: on a lane or warp loop, a factor of at least 2, a launch
    choice on a ``@gpu_lane_split`` loop and only there, sums and a minimum
    trip count only on a ``@gpu_lane`` loop, and the copies and sums that
    ``ir.jam.jam_of`` finds in the body (a pass that changed the body after
    jamming it left them stale)."""
    jam, name = loop.jam, loop.var.name
    if loop.kind not in JAM_KINDS:
        fail(f"jam on the @{loop.kind.value} loop over '{name}' (lane and warp loops only)")
    if jam.factor < 2 or jam.min_trips < 0:
        fail(f"jam of the loop over '{name}': factor {jam.factor} < 2 or "
             f"min_trips {jam.min_trips} < 0")
    if (jam.launch is None) == (loop.kind is LoopKind.GPU_LANE_SPLIT) \
            or (jam.launch is not None and jam.launch not in JAM_LAUNCH_CHOICES):
        fail(f"jam of the loop over '{name}' when {jam.launch!r}: a @gpu_lane_split loop's "
             f"jam, and only its, waits for a launch choice, one of {JAM_LAUNCH_CHOICES}")
    if loop.kind is not LoopKind.GPU_LANE and (jam.sums or jam.min_trips):
        fail(f"jam of the @{loop.kind.value} loop over '{name}' with sums or min_trips "
             f"(only a @gpu_lane loop's lanes add partial sums up, or run short loops "
             f"unjammed)")
    expected = jam_of(loop, jam.factor, jam.min_trips, jam.launch)
    if expected != jam:
        fail(f"jam of the loop over '{name}' does not match its body: it needs "
             + ("none (the body cannot be copied)" if expected is None else
                f"copies {list(expected.copies)} and sums "
                f"{[v.name for v in expected.sums]}"))


def _check_vector(loop: For, fail) -> None:
    """A loop's VectorLoads: the width, loads and sums ``ir.vector.vector_of``
    finds (which loop may have one: ``verify``, after the launch shape)."""
    name = loop.var.name
    expected = vector_of(loop)
    if expected != loop.vector:
        fail(f"vector loads of the loop over '{name}' do not match its body: it needs "
             + ("none" if expected is None else
                f"width {expected.width}, loads "
                f"{[format_expr(x) for x in expected.loads]}, sums "
                f"{[v.name for v in expected.sums]}"))


def _check_groups(loop: For, fail) -> None:
    """A lane loop's LaneGroups: the launch symbols ``group`` and ``split``,
    sizes among 1, 2, 4, ... 32, no jam besides, and the reduction loop and sums
    that ``ir.lane_groups.lane_groups_of`` finds in the body."""
    groups, name = loop.groups, loop.var.name
    if (groups.group, groups.split) != LANE_GROUP_SYMBOLS:
        fail(f"lane groups of the loop over '{name}' with launch symbols "
             f"{(groups.group, groups.split)}: the launcher sets {LANE_GROUP_SYMBOLS}")
    if not groups.sizes or any(g not in LANE_GROUP_SIZES for g in groups.sizes) \
            or list(groups.sizes) != sorted(set(groups.sizes)):
        fail(f"lane groups of the loop over '{name}' of sizes {list(groups.sizes)}: "
             f"increasing, each one of {list(LANE_GROUP_SIZES)}")
    if loop.jam is not None:
        fail(f"lane groups and a jam on the loop over '{name}' (the groups share its "
             f"lanes out; no jammed form is printed)")
    expected = lane_groups_of(loop, groups.reduction, groups.sizes)
    if expected != groups:
        fail(f"lane groups of the loop over '{name}' do not match its body: it needs "
             + ("none (no serial sum reduction over "
                f"'{groups.reduction}' alone in a lane loop)" if expected is None else
                f"sums {[v.name for v in expected.sums]}"))


def _check_flat(loop: For, fail) -> None:
    """A warp loop's FlatPositions: the launch symbol ``flat``, and the grouped
    lane loop over contiguous positions that ``ir.lane_groups.flat_positions_of``
    finds."""
    flat = loop.flat
    if flat.steps != FLAT_SYMBOL:
        fail(f"flat positions of the loop over '{loop.var.name}' with launch symbol "
             f"'{flat.steps}': the launcher sets '{FLAT_SYMBOL}'")
    if flat_positions_of(loop) != flat:
        fail(f"flat positions of the loop over '{loop.var.name}', which is not a @gpu_warp "
             f"loop ending in a grouped lane loop '{flat.lanes}' over positions that "
             f"consecutive iterations cover contiguously")


def _check_group_places(kernel: Kernel, fail) -> None:
    """Lane groups only on the lane loop that ends the top warp loop of a
    ``warp`` grid (the one place the CUDA renderer prints them), flat positions
    only on that warp loop, vector loads only on a lane group's reduction loop
    (the only one whose vectors the CUDA renderer prints)."""
    found = top_loop(kernel)
    top = found[1] if found is not None else None
    lane = grouped_lane_loop(top) if top is not None and top.kind is LoopKind.GPU_WARP \
        and kernel.gpu is not None and kernel.gpu.grid is GridMode.WARP else None
    shared = set()
    for n in walk(kernel.body):
        if not isinstance(n, For):
            continue
        if n.groups is not None:
            if n is not lane:
                fail(f"lane groups on the loop over '{n.var.name}', which is not the lane "
                     f"loop that ends the top @gpu_warp loop of a warp grid")
            shared.update(id(c) for c in statements(n.body)
                          if isinstance(c, For) and c.var.name == n.groups.reduction)
        if n.flat is not None and n is not top:
            fail(f"flat positions on the loop over '{n.var.name}', which is not the "
                 f"kernel's top loop")
    for n in walk(kernel.body):
        if isinstance(n, For) and n.vector is not None and id(n) not in shared:
            fail(f"vector loads on the loop over '{n.var.name}', which is not the serial "
                 f"loop a lane group shares (LaneGroups; the only one whose vectors the "
                 f"CUDA renderer prints)")


def _check_gpu(kernel: Kernel, fail) -> None:
    """``kernel.gpu`` names loops the body has, of the kinds it claims: the
    ``flat`` loop a lane loop, the ``group`` loop a serial loop inside one."""
    gpu = kernel.gpu
    if gpu.unroll < 1:
        fail(f"gpu unroll {gpu.unroll} < 1")
    loops = {n.var.name: n for n in walk(kernel.body) if isinstance(n, For)}
    if gpu.group is not None:
        red = loops.get(gpu.group)
        if red is None or red.kind is not LoopKind.SERIAL:
            fail(f"gpu group '{gpu.group}' is not a serial loop of the kernel")
        if not any(n.kind is LoopKind.GPU_LANE and any(x is red for x in walk(n.body))
                   for n in loops.values()):
            fail(f"gpu group '{gpu.group}' is not inside a lane loop")
    if gpu.flat is not None:
        lane = loops.get(gpu.flat)
        if lane is None or lane.kind is not LoopKind.GPU_LANE:
            fail(f"gpu flat '{gpu.flat}' is not a lane loop of the kernel")
