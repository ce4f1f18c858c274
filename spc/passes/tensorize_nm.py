"""tensorize_nm: a 2:4 sparse times dense product onto sparse tensor cores (``mma.sp``).

The lowerer gives SpMM with an nm(2,4) operand (``C[i,j] = A[i,k] * B[k,j]``,
A's rows in groups of four columns, two stored slots per group, the slots'
in-group offsets in ``off``, -1 marking padding) as scalar loops:

    for i in [0, size_i):                                    # rows, independent
      for p in [i * S, i * S + S):                           # the row's slots
        let k = (p - i * S) / 2 * 4 + off[p]                 # (S = (size_k + 3) / 4 * 2)
        if 0 <= off[p]:
          for j in [0, size_j):
            C[i * size_j + j] += A_vals[p] * B_vals[k * size_j + j]

Sixteen slots of a row are eight groups, 32 columns of k: the compressed A of
the ``mma.sp`` m16n8k32 instruction, whose metadata is each slot's place in its
group (``off``).  This pass gives every (R rows, W = ``tile_cols`` columns) tile
a warp holding it in an accumulator (R = ``rows``, 32 unless told, 16 for W >
64: R / 16 instructions share each fragment of B, and a lane holds R * W / 32
sums), steps through the rows' slots 16 at a
time (``step``: a multiple of 16, one instruction per 16), and writes the tile out once:

    for tile in [0, (size_i + R - 1) / R * tiles) @gpu_warp:
      let j_tile = tile / blocks;  let i_blk = tile - j_tile * blocks
      alloc acc: f32[R * W]
      for p_tile in [0, (S + 15) / 16):
        for i_in in [0, R) @mma_m:  for j_in in [0, W) @mma_n:
          for s in [0, 16) @mma_sparse_k:
            let k_in = s / 2 * 4 + (select(ok, off[p], s) & 3)
            acc[i_in * W + j_in] += select(ok && 0 <= off[p], A_vals[p], 0)
                                    * select(k < size_k && j < size_j, B_vals[k * size_j + j], 0)
      for i_in in [0, R) @mma_m:  for j_in in [0, W) @mma_n:
        if i < size_i && j < size_j:  C[i * size_j + j] = acc[i_in * W + j_in]

with ``blocks`` the row tiles (consecutive warps, a thread block's, take
consecutive row tiles of one column tile: they read the same slice of B, which
stays in cache), ``i = i_blk * R + i_in``, ``j = j_tile * W + j_in``, ``p = i * S +
p_tile * 16 + s``, ``k = p_tile * 32 + k_in`` and ``ok`` (``i < size_i && p_tile * 16
+ s < S``) keeping every load inside its array.  The index ``k_in`` is exactly what
the instruction does with the metadata: a padding slot (offset -1) reads the
group's fourth column (``-1 & 3``) with a value of 0, a slot past the row's end
its own place ``s & 3`` (two distinct places per group, as the instruction
wants).  Tiles inside the matrix (rows, columns and the 32 columns of k) run a
copy without the ``ok``, k and j guards: regular and residual parts.

The interpreter runs the tile loops in order: per output entry the same
products, in the same order, as the scalar loops (the guarded-out slots add
a product of zero), so the results agree bit for bit whenever B is finite
(a padding slot multiplies 0 by a B entry the scalar loops skip).  The CUDA
renderer spells the tile as ``mma.sp`` m16n8k32 instructions
(``_Body.mma_sparse_product``), the metadata built in the kernel from ``off``:
no array besides the format's own.

Applies where: the top loop is the independent loop over rows; below it lets,
one guard ``0 <= off[p]``, the slot loop and a loop from 0 over the dense
columns lead to one accumulating store of ``A_vals[p] * B[...]`` into the
output, 16-bit float values (float16 or bfloat16; float32 has no 2:4 sparse
instruction: sparse tf32 is 1:2), with ``k`` the nm(2,4) level's coordinate
(``(p - lo) / 2 * 4 + off[p]``, lo the slot loop's start) and the slot loop
running over ``(size_k + 3) / 4 * 2`` slots.  Anything else is returned unchanged.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, BinOp, Block, Buffer, Cast, Const, DType, Expr, For, GpuMapping,
                        GridMode, If, Kernel, Let, Load, LoopKind, ParamRole, Select, Store, Var,
                        add, and_, i64, lt, mul, sub)
from ..ir.traverse import rewrite
from .map_gpu import inline, var_names
from .tensorize import TILE_COLS, _all, _is_range, _tile_names, product_chain

I64 = DType.I64
F32 = DType.F32
ROWS = 32            # rows per warp tile unless the pass is told (a multiple of the
                     # instruction's 16: each B fragment serves ROWS / 16 instructions)
ACC_PER_LANE = 64    # ... while a lane holds at most this many sums (else 16 rows)
SLOTS = 16           # stored slots per instruction: 8 groups of 2, 32 columns of k;
STEP = SLOTS         # slots per step of the tile loop unless the pass is told
GROUP, KEPT = 4, 2   # 2:4


def tensorize_nm(kernel: Kernel, *, tile_cols: int | None = None,
                 rows: int | None = None, step: int | None = None) -> Kernel:
    """``kernel`` with its 2:4-sparse-times-dense product in sparse tensor-core
    tiles of ``rows`` rows (a multiple of 16; None: ``ROWS``, or 16 where that
    would hold more than ``ACC_PER_LANE`` accumulator entries per lane) and
    ``tile_cols`` output columns (a multiple of 8; None: ``TILE_COLS``), stepping
    through ``step`` slots at a time (a multiple of the instruction's 16; None:
    ``STEP``: more is more instructions' loads in flight per step).

    Requires: a verified kernel, not yet mapped to the GPU.  Ensures: where the
    module docstring's shape is found, a kernel mapped one warp per tile
    (``kernel.gpu``) whose interpreted results equal the input's (bit for bit
    for finite B); else ``kernel`` itself.
    """
    width = TILE_COLS if tile_cols is None else tile_cols
    if rows is None:
        rows = ROWS if ROWS * width // 32 <= ACC_PER_LANE else 16
    step = STEP if step is None else step
    if kernel.gpu is not None or width % 8 or rows % 16 or rows <= 0 or step % SLOTS \
            or step <= 0:
        return kernel
    found = _match(kernel)
    return kernel if found is None else _rebuild(kernel, found, width, rows, step)


class _Match:
    """What ``_match`` found: the top lets and loop over rows, the slot loop and
    its start ``lo`` (reading the row), the slots per row ``S`` and the
    dimension of k ``D`` (``S = (D + 3) / 4 * 2``), the coordinate's let var, the
    offsets buffer, the dense-column loop, the operand loads (A reading the
    slot, B reading k and the column) and the output store, lets inlined."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _slots_dim(e: Expr) -> Expr | None:
    """D when ``e`` is ``(D + 3) / 4 * 2`` (the nm(2,4) level's slots per row)."""
    if isinstance(e, BinOp) and e.op == "*" and e.rhs == i64(KEPT) \
            and isinstance(e.lhs, BinOp) and e.lhs.op == "/" and e.lhs.rhs == i64(GROUP) \
            and isinstance(e.lhs.lhs, BinOp) and e.lhs.lhs.op == "+" \
            and e.lhs.lhs.rhs == i64(GROUP - 1):
        return e.lhs.lhs.lhs
    return None


