"""The loop IR: small frozen dataclasses with named fields.

A ``Kernel`` is a list of parameters (arrays and integer scalars) and a
statement tree.  Expressions are pure; statements mutate local variables
(``Let``/``Assign``) or arrays (``Store``).  Index arithmetic is int64 no matter
how index arrays are stored; loads of index arrays widen to int64.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class DType(Enum):
    F16 = "f16"         # storage only (values of arrays): loads widen to F32, and
    BF16 = "bf16"       # stores round F32 values to nearest even
    F32 = "f32"
    F64 = "f64"
    I8 = "i8"           # narrow index arrays (e.g. N:M in-group offsets); loads widen
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    BOOL = "bool"

    @property
    def is_float(self) -> bool:
        return self in (DType.F16, DType.BF16, DType.F32, DType.F64)

    @property
    def widened(self) -> "DType":
        """The type a load of an array of this type yields (and arithmetic on it
        runs in): int64 for integers, float32 for 16-bit floats, else itself."""
        if self.is_int:
            return DType.I64
        return DType.F32 if self in (DType.F16, DType.BF16) else self

    @property
    def is_int(self) -> bool:
        return self in (DType.I8, DType.I16, DType.I32, DType.I64)

    @property
    def numpy(self) -> str:
        return {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64",
                "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
                "bool": "bool"}[self.value]

    @property
    def nbytes(self) -> int:
        """Bytes an array element of this type takes."""
        return {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i8": 1, "i16": 2, "i32": 4,
                "i64": 8, "bool": 1}[self.value]

    @property
    def np(self):
        """The numpy dtype of arrays of this type (bfloat16's is ml_dtypes')."""
        import numpy as np
        if self is DType.BF16:
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.numpy)

    @staticmethod
    def from_numpy(name) -> "DType":
        import numpy as np
        return {"float16": DType.F16, "bfloat16": DType.BF16, "float32": DType.F32,
                "float64": DType.F64, "int8": DType.I8, "int16": DType.I16,
                "int32": DType.I32, "int64": DType.I64,
                "bool": DType.BOOL}[name if name == "bfloat16" else np.dtype(name).name]


class LoopKind(Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"        # CPU threads; iterations are independent
    GPU_BLOCK = "gpu_block"      # one thread block per iteration
    GPU_WARP = "gpu_warp"        # one warp per iteration (of the grid, or of its block)
    GPU_THREAD = "gpu_thread"    # one thread per iteration
    GPU_LANE = "gpu_lane"        # iterations spread over the 32 lanes of the warp
    GPU_LANE_SPLIT = "gpu_lane_split"  # 32-iteration chunks, each one warp's lanes
    VECTOR = "vector"            # a hint: vectorize/unroll this inner loop
    SCALAR = "scalar"            # a hint: keep this loop one iteration at a time (no
                                 # vectorizing or unrolling it; its body may still be
                                 # vectorized within an iteration)
    # A warp's tensor-core tile (passes/tensorize.py): an MMA_M loop over a
    # tile's rows holding one MMA_N loop over its columns, whose body is either
    # one MMA_K loop holding one store ``acc[r * N + c] += X * Y`` into a local
    # accumulator (X reads rows and k, Y k and columns: the product), or
    # statements that read ``acc[r * N + c]`` (writing the tile out).  The
    # iterations run in order here (the interpreter, the meaning); on a GPU the
    # warp's lanes share them as the matrix instruction lays them out.
    # A tile whose first operand is 2:4 sparse (passes/tensorize_nm.py) has an
    # MMA_SPARSE_K loop in place of MMA_K: it runs over the operand's stored
    # slots, two per group of four k, and its body is ``let k = s / 2 * 4 + e``
    # (e in [0, 4): the slot's place in its group, the instruction's metadata)
    # then the store, X reading the slot s, Y reading k.
    MMA_M = "mma_m"
    MMA_N = "mma_n"
    MMA_K = "mma_k"
    MMA_SPARSE_K = "mma_sparse_k"


# --------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Const:
    value: float | int | bool
    dtype: DType


@dataclass(frozen=True, slots=True)
class Var:
    """A scalar: a loop variable, a local (``Let``) or an integer parameter."""
    name: str
    dtype: DType


@dataclass(frozen=True, slots=True)
class Buffer:
    """A 1-D array parameter (or a local array made by ``Alloc``)."""
    name: str
    dtype: DType


@dataclass(frozen=True, slots=True)
class Load:
    buf: Buffer
    index: "Expr"


BINARY_OPS = ("+", "-", "*", "/", "min", "max", "&", "<<", "<", "<=", "==", "!=", "&&", "||")
# "&": the bitwise and of two integers (a hash table's slot: ``j & (size - 1)``); "<<": an
# integer shifted left by 0 to 62 places (a bit of a bitmap word: ``1 << (j & 31)``)
BIT_OPS = ("&", "<<")
COMPARE_OPS = ("<", "<=", "==", "!=")
LOGIC_OPS = ("&&", "||")


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str
    lhs: "Expr"
    rhs: "Expr"

    @property
    def dtype(self) -> DType:
        if self.op in COMPARE_OPS or self.op in LOGIC_OPS:
            return DType.BOOL
        return dtype_of(self.lhs)


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"


@dataclass(frozen=True, slots=True)
class Cast:
    value: "Expr"
    dtype: DType


@dataclass(frozen=True, slots=True)
class Select:
    cond: "Expr"
    if_true: "Expr"
    if_false: "Expr"


@dataclass(frozen=True, slots=True)
class WarpSum:
    """The sum of ``value`` over the 32 lanes of a warp, in every lane; with ``op``
    "max", "min" or "||" (booleans) their maximum, minimum or disjunction.

    Meaningful after a ``GPU_LANE`` loop that accumulated per-lane partial
    results; in a single-lane execution (the interpreter, a CPU) it is ``value``.
    """
    value: "Expr"
    op: str = "+"


@dataclass(frozen=True, slots=True)
class ToTF32:
    """``value`` (a float32) rounded to TensorFloat-32, the inputs of a tf32 tensor-core
    tile: 10 mantissa bits, to nearest with ties away from zero (PTX ``cvt.rna.tf32.f32``;
    a NaN or infinity stays one), still a float32."""
    value: "Expr"


@dataclass(frozen=True, slots=True)
class Call:
    """``fn(value)``, an element-wise math function of a float (one of
    ``MATH_FUNCTIONS``), in the value's type: ``exp``, ``log`` (natural),
    ``sqrt``, ``abs``; or ``ctz`` of an integer (``INT_FUNCTIONS``): the
    number of trailing zero bits of a positive value (the lowest set bit's
    place; 64 for 0)."""
    fn: str
    value: "Expr"


MATH_FUNCTIONS = ("exp", "log", "sqrt", "abs")
INT_FUNCTIONS = ("ctz",)

Expr = Const | Var | Load | BinOp | Neg | Cast | Select | WarpSum | ToTF32 | Call


def dtype_of(e: Expr) -> DType:
    """The type of an expression's value."""
    if isinstance(e, (Const, Var, Cast)):
        return e.dtype
    if isinstance(e, Load):
        return e.buf.dtype.widened
    if isinstance(e, BinOp):
        return e.dtype
    if isinstance(e, Neg):
        return dtype_of(e.operand)
    if isinstance(e, Select):
        return dtype_of(e.if_true)
    if isinstance(e, (WarpSum, ToTF32, Call)):
        return dtype_of(e.value)
    raise TypeError(f"not an expression: {e!r}")


