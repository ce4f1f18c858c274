"""tile: strip-mine the dense loop over an index into panels, and hoist the panels out.

    for i in [0, M):                            for j_tile in [0, (N + T - 1) / T):
      lets(i)                                     let j_tile_lo = j_tile * T
      for p in [pos[i], pos[i + 1]):    ==>       let j_tile_hi = min(j_tile_lo + T, N)
        let k = crd[p]                            for i in [0, M):
        for j in [0, N):                            lets(i)
          C[i * N + j] += A[p] * B[k * N + j]       for p in [pos[i], pos[i + 1]):
                                                      let k = crd[p]
                                                      for j in [j_tile_lo, j_tile_hi):
                                                        C[i * N + j] += A[p] * B[k * N + j]

The panel loop (``<index>_tile``) first wraps the loop over the index, then moves
out past each enclosing ``for`` (or guard ``if``) while that is legal:

* everything the enclosing statement runs besides the panel loop is a ``let``
  reading no array the panel loop writes (it is recomputed once per panel), and
  the tiled loop's bounds read nothing the enclosing statement defines;
* the tiled loop assigns no variable declared outside it (a sum carried across
  its iterations, SDDMM's ``acc += X[i,k] * Y[j,k]``: the panels of a reduction
  stay inside the sum they split, in order, so its value is bit for bit the same;
  a reduction that adds into the output itself, SDDMM in order i,k,j, may leave
  its entries by the next rule, each entry still summing its terms in order);
* iterations of different panels touch disjoint entries, so the new order of
  (outer iteration, panel) pairs cannot change a result: every array the tiled
  loop writes is read and written there only at ``Q * N + j`` (``j`` in
  ``[0, N)``, ``Q`` free of ``j``: the index is an output's last dense
  coordinate, SpMM's column); or the enclosing loop is the kernel's outer loop
  whose iterations write disjoint entries (``Kernel.outer_independent``), so
  only entries of one iteration see its panels, in order;
* it never moves above another panel loop (tiles apply in the schedule's
  sorted order: ``{"i": R, "j": T}`` gives row panels holding column panels).

Tiling the kernel's outer loop itself gives row panels; its panels are then the
kernel's independent outer loop.  Each entry still sums its terms in the same
order, so results are bit for bit unchanged.  A kernel without a dense loop
over the index (a sparse level's positions give SpMM's ``k`` over csr) is
returned unchanged; ``check_tiled`` then refuses the knob.
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import ScheduleError
from ..ir.nodes import (BinOp, Block, Const, DType, Expr, For, If, Kernel, Let, Load,
                        LoopKind, ParamRole, Stmt, Store, Var, While, add, i64, mul)
from ..ir.traverse import rewrite, top_loop, walk
from .map_gpu import assigned, declared, inline, let_env, stmts_of, var_names

I64 = DType.I64


def tile(kernel: Kernel, *, sizes: tuple[tuple[str, int], ...]) -> Kernel:
    """Tile the dense loops over each index of ``sizes`` (index, panel size), in order.

    Requires: a verified kernel; sizes positive.  Ensures: every loop over a named
    index whose bounds read no array runs inside a panel loop placed as the module
    docstring says; each output entry sums its terms in the same order (results
    unchanged bit for bit); a kernel without such a loop is returned unchanged.
    """
    for index, size in sizes:
        kernel = tile_index(kernel, index, size)
    return kernel


def tile_index(kernel: Kernel, index: str, size: int) -> Kernel:
    """``tile`` for one index (see there)."""
    if not any(isinstance(n, For) and n.var.name == index and _dense(n) for n in walk(kernel.body)):
        return kernel
    body, _ = _Context(kernel, index, size).visit(kernel.body, top=True)
    kernel_out = replace(kernel, body=body)
    found = top_loop(kernel_out)
    if kernel.outer_independent == index and found is not None \
            and found[1].var.name == f"{index}_tile":
        # row panels: panels of independent iterations are independent
        kernel_out = replace(kernel_out, outer_independent=found[1].var.name)
    return kernel_out


def _dense(loop: For) -> bool:
    """A loop whose bounds read no array (a dense level's ``[0, size)``, not a
    sparse level's positions)."""
    return not any(isinstance(n, Load) for e in (loop.lo, loop.hi) for n in walk(e))


class _Context:
    def __init__(self, kernel: Kernel, index: str, size: int):
        self.kernel = kernel
        self.index = index
        self.size = size
        self.sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
        self.panel_loops = {n.var.name for n in walk(kernel.body)
                            if isinstance(n, For) and tile_of(n) is not None}

    # -- the walk: bottom-up; a statement holding the loop over the index reports
    # -- whether the panel loop, not yet placed, may still move out of it --------
    def visit(self, s: Stmt, top: bool = False) -> tuple[Stmt, bool]:
        """``s`` rewritten, and True when ``s`` holds the loop over the index with
        its panel loop not yet placed (its parent places it: around ``s``, or
        further out)."""
        if isinstance(s, Block):
            return self.visit_block(s.body, container=None, top=top)
        if isinstance(s, For):
            if s.var.name == self.index and _dense(s):
                return s, True
            body, unplaced = self.visit_block(stmts_of(s.body), container=s, top=top)
            return replace(s, body=body), unplaced
        if isinstance(s, If):
            then, unplaced = self.visit_block(stmts_of(s.then), container=s, top=False)
            otherwise = None
            if s.otherwise is not None:
                otherwise, _ = self.visit_block(stmts_of(s.otherwise), container=None, top=False)
            return replace(s, then=then, otherwise=otherwise), unplaced
        if isinstance(s, While):
            body, _ = self.visit_block(stmts_of(s.body), container=None, top=False)
            return replace(s, body=body), False
        return s, False

    def visit_block(self, stmts, container, top: bool) -> tuple[Block, bool]:
        """The statements rewritten, each unplaced panel loop placed around its
        statement, unless it may move past ``container`` (then True: the caller's
        parent places it)."""
        out: list[Stmt] = []
        unplaced: list[int] = []
        for s in stmts:
            new, waiting = self.visit(s, top=top and container is None)
            if waiting:
                unplaced.append(len(out))
            out.append(new)
        moves = len(unplaced) == 1 and container is not None and \
            self.may_hoist(container, out, unplaced[0], top)
        if not moves:
            for k in unplaced:
                out[k] = self.wrap(out[k])
        return Block(tuple(out)), moves

    # -- legality -------------------------------------------------------------------
    def tiled_loop(self, region: Stmt) -> For:
        return next(n for n in walk(region) if isinstance(n, For) and n.var.name == self.index)

    def may_hoist(self, container, stmts: list, at: int, top: bool) -> bool:
        """True when the panel loop may move from around ``stmts[at]`` to around
        ``container`` (a For or a guard If, whose body ``stmts`` is)."""
        if isinstance(container, For) and (container.kind is not LoopKind.SERIAL
                                           or container.var.name in self.panel_loops):
            return False
        if isinstance(container, If) and container.otherwise is not None:
            return False                       # the panels would wrap the other branch too
        region = stmts[at]
        loop = self.tiled_loop(region)
        written = {n.buf.name for n in walk(loop.body) if isinstance(n, Store)}
        if assigned(loop.body) - declared(loop.body):
            return False                       # a sum carried across the loop's iterations
        others = [s for k, s in enumerate(stmts) if k != at]
        if not all(isinstance(s, Let) and not _loads(s.value, written) for s in others):
            return False
        if isinstance(container, If) and _loads(container.cond, written):
            return False
        bound_names = var_names(loop.lo) | var_names(loop.hi)
        defined = {s.var.name for s in others} | declared(region) - declared(loop)
        if isinstance(container, For):
            defined.add(container.var.name)
        if bound_names & defined:
            return False
        outer = isinstance(container, For) and top and container.var.name == \
            self.kernel.outer_independent
        return outer or self.panels_disjoint(loop, written)

    def panels_disjoint(self, loop: For, written: set[str]) -> bool:
        """True when every access to an array ``loop`` writes is at ``Q * hi + j``
        (``j`` the loop's variable over ``[0, hi)``, ``Q`` free of ``j``) or ``j``."""
        if not (isinstance(loop.lo, Const) and loop.lo.value == 0
                and isinstance(loop.hi, Var) and loop.hi.name in self.sizes):
            return False
        env = let_env(loop.body)
        for n in walk(loop.body):
            if isinstance(n, (Store, Load)) and n.buf.name in written:
                if not _last_coordinate(inline(n.index, env), loop.var.name, loop.hi.name):
                    return False
        return True

    # -- the rewrite ------------------------------------------------------------------
    def wrap(self, region: Stmt) -> Stmt:
        """``region`` inside a panel loop; its loop over the index runs over a panel."""
        loop = self.tiled_loop(region)
        j = self.index
        tile_var = Var(f"{j}_tile", I64)
        lo_var, hi_var = Var(f"{j}_tile_lo", I64), Var(f"{j}_tile_hi", I64)
        span = loop.hi if _is_zero(loop.lo) else BinOp("-", loop.hi, loop.lo)
        count = BinOp("/", add(span, i64(self.size - 1)), i64(self.size)) \
            if self.size > 1 else span
        first = mul(tile_var, i64(self.size))
        if not _is_zero(loop.lo):
            first = add(loop.lo, first)
        retiled = rewrite(region, lambda n: replace(n, lo=lo_var, hi=hi_var)
                          if isinstance(n, For) and n.var.name == j else n)
        return For(tile_var, i64(0), count, Block((
            Let(lo_var, first),
            Let(hi_var, BinOp("min", add(lo_var, i64(self.size)), loop.hi)),
            *stmts_of(retiled))))


def _is_zero(e: Expr) -> bool:
    return isinstance(e, Const) and e.value == 0


def _loads(e: Expr, buffers: set[str]) -> bool:
    return any(isinstance(n, Load) and n.buf.name in buffers for n in walk(e))


def _last_coordinate(index: Expr, j: str, size: str) -> bool:
    """True when ``index`` is ``j`` or ``Q * size + j`` (either operand order)
    with ``Q`` free of ``j``."""
    if isinstance(index, Var) and index.name == j:
        return True
    if not (isinstance(index, BinOp) and index.op == "+"):
        return False
    for a, b in ((index.lhs, index.rhs), (index.rhs, index.lhs)):
        if isinstance(b, Var) and b.name == j and isinstance(a, BinOp) and a.op == "*":
            for q, s in ((a.lhs, a.rhs), (a.rhs, a.lhs)):
                if isinstance(s, Var) and s.name == size and j not in var_names(q):
                    return True
    return False


def tile_of(loop: For) -> tuple[str, int] | None:
    """(index, panel size) when ``loop`` is a panel loop ``tile`` made, else None."""
    name = loop.var.name
    if not name.endswith("_tile"):
        return None
    index = name[: -len("_tile")]
    body = stmts_of(loop.body)
    if not body or not isinstance(body[0], Let) or body[0].var.name != f"{name}_lo":
        return None
    if isinstance(body[0].value, Var) and body[0].value.name == name:
        return index, 1                    # j_tile * 1, simplified
    for term in (body[0].value, getattr(body[0].value, "rhs", None)):
        if isinstance(term, BinOp) and term.op == "*" and isinstance(term.lhs, Var) \
                and term.lhs.name == name and isinstance(term.rhs, Const):
            return index, int(term.rhs.value)
    return None


def tiles(kernel: Kernel) -> dict[str, int]:
    """The panel sizes of ``kernel``'s tiled indices, by index."""
    return dict(t for n in walk(kernel.body) if isinstance(n, For) and (t := tile_of(n)))


def panels_above_rows(kernel: Kernel) -> set[str]:
    """Indices whose panels enclose the kernel's loop over rows: the top loop is
    a panel loop (or, on threads, the loop inside the top chunk loop) of an
    index other than the independent outer one (SpMM's N panels)."""
    found = top_loop(kernel)
    if found is None:
        return set()
    loop = found[1]
    if loop.kind is LoopKind.PARALLEL and loop.var.name.endswith("_chunk"):
        inner = [s for s in stmts_of(loop.body) if isinstance(s, For)]
        if len(inner) != 1:
            return set()
        loop = inner[0]
    panel = tile_of(loop)
    if panel is None or f"{panel[0]}_tile" == kernel.outer_independent:
        return set()
    return {panel[0]}


def check_tiled(sizes: tuple[tuple[str, int], ...], kernels) -> None:
    """Raise ScheduleError (knob ``tile``) for an index of ``sizes`` that no
    kernel of ``kernels`` (scheduled IR) has panels of, saying why."""
    done: set[str] = set()
    for k in kernels:
        done |= tiles(k).keys()
    for index, _ in sizes:
        if index in done:
            continue
        loops = {v for k in kernels for v in dict(k.attrs).get("order", "").split(",") if v}
        if index not in loops:
            raise ScheduleError.of("tile", f"this kernel has no index '{index}' (its loop "
                                           f"indices: {', '.join(sorted(loops)) or 'none'})")
        raise ScheduleError.of("tile", f"index '{index}' has no loop over [0, size) of its "
                                       f"own here: its values come from a sparse level's "
                                       f"stored entries (or from split_rows' pieces or "
                                       f"reorder_rows' permutation of the rows), which have "
                                       f"no panels; tile an index a dense loop iterates")


__all__ = ["check_tiled", "panels_above_rows", "tile", "tile_index", "tile_of", "tiles"]
