"""Loop IR -> CUDA C (the body of one ``__global__`` function).

The mapping is already in the IR (see :mod:`spc.passes.map_gpu`,
:mod:`spc.passes.unroll_jam`, :mod:`spc.passes.vector_loads`,
:mod:`spc.passes.lane_groups` and :mod:`spc.passes.flat_positions`); this
module only spells it out.  Launch-time choices are launch symbols the IR
names (``Jam.launch``, ``LaneGroups.group``/``.split``,
``FlatPositions.steps``), spelt ``spc_<name>``: the launcher
(``codegen/cuda.py``) picks their values per call, among those the IR allows.

* ``@gpu_warp`` at the top: one warp per iteration, ``WARPS_PER_BLOCK`` warps
  to a block, grid-stride; inside a ``@gpu_block`` loop: the block's warps
  share its iterations.  ``@gpu_block``: one block per iteration.
  ``@gpu_thread``: one thread per iteration.  All grid-stride, so any grid
  size is correct and the launcher picks one from the sizes.
* ``@gpu_lane``: ``for (v = lo + lane; v < hi; v += 32)``.  ``@gpu_lane_split``
  (the last statement of a top ``@gpu_warp`` loop): the pair (outer iteration,
  32-iteration chunk) is the warp's work item, and each lane runs at most one
  iteration.
* A loop's ``jam`` (``passes/unroll_jam.py`` decides it, ``ir.nodes.Jam``
  says what it means) is spelt as ``jam.factor`` copies of the body per
  step, interleaved statement by statement: one C variable per copy of each
  of ``jam.copies`` (``v__0``, ``v__1``...), a validity flag per copy past
  the first (``spc_ok__u``) guarding its loads of copied indices, its stores
  and its sums, and partial sums ``r__u`` for ``jam.sums`` added up after the
  loop.  A jammed ``@gpu_lane`` loop runs its copies 32 apart (a plain lane
  loop when it has fewer than ``jam.min_trips`` iterations); a jammed
  ``@gpu_lane_split`` loop takes chunks of ``32 * factor`` iterations when
  the launch sets ``spc_wide`` (``jam.launch``); a block's jammed
  ``@gpu_warp`` loop runs its copies 8 (the block's warps) apart.  A jam
  anywhere else is refused.  Serial loops inside lanes or threads get
  ``#pragma unroll`` hints (4, or 2 inside a jammed body) for nvcc.
* Statements outside lane loops run on every lane alike (their values agree);
  their stores to global memory are made by lane 0 alone.  A lane loop that
  stores (to global memory or a shared array) is followed by ``__syncwarp()`` so
  that later code on other lanes sees it.
* A ``shared`` Alloc in a warp's iteration is a ``__shared__`` array with a row
  per warp of the block, the warp's row its name.
* ``warp_sum(x)`` is ``spc_warp_sum(x)``; ``atomic+=`` is ``spc_atomic_add``
  (both in ``runtime/spc_cuda.h``).
* A top ``@gpu_warp`` loop ending in a lane loop with ``groups``
  (``ir.nodes.LaneGroups``: SDDMM's nonzeros, each a dot product) makes the
  kernel a template over the lane-group size ``spc_group`` too, instantiated
  for each of ``LaneGroups.sizes`` (``name_g<G>``, ``name_i32_g<G>``): a group
  of that many lanes shares each lane iteration, the reduction loop spread
  over the group (in 16-byte vectors where the loop's ``vector`` says so and
  the loads are aligned, checked at run time, with a scalar loop for the
  rest) and summed by shuffles inside the group; ``spc_split`` warps share an
  outer iteration.  With ``flat`` on the warp loop (``ir.nodes.FlatPositions``)
  and ``spc_flat`` > 0 the pairs (outer iteration, position) are enumerated
  flat instead, equal chunks of positions per warp, each position's row found
  by search (see ``grouped_warp_loop``).

Index arithmetic is 64-bit as the IR defines it: the body is a template over
its index type ``spc_idx``, and the module has two kernels, ``name`` (long
long) and ``name_i32`` (int), which the launcher may use when every array
length, size and thread index of the call is below 2**30, so that no index
value can leave int's range; int32 index arrays are widened on load.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import count

from ..errors import CompileError, UnsupportedError
from ..ir.reserved import C_WORDS
from ..ir.nodes import (Alloc, Assign, CompareSwap, BinOp, Block, Buffer, Cast, Const, DType, For, If,
                        Jam, Kernel, LaneGroups, Let, Load, LoopKind, Neg, ParamRole, Select, Store, ToTF32, Var, Call,
                        WarpSum, While, dtype_of)
from ..ir.analysis import sparse_slot
from ..ir.moves import copy_keep, copy_parts
from ..ir.printer import WARP_OPS, launch_symbol
from ..ir.affine import inline, let_env, var_names
from ..ir.lane_groups import grouped_lane_loop
from ..ir.traverse import rewrite, top_loop, walk
from ..passes.map_gpu import (LANE_KINDS, THREADS_PER_BLOCK, WARP_SIZE, WARPS_PER_BLOCK,
                              all_stmts, stmts_of)

# scalar types: 64-bit index values are ``spc_idx``, the body's template parameter
# (long long, or int when every length and size of the call is below 2**30)
C_TYPES = {DType.F32: "float", DType.F64: "double", DType.I8: "signed char", DType.I16: "short",
           DType.I32: "int", DType.I64: "spc_idx", DType.BOOL: "bool"}
NARROW_INTS = (DType.I8, DType.I16, DType.I32)          # loads widen to spc_idx
ELEM_TYPES = {**C_TYPES, DType.I64: "long long",       # array element types: 16-bit
              DType.F16: "unsigned short", DType.BF16: "unsigned short"}  # floats as bits
# how a 16-bit float element widens to float and a float rounds back (spc_cuda.h)
WIDEN = {DType.F16: "spc_f16_to_f32", DType.BF16: "spc_bf16_to_f32"}
NARROW = {DType.F16: "spc_f32_to_f16", DType.BF16: "spc_f32_to_bf16"}

_RESERVED = C_WORDS


def c_name(name: str) -> str:
    """A C identifier for an IR name (reserved words and ``spc_``/``__`` names get a suffix)."""
    if name in _RESERVED or name.startswith(("spc_", "__")):
        return f"{name}_"
    return name


def c_type(dt: DType) -> str:
    """The C type of a scalar of ``dt``."""
    return C_TYPES[dt]


def c_elem_type(dt: DType) -> str:
    """The C type of an array element of ``dt``."""
    return ELEM_TYPES[dt]


# ---------------------------------------------------------------------------
# Launch plan: what the launcher needs to size the grid
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchPlan:
    """How a kernel is launched.

    ``mode``: "warp", "block", "thread" or "single_warp" (the value of the
    kernel's ``gpu.grid``).  ``threads``: threads per block.  ``lo``/``hi``: the bounds of
    the top mapped loop with the top-level Lets inlined (None for single_warp);
    ``chunk_lo``/``chunk_hi``: the bounds of a ``@gpu_lane_split`` loop.
    """
    mode: str
    threads: int
    lo: object = None
    hi: object = None
    chunk_lo: object = None
    chunk_hi: object = None
    wide_width: int = WARP_SIZE      # a chunk's iterations with spc_wide set
    group: str | None = None         # ``LaneGroups.reduction``: the loop a lane group shares
    group_sizes: tuple[int, ...] = ()  # ``LaneGroups.sizes``: the values spc_group may take
    group_lo: object = None          # its bounds (for its trip count at launch)
    group_hi: object = None
    lane_lo: object = None           # the bounds of the lane loop around it
    lane_hi: object = None
    flat: bool = False               # ``FlatPositions``: spc_flat > 0 enumerates positions flat
    lane_buffer: int | None = None   # a buffer parameter loaded at the lane loop's variable:
    #                                  its length is the lane loop's total trip count
    items_buffer: int | None = None  # a buffer parameter whose length is the top loop's trip
    #                                  count when its bounds read memory (see _items_buffer)

    def describe(self) -> str:
        per = {"warp": f"one warp per item, {WARPS_PER_BLOCK} warps per block",
               "block": "one block per item", "thread": "one thread per item",
               "single_warp": "one warp in all"}[self.mode]
        if self.group is not None:
            per += (f"; lane groups of spc_group lanes share each lane iteration and its "
                    f"loop over {self.group}; spc_split warps share each item")
            if self.flat:
                per += "; or, with spc_flat > 0, warps take equal chunks of the flat positions"
        return f"{self.mode} ({per}; {self.threads} threads per block)"


def _top_loop(kernel: Kernel):
    """(top-level Lets, the mapped top loop) of a kernel map_gpu laid out."""
    stmts = stmts_of(kernel.body)
    lets = [s for s in stmts[:-1] if isinstance(s, Let)]
    if not stmts or len(lets) != len(stmts) - 1 or not isinstance(stmts[-1], For):
        return lets, None
    return lets, stmts[-1]


def _inline_lets(e, lets):
    return inline(e, {s.var.name: s.value for s in lets})


def _items_buffer(kernel: Kernel, lo, hi) -> int | None:
    """For a top loop over an inspector's row pieces, ``[0, count[0])`` with
    ``count`` a ``segment_count`` parameter (``passes/split_rows.py``): the
    index among the buffer parameters of the pieces' ``segment_rows`` array,
    one entry per piece, whose length the launcher knows without reading
    ``count``; else None."""
    if not (isinstance(lo, Const) and lo.value == 0 and isinstance(hi, Load)
            and isinstance(hi.index, Const) and hi.index.value == 0):
        return None
    buffers = [p for p in kernel.params if isinstance(p.value, Buffer)]
    by_name = {p.name: p for p in buffers}
    count = by_name.get(hi.buf.name)
    if count is None or not (count.inspector or "").startswith("segment_count:"):
        return None
    rows = "segment_rows:" + count.inspector.partition(":")[2]
    for k, p in enumerate(buffers):
        if p.inspector == rows and p.tensor == count.tensor:
            return k
    return None


def launch_plan(kernel: Kernel) -> LaunchPlan:
    mode = kernel.gpu.grid.value if kernel.gpu is not None else "single_warp"
    if mode == "single_warp":
        return LaunchPlan("single_warp", WARP_SIZE)
    lets, loop = _top_loop(kernel)
    if loop is None:
        raise CompileError(f"kernel {kernel.name}: gpu mode {mode} needs one top-level loop")
    lo, hi = _inline_lets(loop.lo, lets), _inline_lets(loop.hi, lets)
    items_buffer = _items_buffer(kernel, lo, hi)
    chunk_lo = chunk_hi = None
    wide = WARP_SIZE
    body = stmts_of(loop.body)
    lane = grouped_lane_loop(loop) if mode == "warp" and loop.kind is LoopKind.GPU_WARP \
        else None
    if lane is not None:
        red = _reduction_loop(lane)
        inner_lets = [s for s in body[:-1] if isinstance(s, Let)]
        env = {s.var.name: s.value for s in lets + inner_lets}
        buffers = [p.name for p in kernel.params if isinstance(p.value, Buffer)]
        lane_buffer = None
        from ..ir.traverse import walk
        for n in all_stmts(lane.body):
            vals = [n.value] if isinstance(n, (Let, Assign)) else \
                [n.index, n.value] if isinstance(n, Store) else []
            for v in vals:
                for x in walk(v):
                    if isinstance(x, Load) and isinstance(x.index, Var) \
                            and x.index.name == lane.var.name and x.buf.name in buffers:
                        lane_buffer = buffers.index(x.buf.name)
                        break
                if lane_buffer is not None:
                    break
            if lane_buffer is not None:
                break
        return LaunchPlan(mode, THREADS_PER_BLOCK, lo, hi, group=lane.groups.reduction,
                          group_sizes=lane.groups.sizes,
                          group_lo=inline(red.lo, env), group_hi=inline(red.hi, env),
                          lane_lo=inline(lane.lo, env), lane_hi=inline(lane.hi, env),
                          lane_buffer=lane_buffer, items_buffer=items_buffer,
                          flat=loop.flat is not None)
    if body and isinstance(body[-1], For) and body[-1].kind is LoopKind.GPU_LANE_SPLIT:
        chunk_lo, chunk_hi = body[-1].lo, body[-1].hi
        if body[-1].jam is not None:
            wide = WARP_SIZE * body[-1].jam.factor
    return LaunchPlan(mode, THREADS_PER_BLOCK, lo, hi, chunk_lo, chunk_hi, wide,
                      items_buffer=items_buffer)


def _reduction_loop(lane: For) -> For:
    """The loop over ``lane.groups.reduction``, a statement of a grouped lane loop."""
    return next(c for c in stmts_of(lane.body)
                if isinstance(c, For) and c.var.name == lane.groups.reduction)


def host_eval(e, sizes: dict[str, int]) -> int | None:
    """The value of an integer IR expression of sizes and constants, or None
    when it reads memory or anything else the host does not know."""
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return sizes.get(e.name)
    if isinstance(e, Neg):
        v = host_eval(e.operand, sizes)
        return None if v is None else -v
    if isinstance(e, Cast) and not e.dtype.is_float:
        return host_eval(e.value, sizes)
    if isinstance(e, BinOp) and e.op in ("+", "-", "*", "/", "min", "max"):
        a, b = host_eval(e.lhs, sizes), host_eval(e.rhs, sizes)
        if a is None or b is None:
            return None
        if e.op == "/":
            return None if b == 0 else int(a / b)
        return {"+": a + b, "-": a - b, "*": a * b, "min": min(a, b), "max": max(a, b)}[e.op]
    return None


# ---------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------

def _float_literal(value: float, dt: DType) -> str:
    f = "f" if dt is DType.F32 else "d"
    if math.isnan(value):
        return f"spc_nan_{f}()"
    if math.isinf(value):
        return f"spc_inf_{f}()" if value > 0 else f"(-spc_inf_{f}())"
    text = repr(float(value))
    return text + ("f" if dt is DType.F32 else "")


def render_expr(e, name=None, guard=None, variant=frozenset()) -> str:
    """C source of an IR expression (fully parenthesized where it matters).

    ``name`` maps an IR variable name to its C name (default :func:`c_name`);
    with ``guard`` (a C boolean), loads whose index reads a ``variant``
    variable are made only when the guard holds (else 0): an unrolled lane's
    copy past the loop's end must not read memory.
    """
    name = name or c_name
    if guard == "true":
        guard = None

    def r(x):
        if isinstance(x, Const):
            if x.dtype is DType.BOOL:
                return "true" if x.value else "false"
            if x.dtype.is_float:
                return _float_literal(x.value, x.dtype)
            v = int(x.value)
            return f"{v}LL" if x.dtype is DType.I64 and abs(v) >= 2**31 else str(v)
        if isinstance(x, Var):
            return name(x.name)
        if isinstance(x, Load):
            text = f"{c_name(x.buf.name)}[{r(x.index)}]"
            if guard is not None and _reads(x.index) & variant:
                text = f"({guard} ? {text} : ({c_elem_type(x.buf.dtype)})0)"
            if x.buf.dtype in WIDEN:
                return f"{WIDEN[x.buf.dtype]}({text})"
            return f"(spc_idx){text}" if x.buf.dtype in NARROW_INTS else text
        if isinstance(x, Neg):
            return f"(-{r(x.operand)})"
        if isinstance(x, Cast):
            return f"(({c_type(x.dtype)})({r(x.value)}))"
        if isinstance(x, Select):
            return f"({r(x.cond)} ? {r(x.if_true)} : {r(x.if_false)})"
        if isinstance(x, WarpSum):
            return f"spc_warp_{WARP_OPS[x.op]}({r(x.value)})"
        if isinstance(x, ToTF32):
            return f"spc_to_tf32({r(x.value)})"
        if isinstance(x, Call) and x.fn == "ctz":      # 64 for 0, as the IR says
            v = r(x.value)
            return f"({v} ? (spc_idx)(__ffsll((long long)({v})) - 1) : (spc_idx)64)"
        if isinstance(x, Call):              # CUDA's math library: expf, exp, fabsf...
            fn = "fabs" if x.fn == "abs" else x.fn
            return f"{fn}{'f' if dtype_of(x) is DType.F32 else ''}({r(x.value)})"
        if isinstance(x, BinOp):
            a, b = r(x.lhs), r(x.rhs)
            if x.op in ("min", "max"):      # typed: an int64 beside a literal deduces one T
                return f"spc_{x.op}<{c_type(dtype_of(x.lhs))}>({a}, {b})"
            return f"({a} {x.op} {b})"
        raise CompileError(f"cannot render expression {x!r}")

    return r(e)


def _reads(e) -> set[str]:
    from ..ir.traverse import walk
    return {n.name for n in walk(e) if isinstance(n, Var)}


def _converted(e, dt: DType, **kw) -> str:
    """``e`` as a value of type ``dt`` (an explicit cast where the types differ)."""
    text = render_expr(e, **kw)
    return text if dtype_of(e) is dt else f"(({c_type(dt)})({text}))"


# ---------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------

class _Body:
    """Renders a kernel body line by line, tracking the execution context:
    "grid" (every thread, outside any mapped loop), "block" (a block's
    iteration), "warp" (a warp's iteration: all lanes alike), "lane" (one
    lane's own iterations) or "thread" (one thread's iteration)."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.params = {p.name for p in kernel.params if isinstance(p.value, Buffer)}
        self.shared = {n.buf.name for n in walk(kernel.body) if isinstance(n, Alloc) and n.shared}
        # what a lane's store may show the warp's other lanes: parameters, shared arrays
        self.visible = self.params | self.shared
        self.lines: list[str] = []
        self.tmp = count()
        self.fragments = {name: shape for name, shape in _mma_accumulators(kernel)}
        self.names = {n.name for n in walk(kernel.body) if isinstance(n, Var)}

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def fresh(self, stem: str) -> str:
        sep = "_" if stem[-1].isdigit() else ""      # "p1" then 3 is not "p" then 13
        return f"spc_{stem}{sep}{next(self.tmp)}"

    def block(self, s, depth: int, ctx: str) -> None:
        for c in stmts_of(s):
            self.stmt(c, depth, ctx)

    def stmt(self, s, depth: int, ctx: str) -> None:
        if isinstance(s, Block):
            self.block(s, depth, ctx)
        elif isinstance(s, Let):
            self.emit(depth, f"{c_type(s.var.dtype)} {c_name(s.var.name)} = "
                             f"{_converted(s.value, s.var.dtype)};")
        elif isinstance(s, Assign):
            self.emit(depth, f"{c_name(s.var.name)} = {_converted(s.value, s.var.dtype)};")
        elif isinstance(s, Store):
            self.emit(depth, self.store(s, ctx))
        elif isinstance(s, CompareSwap):
            if ctx not in ("lane", "thread"):
                raise CompileError(f"kernel {self.kernel.name}: a compare-and-swap on "
                                   f"{s.buf.name} outside a lane or thread loop would run on "
                                   f"every lane")
            t = c_elem_type(s.buf.dtype)
            self.emit(depth, f"{c_type(s.var.dtype)} {c_name(s.var.name)} = spc_atomic_cas("
                             f"&{c_name(s.buf.name)}[{render_expr(s.index)}], "
                             f"({t})({render_expr(s.expected)}), ({t})({render_expr(s.desired)}));")
        elif isinstance(s, Alloc) and s.buf.name in self.fragments:
            rows, cols = self.fragments[s.buf.name]       # a tile: this lane's entries
            self.emit(depth, f"float {c_name(s.buf.name)}[{rows * cols // WARP_SIZE}] = {{}};")
        elif isinstance(s, Alloc) and s.is_workspace:
            raise UnsupportedError(
                f"kernel {self.kernel.name}: workspace '{s.buf.name}' (a sparse output built row "
                f"by row, as SpGEMM's) is not generated for CUDA yet; use target='cpu'")
        elif isinstance(s, Alloc) and s.shared:     # one array per warp of the block
            t, name = c_elem_type(s.buf.dtype), c_name(s.buf.name)
            self.emit(depth, f"__shared__ __align__(16) {t} {name}__warps[{WARPS_PER_BLOCK}]"
                             f"[{s.size}];")
            self.emit(depth, f"{t}* {name} = {name}__warps[spc_warp];")
        elif isinstance(s, Alloc):
            self.emit(depth, f"{c_elem_type(s.buf.dtype)} {c_name(s.buf.name)}[{s.size}] = {{}};")
        elif isinstance(s, While):
            self.emit(depth, f"while ({render_expr(s.cond)}) {{")
            self.block(s.body, depth + 1, ctx)
            self.emit(depth, "}")
        elif isinstance(s, If):
            self.emit(depth, f"if ({render_expr(s.cond)}) {{")
            self.block(s.then, depth + 1, ctx)
            if s.otherwise is not None:
                self.emit(depth, "} else {")
                self.block(s.otherwise, depth + 1, ctx)
            self.emit(depth, "}")
        elif isinstance(s, For):
            self.loop(s, depth, ctx)
        else:
            raise CompileError(f"cannot render statement {s!r}")

    def store(self, s: Store, ctx: str, **kw) -> str:
        target = f"{c_name(s.buf.name)}[{render_expr(s.index, **kw)}]"
        dt = s.buf.dtype
        if dt in NARROW:                  # 16-bit floats: arithmetic in float, rounded once
            value = _converted(s.value, dt.widened, **kw)
            if s.atomic:
                text = f"{NARROW[dt]}_atomic_add(&{target}, {value});"
            elif s.accumulate:
                text = f"{target} = {NARROW[dt]}({WIDEN[dt]}({target}) + {value});"
            else:
                text = f"{target} = {NARROW[dt]}({value});"
        elif s.atomic:
            text = f"spc_atomic_add(&{target}, {_converted(s.value, dt, **kw)});"
        else:
            text = f"{target} {'+=' if s.accumulate else '='} {_converted(s.value, dt, **kw)};"
        if s.buf.name not in self.params or ctx in ("lane", "thread"):
            return text                    # a local array, or this thread's own iteration
        if ctx == "group":                 # the lane group's iteration: its first lane
            return f"if (spc_sub == 0) {text}"
        if ctx == "warp":
            return f"if (spc_lane == 0) {text}"
        raise CompileError(f"kernel {self.kernel.name}: a store to {s.buf.name} outside "
                           f"the mapped loops ({ctx} context) would race")

    def loop(self, s: For, depth: int, ctx: str) -> None:
        if s.kind is LoopKind.MMA_M:
            self.mma_tile(s, depth, ctx)
            return
        if s.jam is not None and (s.kind, ctx) not in ((LoopKind.GPU_LANE, "warp"),
                                                        (LoopKind.GPU_WARP, "block")):
            self.unjammable(s, ctx)
        if s.vector is not None:
            raise CompileError(f"kernel {self.kernel.name}: the loop over {s.var.name} reads "
                               f"vectors outside a lane group ({ctx} context)")
        v = c_name(s.var.name)
        lo, hi = self.fresh("lo"), self.fresh("hi")
        kind = s.kind
        self.emit(depth, "{")
        d = depth + 1
        self.emit(d, f"const spc_idx {lo} = {render_expr(s.lo)};")
        self.emit(d, f"const spc_idx {hi} = {render_expr(s.hi)};")
        if kind in (LoopKind.SERIAL, LoopKind.PARALLEL, LoopKind.VECTOR, LoopKind.SCALAR):
            inner = ctx
            if ctx in ("lane", "thread") and not any(
                    isinstance(n, (For, While)) for n in all_stmts(s.body)):
                self.emit(d, "#pragma unroll 4")
            head = f"for (spc_idx {v} = {lo}; {v} < {hi}; ++{v})"
        elif kind is LoopKind.GPU_THREAD:
            if ctx != "grid":
                raise CompileError(f"a @gpu_thread loop inside {ctx} context")
            inner = "thread"
            head = (f"for (spc_idx {v} = {lo} + (spc_idx)blockIdx.x * (spc_idx)blockDim.x + "
                    f"(spc_idx)threadIdx.x; {v} < {hi}; "
                    f"{v} += (spc_idx)gridDim.x * (spc_idx)blockDim.x)")
        elif kind is LoopKind.GPU_BLOCK:
            if ctx != "grid":
                raise CompileError(f"a @gpu_block loop inside {ctx} context")
            inner = "block"
            head = (f"for (spc_idx {v} = {lo} + (spc_idx)blockIdx.x; {v} < {hi}; "
                    f"{v} += (spc_idx)gridDim.x)")
        elif kind is LoopKind.GPU_WARP:
            inner = "warp"
            body = stmts_of(s.body)
            if ctx == "grid" and body and isinstance(body[-1], For) \
                    and body[-1].kind is LoopKind.GPU_LANE_SPLIT:
                self.split_warp_loop(s, body, lo, hi, d)
                self.emit(depth, "}")
                return
            if ctx == "grid" and grouped_lane_loop(s) is not None:
                self.grouped_warp_loop(s, body, lo, hi, d)
                self.emit(depth, "}")
                return
            if ctx == "grid":
                head = (f"for (spc_idx {v} = {lo} + (spc_idx)blockIdx.x * {WARPS_PER_BLOCK} "
                        f"+ spc_warp; {v} < {hi}; {v} += (spc_idx)gridDim.x * "
                        f"{WARPS_PER_BLOCK})")
            elif ctx == "block":
                if s.jam is not None:
                    self.jammed_warp_loop(s, s.jam, lo, hi, d)
                    self.emit(depth, "}")
                    return
                head = (f"for (spc_idx {v} = {lo} + spc_warp; {v} < {hi}; "
                        f"{v} += {WARPS_PER_BLOCK})")
            else:
                raise CompileError(f"a @gpu_warp loop inside {ctx} context")
        elif kind is LoopKind.GPU_LANE:
            if ctx != "warp":
                raise CompileError(f"a @gpu_lane loop inside {ctx} context")
            self.lane_loop(s, lo, hi, d)
            self.emit(depth, "}")
            return
        else:
            raise CompileError(f"a @{kind.value} loop where it cannot be launched ({ctx})")
        self.emit(d, head + " {")
        self.block(s.body, d + 1, inner)
        self.emit(d, "}")
        self.emit(depth, "}")

    def unjammable(self, s: For, ctx: str) -> None:
        raise CompileError(f"kernel {self.kernel.name}: the @{s.kind.value} loop over "
                           f"{s.var.name} is jammed where no jammed form is printed ({ctx} "
                           f"context; see passes/unroll_jam.py)")

    # -- lane loops --------------------------------------------------------------
    def lane_loop(self, s: For, lo: str, hi: str, d: int) -> None:
        """``for (v = lo + lane; v < hi; v += 32)``; when the body allows it and
        the loop is long, ``unroll`` iterations per lane at once (unroll-and-jam:
        shared work once, independent loads and sums per copy)."""
        v = c_name(s.var.name)
        jam = s.jam
        plain = f"for (spc_idx {v} = {lo} + spc_lane; {v} < {hi}; {v} += {WARP_SIZE})"
        if s.moves is not None:
            self.moved_lane_loop(s, plain, hi, d)
        elif jam is None:
            self.emit(d, plain + " {")
            self.block(s.body, d + 1, "lane")
            self.emit(d, "}")
        else:
            u_n = jam.factor
            dj = d
            if jam.min_trips > 0:
                self.emit(d, f"if ({hi} - {lo} >= {jam.min_trips}) {{")
                dj = d + 1
            for r in jam.sums:
                for u in range(1, u_n):
                    self.emit(dj, f"{c_type(r.dtype)} {c_name(r.name)}__{u} = "
                                  f"({c_type(r.dtype)})0;")
            j0 = self.fresh("j")
            self.emit(dj, f"for (spc_idx {j0} = {lo} + spc_lane; {j0} < {hi}; "
                          f"{j0} += {WARP_SIZE * u_n}) {{")
            ok = self.copies(s, jam, j0, hi, dj + 1, first_valid=True)
            self.jam_block(s.body, dj + 1, jam, ok)
            self.emit(dj, "}")
            for r in jam.sums:
                parts = " + ".join(f"{c_name(r.name)}__{u}" for u in range(1, u_n))
                self.emit(dj, f"{c_name(r.name)} = {c_name(r.name)} + ({parts});")
            if jam.min_trips > 0:
                self.emit(d, "} else {")
                self.emit(d + 1, plain + " {")
                self.block(s.body, d + 2, "lane")
                self.emit(d + 1, "}")
                self.emit(d, "}")
        if any(isinstance(n, (Store, CompareSwap)) and n.buf.name in self.visible
               for n in walk(s.body)):
            self.emit(d, "__syncwarp();")

    def moved_lane_loop(self, s: For, plain: str, hi: str, d: int) -> None:
        """A tile copy (``VectorMoves``): each lane moves 16 bytes (``width``
        elements of one row) at a time where the first two rows of both arrays
        start 16-byte aligned, else the plain loop; between warp barriers (the
        lanes' reads of the tile's previous contents end before it is
        overwritten)."""
        row, col, store, load = copy_parts(s)
        keep = copy_keep(s)
        width, cols = s.moves.width, s.moves.cols
        rows = int(s.hi.value) // cols
        # a gathered row (an index load reading the row: ``crd[q + row] * stride``)
        # stands for any row number g; the start is affine in g, so g = 0 and 1
        # aligned make every row aligned
        gathers = {x for x in walk(load.index) if isinstance(x, Load)
                   and row.var.name in var_names(x.index)}

        def address(buf, index, r: int) -> str:
            at = rewrite(index, lambda n: Const(r, DType.I64) if n in gathers else n)
            at = rewrite(at, lambda n: Const(r, DType.I64) if n == row.var
                         else Const(0, DType.I64) if n == col.var else n)
            return f"{c_name(buf.name)} + ({render_expr(at)})"
        starts = [address(x.buf, x.index, r) for x in (store, load)
                  for r in range(2 if gathers else min(rows, 2))]
        aligned = " && ".join(f"spc_aligned16({a})" for a in starts)
        v = c_name(s.var.name)
        self.emit(d, "__syncwarp();")
        self.emit(d, f"if ({aligned}) {{")
        self.emit(d + 1, f"for (spc_idx {v} = spc_lane * {width}; {v} < {hi}; "
                         f"{v} += {WARP_SIZE * width}) {{")
        self.stmt(row, d + 2, "lane")
        self.stmt(col, d + 2, "lane")
        moved = (f"*reinterpret_cast<const uint4*>(&{c_name(load.buf.name)}"
                 f"[{render_expr(load.index)}])")
        if keep is not None:                  # a row not kept is zeros, its source unread
            moved = f"({render_expr(keep)} ? {moved} : make_uint4(0u, 0u, 0u, 0u))"
        self.emit(d + 2, f"*reinterpret_cast<uint4*>(&{c_name(store.buf.name)}"
                         f"[{render_expr(store.index)}]) = {moved};")
        self.emit(d + 1, "}")
        self.emit(d, "} else {")
        self.emit(d + 1, plain + " {")
        self.block(s.body, d + 2, "lane")
        self.emit(d + 1, "}")
        self.emit(d, "}")

    def copies(self, s: For, jam: Jam, j0: str, hi: str, d: int, first_valid: bool,
               stride: int | str = WARP_SIZE) -> list[str]:
        """Declare each copy's loop variable and validity; return the validity names."""
        ok = []
        for u in range(jam.factor):
            name = f"{c_name(s.var.name)}__{u}"
            step = stride * u if isinstance(stride, int) else f"{stride} * {u}"
            self.emit(d, f"const spc_idx {name} = {j0} + {step};")
            if u == 0 and first_valid:
                ok.append("true")
            else:
                flag = f"spc_ok__{u}"
                self.emit(d, f"const bool {flag} = {name} < {hi};")
                ok.append(flag)
        return ok

    def jammed_warp_loop(self, s: For, jam: Jam, lo: str, hi: str, d: int) -> None:
        """A block's @gpu_warp loop with ``unroll`` iterations per warp at once
        (their loads and warp sums in flight together)."""
        p0 = self.fresh("p")
        self.emit(d, f"for (spc_idx {p0} = {lo} + spc_warp; {p0} < {hi}; "
                     f"{p0} += {WARPS_PER_BLOCK * jam.factor}) {{")
        ok = self.copies(s, jam, p0, hi, d + 1, first_valid=True, stride=WARPS_PER_BLOCK)
        self.jam_block(s.body, d + 1, jam, ok, "warp")
        self.emit(d, "}")

    def copy_namer(self, jam: Jam, u: int):
        reductions = {r.name for r in jam.sums}
        copies = set(jam.copies)

        def name(n: str) -> str:
            if n in copies and not (u == 0 and n in reductions):
                return f"{c_name(n)}__{u}"
            return c_name(n)
        return name

    def jam_block(self, body, d: int, jam: Jam, ok: list[str], ctx: str = "lane") -> None:
        for s in stmts_of(body):
            self.jam_stmt(s, d, jam, ok, ctx)

    def jam_stmt(self, s, d: int, jam: Jam, ok: list[str], ctx: str) -> None:
        reductions = {r.name for r in jam.sums}
        variant = set(jam.copies)
        if isinstance(s, (Let, Assign)) and s.var.name in variant:
            for u, flag in enumerate(ok):
                kw = dict(name=self.copy_namer(jam, u), guard=flag, variant=variant)
                lhs = kw["name"](s.var.name)
                value = _converted(s.value, s.var.dtype, **kw)
                if isinstance(s, Let):
                    self.emit(d, f"{c_type(s.var.dtype)} {lhs} = {value};")
                elif s.var.name in reductions and flag != "true":
                    self.emit(d, f"if ({flag}) {lhs} = {value};")
                else:
                    self.emit(d, f"{lhs} = {value};")
        elif isinstance(s, (Let, Assign)):
            self.stmt(s, d, ctx)
        elif isinstance(s, Store):
            for u, flag in enumerate(ok):
                text = self.store(s, ctx, name=self.copy_namer(jam, u), guard=flag,
                                  variant=variant)
                self.emit(d, text if flag == "true" else f"if ({flag}) {text}")
        elif isinstance(s, Block):
            self.jam_block(s, d, jam, ok, ctx)
        elif isinstance(s, For) and s.kind is LoopKind.GPU_LANE and ctx == "warp":
            # a lane loop inside a jammed warp loop: lane-strided, each copy's work inside
            if s.jam is not None:
                self.unjammable(s, "jammed warp")
            v = c_name(s.var.name)
            lo, hi = self.fresh("lo"), self.fresh("hi")
            self.emit(d, "{")
            self.emit(d + 1, f"const spc_idx {lo} = {render_expr(s.lo)};")
            self.emit(d + 1, f"const spc_idx {hi} = {render_expr(s.hi)};")
            self.emit(d + 1, f"for (spc_idx {v} = {lo} + spc_lane; {v} < {hi}; "
                             f"{v} += {WARP_SIZE}) {{")
            self.jam_block(s.body, d + 2, jam, ok, "lane")
            self.emit(d + 1, "}")
            if any(isinstance(n, (Store, CompareSwap)) and n.buf.name in self.visible
                   for n in walk(s.body)):
                self.emit(d + 1, "__syncwarp();")
            self.emit(d, "}")
        elif isinstance(s, For) and s.kind is not LoopKind.SERIAL:
            raise CompileError(f"cannot unroll a @{s.kind.value} loop")
        elif isinstance(s, For):
            v = c_name(s.var.name)
            lo, hi = self.fresh("lo"), self.fresh("hi")
            self.emit(d, "{")
            self.emit(d + 1, f"const spc_idx {lo} = {render_expr(s.lo)};")
            self.emit(d + 1, f"const spc_idx {hi} = {render_expr(s.hi)};")
            self.emit(d + 1, "#pragma unroll 2")
            self.emit(d + 1, f"for (spc_idx {v} = {lo}; {v} < {hi}; ++{v}) {{")
            self.jam_block(s.body, d + 2, jam, ok, ctx)
            self.emit(d + 1, "}")
            self.emit(d, "}")
        elif isinstance(s, While):
            self.emit(d, f"while ({render_expr(s.cond)}) {{")
            self.jam_block(s.body, d + 1, jam, ok, ctx)
            self.emit(d, "}")
        elif isinstance(s, If):
            self.emit(d, f"if ({render_expr(s.cond)}) {{")
            self.jam_block(s.then, d + 1, jam, ok, ctx)
            if s.otherwise is not None:
                self.emit(d, "} else {")
                self.jam_block(s.otherwise, d + 1, jam, ok, ctx)
            self.emit(d, "}")
        else:
            raise CompileError(f"cannot unroll statement {s!r}")

    # -- lane groups (``LaneGroups``, ``FlatPositions``) ---------------------------------
    def grouped_warp_loop(self, s: For, body, lo: str, hi: str, d: int) -> None:
        """A top @gpu_warp loop ending in a lane loop with ``LaneGroups``, as
        that says: its launch symbols are the template parameter ``spc_group``
        (1 to 32 lanes share each lane iteration, which spreads the reduction
        loop over them and sums it with shuffles inside the group) and
        ``spc_split`` (that many warps share one outer iteration, its lane
        iterations interleaved: long rows fill the GPU).  With ``FlatPositions``
        on the warp loop, ``spc_flat`` > 0 enumerates the (outer iteration,
        lane iteration) pairs flat instead, each warp taking ``spc_flat`` steps
        of ``32 / spc_group`` consecutive positions, every position's outer
        iteration found by search."""
        lane = body[-1]
        if lane.jam is not None:
            self.unjammable(lane, "lane group")
        group, split = launch_symbol(lane.groups.group), launch_symbol(lane.groups.split)
        per = f"({WARP_SIZE} / {group})"
        self.emit(d, f"const int spc_sub = spc_lane & ({group} - 1);")
        self.emit(d, "(void)spc_sub;")
        flat = s.flat is not None
        if flat:
            self.emit(d, f"if ({launch_symbol(s.flat.steps)} > 0) {{")
            self.flat_positions(s, body, lo, hi, d + 1)
            self.emit(d, "} else {")
            d += 1
        items, w, part, plo, phi = (self.fresh(x) for x in ("items", "w", "slice", "plo",
                                                             "phi"))
        self.emit(d, f"const spc_idx {items} = {hi} > {lo} ? ({hi} - {lo}) * "
                     f"(spc_idx){split} : 0;")
        self.emit(d, f"for (spc_idx {w} = (spc_idx)blockIdx.x * {WARPS_PER_BLOCK} + "
                     f"spc_warp; {w} < {items}; {w} += (spc_idx)gridDim.x * "
                     f"{WARPS_PER_BLOCK}) {{")
        self.emit(d + 1, f"spc_idx {c_name(s.var.name)} = {lo} + {w} / {split};")
        self.emit(d + 1, f"const spc_idx {part} = {w} % {split};")
        for c in body[:-1]:
            self.stmt(c, d + 1, "warp")
        v = c_name(lane.var.name)
        self.emit(d + 1, "{")
        self.emit(d + 2, f"const spc_idx {plo} = {render_expr(lane.lo)};")
        self.emit(d + 2, f"const spc_idx {phi} = {render_expr(lane.hi)};")
        self.emit(d + 2, f"for (spc_idx {v} = {plo} + {part} * {per} + spc_lane / {group}; "
                         f"{v} < {phi}; {v} += (spc_idx){split} * {per}) {{")
        self.group_body(lane, d + 3)
        self.emit(d + 2, "}")
        self.emit(d + 1, "}")
        self.emit(d, "}")
        if flat:
            self.emit(d - 1, "}")

    def group_body(self, lane: For, d: int) -> None:
        for c in stmts_of(lane.body):
            if isinstance(c, For) and c.var.name == lane.groups.reduction:
                self.grouped_reduction(c, lane.groups, d)
            else:
                self.stmt(c, d, "group")

    def flat_positions(self, s: For, body, lo: str, hi: str, d: int) -> None:
        """The flat enumeration (``FlatPositions``, see grouped_warp_loop).  ``start(r)`` and
        ``end(r)``: the lane loop's bounds for outer iteration ``r`` (``end(r) ==
        start(r + 1)``, map_gpu checked).  A warp finds the row of its chunk's
        first position by binary search over ``start``; at each step its lanes
        hold ``end`` of the next 32 rows and each lane group finds its own row
        by a shuffle search among them (a binary search past them when more than
        31 rows end inside one step); a step inside the current row (long rows)
        skips the search."""
        from ..ir.traverse import rewrite
        lane = body[-1]
        lets = [c for c in body[:-1] if isinstance(c, Let)]
        env = {c.var.name: c.value for c in lets}
        top = s.var

        def at(bound, row: str) -> str:
            e = inline(bound, env)
            e = rewrite(e, lambda n: Var("spc_atrow", top.dtype)
                        if isinstance(n, Var) and n.name == top.name else n)
            return render_expr(e, name=lambda n: f"({row})" if n == "spc_atrow" else c_name(n))

        p0, p1, chunk, c0, c1, rl, rh, mid, rcur, rend, base, pos, r = (
            self.fresh(x) for x in ("p0", "p1", "chunk", "c0", "c1", "rl", "rh", "mid",
                                    "rcur", "rend", "base", "p", "r"))
        group = launch_symbol(lane.groups.group)
        per = f"(spc_idx)({WARP_SIZE} / {group})"
        self.emit(d, f"if ({hi} > {lo}) {{")
        d1 = d + 1
        self.emit(d1, f"const spc_idx {p0} = {at(lane.lo, lo)};")
        self.emit(d1, f"const spc_idx {p1} = {at(lane.hi, f'{hi} - 1')};")
        self.emit(d1, f"const spc_idx {chunk} = {per} * (spc_idx){launch_symbol(s.flat.steps)};")
        self.emit(d1, f"for (spc_idx {c0} = {p0} + ((spc_idx)blockIdx.x * {WARPS_PER_BLOCK} + "
                      f"spc_warp) * {chunk}; {c0} < {p1}; {c0} += (spc_idx)gridDim.x * "
                      f"{WARPS_PER_BLOCK} * {chunk}) {{")
        d2 = d1 + 1
        self.emit(d2, f"const spc_idx {c1} = spc_min({c0} + {chunk}, {p1});")
        self.emit(d2, f"spc_idx {rl} = {lo}, {rh} = {hi} - 1;   // the last row starting "
                      f"at or before {c0}")
        self.emit(d2, f"while ({rl} < {rh}) {{")
        self.emit(d2 + 1, f"const spc_idx {mid} = {rl} + ({rh} - {rl} + 1) / 2;")
        self.emit(d2 + 1, f"if ({at(lane.lo, mid)} <= {c0}) {rl} = {mid}; else {rh} = {mid} - 1;")
        self.emit(d2, "}")
        self.emit(d2, f"spc_idx {rcur} = {rl};")
        self.emit(d2, f"spc_idx {rend} = {at(lane.hi, rcur)};")
        self.emit(d2, f"for (spc_idx {base} = {c0}; {base} < {c1}; {base} += {per}) {{")
        d3 = d2 + 1
        self.emit(d3, f"const spc_idx {pos} = {base} + spc_lane / {group};")
        self.emit(d3, f"spc_idx {r} = {rcur};")
        self.emit(d3, f"if ({base} + {per} > {rend}) {{   // the step leaves row {rcur}: "
                      f"find each position's row")
        self.row_search(lane, at, hi, p1, rcur, rend, pos, r, d3 + 1)
        self.emit(d3, "}")
        self.emit(d3, f"if ({pos} < {c1}) {{")
        self.emit(d3 + 1, f"const spc_idx {c_name(top.name)} = {r};")
        for c in body[:-1]:
            self.stmt(c, d3 + 1, "group")
        self.emit(d3 + 1, f"const spc_idx {c_name(lane.var.name)} = {pos};")
        self.group_body(lane, d3 + 1)
        self.emit(d3, "}")
        self.emit(d2, "}")
        self.emit(d1, "}")
        self.emit(d, "}")

    def row_search(self, lane, at, hi, p1, rcur, rend, pos, r, d3) -> None:
        """Each lane's row ``r`` for position ``pos`` (rows from ``rcur`` on); then
        ``rcur``, ``rend``: the row of the step's last position and its end."""
        rt, e, off, e31, a, b, mid = (self.fresh(x) for x in ("rt", "e", "off", "e31", "a",
                                                               "b", "mid"))
        self.emit(d3, f"const spc_idx {rt} = {rcur} + spc_lane;")
        self.emit(d3, f"const spc_idx {e} = {rt} < {hi} ? {at(lane.hi, rt)} : {p1};")
        self.emit(d3, f"int {off} = 0;")
        self.emit(d3, "#pragma unroll")
        self.emit(d3, f"for (int spc_s = {WARP_SIZE // 2}; spc_s > 0; spc_s >>= 1) {{")
        self.emit(d3 + 1, f"if (__shfl_sync(SPC_FULL_MASK, {e}, {off} + spc_s - 1) <= {pos}) "
                          f"{off} += spc_s;")
        self.emit(d3, "}")
        self.emit(d3, f"{r} = {rcur} + {off};")
        self.emit(d3, f"const spc_idx {e31} = __shfl_sync(SPC_FULL_MASK, {e}, {WARP_SIZE - 1});")
        self.emit(d3, f"if ({e31} <= {pos}) {{   // more than 31 rows end before this position")
        self.emit(d3 + 1, f"spc_idx {a} = spc_min({rcur} + {WARP_SIZE}, {hi} - 1), {b} = {hi} - 1;")
        self.emit(d3 + 1, f"while ({a} < {b}) {{")
        self.emit(d3 + 2, f"const spc_idx {mid} = {a} + ({b} - {a}) / 2;")
        self.emit(d3 + 2, f"if ({at(lane.hi, mid)} <= {pos}) {a} = {mid} + 1; else {b} = {mid};")
        self.emit(d3 + 1, "}")
        self.emit(d3 + 1, f"{r} = {a};")
        self.emit(d3, "}")
        self.emit(d3, f"{rcur} = __shfl_sync(SPC_FULL_MASK, {r}, {WARP_SIZE - 1});")
        self.emit(d3, f"{rend} = {at(lane.hi, rcur)};")

    def grouped_reduction(self, r: For, groups: LaneGroups, d: int) -> None:
        """The reduction loop a lane group shares (``LaneGroups``): lane
        ``spc_sub`` takes every ``spc_group``-th iteration (16-byte vectors of
        them where the loop's ``vector`` says so and every load it moves reads
        aligned elements: checked at run time, with a scalar loop for the rest),
        into per-lane partial sums of ``groups.sums`` added up by a shuffle sum
        inside the group."""
        group = launch_symbol(groups.group)
        reds = {v.name: v for v in groups.sums}
        vec = self.vector_parts(r)
        width = vec[0] if vec is not None else 1
        parts = {name: [Var(f"spc_part_{next(self.tmp)}", var.dtype) for _ in range(width)]
                 for name, var in reds.items()}
        klo, khi, kt = self.fresh("klo"), self.fresh("khi"), self.fresh("kt")
        self.emit(d, "{")
        d1 = d + 1
        self.emit(d1, f"const spc_idx {klo} = {render_expr(r.lo)};")
        self.emit(d1, f"const spc_idx {khi} = {render_expr(r.hi)};")
        for name, ps in parts.items():
            for pv in ps:
                self.emit(d1, f"{c_type(pv.dtype)} {c_name(pv.name)} = ({c_type(pv.dtype)})0;")
        self.emit(d1, f"spc_idx {kt} = {klo};")
        if vec is not None:
            width, loads, exprs = vec
            ok = self.fresh("vok")
            conds = [f"{khi} - {klo} >= {width}"] + [
                f"spc_aligned16({c_name(ld.buf.name)} + ({render_expr(base)} + {klo}))"
                for ld, base in loads]
            self.emit(d1, f"const bool {ok} = {' && '.join(conds)};")
            self.emit(d1, f"if ({ok}) {{")
            kv = self.fresh("kv")
            self.emit(d1 + 1, f"{kt} = {klo} + (({khi} - {klo}) / {width}) * {width};")
            self.emit(d1 + 1, "#pragma unroll 4")
            self.emit(d1 + 1, f"for (spc_idx {kv} = {klo} + {width} * spc_sub; {kv} < {kt}; "
                              f"{kv} += {width} * {group}) {{")
            vt = "float4" if width == 4 else "double2"
            names = []
            for ld, base in loads:
                nm = self.fresh("v")
                names.append(nm)
                self.emit(d1 + 2, f"const {vt} {nm} = spc_ldv({c_name(ld.buf.name)} + "
                                  f"({render_expr(base)} + {kv}));")
            comps = "xyzw"
            for c in range(width):
                def namer(n, c=c):
                    if n.startswith("spc_vload"):
                        return f"{names[int(n[len('spc_vload'):])]}.{comps[c]}"
                    if n == r.var.name:
                        return f"({kv} + {c})"
                    return c_name(n)
                for name, e in exprs:
                    pv = parts[name][c]
                    self.emit(d1 + 2, f"{c_name(pv.name)} = {c_name(pv.name)} + "
                                      f"{_converted(e, pv.dtype, name=namer)};")
            self.emit(d1 + 1, "}")
            self.emit(d1, "}")
        body = r.body
        for name, ps in parts.items():
            body = rewrite(body, lambda n, name=name, new=ps[0]: new
                           if isinstance(n, Var) and n.name == name else n)
        self.emit(d1, "#pragma unroll 4")
        self.emit(d1, f"for (spc_idx {c_name(r.var.name)} = {kt} + spc_sub; "
                      f"{c_name(r.var.name)} < {khi}; {c_name(r.var.name)} += {group}) {{")
        self.block(body, d1 + 1, "lane")
        self.emit(d1, "}")
        for name, ps in parts.items():
            total = " + ".join(c_name(pv.name) for pv in ps)
            if len(ps) == 4:
                total = f"({c_name(ps[0].name)} + {c_name(ps[1].name)}) + " \
                        f"({c_name(ps[2].name)} + {c_name(ps[3].name)})"
            var = reds[name]
            self.emit(d1, f"{c_name(name)} = {c_name(name)} + "
                          f"spc_group_sum<{group}>(({c_type(var.dtype)})({total}));")
        self.emit(d, "}")

    def vector_parts(self, r: For):
        """(width, [(load, base)], [(sum, summand with loads as spc_vloadN)]) of a
        loop's ``vector`` (``passes/vector_loads.py``), None without one: each
        load read at ``base + var`` (the loop variable set to 0 in its index), the
        summands with the body's Lets inlined."""
        vec = r.vector
        if vec is None:
            return None
        k = r.var.name
        loads = [(x, rewrite(x.index, lambda y: Const(0, DType.I64)
                             if isinstance(y, Var) and y.name == k else y))
                 for x in vec.loads]
        env = let_env(r.body)
        exprs = []
        for n in stmts_of(r.body):
            if isinstance(n, Assign):
                e = rewrite(inline(n.value.rhs, env),
                            lambda y: Var(f"spc_vload{vec.loads.index(y)}", y.buf.dtype)
                            if isinstance(y, Load) and y in vec.loads else y)
                exprs.append((n.var.name, e))
        return vec.width, loads, exprs

    def split_warp_loop(self, s: For, body, lo: str, hi: str, d: int) -> None:
        """A top @gpu_warp loop whose body ends in a @gpu_lane_split loop: each
        warp takes (outer iteration, chunk) work items.  A chunk is 32
        iterations, one per lane, or with ``spc_wide`` (chosen at launch)
        32 * unroll iterations, ``unroll`` per lane, unrolled and jammed."""
        split = body[-1]
        jam = split.jam
        jlo, jhi, width, chunks, items, w, j0 = (
            self.fresh(x) for x in ("jlo", "jhi", "width", "chunks", "items", "w", "j0"))
        wide = f"{WARP_SIZE * jam.factor}" if jam is not None else f"{WARP_SIZE}"
        self.emit(d, f"const spc_idx {jlo} = {render_expr(split.lo)};")
        self.emit(d, f"const spc_idx {jhi} = {render_expr(split.hi)};")
        self.emit(d, f"const spc_idx {width} = spc_wide ? {wide} : {WARP_SIZE};")
        self.emit(d, f"const spc_idx {chunks} = {jhi} > {jlo} ? "
                     f"({jhi} - {jlo} + {width} - 1) / {width} : 0;")
        self.emit(d, f"const spc_idx {items} = {hi} > {lo} ? ({hi} - {lo}) * {chunks} : 0;")
        self.emit(d, f"for (spc_idx {w} = (spc_idx)blockIdx.x * {WARPS_PER_BLOCK} + "
                     f"spc_warp; {w} < {items}; {w} += (spc_idx)gridDim.x * "
                     f"{WARPS_PER_BLOCK}) {{")
        self.emit(d + 1, f"spc_idx {c_name(s.var.name)} = {lo} + {w} / {chunks};")
        self.emit(d + 1, f"const spc_idx {j0} = {jlo} + ({w} % {chunks}) * {width} + "
                         f"spc_lane;")
        for c in body[:-1]:
            self.stmt(c, d + 1, "warp")
        if jam is not None:
            self.emit(d + 1, "if (spc_wide) {")
            ok = self.copies(split, jam, j0, jhi, d + 2, first_valid=False)
            self.jam_block(split.body, d + 2, jam, ok)
            self.emit(d + 1, "} else {")
            dd = d + 2
        else:
            dd = d + 1
        self.emit(dd, f"const spc_idx {c_name(split.var.name)} = {j0};")
        self.emit(dd, f"if ({c_name(split.var.name)} < {jhi}) {{")
        self.block(split.body, dd + 1, "lane")
        self.emit(dd, "}")
        if jam is not None:
            self.emit(d + 1, "}")
        self.emit(d, "}")

    # -- tensor-core tiles ---------------------------------------------------------
    def mma_tile(self, s: For, d: int, ctx: str) -> None:
        """A warp's tile (``LoopKind.MMA_M``, see passes/tensorize.py).  The product
        form becomes mma.sync instructions (m16n8k16 for 16-bit inputs, m16n8k8 for
        tf32 ones, ``MmaShape``): each lane loads the operand
        entries its fragments hold, found by rendering the loads with the tile's
        loop variables bound to the fragment's coordinates.  The write-out form
        runs its body once per accumulator entry a lane holds, with those
        coordinates bound and ``acc[...]`` read from the lane's registers."""
        if ctx != "warp":
            raise CompileError(f"kernel {self.kernel.name}: a tensor-core tile in {ctx} "
                               f"context (it needs the whole warp)")
        n_loop, k_loop = _mma_loops(s)
        if n_loop is None:
            raise CompileError(f"kernel {self.kernel.name}: @mma_m loop over {s.var.name} "
                               f"does not hold one @mma_n loop")
        if k_loop is not None and k_loop.kind is LoopKind.MMA_SPARSE_K:
            self.mma_sparse_product(s, n_loop, k_loop, d)
        elif k_loop is not None:
            self.mma_product(s, n_loop, k_loop, d)
        else:
            self.mma_write(s, n_loop, d)

    def mma_product(self, m: For, n: For, k: For, d: int) -> None:
        (store,) = stmts_of(k.body)
        rows, cols, depth = (int(x.hi.value) for x in (m, n, k))
        x, y = store.value.lhs, store.value.rhs
        if n.var.name in _reads(x):
            x, y = y, x
        types = {ld.buf.dtype for ld in walk(store.value)      # (an index load gathers)
                 if isinstance(ld, Load) and ld.buf.dtype.is_float}
        tf32 = isinstance(x, ToTF32) and isinstance(y, ToTF32)
        shape = MMA_TF32 if tf32 else MMA_16
        step = shape.k
        if tf32:
            x, y = x.value, y.value
            types = types if types == {DType.F32} else set()
        elif len(types) != 1 or not types <= set(NARROW):
            types = set()
        if not types or rows % 16 or cols % 8 or depth % step:
            raise CompileError(f"kernel {self.kernel.name}: no {shape.name} instruction for "
                               f"a {rows} x {cols} x {depth} tile of "
                               f"{sorted(t.value for t in types)}")
        dt = types.pop()
        g, t, mi, ki, ni, a, b = (self.fresh(stem)
                                  for stem in ("g", "t", "mi", "ki", "ni", "a", "b"))
        r, c, kk = (m.var.name, n.var.name, k.var.name)

        def at(row, col, kx):
            bound = {r: row, c: col, kk: kx}
            return lambda v: f"({bound[v]})" if bound.get(v) is not None else c_name(v)

        def entry(e, row, col, dk):
            """One fragment register: ``e``'s values at the lane's (row or column, k)
            pairs, packed (16-bit: two k, low first; tf32: one)."""
            kx = f"{ki} * {step} + {shape.lane_k} * {t} + "
            parts = [self.bits(e, at(row, col, kx + str(dk + h)), dt, tf32)
                     for h in range(shape.per_register)]
            return parts[0] if tf32 else f"spc_pack16({parts[0]}, {parts[1]})"

        frag = c_name(store.buf.name)
        mt = rows // 16
        # a 16-bit operand read from a shared tile: its fragments by ldmatrix
        tile_x = None if tf32 else self.shared_tile(x, r, kk)
        tile_y = None if tf32 else self.shared_tile(y, c, kk)
        j8, r8 = self.fresh("j"), self.fresh("r")
        # per k step: the A fragments of every 16 rows, then per 8 columns one B
        # fragment, used by every 16 rows
        self.emit(d, "{")
        if not (tile_x and tile_y):
            self.emit(d + 1, f"const int {g} = spc_lane >> 2, {t} = spc_lane & 3;")
        if tile_x or tile_y:
            self.emit(d + 1, f"const int {j8} = spc_lane >> 3, {r8} = spc_lane & 7;")
        self.emit(d + 1, "#pragma unroll")
        self.emit(d + 1, f"for (int {ki} = 0; {ki} < {depth // step}; ++{ki}) {{")
        self.emit(d + 2, f"unsigned {a}[{mt}][4];")
        self.emit(d + 2, "#pragma unroll")
        self.emit(d + 2, f"for (int {mi} = 0; {mi} < {mt}; ++{mi}) {{")
        if tile_x:     # matrices (rows, k) at (0, 0), (8, 0), (0, 8), (8, 8): lanes 8 j + r
            self.emit(d + 3, self.ldmatrix(tile_x, 4, f"{a}[{mi}]", major=f"{mi} * 16",
                                           major_off=f"({j8} & 1) * 8", k=f"{ki} * 16",
                                           k_off=f"({j8} >> 1) * 8", r=r8))
        else:
            for q, (dr, dk) in enumerate(shape.a):
                self.emit(d + 3, f"{a}[{mi}][{q}] = "
                                 f"{entry(x, f'{mi} * 16 + {g} + {dr}', None, dk)};")
        self.emit(d + 2, "}")
        self.emit(d + 2, "#pragma unroll")
        self.emit(d + 2, f"for (int {ni} = 0; {ni} < {cols // 8}; ++{ni}) {{")
        self.emit(d + 3, f"unsigned {b}[2];")
        if tile_y:     # matrices (columns, k) at (0, 0), (0, 8): lanes 8 j + r, j < 2
            self.emit(d + 3, self.ldmatrix(tile_y, 2, b, major=f"{ni} * 8", major_off="0",
                                           k=f"{ki} * 16", k_off=f"({j8} & 1) * 8", r=r8))
        else:
            for q, dk in enumerate(shape.b):
                self.emit(d + 3, f"{b}[{q}] = {entry(y, None, f'{ni} * 8 + {g}', dk)};")
        call = "spc_mma_1688_tf32" if tf32 else \
            f"spc_mma_16816<{'true' if dt is DType.BF16 else 'false'}>"
        self.emit(d + 3, "#pragma unroll")
        self.emit(d + 3, f"for (int {mi} = 0; {mi} < {mt}; ++{mi})")
        self.emit(d + 4, f"{call}({frag} + ({mi} * {cols // 8} + {ni}) * 4, {a}[{mi}], {b});")
        self.emit(d + 2, "}")
        self.emit(d + 1, "}")
        self.emit(d, "}")

    def shared_tile(self, e, major: str, k: str) -> tuple[str, int, bool] | None:
        """``(array, pitch, transposed)`` when ``e`` loads a 16-bit shared array at
        ``u * pitch + v`` for the tile variables ``{u, v} == {major, k}``, rows a
        multiple of 16 bytes apart (``passes/stage_tiles.py``'s copies): an
        operand whose fragments ldmatrix reads; ``transposed`` when ``u`` is
        ``k``.  Else None."""
        if not (isinstance(e, Load) and e.buf.name in self.shared and e.buf.dtype in NARROW):
            return None
        ix = e.index
        if not (isinstance(ix, BinOp) and ix.op == "+" and isinstance(ix.rhs, Var)
                and isinstance(ix.lhs, BinOp) and ix.lhs.op == "*"
                and isinstance(ix.lhs.lhs, Var) and isinstance(ix.lhs.rhs, Const)):
            return None
        u, pitch, v = ix.lhs.lhs.name, int(ix.lhs.rhs.value), ix.rhs.name
        if {u, v} != {major, k} or pitch * e.buf.dtype.nbytes % 16:
            return None
        return c_name(e.buf.name), pitch, u == k

    @staticmethod
    def ldmatrix(tile: tuple[str, int, bool], n: int, regs: str, *, major: str,
                 major_off: str, k: str, k_off: str, r: str) -> str:
        """``n`` fragment registers by one ldmatrix: lane ``8 j + r`` gives row
        ``r`` of matrix j, whose top-left corner is (``major + major_off``,
        ``k + k_off``) in (fragment row or column, k) coordinates; a transposed
        tile stores k along its rows."""
        name, pitch, transposed = tile
        if transposed:
            row, col = f"{k} + {k_off} + {r}", f"{major} + {major_off}"
        else:
            row, col = f"{major} + {major_off} + {r}", f"{k} + {k_off}"
        return (f"spc_ldmatrix<{n}, {'true' if transposed else 'false'}>({regs}, "
                f"{name} + ({row}) * {pitch} + {col});")

    def mma_sparse_product(self, m: For, n: For, k: For, d: int) -> None:
        """A tile whose A is 2:4 sparse (``LoopKind.MMA_SPARSE_K``, see
        passes/tensorize_nm.py) as ``mma.sp`` m16n8k32 instructions, 16 slots
        (32 columns of k) each.  Lane 4 g + t holds:

        - A, the stored values, as m16n8k16's A over the 16 slots: rows g and
          g + 8, slots 2t, 2t + 1 and 2t + 8, 2t + 9 (``MMA_16.a``), i.e. groups
          t and t + 4 of the step's eight;
        - B, 32 rows of k: k = 2t + 8r, 2t + 8r + 1 (r = 0..3), column g;
        - the metadata (sparsity selector 0: lanes t = 0 and 1 of each group
          of four supply it): lane t covers slots 8t .. 8t + 7 (groups 4t ..
          4t + 3, columns 16t .. 16t + 15 of the step), row g in the low 16
          bits and row g + 8 in the high 16; slot 8t + q's place in its group
          (the ``index`` of the loop's ``let k = s / 2 * 4 + index``, 2 bits)
          at bit 2q of its half, so a group's two places fill a nibble, the
          first slot's low.  Lanes t = 2, 3 build their neighbours' (t & 1)
          copies, which the instruction does not read.

        As in ``mma_product``, each fragment entry is the IR's expression with
        the tile's variables (row, column, slot or k) bound to the lane's
        coordinates."""
        let, store = stmts_of(k.body)
        index = sparse_slot(let.value, k.var.name)
        rows, cols, depth = (int(x.hi.value) for x in (m, n, k))
        x, y = store.value.lhs, store.value.rhs
        if let.var.name in _reads(x) or k.var.name in _reads(y):
            x, y = y, x
        types = {ld.buf.dtype for ld in walk(store.value)
                 if isinstance(ld, Load) and ld.buf.dtype.is_float}
        if len(types) != 1 or not types <= set(NARROW) or rows % 16 or cols % 8 or depth % 16 \
                or index is None or let.var.name in _reads(x) or k.var.name in _reads(y):
            raise CompileError(f"kernel {self.kernel.name}: no mma.sp m16n8k32 instruction "
                               f"for a {rows} x {cols} x {depth} (slots) tile of "
                               f"{sorted(t.value for t in types)}")
        dt = types.pop()
        g, t, mi, ki, ni, a, b, e = (self.fresh(stem)
                                     for stem in ("g", "t", "mi", "ki", "ni", "a", "b", "e"))
        r, c, sl, kk = m.var.name, n.var.name, k.var.name, let.var.name

        def at(bound: dict):
            return lambda v: f"({bound[v]})" if bound.get(v) is not None else c_name(v)

        def pair(ex, first: dict, second: dict) -> str:
            return f"spc_pack16({self.bits(ex, at(first), dt)}, {self.bits(ex, at(second), dt)})"

        frag = c_name(store.buf.name)
        mt = rows // 16
        self.emit(d, "{")
        self.emit(d + 1, f"const int {g} = spc_lane >> 2, {t} = spc_lane & 3;")
        self.emit(d + 1, "#pragma unroll")
        self.emit(d + 1, f"for (int {ki} = 0; {ki} < {depth // 16}; ++{ki}) {{")
        self.emit(d + 2, f"unsigned {a}[{mt}][4], {e}[{mt}];")
        self.emit(d + 2, "#pragma unroll")
        self.emit(d + 2, f"for (int {mi} = 0; {mi} < {mt}; ++{mi}) {{")
        for q, (dr, ds) in enumerate(MMA_16.a):
            row = f"{mi} * 16 + {g} + {dr}"
            slot = f"{ki} * 16 + 2 * {t} + {ds}"
            self.emit(d + 3, f"{a}[{mi}][{q}] = " + pair(
                x, {r: row, sl: slot}, {r: row, sl: slot + " + 1"}) + ";")
        places = []
        for half in range(2):
            for q in range(8):
                bound = {r: f"{mi} * 16 + {g} + {8 * half}",
                         sl: f"{ki} * 16 + 8 * ({t} & 1) + {q}"}
                places.append(f"((unsigned)({render_expr(index, name=at(bound))}) & 3u) "
                              f"<< {16 * half + 2 * q}")
        self.emit(d + 3, f"{e}[{mi}] = " + f"\n{'    ' * (d + 4)}| ".join(places) + ";")
        self.emit(d + 2, "}")
        self.emit(d + 2, "#pragma unroll")
        self.emit(d + 2, f"for (int {ni} = 0; {ni} < {cols // 8}; ++{ni}) {{")
        self.emit(d + 3, f"unsigned {b}[4];")
        tile_y = self.shared_tile(y, c, kk)
        if tile_y:     # matrices (columns, k) at (0, 8 j) for j < 4: lanes 8 j + r
            j8, r8 = self.fresh("j"), self.fresh("r")
            self.emit(d + 3, f"const int {j8} = spc_lane >> 3, {r8} = spc_lane & 7;")
            self.emit(d + 3, self.ldmatrix(tile_y, 4, b, major=f"{ni} * 8", major_off="0",
                                           k=f"{ki} * 32", k_off=f"{j8} * 8", r=r8))
        for q in range(0 if tile_y else 4):
            kx = f"{ki} * 32 + 2 * {t} + {8 * q}"
            col = f"{ni} * 8 + {g}"
            self.emit(d + 3, f"{b}[{q}] = " + pair(y, {kk: kx, c: col},
                                                   {kk: kx + " + 1", c: col}) + ";")
        self.emit(d + 3, "#pragma unroll")
        self.emit(d + 3, f"for (int {mi} = 0; {mi} < {mt}; ++{mi})")
        self.emit(d + 4, f"spc_mma_sp_16832<{'true' if dt is DType.BF16 else 'false'}>("
                         f"{frag} + ({mi} * {cols // 8} + {ni}) * 4, {a}[{mi}], {b}, {e}[{mi}]);")
        self.emit(d + 2, "}")
        self.emit(d + 1, "}")
        self.emit(d, "}")

    def bits(self, e, name, dt: DType, tf32: bool = False) -> str:
        """``e``, a float value, as the bits of an instruction's input: with ``tf32``
        its tf32 rounding; else its ``dt`` (16-bit) rounding, where a load of a
        ``dt`` array is its element as stored.  A select of zero keeps its
        condition (so that a guarded load is made only where it holds)."""
        if isinstance(e, Select) and isinstance(e.if_false, Const) \
                and e.if_false.value == 0 and math.copysign(1.0, e.if_false.value) > 0:
            zero = "0u" if tf32 else "(unsigned short)0"
            return (f"({render_expr(e.cond, name=name)} ? "
                    f"{self.bits(e.if_true, name, dt, tf32)} : {zero})")
        if tf32:
            return f"__float_as_uint(spc_to_tf32({render_expr(e, name=name)}))"
        if isinstance(e, Load) and e.buf.dtype is dt:
            return f"{c_name(e.buf.name)}[{render_expr(e.index, name=name)}]"
        return f"{NARROW[dt]}({render_expr(e, name=name)})"

    def mma_write(self, m: For, n: For, d: int) -> None:
        rows, cols = int(m.hi.value), int(n.hi.value)
        frags = {ld.buf.name for ld in walk(n.body) if isinstance(ld, Load)} & set(self.fragments)
        if len(frags) != 1 or self.fragments[next(iter(frags))] != (rows, cols):
            raise CompileError(f"kernel {self.kernel.name}: the tile write over {m.var.name} "
                               f"must read one {rows} x {cols} accumulator")
        frag = frags.pop()
        entry = Var(next(f"{frag}_entry{k or ''}" for k in count()
                         if f"{frag}_entry{k or ''}" not in self.names), DType.F32)
        body = rewrite(n.body, lambda x: entry if isinstance(x, Load) and x.buf.name == frag
                       else x)
        g, t, mi, ni, q = (self.fresh(stem) for stem in ("g", "t", "mi", "ni", "q"))
        self.emit(d, "{")
        self.emit(d + 1, f"const int {g} = spc_lane >> 2, {t} = spc_lane & 3;")
        for depth_, (v, hi) in enumerate(((mi, rows // 16), (ni, cols // 8), (q, 4)), start=1):
            self.emit(d + depth_, "#pragma unroll")
            self.emit(d + depth_, f"for (int {v} = 0; {v} < {hi}; ++{v}) {{")
        dd = d + 4
        self.emit(dd, f"const spc_idx {c_name(m.var.name)} = {mi} * 16 + {g} + 8 * ({q} >> 1);")
        self.emit(dd, f"const spc_idx {c_name(n.var.name)} = {ni} * 8 + 2 * {t} + ({q} & 1);")
        self.emit(dd, f"const float {c_name(entry.name)} = "
                      f"{c_name(frag)}[({mi} * {cols // 8} + {ni}) * 4 + {q}];")
        self.block(body, dd, "lane")           # each lane writes the entries it holds
        for depth_ in (3, 2, 1):
            self.emit(d + depth_, "}")
        self.emit(d, "}")


@dataclass(frozen=True)
class MmaShape:
    """An instruction's fragments: ``k`` per instruction; the A registers as (row
    offset, k offset) and the B registers as k offsets, k counted from
    ``lane_k`` * (lane % 4); ``per_register`` inputs in each."""
    name: str
    k: int
    a: tuple
    b: tuple
    lane_k: int
    per_register: int


MMA_16 = MmaShape("m16n8k16", 16, ((0, 0), (8, 0), (0, 8), (8, 8)), (0, 8), 2, 2)
MMA_TF32 = MmaShape("m16n8k8 tf32", 8, ((0, 0), (8, 0), (0, 4), (8, 4)), (0, 4), 1, 1)


def _mma_loops(m: For):
    """(the @mma_n loop of a @mma_m loop, its @mma_k loop or None); (None, None)
    when the tile is not so shaped."""
    inner = stmts_of(m.body)
    if len(inner) != 1 or not isinstance(inner[0], For) or inner[0].kind is not LoopKind.MMA_N:
        return None, None
    n = inner[0]
    body = stmts_of(n.body)
    if len(body) == 1 and isinstance(body[0], For) \
            and body[0].kind in (LoopKind.MMA_K, LoopKind.MMA_SPARSE_K):
        return n, body[0]
    return n, None


def _mma_accumulators(kernel: Kernel):
    """(buffer name, (rows, columns)) of each tile accumulator: the local array a
    tile's product form adds into."""
    for loop in walk(kernel.body):
        if isinstance(loop, For) and loop.kind is LoopKind.MMA_M:
            n, k = _mma_loops(loop)
            if k is not None:
                for st in stmts_of(k.body):
                    if isinstance(st, Store):
                        yield st.buf.name, (int(loop.hi.value), int(n.hi.value))


def render_body(kernel: Kernel) -> str:
    """The C statements of ``kernel``'s ``__global__`` function."""
    plan = launch_plan(kernel)
    r = _Body(kernel)
    r.emit(1, f"const int spc_lane = threadIdx.x & {WARP_SIZE - 1};")
    r.emit(1, "const int spc_warp = threadIdx.x / " + str(WARP_SIZE) + ";")
    r.emit(1, "(void)spc_lane; (void)spc_warp;")
    if plan.mode == "single_warp":
        r.emit(1, f"if (blockIdx.x != 0 || threadIdx.x >= {WARP_SIZE}) return;")
        r.block(kernel.body, 1, "warp")
    else:
        r.block(kernel.body, 1, "grid")
    return "\n".join(r.lines)


def render_params(kernel: Kernel, index_type: str = "long long") -> list[str]:
    """The C parameters: the kernel's (sizes of type ``index_type``), then
    ``spc_wide`` (a launch choice, see ``split_warp_loop``) when it has a
    ``@gpu_lane_split`` loop."""
    out = []
    for p in kernel.params:
        v = p.value
        if isinstance(v, Buffer):
            const = "const " if p.role is ParamRole.INPUT else ""
            out.append(f"{const}{c_elem_type(v.dtype)}* __restrict__ {c_name(v.name)}")
        else:
            out.append(f"const {index_type} {c_name(v.name)}")
    return out + [f"const int {name}" for name in _launch_choices(kernel)]


def render_args(kernel: Kernel, index_type: str) -> list[str]:
    """The arguments a wrapper kernel passes to the body (sizes cast to ``index_type``)."""
    out = [c_name(p.name) if isinstance(p.value, Buffer) else f"({index_type}){c_name(p.name)}"
           for p in kernel.params]
    return out + _launch_choices(kernel)


def _launch_choices(kernel: Kernel) -> list[str]:
    """Names of the int parameters through which the launcher picks a variant
    (columns per lane, lane-group split, flat enumeration), in signature order."""
    plan = launch_plan(kernel)
    names = []
    if plan.chunk_lo is not None:
        names.append("spc_wide")
    found = top_loop(kernel)
    lane = grouped_lane_loop(found[1]) if plan.group is not None else None
    if lane is not None:
        names.append(launch_symbol(lane.groups.split))
        if found[1].flat is not None:
            names.append(launch_symbol(found[1].flat.steps))
    return names


__all__ = ["LaunchPlan", "c_name", "host_eval", "launch_plan", "render_args", "render_body",
           "launch_symbol", "render_expr", "render_params", "LANE_KINDS"]
