"""Index notation + formats -> loop IR, by TACO-style co-iteration.

Each loop of the loop order binds one index variable.  At that loop every
access whose next level is stored by that variable either *locates* the level
(dense: O(1) random access) or *iterates* it (compressed, singleton: walk the
stored coordinates).  The iterated levels combine through a merge lattice
(Kjolstad et al., OOPSLA 2017): a product iterates the intersection of its
operands, a sum their union.  The lowerer only asks levels the questions of
:mod:`spc.formats.levels`; it knows no format by name.

``lower`` returns a :class:`Program`: one kernel, or for outputs whose sparsity
pattern must be assembled, an ``assemble`` kernel that counts entries per
output row and a ``compute`` kernel that fills them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import count as _count

from ..errors import ModeOrderConflict, ScheduleError, UnsupportedError
from ..formats.format import Format
from ..formats.levels import LevelIO, Parent, ROOT
from ..frontend import ast
from .nodes import (Assign, BinOp, Block, Buffer, Call, Const, DType, Expr, For, If, Kernel,
                    Let, Load, Neg, Param, ParamRole, Select, Stmt, Store, Var, While, add,
                    and_, block, cast_to, eq, i64, lt, mul, or_)
from .simplify_expr import simplify_expr
from .workspace import RowWorkspace

I64 = DType.I64


# ---------------------------------------------------------------------------
# What the runtime needs to know besides the kernels
# ---------------------------------------------------------------------------

class OutputKind:
    DENSE = "dense"            # dense array, zero-filled by the runtime
    ASSEMBLED = "assembled"    # sparse; pattern counted by `assemble`, then filled
    PATTERN = "pattern"        # sparse with the pattern of an input operand


@dataclass(frozen=True)
class Program:
    """The lowered kernels plus the facts the runtime uses to run them."""
    kernels: tuple[Kernel, ...]          # (compute,) or (assemble, compute)
    output: str
    output_kind: str
    output_format: Format
    pattern_source: str | None           # OutputKind.PATTERN: whose pattern
    index_order: tuple[str, ...]         # the loop order
    formats: tuple[tuple[str, Format], ...]
    value_dtype: DType
    index_dtype: DType
    # an assembled output built in a workspace drops the entries whose sum is
    # exactly zero, as scipy's sparse products do: the compute kernel writes each
    # row's count of kept entries to ``<out><last>_nnz`` and the runtime packs
    # the rows when some were dropped
    drops_zeros: bool = False

    @property
    def compute(self) -> Kernel:
        return self.kernels[-1]

    @property
    def assemble(self) -> Kernel | None:
        return self.kernels[0] if len(self.kernels) == 2 else None


# ---------------------------------------------------------------------------
# Naming: every IR name is derived here, so the runtime can find its arrays
# ---------------------------------------------------------------------------

def size_var(index: str) -> Var:
    return Var(f"size_{index}", I64)


def vals_buffer(tensor: str, dtype: DType) -> Buffer:
    return Buffer(f"{tensor}_vals", dtype)


def level_io(tensor: str, level: int, extent: Expr, index_dtype: DType) -> LevelIO:
    return LevelIO(tensor, level, index_dtype, extent)


@dataclass(frozen=True)
class IndexPlan:
    """The loop variables of an assignment.

    An index stored in blocks of b by some operand's format (``Format.block``)
    is split into two loop variables, ``<i>_blk`` (the block, i // b) and
    ``<i>_in`` (the offset inside it); the index itself is then computed from
    them, and operands that store it whole must locate it.  Every other index
    is its own loop variable.
    """
    splits: tuple[tuple[str, int], ...]        # (index, block size)
    loop_vars: tuple[str, ...]                 # in first-appearance order

    @staticmethod
    def of(assign: ast.Assignment, formats: dict[str, Format]) -> "IndexPlan":
        splits: dict[str, int] = {}
        for acc in (assign.lhs,) + assign.accesses():
            fmt = formats[acc.tensor]
            for m, ix in enumerate(acc.indices):
                b = fmt.block_of(m)
                if b > 1:
                    if splits.setdefault(ix, b) != b:
                        raise UnsupportedError(
                            f"index '{ix}' of '{assign.source}' is stored in blocks of "
                            f"{splits[ix]} by one operand and of {b} by {acc.tensor}; "
                            f"store them with the same block size")
        seen: list[str] = []
        for acc in (assign.lhs,) + assign.accesses():
            for ix in acc.indices:
                for v in ((f"{ix}_blk", f"{ix}_in") if ix in splits else (ix,)):
                    if v not in seen:
                        seen.append(v)
        return IndexPlan(tuple(sorted(splits.items())), tuple(seen))

    def block(self, ix: str) -> int:
        return dict(self.splits).get(ix, 1)

    def level_var(self, fmt: Format, indices: tuple[str, ...], level: int) -> str:
        """The variable that level ``level`` of an access (``indices``) is stored by."""
        ix = indices[fmt.order[level]]
        part = fmt.level_part(level)
        if ix not in dict(self.splits):
            return ix
        return {"outer": f"{ix}_blk", "inner": f"{ix}_in"}.get(part, ix)

    def level_vars(self, fmt: Format, indices: tuple[str, ...]) -> list[str]:
        """``level_var`` of every level of an access, in storage order."""
        return [self.level_var(fmt, indices, lvl) for lvl in range(fmt.nlevels)]

    def origin(self, var: str) -> str:
        """The index a loop variable belongs to."""
        for ix, _ in self.splits:
            if var in (f"{ix}_blk", f"{ix}_in"):
                return ix
        return var

    def extent(self, var: str) -> Expr:
        """The trip count of a loop over ``var`` (or the size of index ``var``)."""
        ix = self.origin(var)
        b = self.block(ix)
        if var == ix:
            return size_var(ix)
        if var.endswith("_in"):
            return i64(b)
        return BinOp("/", add(size_var(ix), i64(b - 1)), i64(b))

    def composed(self, bound: set[str]) -> list[str]:
        """Split indices whose two pieces are in ``bound`` but which are not yet."""
        return [ix for ix, _ in self.splits
                if ix not in bound and f"{ix}_blk" in bound and f"{ix}_in" in bound]


# ---------------------------------------------------------------------------
# Loop order
# ---------------------------------------------------------------------------

def default_loop_order(assign: ast.Assignment, formats: dict[str, Format]) -> tuple[str, ...]:
    """A loop order that visits every non-locatable level after its parents.

    Among the orders allowed, indices that select sparse levels come first
    (so sparse operands drive the iteration), then the rest in order of first
    appearance (output indices first); dense inner dimensions end up innermost.
    A sparse output is appended in storage order where some order allows it;
    otherwise only its parent levels' indices come first and its last index
    goes where the operands allow: the row is built in a workspace
    (``uses_workspace``), as Gustavson's SpGEMM ``C[i,j] = A[i,k]*B[k,j]``
    visits ``j`` under ``k``.
    """
    try:
        return _loop_order(assign, formats, workspace=False)
    except UnsupportedError:
        if formats[assign.lhs.tensor].is_dense:
            raise
        try:
            return _loop_order(assign, formats, workspace=True)
        except UnsupportedError:
            pass
        raise                        # the first refusal: it names the orders that conflict


def workspace_loop_order(assign: ast.Assignment, formats: dict[str, Format]) -> tuple[str, ...]:
    """The loop order ``default_loop_order`` takes when a sparse output's rows are
    built in a workspace: only the output's parent indices come first."""
    return _loop_order(assign, formats, workspace=True)


def uses_workspace(assign: ast.Assignment, formats: dict[str, Format],
                   order: tuple[str, ...]) -> bool:
    """True when ``order`` builds the sparse (assembled) output's rows in a
    workspace: it visits the output's parent levels' indices first, in storage
    order, and its last index later than right after them."""
    out_fmt = formats[assign.lhs.tensor]
    if out_fmt.is_dense or out_fmt.nlevels == 0:
        return False
    out_stored = [assign.lhs.indices[m] for m in out_fmt.order]
    rows = len(out_stored) - 1
    return tuple(order[:rows]) == tuple(out_stored[:rows]) and out_stored[-1] in order[rows + 1:]


def _loop_order(assign: ast.Assignment, formats: dict[str, Format], *,
                workspace: bool) -> tuple[str, ...]:
    """default_loop_order's search; ``workspace``: a sparse output's last index
    need not follow its parents (its rows are built in a workspace)."""
    plan = IndexPlan.of(assign, formats)
    indices: list[str] = list(plan.loop_vars)
    check_stored_by_loops(assign, formats, plan)
    if plan.splits:
        # blocked operands: their levels' variables first, so that the dense
        # inner dimensions of the other operands end up innermost
        by_sparse = {v for a in assign.accesses() if not formats[a.tensor].is_dense
                     for v in plan.level_vars(formats[a.tensor], a.indices)}
        indices = [v for v in indices if v in by_sparse] + \
                  [v for v in indices if v not in by_sparse]
    before: dict[str, set[str]] = {ix: set() for ix in indices}
    sparse_driven: set[str] = set()
    for acc in (assign.lhs,) + assign.accesses():
        fmt = formats[acc.tensor]
        stored = plan.level_vars(fmt, acc.indices)
        for lvl, level in enumerate(fmt.levels):
            if not level.locatable:
                sparse_driven.add(stored[lvl])
                before[stored[lvl]].update(stored[:lvl])
    if not formats[assign.lhs.tensor].is_dense:
        # sparse outputs are appended in storage order, before any reduction
        out_fmt = formats[assign.lhs.tensor]
        out_stored = plan.level_vars(out_fmt, assign.lhs.indices)
        split = [ix for ix in out_stored if ix not in before]
        if split:
            raise UnsupportedError(
                f"'{assign.source}': the sparse output {assign.lhs.tensor} is appended in "
                f"storage order, but a blocked operand splits its index "
                f"{', '.join(map(repr, split))} into block and in-block loops; use a dense "
                f"output, or an operand format without blocks")
        first = out_stored[:-1] if workspace else out_stored
        # a batch of an operand's pattern is written at the operand's positions,
        # located further by the batch: its batch indices go anywhere before
        # the reductions (a heads loop around the rows)
        batch = () if workspace else pattern_batch(assign, formats)
        chain = [ix for ix in first if ix not in batch]
        for k, ix in enumerate(chain):
            before[ix].update(chain[:k])
        for ix in indices:
            if ix not in first:
                before[ix].update(first)
    order: list[str] = []
    remaining = list(indices)
    while remaining:
        ready = [ix for ix in remaining if before[ix] <= set(order)]
        if not ready:
            raise ModeOrderConflict(
                f"no loop order visits every sparse level after its parents in "
                f"'{assign.source}': the operands' mode orders conflict; store one of "
                f"them in another format (e.g. csc instead of csr)")
        # the pieces of a blocked output index first (a block row's rows then
        # each accumulate over all its blocks), then sparse levels
        pick = next((ix for ix in ready if ix != plan.origin(ix)
                     and plan.origin(ix) in assign.lhs.indices), None)
        if pick is None:
            pick = next((ix for ix in ready if ix in sparse_driven), ready[0])
        order.append(pick)
        remaining.remove(pick)
    return tuple(order)


def check_stored_by_loops(assign: ast.Assignment, formats: dict[str, Format],
                          plan: IndexPlan) -> None:
    """Raise UnsupportedError when a level that cannot locate is stored by an
    index that no loop binds (an index split into blocks by another operand)."""
    for acc in (assign.lhs,) + assign.accesses():
        fmt = formats[acc.tensor]
        for lvl, level in enumerate(fmt.levels):
            var = plan.level_var(fmt, acc.indices, lvl)
            if not level.locatable and var not in plan.loop_vars:
                raise UnsupportedError(
                    f"'{assign.source}': {acc.tensor} ({fmt}) iterates index '{var}', which "
                    f"another operand stores in blocks of {plan.block(var)}; store "
                    f"{acc.tensor} in a format that locates '{var}' (dense) or with the same "
                    f"blocks")


def check_loop_order(assign: ast.Assignment, formats: dict[str, Format],
                     order: tuple[str, ...]) -> None:
    """Raise ScheduleError (knob ``order``) unless ``order`` lists every loop
    variable once and visits sparse levels after their parents."""
    plan = IndexPlan.of(assign, formats)
    want = set(plan.loop_vars)
    if set(order) != want or len(order) != len(want):
        raise ScheduleError.of("order", f"loop order {order} must list each loop variable "
                                        f"of '{assign.source}' exactly once: {sorted(want)}")
    check_stored_by_loops(assign, formats, plan)
    rank = {ix: k for k, ix in enumerate(order)}
    for ix, k in list(rank.items()):          # an index another operand splits into blocks
        base = split_base(ix)                 # (a dia level's i beside bsr's i_blk, i_in)
        if base is not None and base not in want:      # is bound once both parts are
            rank[base] = max(rank.get(base, k), k)
    for acc in assign.accesses():
        fmt = formats[acc.tensor]
        stored = plan.level_vars(fmt, acc.indices)
        for lvl, level in enumerate(fmt.levels):
            if not level.locatable and any(rank[p] > rank[stored[lvl]] for p in stored[:lvl]):
                raise ScheduleError.of(
                    "order", f"loop order {order} visits '{stored[lvl]}' before its parent "
                             f"levels in {acc.tensor} (format {fmt}); such a level cannot be "
                             f"located{_order_that_works(assign, formats)}")


def expand_blocked_order(assign: ast.Assignment, formats: dict[str, Format],
                         order: tuple[str, ...]) -> tuple[str, ...]:
    """``order`` with each index that a blocked format splits (``i`` of a bsr
    operand loops as ``i_blk`` and ``i_in``) named by its own name replaced by
    its parts, so that a user's order over the expression's indices means what
    it says.  Two expansions are tried, the first legal one kept: the blocks'
    loops in ``order``'s order and then the loops inside the blocks in that
    order (bsr's storage: ``(i, j)`` -> ``(i_blk, j_blk, i_in, j_in)``), then
    each index's parts side by side (``(i_blk, i_in, j_blk, j_in)``).  Where
    neither is legal the first is returned (``check_loop_order`` says why).

    Requires: nothing of ``order``.  Ensures: an order naming no split index
    by its own name is returned unchanged."""
    plan = IndexPlan.of(assign, formats)
    loop_vars = set(plan.loop_vars)
    parts: dict[str, list[str]] = {}
    for suffix in SPLIT_SUFFIXES:                 # ix_blk before ix_in
        for v in plan.loop_vars:
            if v.endswith(suffix) and split_base(v) is not None:
                parts.setdefault(split_base(v), []).append(v)
    if not any(ix in parts and ix not in loop_vars for ix in order):
        return order

    def whole(ix):
        return parts[ix] if ix in parts and ix not in loop_vars else [ix]
    outer = tuple(whole(ix)[0] for ix in order) + \
        tuple(v for ix in order for v in whole(ix)[1:])
    side_by_side = tuple(v for ix in order for v in whole(ix))
    for candidate in (outer, side_by_side):
        try:
            check_loop_order(assign, formats, candidate)
        except UnsupportedError:
            continue
        return candidate
    return outer


def _order_that_works(assign: ast.Assignment, formats: dict[str, Format]) -> str:
    """"; the order (...) works" with spc's default order, for messages refusing
    an explicit one ("" when there is none)."""
    try:
        return f"; the order {default_loop_order(assign, formats)} works (or leave order to spc)"
    except UnsupportedError:
        return ""


# ---------------------------------------------------------------------------
# Lowering state
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AccessState:
    """How far one access has been resolved: its next level and that level's parent."""
    level: int
    parent: Parent


@dataclass(frozen=True)
class Iterator:
    """A stored level iterated at the current loop."""
    access: int                 # index into Lowerer.accesses
    level: int
    p: Var                      # current position
    hi: Var                     # end of the position range
    seg_end: Var | None         # non-unique levels: end of the current segment


class Lowerer:
    """Builds one kernel's body; see :func:`lower`.  Internal."""

    def __init__(self, assign: ast.Assignment, formats: dict[str, Format],
                 order: tuple[str, ...], value_dtype: DType, index_dtype: DType,
                 output_kind: str, pattern_access: int | None, phase: str,
                 accumulate: bool = False, sum_dtype: DType | None = None,
                 combine: str = "+", workspace: bool = False):
        self.assign = assign
        self.combine = combine               # how reduction steps combine: "+", "max", "min"
        self.formats = formats
        self.order = order
        self.st = value_dtype                # how values are stored
        self.vt = sum_dtype or value_dtype.widened   # what arithmetic on them runs in
        self.it = index_dtype
        self.accesses = assign.accesses()
        # accesses of one tensor with the same indices are one access: one iterator
        # (stored(S[i,j]) * exp(S[i,j]) walks S once, not in a merge with itself)
        first: dict[tuple, int] = {}
        self.same = tuple(first.setdefault((a.tensor, a.indices), k)
                          for k, a in enumerate(self.accesses))
        self.out = assign.lhs
        self.out_fmt = formats[self.out.tensor]
        self.output_kind = output_kind
        self.pattern_access = pattern_access
        self.phase = phase                   # "compute" or "assemble"
        self.accumulate = accumulate         # add to the output instead of storing
        self.names = _count()
        self.used_buffers: dict[str, tuple[Buffer, ParamRole, str]] = {}
        self.used_scalars: dict[str, tuple[Var, str]] = {}
        self.plan = IndexPlan.of(assign, formats)
        self.out_stored = self.plan.level_vars(self.out_fmt, self.out.indices)
        reductions = [ix for ix in order if self.plan.origin(ix) not in self.out.indices]
        # depth at which only reduction loops remain; a scalar accumulator lives there
        self.acc_depth = len(order)
        for d in range(len(order), -1, -1):
            if all(ix in reductions for ix in order[d:]):
                self.acc_depth = d
        self.acc = Var("acc", self.vt)
        self.seen = Var("seen", DType.BOOL)  # a max/min reduction met an entry
        # C[i,j] = f(sum(k, e), ...): the reduction ``e`` runs in the loops below
        # acc_depth, the epilogue f once per output entry with the sum in place
        nested = ast.nested_reduce(assign.rhs)
        self.body = nested.body if nested is not None else assign.rhs
        self.epilogue = assign.rhs if nested is not None else None
        self.reduced: Expr | None = None     # the reduction's value, for the epilogue
        self.inner_rhs = self.body           # what the innermost loop adds to acc
        self.ws = self._workspace() if workspace else None
        self.row_owner = True     # starts and gathers the output's rows (lower_terms: no)

    def _workspace(self) -> RowWorkspace:
        """The workspace over the output's last stored index (see ir/workspace.py)."""
        io = self.io(self.out.tensor, self.out.indices, self.out_fmt.nlevels - 1)
        vals = io.buffer("ws_vals", self.vt) if self.phase == "compute" else None
        return RowWorkspace(io.buffer("ws_mark", DType.I8), io.buffer("ws_crd"), vals, io.dim,
                            self.fresh(f"{self.out.tensor}_ws_n"), self.fresh)

    # -- names and buffers ---------------------------------------------------
    def fresh(self, stem: str, dtype: DType = I64) -> Var:
        return Var(f"{stem}{next(self.names)}", dtype)

    def use(self, buf: Buffer, role: ParamRole, tensor: str) -> Buffer:
        """``buf``, recorded as a parameter holding storage of ``tensor``."""
        old = self.used_buffers.get(buf.name)
        if old is None or old[1] is ParamRole.INPUT:
            self.used_buffers[buf.name] = (buf, role, tensor)
        return buf

    def io(self, tensor: str, acc_indices: tuple[str, ...], level: int) -> LevelIO:
        var = self.plan.level_var(self.formats[tensor], acc_indices, level)
        return level_io(tensor, level, self.plan.extent(var), self.it)

    def level_var(self, acc: ast.Access, level: int) -> str:
        return self.plan.level_var(self.formats[acc.tensor], acc.indices, level)

    # -- level resolution ------------------------------------------------------
    def resolve_located(self, states: dict[int, AccessState], bound: set[str]):
        """Locate every access's next levels whose index is bound and that can locate.

        Ensures: returns new states and the Lets computing the new positions.
        """
        stmts: list[Stmt] = []
        states = dict(states)
        for a, st in states.items():
            acc = self.accesses[a] if a >= 0 else self.out
            fmt = self.formats[acc.tensor]
            while st.level < fmt.nlevels:
                level = fmt.levels[st.level]
                ix = self.level_var(acc, st.level)
                if ix not in bound or not level.locatable or st.parent.is_segment:
                    break
                io = self.io(acc.tensor, acc.indices, st.level)
                self._use_level(io, level)
                pos = self.fresh(f"{acc.tensor}{st.level}_p")
                stmts.append(Let(pos, level.locate(io, st.parent.pos, Var(ix, I64))))
                st = AccessState(st.level + 1, Parent(pos=pos))
            states[a] = st
        return states, stmts

    def _use_level(self, io: LevelIO, level) -> None:
        for buf in level.buffers(io):
            self.use(buf, ParamRole.INPUT, io.tensor)
        for name in level.scalar_names:
            var = io.scalar(name)
            self.used_scalars[var.name] = (var, io.tensor)

    # -- merge lattices ----------------------------------------------------------
    def lattice(self, e: ast.Expr, iterated: dict[int, int], zero: frozenset[int]):
        """Lattice points (frozensets of iterated access ids) of ``e`` at this loop.

        ``iterated`` maps access ids iterated here to their level.  Returns None
        when ``e`` is structurally zero.
        """
        if isinstance(e, ast.Access):
            a = self._access_id(e)
            if a in zero:
                return None
            return [frozenset([a])] if a in iterated else [frozenset()]
        if isinstance(e, ast.Const):
            return None if e.value == 0 else [frozenset()]
        if isinstance(e, ast.Neg):
            return self.lattice(e.operand, iterated, zero)
        if isinstance(e, ast.Reduce):
            return self.lattice(e.body, iterated, zero)
        if isinstance(e, ast.Call):
            args = [self.lattice(a, iterated, zero) for a in e.args]
            if e.fn in ZERO_PRESERVING:        # f(0, ..., 0) = 0: iterate as a sum
                pts = _unions(args)
                return sorted(pts, key=lambda p: (-len(p), sorted(p))) if pts else None
            return _everywhere(args)          # f(0) != 0: a value at every coordinate
        lhs = self.lattice(e.lhs, iterated, zero)
        rhs = self.lattice(e.rhs, iterated, zero)
        if e.op == "/":
            if isinstance(e.rhs, ast.Const) and e.rhs.value != 0:
                return lhs                     # a scaling: zero where the numerator is
            return _everywhere([lhs, rhs])     # x / 0 is inf or nan: every coordinate
        if e.op == "*":
            if lhs is None or rhs is None:
                return None
            pts = {a | b for a in lhs for b in rhs}
        else:
            if lhs is None:
                return rhs
            if rhs is None:
                return lhs
            pts = {a | b for a in lhs for b in rhs} | set(lhs) | set(rhs)
        return sorted(pts, key=lambda p: (-len(p), sorted(p)))

    def _access_id(self, e: ast.Access) -> int:
        for k, acc in enumerate(self.accesses):
            if acc is e:
                return self.same[k]
        raise KeyError(e)

    # -- the value of the right-hand side ------------------------------------------
    def value(self, e: ast.Expr, states: dict[int, AccessState], zero: frozenset[int]) -> Expr:
        if isinstance(e, ast.Access):
            a = self._access_id(e)
            if a in zero:
                return Const(0.0, self.vt)
            buf = self.use(vals_buffer(e.tensor, self.st), ParamRole.INPUT, e.tensor)
            load = Load(buf, states[a].parent.pos)
            return cast_to(load, self.vt)
        if isinstance(e, ast.Const):
            return Const(float(e.value), self.vt)
        if isinstance(e, ast.Neg):
            return Neg(self.value(e.operand, states, zero))
        if isinstance(e, ast.Reduce):                        # inside an epilogue
            if self.reduced is None:
                raise UnsupportedError(f"'{self.assign.source}': a reduction inside an "
                                       f"expression needs its loops innermost")
            return self.reduced
        if isinstance(e, ast.Call) and e.fn == "stored":     # 1 where the entry is stored
            present = self._access_id(e.args[0]) not in zero
            return Const(1.0 if present else 0.0, self.vt)
        if isinstance(e, ast.Call):
            args = [self.value(a, states, zero) for a in e.args]
            if e.fn == "relu":
                return BinOp("max", args[0], Const(0.0, self.vt))
            if e.fn in ("max", "min"):
                return BinOp(e.fn, args[0], args[1])
            return Call(e.fn, args[0])
        return BinOp(e.op, self.value(e.lhs, states, zero), self.value(e.rhs, states, zero))

    # -- the loop nest ---------------------------------------------------------------
    def lower_body(self) -> Stmt:
        states = {a: AccessState(0, ROOT) for a in range(len(self.accesses))}
        states[-1] = AccessState(0, ROOT)        # the output
        states, lets = self.resolve_located(states, set())
        allocs = self.ws.allocs() if self.ws is not None else []
        return block(*allocs, *lets, self.loops(0, states, frozenset(), set()))

    def split_invariant(self, states, zero) -> tuple[ast.Expr | None, ast.Expr]:
        """(the product of the right-hand side's factors that the reduction loops
        below leave unchanged, or None; the product of the others), when the
        right-hand side is a product with factors of both kinds.

        Multiplying those factors once, after the reduction (``f * sum(g)``
        rather than ``sum(f * g)``), is how scipy evaluates SDDMM, so an
        infinite ``f`` gives an infinite result instead of ``inf - inf``; it also
        saves a multiplication per reduction step.
        """
        factors = _multiplicands(self.body)
        if factors is None:
            return None, self.body
        ids = {id(a): self.same[k] for k, a in enumerate(self.accesses)}

        def invariant(f) -> bool:
            for a in _accesses_in(f):
                k = ids[id(a)]
                if k in zero or states[k].level < self.formats[a.tensor].nlevels:
                    return False
            return True

        outside = [f for f in factors if invariant(f)]
        inside = [f for f in factors if not invariant(f)]
        if not outside or not inside:
            return None, self.body
        return _product(outside), _product(inside)

    def uses_acc(self) -> bool:
        """Accumulate in a scalar at ``acc_depth`` (no reduction loop encloses an
        output loop, so each output entry is produced once)."""
        return all(self.plan.origin(ix) in self.out.indices for ix in self.order[:self.acc_depth])

    def loops(self, depth: int, states, zero: frozenset[int], bound: set[str]) -> Stmt:
        pre: list[Stmt] = []
        post: list[Stmt] = []
        if depth == self.append_depth() and self.row_owner:
            pre.extend(self.begin_append(states))
            if self.ws is not None:
                pre.append(self.ws.begin_row())
                post.append(self.end_row(states))
        if depth == self.acc_depth and self.uses_acc():
            if self.phase == "assemble":
                return block(*pre, self.emit_output(states, None, accumulate=False))
            pre.append(Let(self.acc, Const(IDENTITY[self.combine], self.vt)))
            result = self.acc
            if self.combine != "+":        # over no entries, max and min give 0
                pre.append(Let(self.seen, Const(False, DType.BOOL)))
                result = Select(self.seen, self.acc, Const(0.0, self.vt))
            if depth < len(self.order) and self.combine == "+":
                hoisted, self.inner_rhs = self.split_invariant(states, zero)
                if hoisted is not None:
                    result = BinOp("*", simplify_expr(self.value(hoisted, states, zero)),
                                   self.acc)
            if self.epilogue is not None:      # f(reduction, ...) once per output entry
                self.reduced = result
                result = simplify_expr(self.value(self.epilogue, states, zero))
            post.append(self.emit_output(states, result, accumulate=self.accumulate))
        if depth == len(self.order) and self.ws is not None and self.phase == "assemble":
            inner = self.emit_output(states, None, accumulate=True)
        elif depth == len(self.order):
            val = simplify_expr(self.value(self.inner_rhs, states, zero))
            if self.uses_acc() and self.combine != "+":
                inner = block(Assign(self.acc, BinOp(self.combine, self.acc, val)),
                              Assign(self.seen, Const(True, DType.BOOL)))
            elif self.uses_acc():
                inner = Assign(self.acc, BinOp(self.combine, self.acc, val))
            elif self.combine != "+" or self.epilogue is not None:
                what = f"a {self.combine} reduction" if self.combine != "+" else \
                    "a function of a reduction (an epilogue)"
                outputs_first = tuple(ix for ix in self.order
                                      if self.plan.origin(ix) in self.out.indices)
                outputs_first += tuple(ix for ix in self.order if ix not in outputs_first)
                raise UnsupportedError(
                    f"'{self.assign.source}': {what} runs inside the loops over the "
                    f"output's indices; loop order {self.order} visits a reduced index "
                    f"first (the order {outputs_first} puts the output's indices first; "
                    f"where the formats forbid it, store the operands so that they come "
                    f"first)")
            else:
                inner = self.emit_output(states, val, accumulate=True)
        else:
            inner = self.loop(depth, self.order[depth], states, zero, bound)
        return block(*pre, inner, *post)

    def descend(self, depth, states, zero, bound, first: list[Stmt],
                guard: Expr | None = None) -> Stmt:
        """After ``first`` (binding the loop's variable): skip unless ``guard``
        holds, compose split indices whose pieces are now bound (skipping block
        padding past the index's size), locate what the bindings allow, then
        lower the next loops."""
        compose: list[Stmt] = []
        for ix in self.plan.composed(bound):
            b = self.plan.block(ix)
            compose.append(Let(Var(ix, I64), add(mul(Var(f"{ix}_blk", I64), i64(b)),
                                                 Var(f"{ix}_in", I64))))
            bound = bound | {ix}
            in_range = lt(Var(ix, I64), size_var(ix))
            guard = in_range if guard is None else and_(guard, in_range)
        states, lets = self.resolve_located(states, bound)
        rest = block(*lets, self.loops(depth + 1, states, zero, bound))
        if guard is None:
            return block(*first, *compose, rest)
        return block(*first, *compose, If(guard, rest))

    def loop(self, depth, ix, states, zero, bound) -> Stmt:
        """The loop binding index ``ix``: a dense loop, a position loop or a merge."""
        var = Var(ix, I64)
        iterated: dict[int, int] = {}
        for a, st in states.items():
            if a < 0 or a in zero:
                continue
            acc = self.accesses[a]
            fmt = self.formats[acc.tensor]
            if st.level < fmt.nlevels and self.level_var(acc, st.level) == ix \
                    and not fmt.levels[st.level].locatable:
                iterated[a] = st.level
        rhs = self.body if self.epilogue is not None and depth >= self.acc_depth \
            else self.assign.rhs             # below the output's loops: the reduction only
        points = self.lattice(rhs, iterated, zero)
        if points is None:
            return Block(())
        inner_bound = bound | {ix}
        used = sorted({a for p in points for a in p})
        extent = self.plan.extent(ix)
        if not used:
            return For(var, i64(0), extent,
                       self.descend(depth, states, zero, inner_bound, []))
        its: list[Iterator] = []
        bounds: dict[int, tuple[Expr, Expr]] = {}
        levels = {}
        for a in used:
            acc = self.accesses[a]
            level = self.formats[acc.tensor].levels[iterated[a]]
            io = self.io(acc.tensor, acc.indices, iterated[a])
            self._use_level(io, level)
            levels[a] = (level, io)
            bounds[a] = level.iter_bounds(io, states[a].parent)
            tag = f"{acc.tensor}{iterated[a]}"
            its.append(Iterator(a, iterated[a], self.fresh(f"{tag}_p"), self.fresh(f"{tag}_end"),
                                None if level.unique else self.fresh(f"{tag}_seg")))

        def child_states(point) -> dict:
            st2 = dict(states)
            for it in its:
                if it.access in point:
                    parent = Parent(pos=it.p) if it.seg_end is None else \
                        Parent(seg_lo=it.p, seg_hi=it.seg_end)
                    st2[it.access] = AccessState(it.level + 1, parent)
            return st2

        if len(points) == 1 and len(its) == 1 and its[0].seg_end is None:
            # one unique iterator and nothing else: a plain position loop
            it = its[0]
            level, io = levels[it.access]
            lo, hi = bounds[it.access]
            parent = states[it.access].parent
            body = self.descend(depth, child_states(points[0]), zero, inner_bound,
                                [Let(var, level.coord(io, it.p, parent))],
                                guard=level.valid(io, it.p, var))
            return For(it.p, lo, hi, body)
        for it in its:
            level, _ = levels[it.access]
            if not level.ordered:
                acc = self.accesses[it.access]
                raise UnsupportedError(
                    f"'{self.assign.source}': {acc.tensor} ({self.formats[acc.tensor]}) stores "
                    f"'{ix}' out of order, so it cannot be merged with the other operands that "
                    f"iterate '{ix}'; convert it to an ordered format (e.g. csr) for this "
                    f"expression")
        setup: list[Stmt] = []
        for it in its:
            lo, hi = bounds[it.access]
            setup += [Let(it.p, lo), Let(it.hi, hi)]
        universe = any(len(p) == 0 for p in points)
        step: list[Stmt] = []
        crd: dict[int, Var] = {}
        padded = False
        for it in its:
            level, io = levels[it.access]
            parent = states[it.access].parent
            valid = level.valid(io, it.p, level.coord(io, it.p, parent))
            if valid is not None:          # step over padding first
                padded = True
                step.append(While(and_(lt(it.p, it.hi), eq(valid, Const(False, DType.BOOL))),
                                  Assign(it.p, add(it.p, i64(1)))))
        for it in its:
            level, io = levels[it.access]
            parent = states[it.access].parent
            c = self.fresh(f"{self.accesses[it.access].tensor}{it.level}_c")
            crd[it.access] = c
            step += [Let(c, extent), If(lt(it.p, it.hi), Assign(c, level.coord(io, it.p, parent)))]
        if not universe:
            step.append(Let(var, extent))
            step += [Assign(var, BinOp("min", var, crd[it.access])) for it in its]
        present = {it.access: eq(crd[it.access], var) for it in its}
        for it in its:
            if it.seg_end is not None:
                level, io = levels[it.access]
                step.append(Let(it.seg_end, add(it.p, i64(1))))
                step.append(If(present[it.access], While(
                    and_(lt(it.seg_end, it.hi),
                         eq(level.coord(io, it.seg_end, states[it.access].parent), var)),
                    Assign(it.seg_end, add(it.seg_end, i64(1))))))
        cases: Stmt | None = None
        for point in reversed(points):      # smallest point last in the if-chain
            z2 = zero | frozenset(it.access for it in its if it.access not in point)
            body = self.descend(depth, child_states(point), z2, inner_bound, [])
            cond = None
            for a in sorted(point):
                cond = present[a] if cond is None else and_(cond, present[a])
            cases = body if cond is None else If(cond, body, cases)
        advance = [If(present[it.access],
                      Assign(it.p, it.seg_end if it.seg_end is not None else add(it.p, i64(1))))
                   for it in its]
        if padded and not universe and cases is not None:
            # every iterator at its end (after padding) gives var == extent
            cases = If(lt(var, extent), cases)
        inner = block(*step, cases, *advance)
        if universe:
            return block(*setup, For(var, i64(0), extent, inner))
        minimal = [p for p in points if not any(q < p for q in points)]
        cond = None
        for point in minimal:
            c = None
            for a in sorted(point):
                it = next(t for t in its if t.access == a)
                c = lt(it.p, it.hi) if c is None else and_(c, lt(it.p, it.hi))
            cond = c if cond is None else or_(cond, c)
        return block(*setup, While(cond, inner))

    # -- outputs -----------------------------------------------------------------
    def append_depth(self) -> int:
        """Depth at which a sparse output's compressed level starts being appended."""
        if self.output_kind != OutputKind.ASSEMBLED:
            return -1
        return len(self.out_stored) - 1

    def begin_append(self, states) -> list[Stmt]:
        if self.phase == "assemble":
            return []
        L = self.out_fmt.nlevels - 1
        io = self.io(self.out.tensor, self.out.indices, L)
        pos = self.use(io.buffer("pos"), ParamRole.INPUT, self.out.tensor)
        parent = states[-1].parent.pos
        return [Let(Var("out_p", I64), Load(pos, parent))]

    def emit_output(self, states, value: Expr, accumulate: bool) -> Stmt:
        """Write one output value at the output position of the bound indices."""
        if self.output_kind == OutputKind.PATTERN:
            pos = states[self.pattern_access].parent.pos
            src = self.accesses[self.pattern_access]
            for lvl in range(self.formats[src.tensor].nlevels, self.out_fmt.nlevels):
                # a batch of the pattern: locate the output's further (full) levels
                io = self.io(self.out.tensor, self.out.indices, lvl)
                level = self.out_fmt.levels[lvl]
                self._use_level(io, level)
                pos = level.locate(io, pos, Var(self.level_var(self.out, lvl), I64))
            buf = self.use(vals_buffer(self.out.tensor, self.st), ParamRole.OUTPUT,
                           self.out.tensor)
            return Store(buf, pos, value, accumulate)
        if self.output_kind == OutputKind.DENSE:
            buf = self.use(vals_buffer(self.out.tensor, self.st), ParamRole.OUTPUT,
                           self.out.tensor)
            return Store(buf, states[-1].parent.pos, value, accumulate)
        if self.ws is not None:
            return self.ws.scatter(Var(self.out_stored[-1], I64), value)
        L = self.out_fmt.nlevels - 1
        io = self.io(self.out.tensor, self.out.indices, L)
        parent = states[-1].parent.pos
        if self.phase == "assemble":
            pos = self.use(io.buffer("pos"), ParamRole.OUTPUT, self.out.tensor)
            return Store(pos, add(parent, i64(1)), Const(1, I64), accumulate=True)
        crd = self.use(io.buffer("crd"), ParamRole.OUTPUT, self.out.tensor)
        vals = self.use(vals_buffer(self.out.tensor, self.st), ParamRole.OUTPUT,
                           self.out.tensor)
        out_p = Var("out_p", I64)
        return block(Store(crd, out_p, Var(self.out_stored[-1], I64)),
                     Store(vals, out_p, value),
                     Assign(out_p, add(out_p, i64(1))))

    def end_row(self, states) -> Stmt:
        """After a row was scattered into the workspace: record its size (assemble)
        or write its entries in coordinate order (compute), resetting the
        workspace.  A statement with a reduction (SpGEMM) writes only nonzero sums,
        as scipy's product drops entries that cancel to 0; one without (an
        element-wise result of a hyb operand, say), or one whose terms are each
        sampled by one sparse operand over all the output's indices (SDDMM of a
        hyb mask: ``sampled``), writes every coordinate it touched, its
        structural pattern, as every other assembled output does."""
        io = self.io(self.out.tensor, self.out.indices, self.out_fmt.nlevels - 1)
        parent = states[-1].parent.pos
        if self.phase == "assemble":
            pos = self.use(io.buffer("pos"), ParamRole.OUTPUT, self.out.tensor)
            return self.ws.end_counted_row(lambda n: Store(pos, add(parent, i64(1)), n))
        crd = self.use(io.buffer("crd"), ParamRole.OUTPUT, self.out.tensor)
        vals = self.use(vals_buffer(self.out.tensor, self.st), ParamRole.OUTPUT, self.out.tensor)
        kept = self.use(io.buffer("nnz"), ParamRole.OUTPUT, self.out.tensor)
        pos = self.use(io.buffer("pos"), ParamRole.INPUT, self.out.tensor)
        out_p = Var("out_p", I64)

        def emit(j: Var, v: Var) -> Stmt:
            write = block(Store(crd, out_p, j), Store(vals, out_p, v),
                          Assign(out_p, add(out_p, i64(1))))
            if not self.assign.reduction_indices() or sampled(self.assign, self.formats):
                return write
            return If(BinOp("!=", v, Const(0.0, v.dtype)), write)
        return block(self.ws.gather_row(emit),
                     Store(kept, parent, BinOp("-", out_p, Load(pos, parent))))


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def classify_output(assign: ast.Assignment, formats: dict[str, Format]):
    """(output kind, id of the access whose pattern the output reuses or None)."""
    out_fmt = formats[assign.lhs.tensor]
    if out_fmt.is_dense:
        return OutputKind.DENSE, None
    # Reuse an operand's pattern when the right side is that operand times
    # factors that are dense over the output's indices.
    factors = _product_factors(assign.rhs)
    accesses = assign.accesses()
    if factors is not None:
        f = _sampling_factor(factors, assign.lhs.indices, formats)
        if f is not None and stores_pattern_of(assign.lhs, out_fmt, f, formats[f.tensor]):
            return OutputKind.PATTERN, next(k for k, a in enumerate(accesses) if a is f)
    levels = out_fmt.levels
    if out_fmt.is_blocked or not all(lv.locatable for lv in levels[:-1]) \
            or levels[-1].locatable or not levels[-1].unique or levels[-1].name != "compressed":
        raise UnsupportedError(
            f"output format {out_fmt} of '{assign.lhs.tensor}' cannot be assembled: spc "
            f"assembles sparse outputs stored as dense levels followed by one compressed "
            f"level (csr, csc, sparse vectors), or with the pattern of an operand")
    return OutputKind.ASSEMBLED, None


def stores_pattern_of(out: ast.Access, out_fmt: Format, src: ast.Access,
                      src_fmt: Format) -> bool:
    """Whether output ``out`` (format ``out_fmt``) can store its entries at the
    positions of operand ``src`` (``src_fmt``): its first levels are ``src``'s
    levels, storing the same indices in the same blocks, and any further level
    is a full, locatable level of an index ``src`` lacks (a batch of ``src``'s pattern,
    as ``formats.batched`` stores attention's scores over heads: ``S[h,i,j]``
    of ``A[i,j]``).  The output's positions are then ``src``'s, each located
    further in those dense levels (``Lowerer.emit_output``)."""
    n = src_fmt.nlevels
    if out_fmt.nlevels < n or out_fmt.levels[:n] != src_fmt.levels:
        return False
    for lvl in range(n):
        o, s = out.indices[out_fmt.order[lvl]], src.indices[src_fmt.order[lvl]]
        if o != s or out_fmt.level_part(lvl) != src_fmt.level_part(lvl) \
                or out_fmt.block_of(out_fmt.order[lvl]) != src_fmt.block_of(src_fmt.order[lvl]):
            return False
    return all(out_fmt.levels[lvl].locatable and out_fmt.levels[lvl].full
               and out_fmt.level_part(lvl) == "all"
               and out.indices[out_fmt.order[lvl]] not in src.indices
               for lvl in range(n, out_fmt.nlevels))


def pattern_batch(assign: ast.Assignment, formats: dict[str, Format]) -> tuple[str, ...]:
    """The loop variables of the levels a PATTERN output has beyond its pattern
    operand's (its batch: ``S[h,i,j]`` of ``A[i,j]`` gives ``("h",)``), or ()
    for any other output."""
    try:
        kind, pattern = classify_output(assign, formats)
    except UnsupportedError:
        return ()
    if kind != OutputKind.PATTERN:
        return ()
    plan = IndexPlan.of(assign, formats)
    src_levels = formats[assign.accesses()[pattern].tensor].nlevels
    return tuple(plan.level_vars(formats[assign.lhs.tensor], assign.lhs.indices)[src_levels:])


# a reduction's IR operator, by its name in index notation, and the value it starts from
COMBINE = {"sum": "+", "max": "max", "min": "min"}
IDENTITY = {"+": 0.0, "max": float("-inf"), "min": float("inf")}

# element-wise functions whose value is 0 where every argument is 0: they iterate
# only where an argument has an entry (the others: at every coordinate)
ZERO_PRESERVING = frozenset({"sqrt", "abs", "relu", "max", "min", "stored"})


def _unions(args) -> set[frozenset]:
    """The lattice points of a sum of terms whose lattices are ``args`` (None:
    structurally zero): every union of one point per term, each term optional."""
    pts: set[frozenset] = set()
    for a in args:
        if a is None:
            continue
        pts = pts | set(a) | {p | q for p in pts for q in a}
    return pts


def _everywhere(args) -> list[frozenset]:
    """The lattice points of an expression of ``args`` that is nonzero where all
    of them are zero: their unions, and the empty point (no operand present)."""
    pts = _unions(args) | {frozenset()}
    return sorted(pts, key=lambda p: (-len(p), sorted(p)))


def sampled(assign: ast.Assignment, formats: dict[str, Format]) -> bool:
    """True when every additive term of ``assign``'s right side is a product with
    exactly one sparse factor reading an output index, an access over all of
    them, and no function or reduction of a sparse operand: the result's
    structural pattern is those factors' (SDDMM's is its mask's), whatever the
    sums over the other indices come to."""
    out = set(assign.lhs.indices)
    for term in _monomials(assign.rhs):
        factors = _product_factors(term)
        f = None if factors is None else _sampling_factor(factors, out, formats)
        if f is None or not out <= set(f.indices):
            return False
    return True


def _sampling_factor(factors: list, out_indices, formats: dict[str, Format]):
    """The one sparse access among a product's ``factors`` that reads an output
    index, when there is exactly one and no function or reduction reads a sparse
    operand (one of dense operands only is dense over the output); else None."""
    out = set(out_indices)
    sparse = [f for f in factors if isinstance(f, ast.Access)
              and not formats[f.tensor].is_dense and set(f.indices) & out]
    opaque = any(not formats[a.tensor].is_dense for f in factors
                 if not isinstance(f, (ast.Access, ast.Const)) for a in _accesses_in(f))
    return sparse[0] if len(sparse) == 1 and not opaque else None


def _product_factors(e: ast.Expr):
    if isinstance(e, ast.BinOp) and e.op == "*":
        lhs, rhs = _product_factors(e.lhs), _product_factors(e.rhs)
        return None if lhs is None or rhs is None else lhs + rhs
    if isinstance(e, (ast.Access, ast.Const, ast.Call, ast.Reduce)):
        return [e]
    if isinstance(e, ast.Neg):
        return _product_factors(e.operand)
    return None


def split_terms(assign: ast.Assignment,
                separate: frozenset[str] = frozenset()) -> list[ast.Assignment]:
    """Group the right side's additive terms by the reduction indices they use.

    spc sums each additive term over the indices it uses that are not on the
    left (so ``y[i] = A[i,j]*x[j] + b[i]`` adds b once, not once per j).
    Products are distributed over sums to find the terms.  Ensures: one
    assignment per group, in first-appearance order; a single group keeps the
    original right-hand side unchanged.  Terms that read different tensors of
    ``separate`` (the parts of a sum-format tensor) go to different groups, so
    each part gets its own loops instead of a merge with the others.
    """
    out_ix = set(assign.lhs.indices)
    groups: dict[frozenset, list[ast.Expr]] = {}
    for term in _monomials(assign.rhs):
        factors = _accesses_in(term)
        red = frozenset(ix for f in factors for ix in f.indices if ix not in out_ix)
        parts = frozenset(f.tensor for f in factors if f.tensor in separate)
        groups.setdefault((red, parts), []).append(term)
    if len(groups) <= 1:
        return [assign]
    result = []
    for terms in groups.values():
        expr = terms[0]
        for t in terms[1:]:
            expr = ast.BinOp("+", expr, t, assign.rhs.span)
        result.append(ast.Assignment(assign.lhs, expr, assign.source))
    return result


def _monomials(e: ast.Expr) -> list[ast.Expr]:
    """``e`` as a list of products whose sum equals ``e`` (signs kept as Neg)."""
    if isinstance(e, ast.BinOp) and e.op in "+-":
        rhs = _monomials(e.rhs)
        if e.op == "-":
            rhs = [ast.Neg(t, t.span) for t in rhs]
        return _monomials(e.lhs) + rhs
    if isinstance(e, ast.Neg):
        return [ast.Neg(t, t.span) for t in _monomials(e.operand)]
    if isinstance(e, ast.BinOp) and e.op == "*":
        return [ast.BinOp("*", a, b, e.span) for a in _monomials(e.lhs) for b in _monomials(e.rhs)]
    return [e]


def _multiplicands(e: ast.Expr) -> list[ast.Expr] | None:
    """The operands of ``e``'s chain of ``*`` (each kept whole, signs included),
    or None when ``e`` is a sum or a difference."""
    if isinstance(e, ast.BinOp):
        if e.op != "*":
            return None
        lhs, rhs = _multiplicands(e.lhs), _multiplicands(e.rhs)
        return None if lhs is None or rhs is None else lhs + rhs
    return [e]


def _product(factors: list[ast.Expr]) -> ast.Expr:
    out = factors[0]
    for f in factors[1:]:
        out = ast.BinOp("*", out, f, (out.span[0], f.span[1]))
    return out


def _accesses_in(e: ast.Expr) -> list[ast.Access]:
    if isinstance(e, ast.Access):
        return [e]
    return [a for child in ast.children(e) for a in _accesses_in(child)]


def lower(assign: ast.Assignment, formats: dict[str, Format], *, name: str = "kernel",
          order: tuple[str, ...] | None = None, value_dtype: DType = DType.F32,
          index_dtype: DType = DType.I32, accumulate: bool = False,
          separate: frozenset[str] = frozenset(), sum_dtype: DType | None = None) -> Program:
    """Lower a checked assignment to loop IR.

    Requires: ``formats`` maps every tensor of ``assign`` (output included) to a
    Format of the tensor's rank; ``assign`` passed ``frontend.check``.
    Ensures: the kernels compute ``assign`` for every valid input; the output's
    arrays are the Program's OUTPUT parameters.  Arithmetic runs in ``sum_dtype``
    (default: ``value_dtype.widened``); loads are cast to it, and stores round
    to the arrays' type.
    """
    combine = "+"
    if isinstance(assign.rhs, ast.Reduce):      # m[i] = max(j, e): e, combined by max
        combine = COMBINE[assign.rhs.op]
        assign = ast.Assignment(assign.lhs, assign.rhs.body, assign.source)
    nested = ast.nested_reduce(assign.rhs)
    if nested is not None:
        combine = COMBINE[nested.op]
    if order is None and (combine != "+" or nested is not None):
        order = _outputs_first(assign, formats)   # a max/min or an epilogue runs inside
    elif order is not None:
        order = expand_blocked_order(assign, formats, tuple(order))
    groups = split_terms(assign, separate) if combine == "+" and nested is None \
        else [assign]
    if len(groups) > 1:
        if not formats[assign.lhs.tensor].is_dense:
            from .lower_terms import lower_terms_in_workspace
            return lower_terms_in_workspace(assign, groups, formats, name=name, order=order,
                                            value_dtype=value_dtype, index_dtype=index_dtype,
                                            sum_dtype=sum_dtype)
        kernels = []
        for n, group in enumerate(groups):
            sub_order = None if order is None else group_order(
                order, IndexPlan.of(group, formats).loop_vars)
            part = lower(group, formats, name=f"{name}_term{n}", order=sub_order,
                         value_dtype=value_dtype, index_dtype=index_dtype, accumulate=n > 0,
                         sum_dtype=sum_dtype)
            kernels.extend(part.kernels)
        return replace(part, kernels=tuple(kernels),
                       index_order=order or default_loop_order(assign, formats))
    if order is None:
        order = default_loop_order(assign, formats)
    check_loop_order(assign, formats, order)
    kind, pattern = classify_output(assign, formats)
    out_fmt = formats[assign.lhs.tensor]
    workspace = False
    if kind == OutputKind.ASSEMBLED:
        out_stored = [assign.lhs.indices[m] for m in out_fmt.order]   # never blocked
        workspace = uses_workspace(assign, formats, order)
        if workspace and (combine != "+" or nested is not None):
            what = f"a {combine} reduction" if combine != "+" else "a reduction inside an expression"
            raise UnsupportedError(
                f"'{assign.source}': {what} is not built in a workspace (the sparse output "
                f"{assign.lhs.tensor} would need one); use a dense output")
        if tuple(order[:len(out_stored)]) != tuple(out_stored) and not workspace:
            raise UnsupportedError(
                f"a sparse output is appended in storage order: loop order {order} must "
                f"start with {tuple(out_stored)}, or with {tuple(out_stored[:-1])} (its "
                f"rows then built in a workspace over '{out_stored[-1]}')")
    phases = ("assemble", "compute") if kind == OutputKind.ASSEMBLED else ("compute",)
    kernels = []
    for phase in phases:
        lw = Lowerer(assign, formats, order, value_dtype, index_dtype, kind, pattern, phase,
                     accumulate, sum_dtype, combine, workspace=workspace)
        body = lw.lower_body()
        params = _params(lw, order)
        attrs = (("order", ",".join(order)), ("output", kind))
        independent = order[0] if _outer_independent(assign, order, kind, lw) else None
        rows = order[1] if independent is not None and _rows_independent(assign, order, lw) \
            else None
        kname = name if phase == "compute" else f"{name}_assemble"
        if workspace:
            attrs += (("workspace", out_stored[-1]),)
        kernels.append(Kernel(kname, params, body, attrs, outer_independent=independent,
                              rows_independent=rows, adds_to_output=accumulate,
                              workspaces=tuple(b.name for b in lw.ws.buffers) if workspace
                              and independent is not None else ()))
    return Program(tuple(kernels), assign.lhs.tensor, kind, out_fmt,
                   assign.accesses()[pattern].tensor if pattern is not None else None,
                   tuple(order), tuple(sorted(formats.items())), value_dtype, index_dtype,
                   drops_zeros=workspace)


def _outputs_first(assign: ast.Assignment, formats: dict[str, Format]) -> tuple[str, ...]:
    """The default loop order with the reduction's loops moved inside the output's
    (an epilogue runs once per output entry, after the reduction), or the default
    order itself where the formats forbid that (the lowerer then says why)."""
    order = default_loop_order(assign, formats)
    plan = IndexPlan.of(assign, formats)
    outs = [ix for ix in order if plan.origin(ix) in assign.lhs.indices]
    moved = tuple(outs + [ix for ix in order if ix not in outs])
    try:
        check_loop_order(assign, formats, moved)
    except UnsupportedError:
        return order
    return moved


SPLIT_SUFFIXES = ("_blk", "_in")     # a blocked level's index ix loops as ix_blk, ix_in


def split_base(var: str) -> str | None:
    """The index a blocked loop variable (``ix_blk``, ``ix_in``) splits, else None."""
    for suffix in SPLIT_SUFFIXES:
        if var.endswith(suffix) and len(var) > len(suffix):
            return var[:-len(suffix)]
    return None


def group_order(order: tuple[str, ...], loop_vars) -> tuple[str, ...]:
    """``order`` (the whole assignment's loop order) for one group of its terms
    whose loop variables are ``loop_vars``: their variables in the order's order,
    an index this group does not split taking the place of its first split part
    (``F[i,j] + b[j]`` with F blocked: the ``b`` term's ``j`` goes where ``j_blk``
    or ``j_in`` comes first)."""
    out: list[str] = []
    for ix in order:
        var = ix if ix in loop_vars else split_base(ix)
        if var in loop_vars and var not in out:
            out.append(var)
    return tuple(out)


def _outer_independent(assign, order, kind, lw: Lowerer) -> bool:
    """True when iterations of the outermost loop write disjoint output entries:
    it binds the output's first stored index, and for an assembled output that
    level is dense (a compressed first level, as in a sparse-vector output, has
    every iteration append to the same segment)."""
    if not order or not assign.lhs.indices:
        return False
    out_fmt = lw.out_fmt
    if kind == OutputKind.PATTERN and order[0] in pattern_batch(assign, lw.formats):
        return True        # each batch entry writes its own positions
    if lw.plan.origin(order[0]) != assign.lhs.indices[out_fmt.order[0]]:
        return False
    return kind != OutputKind.ASSEMBLED or out_fmt.levels[0].locatable


def _rows_independent(assign, order, lw: Lowerer) -> bool:
    """True when, the outermost loop being independent, the second loop walks
    the rows of a sparse operand and too writes disjoint output entries: a
    batch of rows (heads ``h`` around the rows ``i`` of a shared mask,
    ``O[h,i,d] = A[i,j] * V[h,j,d]``).  It binds the output's second stored
    index, at a dense (locatable) level of an output whose first level is
    dense, and some sparse operand stores that index at a dense level of its
    own (not a dense loop over columns under the rows, as SpMM's ``j``)."""
    out_fmt = lw.out_fmt
    if len(order) < 2 or len(assign.lhs.indices) < 2 or out_fmt.is_blocked:
        return False
    row = lw.plan.origin(order[1])
    if lw.output_kind == OutputKind.PATTERN and order[0] in pattern_batch(assign, lw.formats):
        # a batch of a pattern (S[h,i,j] of A[i,j]) around the rows of its first,
        # dense level: each (batch, row) pair writes the row's own positions
        return row == assign.lhs.indices[out_fmt.order[0]] and out_fmt.levels[0].locatable
    if row != assign.lhs.indices[out_fmt.order[1]] or not out_fmt.levels[0].locatable \
            or not out_fmt.levels[1].locatable:
        return False
    for acc in assign.accesses():
        fmt = lw.formats[acc.tensor]
        if fmt.is_dense or fmt.is_blocked or row not in acc.indices:
            continue
        level = fmt.order.index(acc.indices.index(row))
        if fmt.levels[level].locatable:
            return True
    return False


def _params(lw: Lowerer, order) -> tuple[Param, ...]:
    sizes = tuple(Param(size_var(ix), ParamRole.SIZE)
                  for ix in sorted({lw.plan.origin(v) for v in order}))
    scalars = tuple(Param(var, ParamRole.SIZE, tensor)
                    for _, (var, tensor) in sorted(lw.used_scalars.items()))
    bufs = tuple(Param(buf, role, tensor)
                 for _, (buf, role, tensor) in sorted(lw.used_buffers.items()))
    return bufs + sizes + scalars