def cast_to(e: Expr, dtype: DType) -> Expr:
    """``e`` converted to ``dtype`` (``e`` itself where it has that type)."""
    return e if dtype_of(e) is dtype else Cast(e, dtype)


# --------------------------------------------------------------------------
# Statements
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Block:
    body: tuple["Stmt", ...]


@dataclass(frozen=True, slots=True)
class Let:
    """Declare a mutable local scalar and give it its first value."""
    var: Var
    value: Expr


@dataclass(frozen=True, slots=True)
class Assign:
    var: Var
    value: Expr


@dataclass(frozen=True, slots=True)
class Store:
    """``buf[index] = value``, or ``buf[index] += value`` when ``accumulate``
    (the addition in the value's type).  A value of a wider float type than the
    array's element is rounded to it, to nearest even, once.

    ``atomic`` (with ``accumulate``): the addition is atomic, because other
    threads may add to the same entry concurrently.
    """
    buf: Buffer
    index: Expr
    value: Expr
    accumulate: bool = False
    atomic: bool = False


@dataclass(frozen=True, slots=True)
class Jam:
    """Unroll-and-jam of a concurrent loop (``passes/unroll_jam.py``): each lane
    (for a ``GPU_WARP`` loop inside a block, each warp) runs ``factor`` of its
    iterations at once, one copy of the body per iteration, interleaved
    statement by statement so that their loads are in flight together.

    ``copies``: the variables with one value per copy, sorted (the loop
    variable and every local computed from it); the rest of the body is the
    same in every copy and computed once.  ``sums``: variables declared outside
    the loop that the body only sums into (``r = r + e``), in the order the
    body first assigns them: copy 0 sums into the variable itself, copy
    ``u > 0`` into a partial sum of its own that starts at 0 and is added to
    the variable after the loop, ``r = r + (r__1 + ... + r__{factor-1})``.
    Copy ``u`` of a step whose first iteration is ``v`` runs iteration
    ``v + u * stride`` (``stride``: 32 for lane loops, 8 for a block's warps;
    1 in a single-lane execution, the interpreter's) when it is below ``hi``,
    and does nothing otherwise.  ``min_trips``: the loop runs unjammed when it
    has fewer iterations (0: always jammed).  ``launch``: the name of a launch
    choice (``"wide"``) that runs the loop jammed when true and unjammed when
    false, or None.
    """
    factor: int
    copies: tuple[str, ...]
    sums: tuple[Var, ...] = ()
    min_trips: int = 0
    launch: str | None = None