def _coordinate(value: Expr, slot: Var, lo: Expr):
    """The offsets buffer when ``value`` is ``(slot - lo) / 2 * 4 + off[slot]``
    (an nm(2,4) level's coordinate), else None."""
    if not (isinstance(value, BinOp) and value.op == "+" and isinstance(value.rhs, Load)
            and value.rhs.index == slot and value.rhs.buf.dtype is DType.I8):
        return None
    want = mul(BinOp("/", sub(slot, lo), i64(KEPT)), i64(GROUP))
    return value.rhs.buf if value.lhs == want else None


def _match(kernel: Kernel) -> _Match | None:
    found = product_chain(kernel)
    if found is None:
        return None
    prefix, outer, items, store, bufs = found
    loads = [store.value.lhs, store.value.rhs]
    if not all(isinstance(x, Load) and x.buf.name in bufs
               and bufs[x.buf.name].role is ParamRole.INPUT for x in loads) \
            or loads[0].buf.dtype is not loads[1].buf.dtype \
            or loads[0].buf.dtype not in (DType.F16, DType.BF16):
        return None
    lets = [x for kind, x in items if kind == "let"]
    names = [x.var.name for x in lets]
    if len(set(names)) != len(names):
        return None
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    loops = [x for kind, x in items if kind == "for"]
    cols = [f for f in loops if _is_range(f, sizes)]
    slots = [f for f in loops if f not in cols]
    if len(cols) != 1 or len(slots) != 1:
        return None
    n, p = cols[0], slots[0]
    env = {x.var.name: x.value for x in lets}
    lo, hi = inline(p.lo, env), inline(p.hi, env)
    if not (isinstance(hi, BinOp) and hi.op == "+" and hi.lhs == lo):
        return None
    per_row = hi.rhs
    dim = _slots_dim(per_row)
    i = outer.var.name
    if dim is None or var_names(per_row) & ({i, p.var.name, n.var.name} | env.keys()) \
            or n.var.name in var_names(lo) or p.var.name in var_names(lo):
        return None
    coords = [(x.var, _coordinate(inline(x.value, env), p.var, lo)) for x in lets
              if not isinstance(x.value, Var)]          # (an alias of k is inlined)
    coords = [(v, off) for v, off in coords if off is not None]
    if len(coords) != 1 or bufs.get(coords[0][1].name) is None \
            or bufs[coords[0][1].name].role is not ParamRole.INPUT:
        return None
    k, off = coords[0]
    del env[k.name]                      # k stays a variable: the tile's k_in gives it
    guards = [inline(c, env) for kind, c in items if kind == "if"]
    if guards != [BinOp("<=", i64(0), Load(off, p.var))]:
        return None
    x_at, y_at, out_at = (inline(e.index, env) for e in (loads[0], loads[1], store))
    x, y = loads
    if x_at != p.var:
        x, y, x_at, y_at = y, x, y_at, x_at
    if x_at != p.var or not {k.name, n.var.name} <= var_names(y_at) \
            or var_names(y_at) & {i, p.var.name} \
            or not {i, n.var.name} <= var_names(out_at) \
            or var_names(out_at) & {p.var.name, k.name}:
        return None
    return _Match(prefix=prefix, outer=outer, slot=p, lo=lo, per_row=per_row, dim=dim, k=k,
                  off=off, n=n, x=x, y=y, y_at=y_at, out=store, out_at=out_at)


