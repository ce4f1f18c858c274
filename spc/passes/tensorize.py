"""tensorize: a block-sparse times dense product onto the GPU's matrix instructions.

The lowerer gives a product of a blocked sparse operand (BSR with r x c blocks)
and a dense one as scalar loops (SpMM, ``C[i,j] = A[i,k] * B[k,j]``):

    for i_blk in [0, (size_i + r - 1) / r):              # block rows, independent
      for i_in in [0, r):  if i < size_i:                  # m: the block's rows
        for p in [pos[i_blk], pos[i_blk + 1]):           # the row's blocks
          let k_blk = crd[p]
          for k_in in [0, c):  if k < size_k:             # k: the block's columns
            for j in [0, size_j):                          # n: the dense columns
              C[i * size_j + j] += A_vals[(p * r + i_in) * c + k_in] * B_vals[k * size_j + j]

Each block times a slice of ``B`` is a small dense matrix product, the shape
tensor cores compute.  This pass gives every (block row, column tile) pair a
warp holding the output tile in an accumulator, runs the block row's blocks
through it, and writes the tile out once:

    for tile in [0, blocks * tiles) @gpu_warp:
      let i_blk = tile / tiles;  let j_tile = tile - i_blk * tiles
      alloc acc: f32[r * W]
      for p in [pos[i_blk], pos[i_blk + 1]):
        let k_blk = crd[p]
        for i_in in [0, r) @mma_m:  for j_in in [0, W) @mma_n:  for k_in in [0, c) @mma_k:
          acc[i_in * W + j_in] += select(i < size_i && k < size_k, A_vals[...], 0)
                                  * select(k < size_k && j < size_j, B_vals[...], 0)
      for i_in in [0, r) @mma_m:  for j_in in [0, W) @mma_n:
        if i < size_i && j < size_j:  C[i * size_j + j] = acc[i_in * W + j_in]

with ``W`` the tile's columns (``tile_cols``) and ``j = j_tile * W + j_in``.
Tiles where every guard holds throughout (all but the matrix's edges: the
``whole_tile`` condition, and a block inside ``size_k``) run a copy of the
tile loops without the selects and conditions: regular and residual parts.  The interpreter runs the tile
loops in order (the same sums, in the same order, as before); the CUDA
renderer spells them as ``mma.sync`` m16n8k16 instructions over the warp's
lanes (``LoopKind.MMA_M``).  Guards that kept the scalar loops inside the
matrix become selects of zero on the loads (and a condition on the tile's
write), so no load or store leaves its array.

Applies where: the top loop is the independent loop over block rows; below
it, lets, guards and loops lead to one accumulating store of a product of two
loads of float16 (or of bfloat16) values; three of the loops are the tile's
(m: in the output's and one operand's address; n: in the output's and the
other's; k: in both operands', not the output's), m and k over constant
ranges of a multiple of 16 (the instruction's), n over any range from 0;
one more loop, the sparse positions, whose bounds read none of them; and
every guard bounds one of m, n, k.  Anything else is returned unchanged.  A k
guard that reads the data (the padding test of ``tensorize_chunks``' gathered
columns) is kept in the regular form too, on the operand whose index reads the
same loads (B's gathered row; the other's load stays inside its array).

A sampled product (SDDMM on a blocked mask, ``S[i,j] = A[i,j] * X[i,k] * Y[j,k]``)
has a dense product per stored block: ``acc = 0; for k: acc += X[i,k] * Y[j,k];
S[p] = A[p] * acc`` under the block's two loops.  There each block row gets a
thread block whose warps take its stored blocks in turn; a warp computes its
block as a tile (the block's rows and columns, k in steps of the instruction's,
the last step guarded), then writes ``f(tile)`` entry by entry
(``_match_sampled``); the tile's columns are the block's, not ``tile_cols``.

With ``tf32`` (``spc.Schedule.tf32``), float32 products get tiles too: their
inputs are rounded to TensorFloat-32 (``tf32(x)`` in the printed IR, which the
interpreter computes) and run as m16n8k8 tf32 instructions, k in steps of 8.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (BinOp, Block, Buffer, Const, DType, Expr, For, GpuMapping, GridMode,
                        If, Kernel, Let, Load, LoopKind, ParamRole, Select, Store, ToTF32, Var, Alloc,
                        Assign,
                        and_, add, i64, lt, mul, sub)
from ..ir.traverse import rewrite, top_loop, walk
from ..ir.affine import linear_coefficient
from .map_gpu import FreshNames, inline, stmts_of, var_names

I64 = DType.I64
F32 = DType.F32
INSTRUCTION = {DType.F16: (16, 8, 16), DType.BF16: (16, 8, 16),   # (m, n, k) per value type
               DType.F32: (16, 8, 8)}                            # (float32: as tf32)
TILE_COLS = 64                # output columns per warp tile unless the schedule says


def tensorize(kernel: Kernel, *, tile_cols: int | None = None, tf32: bool = False) -> Kernel:
    """``kernel`` with its block-times-dense product in tensor-core tiles of
    ``tile_cols`` output columns (a multiple of 8; None: ``TILE_COLS``); with
    ``tf32``, float32 products too, their inputs rounded to tf32 (``ToTF32``:
    the results then differ from the input's by that rounding).

    Requires: a verified kernel, not yet mapped to the GPU.  Ensures: where
    the module docstring's shape is found, a kernel mapped one warp per tile
    (``kernel.gpu``) whose interpreted results equal the input's; else
    ``kernel`` itself.
    """
    width = TILE_COLS if tile_cols is None else tile_cols
    if kernel.gpu is not None or width % 8:
        return kernel
    found = _match(kernel, tf32)
    if found is not None:
        return _rebuild(kernel, found, width)
    found = _match_sampled(kernel, tf32)
    if found is not None:
        return _rebuild_sampled(kernel, found)
    return kernel


class _Match:
    """What ``_match`` found: the top lets and loop, the tile loops by role,
    the sparse loop, the lets to keep (outside or inside the sparse loop),
    the guards by role, the two operand loads (the one reading m first) and
    the output store, with tile-dependent lets inlined into all of them."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _chain(s):
    """The statements from ``s`` down to a store: ("let", Let), ("for", For),
    ("if", cond) and last either ("store", Store), a single store, or
    ("reduce", (For, Store)), a loop followed by a store; None when some level
    holds anything else (two loops, an else branch, an assignment)."""
    items = []
    while True:
        body = stmts_of(s)
        n_lets = 0
        while n_lets < len(body) and isinstance(body[n_lets], Let):
            n_lets += 1
        items.extend(("let", x) for x in body[:n_lets])
        rest = body[n_lets:]
        if len(rest) == 1 and isinstance(rest[0], For) and rest[0].kind is LoopKind.SERIAL:
            items.append(("for", rest[0]))
            s = rest[0].body
        elif len(rest) == 1 and isinstance(rest[0], If) and rest[0].otherwise is None:
            items.append(("if", rest[0].cond))
            s = rest[0].then
        elif len(rest) == 1 and isinstance(rest[0], Store):
            items.append(("store", rest[0]))
            return items
        elif len(rest) == 2 and isinstance(rest[0], For) and isinstance(rest[1], Store):
            items.append(("reduce", tuple(rest)))
            return items
        else:
            return None


def _is_range(loop: For, sizes: set[str]) -> bool:
    """``[0, hi)`` with hi a constant or a size parameter."""
    return isinstance(loop.lo, Const) and loop.lo.value == 0 and (
        isinstance(loop.hi, Const) or (isinstance(loop.hi, Var) and loop.hi.name in sizes))


def _multiple(loop: For, step: int) -> bool:
    """``loop`` runs over a constant range, a positive multiple of ``step``."""
    return isinstance(loop.hi, Const) and loop.hi.value > 0 and loop.hi.value % step == 0


def _value_load(e, bufs, tf32: bool) -> Load | None:
    types = INSTRUCTION if tf32 else (DType.F16, DType.BF16)
    return e if isinstance(e, Load) and e.buf.name in bufs \
        and bufs[e.buf.name].role is ParamRole.INPUT and e.buf.dtype in types else None


def _independent_top(kernel: Kernel):
    """``top_loop``'s (Lets, loop) when the loop is serial, from 0, and the
    kernel's independent loop; else None."""
    found = top_loop(kernel)
    if found is None:
        return None
    outer = found[1]
    if outer.kind is not LoopKind.SERIAL or kernel.outer_independent != outer.var.name \
            or not (isinstance(outer.lo, Const) and outer.lo.value == 0):
        return None
    return found


def _kept_lets(sparse: For, lets, env, dependent):
    """(the sparse loop's bounds, the lets kept outside it, those kept inside it,
    the names that vary with it): lets that read no tile variable are kept,
    inside the loop when they read it, else before it; None when the loop's
    bounds read a tile variable or vary with the loop."""
    lo, hi = inline(sparse.lo, env), inline(sparse.hi, env)
    inner = {sparse.var.name}
    outside, within = [], []
    for let in lets:
        if let.var.name in dependent:
            continue
        if var_names(let.value) & inner:
            inner.add(let.var.name)
            within.append(let)
        else:
            outside.append(let)
    if (var_names(lo) | var_names(hi)) & (dependent | inner):
        return None
    return lo, hi, outside, within, inner


def product_chain(kernel: Kernel):
    """``(prefix, outer, items, store, bufs)`` of a kernel whose independent top
    loop holds one chain of lets, loops and guards (``_chain``'s ``items``)
    ending in an accumulating, non-atomic store of a product into an output
    (``bufs``: the buffer parameters by name); else None.  What ``tensorize``
    and ``tensorize_nm`` both start from."""
    found = _independent_top(kernel)
    if found is None:
        return None
    prefix, outer = found
    items = _chain(outer.body)
    if items is None or items[-1][0] != "store":
        return None
    store = items[-1][1]
    bufs = {p.name: p for p in kernel.params if isinstance(p.value, Buffer)}
    out = bufs.get(store.buf.name)
    if out is None or out.role is not ParamRole.OUTPUT or not store.accumulate or store.atomic \
            or not (isinstance(store.value, BinOp) and store.value.op == "*"):
        return None
    return prefix, outer, items, store, bufs


def _match(kernel: Kernel, tf32: bool) -> _Match | None:
    found = product_chain(kernel)
    if found is None:
        return None
    prefix, outer, items, store, bufs = found
    x, y = (_value_load(e, bufs, tf32) for e in (store.value.lhs, store.value.rhs))
    if x is None or y is None or x.buf.dtype is not y.buf.dtype:
        return None
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    loops = [s for kind, s in items if kind == "for"]
    tile = [f for f in loops if _is_range(f, sizes)]
    sparse = [f for f in loops if f not in tile]
    if len(tile) != 3 or len(sparse) != 1:
        return None
    tile_vars = {f.var.name for f in tile}
    # lets reading a tile variable are inlined where used; the others are kept
    lets = [s for kind, s in items if kind == "let"]
    dependent: set[str] = set(tile_vars)
    for s in lets:
        if var_names(s.value) & dependent:
            dependent.add(s.var.name)
    env = {s.var.name: s.value for s in lets if s.var.name in dependent}
    names = [s.var.name for s in lets]
    if len(set(names)) != len(names):
        return None
    x_at, y_at, out_at = (inline(e.index, env) for e in (x, y, store))
    guards = [inline(c, env) for kind, c in items if kind == "if"]
    used = {f.var.name: tuple(f.var.name in var_names(e) for e in (x_at, y_at, out_at))
            for f in tile}
    outs = [(v, in_x) for v, (in_x, in_y, in_out) in used.items() if in_out and in_x != in_y]
    ks = [v for v, (in_x, in_y, in_out) in used.items() if in_x and in_y and not in_out]
    if len(outs) != 2 or len(ks) != 1 or outs[0][1] == outs[1][1]:
        return None
    by_name = {f.var.name: f for f in tile}
    inst_m, _, inst_k = INSTRUCTION[x.buf.dtype]
    kk = by_name[ks[0]]
    if not _multiple(kk, inst_k):
        return None
    # m: the output index over a block's rows (a constant multiple of the
    # instruction's); the operand that reads it is the instruction's A
    rows = [o for o in outs if _multiple(by_name[o[0]], inst_m)]
    if not rows:
        return None
    (m_name, m_in_x), = rows[:1]
    n_name = next(v for v, _ in outs if v != m_name)
    if not m_in_x:
        x, y, x_at, y_at = y, x, y_at, x_at
    m, n = by_name[m_name], by_name[n_name]
    roles = {"m": m_name, "n": n_name, "k": ks[0]}
    by_role = {"m": [], "n": [], "k": []}
    for c in guards:
        hit = var_names(c) & tile_vars
        if len(hit) != 1:
            return None
        by_role[next(r for r in roles if roles[r] in hit)].append(c)
    p = sparse[0]
    placed = _kept_lets(p, lets, env, dependent)
    if placed is None:
        return None
    p_lo, p_hi, outside, within, inner = placed
    if any(var_names(e) & inner for e in [out_at] + by_role["m"] + by_role["n"]):
        return None                   # the tile's place may not depend on the block
    return _Match(prefix=prefix, outer=outer, m=m, n=n, k=kk, sparse=p, p_lo=p_lo,
                  p_hi=p_hi, outside=outside, within=within, guards=by_role, x=x, y=y,
                  x_at=x_at, y_at=y_at, out=store, out_at=out_at)


def _all(conds: list[Expr]) -> Expr | None:
    out = None
    for c in conds:
        out = c if out is None else and_(out, c)
    return out


def _guarded(load: Load, index: Expr, cond: Expr | None) -> Expr:
    value = Load(load.buf, index)
    return value if cond is None else Select(cond, value, Const(0.0, F32))


def _whole(guard: Expr, var: str, trips: int) -> Expr | None:
    """A condition, free of ``var``, under which ``guard`` holds for every ``var``
    in ``[0, trips)``: ``guard`` at ``var = trips - 1`` when it reads ``e < b``
    or ``e <= b`` with ``e`` growing in ``var`` (a positive constant multiple of
    it plus terms without it) and ``b`` free of it; None otherwise."""
    if not (isinstance(guard, BinOp) and guard.op in ("<", "<=")) \
            or var in var_names(guard.rhs):
        return None
    slope = linear_coefficient(guard.lhs, var)
    if slope is None or slope <= 0:
        return None
    last = i64(trips - 1)
    return rewrite(guard, lambda x: last if isinstance(x, Var) and x.name == var else x)


def _regular_or_residual(names: FreshNames, whole: list, whole_k: list, product, write_out):
    """(lets, the tile's product, its write-out): with ``whole`` (per guard on the
    tile's rows or columns, a condition under which it holds throughout; None
    where unknown) and ``whole_k`` (the same for the k block) all known, a
    ``whole_tile`` let and, under it, ``product(False)`` / ``write_out(False)``
    without guards, the guarded forms elsewhere; otherwise the guarded forms."""
    if any(w is None for w in whole + whole_k) or not (whole or whole_k):
        return (), product(True), write_out(True)
    inside = names.fresh("whole_tile", DType.BOOL)
    lets = (Let(inside, _all(whole) or Const(True, DType.BOOL)),)
    return (lets, If(_all([inside] + whole_k), product(False), product(True)),
            If(inside, write_out(False), write_out(True)))


def _tile_names(kernel: Kernel) -> FreshNames:
    """Fresh names for ``kernel``, its buffers' names taken too."""
    names = FreshNames(kernel)
    names.taken |= {n.buf.name for n in walk(kernel.body) if isinstance(n, (Load, Store, Alloc))}
    return names


def _rebuild(kernel: Kernel, f: _Match, width: int) -> Kernel:
    names = _tile_names(kernel)
    tile = names.fresh("tile", I64)
    j_tile = names.fresh(f"{f.n.var.name}_tile", I64)
    j_in = names.fresh(f"{f.n.var.name}_in", I64)
    acc = Buffer(names.fresh("acc", F32).name, F32)
    rows, depth = int(f.m.hi.value), int(f.k.hi.value)
    tiles = BinOp("/", add(f.n.hi, i64(width - 1)), i64(width))
    j = add(mul(Var(j_tile.name, I64), i64(width)), j_in)

    def at_j(e):
        return rewrite(e, lambda x: j if isinstance(x, Var) and x.name == f.n.var.name else x)

    n_guard = [at_j(c) for c in f.guards["n"]]
    if not (isinstance(f.n.hi, Const) and f.n.hi.value % width == 0):
        n_guard.append(lt(j, f.n.hi))
    slot = add(mul(f.m.var, i64(width)), j_in)
    m_guard, k_guard = f.guards["m"], f.guards["k"]
    # a k guard that reads the data (a padding slot's ``0 <= crd[p]``) holds or not
    # per k whatever the tile's place: the regular form keeps it
    kept = [c for c in k_guard if _whole(c, f.k.var.name, depth) is None
            and any(isinstance(x, Load) for x in walk(c))]
    # ... on the operand whose index reads what it reads (the gathered row of B):
    # that factor's zero zeroes the product; the other operand's load stays in
    # its array (a padding slot's stored zero); both where neither reads it
    y_reads = {x for x in walk(at_j(f.y_at)) if isinstance(x, Load)}
    x_reads = {x for x in walk(f.x_at) if isinstance(x, Load)}

    def reads_of(c):
        return {x for x in walk(c) if isinstance(x, Load)}
    x_kept = [c for c in kept if not reads_of(c) & y_reads or reads_of(c) & x_reads]
    y_kept = [c for c in kept if not reads_of(c) & x_reads or reads_of(c) & y_reads]

    def product(guarded: bool) -> For:
        x = _guarded(f.x, f.x_at, _all(m_guard + k_guard) if guarded else _all(x_kept))
        y = _guarded(f.y, at_j(f.y_at), _all(k_guard + n_guard) if guarded else _all(y_kept))
        if f.x.buf.dtype is F32:               # tf32 inputs
            x, y = ToTF32(x), ToTF32(y)
        store = Store(acc, slot, BinOp("*", x, y), accumulate=True)
        return For(f.m.var, i64(0), i64(rows), For(j_in, i64(0), i64(width), For(
            f.k.var, i64(0), i64(depth), store, LoopKind.MMA_K), LoopKind.MMA_N),
            LoopKind.MMA_M)

    def write_out(guarded: bool) -> For:
        write = Store(f.out.buf, at_j(f.out_at), Load(acc, slot),
                      accumulate=kernel.adds_to_output)
        cond = _all(m_guard + n_guard) if guarded else None
        return For(f.m.var, i64(0), i64(rows), For(
            j_in, i64(0), i64(width), write if cond is None else If(cond, write),
            LoopKind.MMA_N), LoopKind.MMA_M)

    # regular and residual tiles: where every guard holds over the whole tile (all
    # but the edges of the matrix), the tile runs without them
    whole = [_whole(c, f.m.var.name, rows) for c in m_guard] + \
        [_whole(c, j_in.name, width) for c in n_guard]
    whole_k = [_whole(c, f.k.var.name, depth) for c in k_guard if c not in kept]
    tile_lets, compute, written = _regular_or_residual(names, whole, whole_k, product,
                                                       write_out)
    o = f.outer.var
    body = Block((Let(o, BinOp("/", tile, tiles)),
                  Let(j_tile, sub(tile, mul(o, tiles))),
                  *f.outside,
                  *tile_lets,
                  Alloc(acc, rows * width),
                  For(f.sparse.var, f.p_lo, f.p_hi, Block((*f.within, compute))),
                  written))
    top = For(tile, i64(0), mul(f.outer.hi, tiles), body, LoopKind.GPU_WARP)
    return replace(kernel, body=Block((*f.prefix, top)), gpu=GpuMapping(GridMode.WARP),
                   outer_independent=tile.name)


# ---------------------------------------------------------------------------
# Sampled products (SDDMM): a dense product per stored block
# ---------------------------------------------------------------------------

def _match_sampled(kernel: Kernel, tf32: bool) -> _Match | None:
    """The SDDMM shape: below the independent top loop, the sparse loop over a
    block row's blocks, the block's two tile loops (m, n: constant ranges) and
    guards, then ``acc = 0; for k in [0, K): acc = acc + X * Y; out[...] = f(acc)``
    with X reading m and k, Y reading n and k, and f not reading k."""
    found = _independent_top(kernel)
    if found is None:
        return None
    prefix, outer = found
    items = _chain(outer.body)             # lets, loops and guards down to the sum
    if items is None or items[-1][0] != "reduce":
        return None
    red, store = items[-1][1]
    bufs = {p.name: p for p in kernel.params if isinstance(p.value, Buffer)}
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    red_body = stmts_of(red.body)
    if red.kind is not LoopKind.SERIAL or not _is_range(red, sizes) or not red_body \
            or not all(isinstance(x, Let) for x in red_body[:-1]) \
            or not isinstance(red_body[-1], Assign):
        return None
    update = red_body[-1]
    acc_var = update.var
    sum_ = update.value
    if not (isinstance(sum_, BinOp) and sum_.op == "+" and isinstance(sum_.lhs, Var)
            and sum_.lhs.name == acc_var.name and isinstance(sum_.rhs, BinOp)
            and sum_.rhs.op == "*"):
        return None
    lets = [x for kind, x in items if kind == "let"]
    start = [x for x in lets if x.var.name == acc_var.name]
    if len(start) != 1 or not (isinstance(start[0].value, Const) and start[0].value.value == 0) \
            or acc_var.dtype is not F32:
        return None
    lets = [x for x in lets if x.var.name != acc_var.name]
    x, y = (_value_load(e, bufs, tf32) for e in (sum_.rhs.lhs, sum_.rhs.rhs))
    out = bufs.get(store.buf.name)
    if x is None or y is None or x.buf.dtype is not y.buf.dtype or out is None \
            or out.role is not ParamRole.OUTPUT or store.accumulate or store.atomic:
        return None
    loops = [f for kind, f in items if kind == "for"]
    tile = [f for f in loops if _is_range(f, sizes)]
    sparse = [f for f in loops if f not in tile]
    if len(tile) != 2 or len(sparse) != 1:
        return None
    tile_vars = {f.var.name for f in tile} | {red.var.name}
    dependent = set(tile_vars)
    for let in lets + list(red_body[:-1]):
        if var_names(let.value) & dependent:
            dependent.add(let.var.name)
    env = {x_.var.name: x_.value for x_ in lets + list(red_body[:-1])
           if x_.var.name in dependent}
    x_at, y_at = (inline(e.index, env) for e in (x, y))
    value = inline(store.value, env)
    out_at = inline(store.index, env)
    if red.var.name in var_names(value) | var_names(out_at) \
            or sum(isinstance(n, Var) and n.name == acc_var.name for n in walk(value)) != 1:
        return None
    kk = red.var.name
    inst_m, _, inst_k = INSTRUCTION[x.buf.dtype]
    def roles(xa, ya):
        """(m, n): the tile loop only ``xa`` reads (a multiple of the instruction's
        rows) and the one only ``ya`` reads (of 8), or None."""
        ms = [f for f in tile if f.var.name in var_names(xa) - var_names(ya)
              and _multiple(f, inst_m)]
        ns = [f for f in tile if f.var.name in var_names(ya) - var_names(xa) and _multiple(f, 8)]
        return (ms[0], ns[0]) if ms and ns else None

    if kk not in var_names(x_at) & var_names(y_at):
        return None
    found = roles(x_at, y_at)
    if found is None:                         # the operand reading the rows is A
        found = roles(y_at, x_at)
        if found is None:
            return None
        x, y, x_at, y_at = y, x, y_at, x_at
    m, n = found
    if not {m.var.name, n.var.name} <= var_names(out_at):
        return None
    by_role = {"m": [], "n": []}
    for kind, c in items:
        if kind != "if":
            continue
        c = inline(c, env)
        hit = var_names(c) & tile_vars
        if hit == {m.var.name}:
            by_role["m"].append(c)
        elif hit == {n.var.name}:
            by_role["n"].append(c)
        else:
            return None
    p = sparse[0]
    placed = _kept_lets(p, lets, env, dependent)
    if placed is None:
        return None
    p_lo, p_hi, outside, within, _ = placed
    return _Match(prefix=prefix, outer=outer, m=m, n=n, k=red, sparse=p, p_lo=p_lo, p_hi=p_hi,
                  outside=outside, within=within, guards=by_role, x=x, y=y, x_at=x_at,
                  y_at=y_at, out=store, out_at=out_at, value=value, acc=acc_var,
                  step=inst_k)


def _rebuild_sampled(kernel: Kernel, f: _Match) -> Kernel:
    """A thread block per block row, its warps taking the row's stored blocks in
    turn; per block, the block's product over k in steps of the instruction's
    (the last step guarded), then its entries written."""
    names = _tile_names(kernel)
    rows, cols, step = int(f.m.hi.value), int(f.n.hi.value), f.step
    acc = Buffer(names.fresh("acc", F32).name, F32)
    k_tile = names.fresh(f"{f.k.var.name}_tile", I64)
    k_in = names.fresh(f"{f.k.var.name}_in", I64)
    k = add(mul(k_tile, i64(step)), k_in)

    def at_k(e):
        return rewrite(e, lambda x: k if isinstance(x, Var) and x.name == f.k.var.name else x)

    x_at, y_at = at_k(f.x_at), at_k(f.y_at)
    k_guard = [] if isinstance(f.k.hi, Const) and f.k.hi.value % step == 0 \
        else [lt(k, f.k.hi)]
    slot = add(mul(f.m.var, i64(cols)), f.n.var)

    def product(guarded: bool) -> For:
        x = _guarded(f.x, x_at, _all(f.guards["m"] + k_guard) if guarded else None)
        y = _guarded(f.y, y_at, _all(f.guards["n"] + k_guard) if guarded else None)
        if f.x.buf.dtype is F32:
            x, y = ToTF32(x), ToTF32(y)
        return For(f.m.var, i64(0), i64(rows), For(f.n.var, i64(0), i64(cols), For(
            k_in, i64(0), i64(step), Store(acc, slot, BinOp("*", x, y), accumulate=True),
            LoopKind.MMA_K), LoopKind.MMA_N), LoopKind.MMA_M)

    entry = Load(acc, slot)
    value = rewrite(f.value, lambda x: entry if isinstance(x, Var) and x.name == f.acc.name
                    else x)
    write = Store(f.out.buf, f.out_at, value, accumulate=kernel.adds_to_output)

    def write_out(guarded: bool) -> For:
        cond = _all(f.guards["m"] + f.guards["n"]) if guarded else None
        return For(f.m.var, i64(0), i64(rows), For(
            f.n.var, i64(0), i64(cols), write if cond is None else If(cond, write),
            LoopKind.MMA_N), LoopKind.MMA_M)
    whole = [_whole(c, f.m.var.name, rows) for c in f.guards["m"]] + \
        [_whole(c, f.n.var.name, cols) for c in f.guards["n"]]
    last_k = [_whole(c, k_in.name, step) for c in k_guard]
    tile_lets, compute, written = _regular_or_residual(names, whole, last_k, product,
                                                       write_out)
    steps = BinOp("/", add(f.k.hi, i64(step - 1)), i64(step))
    block_body = Block((*f.within, *tile_lets, Alloc(acc, rows * cols),
                        For(k_tile, i64(0), steps, compute), written))
    body = Block((*f.outside, For(f.sparse.var, f.p_lo, f.p_hi, block_body, LoopKind.GPU_WARP)))
    top = replace(f.outer, body=body, kind=LoopKind.GPU_BLOCK)
    return replace(kernel, body=Block((*f.prefix, top)), gpu=GpuMapping(GridMode.BLOCK))


def uses_tf32(kernel: Kernel) -> bool:
    """Whether ``kernel`` rounds inputs to tf32 (float32 tiles)."""
    return any(isinstance(n, ToTF32) for n in walk(kernel.body))


def tensorized(kernel: Kernel) -> int | None:
    """The output columns of ``kernel``'s tensor-core tiles, or None when it has none."""
    for n in walk(kernel.body):
        if isinstance(n, For) and n.kind is LoopKind.MMA_N:
            return int(n.hi.value)
    return None


__all__ = ["INSTRUCTION", "TILE_COLS", "tensorize", "tensorized", "uses_tf32"]