@dataclass(frozen=True, slots=True)
class VectorLoads:
    """A sum reduction loop read ``width`` iterations at a time with one 16-byte
    load per array (``passes/vector_loads.py``): 4 float32 or 2 float64.

    ``loads``: the loads that move with the loop variable, each at unit stride
    (its index, with the body's Lets inlined, is ``base + var``), in the order
    the body first reads them; their index at the loop's first iteration must
    be a multiple of ``width`` (with arrays 16-byte aligned, the vector is) for
    the vectors to run.  ``sums``: the variables declared outside the loop the
    body sums into, in the order it first assigns them.

    Meaning: when the loop has at least ``width`` iterations and every load is
    so aligned, its first ``width * floor(n / width)`` iterations run in steps
    of ``width``, iteration ``step + c`` summing into partial sum ``c`` of each
    variable of ``sums``; the rest run one at a time into partial sum 0.  Else
    every iteration sums into partial sum 0.  The partial sums start at 0 and
    are added to the variable after the loop, ``(p0 + p1) + (p2 + p3)``.  On a
    GPU the loop's lane group shares the steps (``spc_group`` lanes,
    ``cuda_c.grouped_reduction``) and the group's partial sums are added too.
    """
    width: int
    loads: tuple[Load, ...]
    sums: tuple[Var, ...]


@dataclass(frozen=True, slots=True)
class VectorMoves:
    """A lane loop that copies a tile moves ``width`` elements (16 bytes) at a
    time (``passes/stage_tiles.py``).

    The loop runs over ``[0, rows * cols)`` and its body is ``let row = e /
    cols; let col = e - row * cols; dst[f(row) + col] = src[g(row) + col]``:
    each run of ``cols`` iterations copies one row, consecutive in both arrays
    (``ir.moves.moves_of`` checks the shape).  Meaning: the loop, one element
    at a time (the interpreter runs it so).  On a GPU the warp's lanes move
    ``width`` consecutive elements at once where the first two rows of both
    arrays start 16-byte aligned (checked at run time), else one at a time.
    """
    width: int
    cols: int


LANE_GROUP_SIZES = (1, 2, 4, 8, 16, 32)     # lanes that may share one lane iteration


