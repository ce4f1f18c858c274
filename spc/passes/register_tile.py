"""register_tile: keep a tile of a dense output row in registers across a reduction.

SpMM's loop nest ``for i: for p in row i: k = crd[p]; for j: C[i,j] += A[p]*B[k,j]``
reads and writes the C row once per nonzero.  This pass rewrites the reduction
loop (the ``p`` loop) into tiles of ``width`` columns:

    for t in [0, (N - lo) / width):
      j0 = lo + t * width
      alloc acc[width]                       # zeroed; promoted to registers
      for p in row i: k = crd[p]; for jj in [0, width): acc[jj] += A[p]*B[k, j0+jj]
      for jj in [0, width): C[i, j0+jj] += acc[jj]
    for p in row i: ...; for j in [lo + tiles*width, N): (the original loop, remainder)

Applied with decreasing widths (256, 128, ..., 8, 4, 2, 1 in float32 with
AVX-512) no remainder is left: each narrow tile walks the row once more, which
costs less than the remainder loop's load and store of C per stored entry
(on this 2-core machine, a 1536 x 384 matrix at 50%, one thread: 9, 12 and 17
columns 1,064-1,198 us -> 402-411 us, one column 850 -> 207 us; 16 columns
223 us either way).  A single 8-lane tail tile with its spare lanes masked
walks the row once but does not vectorize (about 530 us a walk against 200).
``register_tiles`` reads the widths back from the IR (the ``<var><width>_acc``
arrays).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, DType, For, If, Kernel, Let,
                        Load, ParamRole, Store, Var, While, add, dtype_of, i64, mul)
from ..ir.traverse import rewrite, walk

I64 = DType.I64


def _substitute(e, env: dict):
    """``e`` with Let-defined variables in ``env`` replaced by their definitions."""
    return rewrite(e, lambda n: env[n.name] if isinstance(n, Var) and n.name in env else n)


def _uses(e, names: set[str]) -> bool:
    return any(isinstance(n, Var) and n.name in names for n in walk(e))


def _defined_in(s) -> set[str]:
    out = set()
    for n in walk(s):
        if isinstance(n, (Let, Assign)):
            out.add(n.var.name)
        elif isinstance(n, For):
            out.add(n.var.name)
    return out


def _match_row_loop(loop: For, sizes: set[str]):
    """If ``loop`` is ``for j in [lo, hi): lets; C[base + j] += v`` (``hi`` a size,
    or a panel's end, ``passes/tile.py``) return (lets, store, base) with ``base``
    free of ``j``; else None."""
    if not (isinstance(loop.hi, Var) and (loop.hi.name in sizes
                                          or loop.hi.name == f"{loop.var.name}_tile_hi")):
        return None
    body = loop.body.body if isinstance(loop.body, Block) else (loop.body,)
    if not body or not isinstance(body[-1], Store) or not body[-1].accumulate:
        return None
    lets, store = body[:-1], body[-1]
    if not all(isinstance(s, Let) for s in lets):
        return None
    env: dict = {}
    for s in lets:
        env[s.var.name] = _substitute(s.value, env)
    index = _substitute(store.index, env)
    j = loop.var.name
    if not (isinstance(index, BinOp) and index.op == "+" and isinstance(index.rhs, Var)
            and index.rhs.name == j and not _uses(index.lhs, {j})):
        return None
    if any(isinstance(n, Load) and n.buf.name == store.buf.name for n in walk(store.value)):
        return None
    return lets, store, index.lhs


def _last_loop(stmt, wanted=None):
    """``stmt`` if it is a loop (that ``wanted`` accepts, when given), or such a
    loop that ends the body of a guard ``if c: lets; loop`` (padding and
    block-bound guards) or, with ``wanted``, of a loop ``for x: lets; loop``
    (a blocked reduction), recursively.  Returns (loop, rebuild) where
    ``rebuild(new)`` puts ``new`` in its place, or None."""
    if isinstance(stmt, For) and (wanted is None or wanted(stmt)):
        return stmt, lambda new: new
    if isinstance(stmt, For) and wanted is not None:
        field = "body"                 # a blocked reduction's outer loop
    elif isinstance(stmt, If) and stmt.otherwise is None:
        field = "then"                 # a guard
    else:
        return None
    part = getattr(stmt, field)
    inner = part.body if isinstance(part, Block) else (part,)
    if not inner or not all(isinstance(x, Let) for x in inner[:-1]):
        return None
    found = _last_loop(inner[-1], wanted)
    if found is None:
        return None
    loop, rebuild = found
    return loop, lambda new: replace(stmt, **{field: Block(tuple(inner[:-1]) + (rebuild(new),))})


def _find_candidate(red: For | While, sizes: set[str]):
    """The single row loop inside reduction loop ``red`` that can be tiled."""
    body = red.body.body if isinstance(red.body, Block) else (red.body,)
    if not body:
        return None
    found = _last_loop(body[-1], lambda loop: _match_row_loop(loop, sizes) is not None)
    if found is None:
        return None
    row, rebuild = found
    m = _match_row_loop(row, sizes)
    if m is None:
        return None
    lets, store, base = m
    inside = _defined_in(red) | ({red.var.name} if isinstance(red, For) else set())
    if _uses(base, inside) or _uses(row.lo, inside) or _uses(row.hi, inside):
        return None
    # the reduction loop may have no other effect than the row loop's store
    for n in walk(Block(body[:-1])):
        if isinstance(n, (Store, Alloc, While)) or (isinstance(n, Assign)):
            return None
        if isinstance(n, Load) and n.buf.name == store.buf.name:
            return None
    for n in walk(row.body):
        if isinstance(n, (Assign, For, While, If)):
            return None
    return row, lets, store, base, rebuild


def _tile(red: For, row: For, lets, store: Store, base, width: int, dtype: DType,
          rebuild=lambda new: new) -> Block:
    tag = f"{row.var.name}{width}"
    ntile, tend = Var(f"{tag}_tiles", I64), Var(f"{tag}_end", I64)
    t, j0, jj = Var(f"{tag}_t", I64), Var(f"{tag}_0", I64), Var(f"{tag}_jj", I64)
    acc = Buffer(f"{tag}_acc", dtype)
    span = BinOp("-", row.hi, row.lo)
    inner = For(jj, i64(0), i64(width), Block(
        (Let(row.var, add(j0, jj)),) + tuple(lets) + (Store(acc, jj, store.value, accumulate=True),)))
    red_body = red.body.body if isinstance(red.body, Block) else (red.body,)
    tiled_red = replace(red, body=Block(tuple(red_body[:-1]) + (rebuild(inner),)))
    jj2 = Var(f"{tag}_kk", I64)
    write_back = For(jj2, i64(0), i64(width),
                     Store(store.buf, add(base, add(j0, jj2)), Load(acc, jj2), accumulate=True,
                           atomic=store.atomic))
    tiles = For(t, i64(0), ntile, Block((Let(j0, add(row.lo, mul(t, i64(width)))),
                                          Alloc(acc, width), tiled_red, write_back)))
    if width == 1:                    # one-column tiles leave no remainder to walk
        return Block((Let(ntile, span), tiles))
    rest_row = replace(row, lo=tend)
    rest = replace(red, body=Block(tuple(red_body[:-1]) + (rebuild(rest_row),)))
    return Block((Let(ntile, BinOp("/", span, i64(width))),
                  Let(tend, add(row.lo, mul(ntile, i64(width)))),
                  tiles, rest))


def register_tile(kernel: Kernel, *, width: int) -> Kernel:
    """Tile every matching reduction loop by ``width`` output columns.

    Requires: a verified kernel.  Ensures: the same results up to float
    reassociation within each output entry; loops that do not match exactly
    (see the module docstring) are left alone.
    """
    sizes = {p.name for p in kernel.params if p.role is ParamRole.SIZE}
    from .tile import tiles
    panels = tiles(kernel)

    def fits(row: For) -> bool:
        """False for a tile wider than the panel ``row`` runs over (it would never run)."""
        in_panel = isinstance(row.hi, Var) and row.hi.name == f"{row.var.name}_tile_hi"
        return not in_panel or panels.get(row.var.name, width) >= width

    def top_down(node):
        # the outermost matching reduction loop (a blocked reduction's block
        # loop rather than its in-block loop), so each tile sums the whole row
        if isinstance(node, For):
            found = _find_candidate(node, sizes)
            if found is not None:
                row, lets, store, base, rebuild = found
                if not fits(row):
                    return node
                if store.buf.dtype.is_float:
                    return _tile(node, row, lets, store, base, width, dtype_of(store.value),
                                 rebuild)
            return replace(node, body=top_down(node.body))
        if isinstance(node, Block):
            return Block(tuple(top_down(c) for c in node.body))
        if isinstance(node, While):
            return replace(node, body=top_down(node.body))
        if isinstance(node, If):
            return replace(node, then=top_down(node.then),
                           otherwise=None if node.otherwise is None else top_down(node.otherwise))
        return node

    return replace(kernel, body=top_down(kernel.body))


ACCUMULATOR_BYTES = 256    # accumulators kept in registers by default: 8 AVX2 registers


def tile_widths(dtype: DType, widest: int | None = None,
                accumulator_bytes: int = ACCUMULATOR_BYTES) -> tuple[int, ...]:
    """The widths register_tile is applied with, widest first, each half the
    last: from ``widest`` columns (None: ``accumulator_bytes`` of ``dtype``)
    down to one column, so that every column sums in registers."""
    size = 8 if dtype is DType.F64 else 4
    w = widest if widest is not None else accumulator_bytes // size
    out = []
    while w >= 1:
        out.append(w)
        w //= 2
    return tuple(out)


def tile_rows_for_registers(kernel: Kernel, *, widest: int | None = None,
                            accumulator_bytes: int = ACCUMULATOR_BYTES) -> Kernel:
    """register_tile with the ``tile_widths`` of the kernel's value type: the
    accumulators of the widest tile fill ``accumulator_bytes`` of registers
    (or ``widest`` columns), and the narrowest is one column: no remainder."""
    sums = [dtype_of(n.value) for n in walk(kernel.body)       # what accumulators hold
            if isinstance(n, Store) and n.buf.dtype.is_float]
    for w in tile_widths(sums[0] if sums else DType.F32, widest, accumulator_bytes):
        kernel = register_tile(kernel, width=w)
    return kernel


def register_tiles(kernel: Kernel) -> tuple[int, ...]:
    """The widths of the register tiles in ``kernel`` (the ``<var><width>_acc``
    arrays register_tile allocates), widest first; () when it has none."""
    widths = {n.size for n in walk(kernel.body)
              if isinstance(n, Alloc) and n.buf.name.endswith(f"{n.size}_acc")}
    return tuple(sorted(widths, reverse=True))