def _rebuild(kernel: Kernel, f: _Match, width: int, rows: int, step: int) -> Kernel:
    names = _tile_names(kernel)
    i, j, p = f.outer.var, f.n.var, f.slot.var
    tile = names.fresh("tile", I64)
    i_blk = names.fresh(f"{i.name}_blk", I64)
    i_in = names.fresh(f"{i.name}_in", I64)
    j_tile = names.fresh(f"{j.name}_tile", I64)
    j_in = names.fresh(f"{j.name}_in", I64)
    p_tile = names.fresh(f"{p.name}_tile", I64)
    s = names.fresh(f"{p.name}_in", I64)
    k_in = names.fresh(f"{f.k.name}_in", I64)
    acc = Buffer(names.fresh("acc", F32).name, F32)
    tiles = BinOp("/", add(f.n.hi, i64(width - 1)), i64(width))
    row = add(mul(i_blk, i64(rows)), i_in)
    col = add(mul(j_tile, i64(width)), j_in)
    cols_k = step // KEPT * GROUP                      # columns of k per step
    slot_in_row = add(mul(p_tile, i64(step)), s)
    k = add(mul(p_tile, i64(cols_k)), k_in)

    def at(e: Expr) -> Expr:
        """``e`` with the scalar loops' row, column, slot and k in tile terms."""
        lo = rewrite(f.lo, lambda x: row if x == i else x)
        bound = {i.name: row, j.name: col, p.name: add(lo, slot_in_row), f.k.name: k}
        return rewrite(e, lambda x: bound[x.name] if isinstance(x, Var) and x.name in bound
                       else x)

    offset = Cast(Load(f.off, at(p)), I64)
    valid = BinOp("<=", i64(0), offset)
    in_rows = lt(row, f.outer.hi)
    in_slots = and_(in_rows, lt(slot_in_row, f.per_row))
    cols_guard = [] if isinstance(f.n.hi, Const) and f.n.hi.value % width == 0 \
        else [lt(col, f.n.hi)]
    acc_at = add(mul(i_in, i64(width)), j_in)

    def product(guarded: bool) -> For:
        place = Select(in_slots, offset, s) if guarded else offset
        k_let = Let(k_in, add(mul(BinOp("/", s, i64(KEPT)), i64(GROUP)),
                               BinOp("&", place, i64(GROUP - 1))))
        a = Select(and_(in_slots, valid) if guarded else valid, Load(f.x.buf, at(p)),
                   Const(0.0, F32))
        b = Load(f.y.buf, at(f.y_at))
        if guarded:
            b = Select(_all([lt(k, f.dim)] + cols_guard), b, Const(0.0, F32))
        store = Store(acc, acc_at, BinOp("*", a, b), accumulate=True)
        return For(i_in, i64(0), i64(rows), For(j_in, i64(0), i64(width), For(
            s, i64(0), i64(step), Block((k_let, store)), LoopKind.MMA_SPARSE_K),
            LoopKind.MMA_N), LoopKind.MMA_M)

    def write_out(guarded: bool) -> For:
        write = Store(f.out.buf, at(f.out_at), Load(acc, acc_at),
                      accumulate=kernel.adds_to_output)
        cond = _all([in_rows] + cols_guard) if guarded else None
        return For(i_in, i64(0), i64(rows), For(
            j_in, i64(0), i64(width), write if cond is None else If(cond, write),
            LoopKind.MMA_N), LoopKind.MMA_M)

    # regular and residual tiles: inside the matrix (rows, columns and the step's
    # columns of k) a tile runs without the guards
    inside = names.fresh("whole_tile", DType.BOOL)
    last_row = lt(add(mul(i_blk, i64(rows)), i64(rows - 1)), f.outer.hi)
    last_col = [lt(add(mul(j_tile, i64(width)), i64(width - 1)), f.n.hi)] if cols_guard else []
    whole_k = lt(add(mul(p_tile, i64(cols_k)), i64(cols_k - 1)), f.dim)
    steps = BinOp("/", add(f.per_row, i64(step - 1)), i64(step))
    blocks = BinOp("/", add(f.outer.hi, i64(rows - 1)), i64(rows))
    # consecutive tiles (a thread block's warps) take consecutive rows of one column
    # tile: they read the same slice of B, which stays in cache between them
    body = Block((Let(j_tile, BinOp("/", tile, blocks)),
                  Let(i_blk, sub(tile, mul(j_tile, blocks))),
                  Let(inside, _all([last_row] + last_col)),
                  Alloc(acc, rows * width),
                  For(p_tile, i64(0), steps,
                      If(and_(inside, whole_k), product(False), product(True))),
                  If(inside, write_out(False), write_out(True))))
    top = For(tile, i64(0), mul(blocks, tiles), body, LoopKind.GPU_WARP)
    return replace(kernel, body=Block((*f.prefix, top)), gpu=GpuMapping(GridMode.WARP),
                   outer_independent=tile.name)


__all__ = ["tensorize_nm"]