@dataclass(frozen=True, slots=True)
class LaneGroups:
    """How a warp shares out a ``GPU_LANE`` loop each of whose iterations runs a
    sum reduction loop (SDDMM's nonzeros of a row, each a dot product over
    ``k``; ``passes/lane_groups.py``).  Two launch symbols shape it, values the
    launcher chooses per call (the CUDA parameters ``spc_<name>``, the keys of
    the interpreter's ``launch``):

    ``group`` (``spc_group``): the lanes of a group, one of ``sizes``; each
    group of that many lanes takes one lane iteration at a time, so a warp runs
    ``32 / group`` lane iterations at once.  ``split`` (``spc_split``, >= 1):
    the warps that share one iteration of the enclosing ``GPU_WARP`` loop.

    ``reduction``: the variable of the serial loop, a statement of the lane
    loop's body, that a group shares.  ``sums``: the variables declared in the
    lane loop's body that it sums into (``r = r + e``), in the order its body
    first assigns them.

    Meaning, for group ``G`` and split ``S`` (``G = S = 1`` where not given):
    each of the ``S`` warps runs the enclosing loop's statements before the
    lane loop; warp ``s`` takes the lane iterations ``p`` with
    ``(p - lo) // (32 / G) % S == s``.  In a lane iteration, lane ``l`` of the
    group runs the reduction iterations ``klo + l, klo + l + G, ...`` into
    partial sums of its own that start at 0 (with ``VectorLoads`` of width
    ``W``: where they run, vector steps ``klo + W * l``, every ``W * G``, over
    the first ``W * floor(n / W)`` iterations, element ``c`` into its partial
    sum ``c``, then the rest from that point, every ``G``-th, into partial sum
    0; a lane's partial sums added ``(p0 + p1) + (p2 + p3)``); then the group
    adds its lanes' values by a butterfly (for ``o = G/2, ..., 1``: each lane
    adds lane ``l xor o``'s value) and adds the total to each variable of
    ``sums``.  The lane body's other statements run on every lane of the group
    alike; their stores are made by its first lane.
    """
    reduction: str
    sums: tuple[Var, ...]
    sizes: tuple[int, ...] = LANE_GROUP_SIZES
    group: str = "group"
    split: str = "split"


@dataclass(frozen=True, slots=True)
class FlatPositions:
    """A ``GPU_WARP`` loop over rows whose last statement (after Lets) is a lane
    loop with ``LaneGroups`` over the row's positions ``[start(v), start(v +
    1))``, ``start`` a load (a compressed level's ``pos``): consecutive rows
    cover one contiguous range, so the pairs (row, position) can be enumerated
    flat (``passes/flat_positions.py``).  ``lanes``: that lane loop's variable.
    ``steps``: the launch symbol (``spc_flat``) switching it on, >= 0.

    Meaning, for ``steps`` = ``F`` > 0 (with the lane groups' ``G``): the
    positions ``[start(lo), end(hi - 1))`` are cut into chunks of
    ``F * 32 / G`` consecutive positions, one warp's work each; a position
    ``p``'s row is the last ``v`` in ``[lo, hi)`` with ``start(v) <= p``, for
    which the loop's Lets run before the lane loop's body runs for ``p``
    (its reduction shared by the lane group).  ``F`` = 0 (or not given): the
    loop runs row by row as ``LaneGroups`` says.
    """
    lanes: str
    steps: str = "flat"


@dataclass(frozen=True, slots=True)
class For:
    """``for var in [lo, hi)`` with unit step; ``jam``: how a concurrent loop's
    iterations are unrolled and jammed (None: one at a time); ``vector``: how a
    lane group's reduction loop reads vectors (None: elements); ``moves``: how
    a lane loop copying a tile moves vectors (None: elements); ``groups``: how
    lane groups share a lane loop (None: a lane per iteration); ``flat``: how
    a warp loop's (row, position) pairs may be enumerated flat (None: row by
    row)."""
    var: Var
    lo: Expr
    hi: Expr
    body: "Stmt"
    kind: LoopKind = LoopKind.SERIAL
    jam: Jam | None = None
    vector: VectorLoads | None = None
    moves: VectorMoves | None = None
    groups: LaneGroups | None = None
    flat: FlatPositions | None = None


@dataclass(frozen=True, slots=True)
class While:
    cond: Expr
    body: "Stmt"


@dataclass(frozen=True, slots=True)
class If:
    cond: Expr
    then: "Stmt"
    otherwise: "Stmt | None" = None


class Contents(Enum):
    """What a local array holds when its block starts and what the block
    promises about it at its end (``Alloc.contents``)."""
    ZEROED = "zeroed"         # starts zeroed
    CLEAN = "clean"           # starts zeroed, and the block leaves every element zero
    UNDEFINED = "undefined"   # starts with any contents: every element read was written
                              # earlier in the same block


@dataclass(frozen=True, slots=True)
class Alloc:
    """A local array of ``size`` elements, zeroed, alive until the end of the
    block that declares it.

    ``size`` is a compile-time constant (registers or stack: accumulator
    tiles) or an integer expression of the kernel's sizes, e.g. ``size_j``:
    a *workspace* over an index (TACO's precompute), heap memory on the CPU.
    Declared inside a concurrent loop's body, each iteration has its own.

    ``shared`` (a constant size, inside a ``GPU_WARP`` loop): the warp's
    iteration has one array that all its lanes read and write (CUDA shared
    memory), not one per thread; its contents start undefined on a GPU (the
    interpreter zeroes it), so a kernel writes before it reads.

    ``contents`` (a workspace): ``CLEAN`` claims the block leaves the array
    zeroed, ``UNDEFINED`` that it never reads an element it has not written;
    either lets a target hand the memory of one block's array to the next
    (the CPU keeps workspaces between calls instead of zeroing new ones).  The
    interpreter checks both claims: it fills an ``UNDEFINED`` array with
    garbage and raises when a ``CLEAN`` one ends non-zero.
    """
    buf: Buffer
    size: "int | Expr"
    shared: bool = False
    contents: Contents = Contents.ZEROED

    @property
    def is_workspace(self) -> bool:
        """True when the size is known only at run time (an expression)."""
        return not isinstance(self.size, int)


@dataclass(frozen=True, slots=True)
class CompareSwap:
    """Atomically: declare ``var`` with the value of ``buf[index]`` (an integer
    array) and, if it equals ``expected``, store ``desired`` there.  Concurrent
    iterations may compare-and-swap the same entry: exactly one of those that
    find ``expected`` wins (CUDA ``atomicCAS``).  The claim of a hash slot."""
    var: Var
    buf: Buffer
    index: Expr
    expected: Expr
    desired: Expr


Stmt = Block | Let | Assign | Store | For | While | If | Alloc | CompareSwap


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------

class ParamRole(Enum):
    INPUT = "in"        # read only
    OUTPUT = "out"      # written by the kernel
    SIZE = "size"       # an int64 scalar (a dimension or a length)
    SCRATCH = "scratch"  # an array of ``Param.extent`` elements the runtime zeroes and
                         # the kernel leaves zeroed (workspaces of concurrent rows, CUDA)


@dataclass(frozen=True, slots=True)
class Param:
    """A kernel parameter: an array (``Buffer``) or an int64 scalar (``Var``).

    ``tensor``: the tensor whose storage (values, level arrays or level
    scalars) the parameter is, or None for index sizes.  ``inspector``: for an
    array computed from that tensor's storage rather than stored in it (a row
    permutation), the name of the inspector (``runtime/inspectors.py``) that
    computes it, once per prepared operand.  ``extent``: a SCRATCH array's
    length, an expression of the kernel's size parameters.
    """
    value: Buffer | Var
    role: ParamRole
    tensor: str | None = None
    inspector: str | None = None
    extent: "Expr | None" = None

    @property
    def name(self) -> str:
        return self.value.name


class GridMode(Enum):
    """How a CUDA kernel's top loop is laid on the grid (map_gpu's choice)."""
    WARP = "warp"                # one warp per iteration, 8 warps to a block
    BLOCK = "block"              # one block per iteration, its warps share the inner loop
    THREAD = "thread"            # one thread per iteration
    SINGLE_WARP = "single_warp"  # one warp runs the whole kernel


@dataclass(frozen=True, slots=True)
class GpuMapping:
    """The launch shape map_gpu gives a kernel, beside its loop kinds.

    ``grid``: how the top loop meets the grid.  ``unroll``: iterations of a lane
    loop one lane may run at once: ``passes.unroll_jam`` jams the loops whose
    bodies allow it by this factor (``For.jam``).
    ``group``: the variable of the serial reduction loop (SDDMM's ``k``) that a
    group of lanes may share, inside the top warp loop's lane loop; None when
    the kernel has none (``passes.lane_groups`` turns it into the lane loop's
    ``LaneGroups``).  ``flat``: the variable of that lane loop when it runs
    over a compressed level's positions ``[pos[v], pos[v + 1])``, so that
    (outer iteration, position) pairs may be enumerated flat; else None
    (``passes.flat_positions`` turns it into the warp loop's ``FlatPositions``).
    The renderer and the launcher read those loop fields, not these.
    """
    grid: GridMode
    unroll: int = 1
    group: str | None = None
    flat: str | None = None


@dataclass(frozen=True, slots=True)
class Kernel:
    """A kernel: parameters, body and facts about it.

    ``accepts_noncanonical``: input tensors whose stored entries may be
    unsorted or duplicated without changing the result (duplicates then sum,
    as scipy's do); every other sparse input must be canonical (sorted,
    unique).  Set by ``passes.mark_noncanonical``; empty (the safe answer)
    until then.  ``outer_independent``: the variable of the top loop whose
    iterations write disjoint output entries (the lowerer's claim, which the
    passes that change that loop carry over), or None.  ``rows_independent``:
    the variable of the loop directly inside that top loop when its iterations
    too write disjoint output entries (the rows under a batch of heads: the
    output's second stored level is dense), as lowered; or None (a pass that
    rebuilds the kernel drops it; ``passes.collapse_rows`` reads it).  ``gpu``: the launch
    shape on a CUDA grid, set by ``passes.map_gpu`` (None before, and on the
    CPU).  ``overwrites``: output buffers the kernel stores every entry of
    exactly once, with plain stores, so that their contents before the launch
    do not matter (the runtime skips zeroing them); set by
    ``passes.overwrite_outputs``, empty (the safe answer) until then.
    ``adds_to_output``: the kernel adds to what the output holds before it runs
    (a later term of a sum the lowerer splits into kernels), so its output's
    prior contents always matter.
    ``workspaces``: the arrays of the workspaces (``Alloc`` with a size
    expression) that lead the kernel's body, before its top loop, which every
    iteration of that loop leaves zeroed as it found them (the lowerer's claim):
    so a pass may declare them once per chunk of iterations instead
    (map_parallel), and each thread has its own.
    ``attrs``: descriptive facts the printer shows (loop order, output kind).
    """
    name: str
    params: tuple[Param, ...]
    body: Stmt
    attrs: tuple[tuple[str, str], ...] = field(default=())
    accepts_noncanonical: tuple[str, ...] = ()
    gpu: GpuMapping | None = None
    outer_independent: str | None = None
    rows_independent: str | None = None
    overwrites: tuple[str, ...] = ()
    adds_to_output: bool = False
    workspaces: tuple[str, ...] = ()

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


# --------------------------------------------------------------------------
# Small constructors that keep lowering code readable
# --------------------------------------------------------------------------

def i64(v: int) -> Const:
    return Const(int(v), DType.I64)


def add(a: Expr, b: Expr) -> Expr:
    return BinOp("+", a, b)


def sub(a: Expr, b: Expr) -> Expr:
    return BinOp("-", a, b)


def mul(a: Expr, b: Expr) -> Expr:
    return BinOp("*", a, b)


def lt(a: Expr, b: Expr) -> Expr:
    return BinOp("<", a, b)


def eq(a: Expr, b: Expr) -> Expr:
    return BinOp("==", a, b)


def and_(a: Expr, b: Expr) -> Expr:
    return BinOp("&&", a, b)


def or_(a: Expr, b: Expr) -> Expr:
    return BinOp("||", a, b)


def block(*stmts: Stmt | None) -> Block:
    """A block of the given statements, dropping Nones and flattening blocks."""
    out: list[Stmt] = []
    for s in stmts:
        if s is None:
            continue
        if isinstance(s, Block):
            out.extend(s.body)
        else:
            out.append(s)
    return Block(tuple(out))
