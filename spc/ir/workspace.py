"""Row workspaces as loop IR: a dense temporary over a sparse output's last
index (TACO's *precompute*; Kjolstad et al., "Tensor Algebra Compilation with
Workspaces", CGO 2019).

A sparse output is appended in storage order, so its last (compressed) index
must be bound by the loop right under its parents.  When that index is bound
under a reduction instead -- Gustavson's SpGEMM ``C[i,j] = A[i,k]*B[k,j]``
visits ``j`` under ``k`` -- each row is first scattered into a workspace over
the index and then gathered into the output:

* ``mark`` (int8): 1 where the current row has an entry;
* ``coords`` (index type, twice the index's extent): the row's coordinates,
  in the order first touched, ``count`` of them (the second half is scratch
  for sorting them);
* ``vals`` (the sums' type; the compute kernel only): the row's sums.

The gather emits the row in coordinate order and resets every slot the row
touched, so each row starts from a zeroed workspace (the claim
``Kernel.workspaces`` records, which lets map_parallel give each chunk of
rows its own).  The order comes from one of three IR sorts, chosen per row
by a test in the IR:

* ``count * SCAN_RATIO >= size``: scan ``mark`` over the whole index (already
  in order; a sequential pass over ``size`` bytes costs less than sorting
  ``count`` coordinates with data-dependent branches);
* ``count <= INSERTION_MAX``: insertion sort (short rows: the fewest steps);
* otherwise a natural merge sort, whose passes merge the ascending runs the
  row was appended in (O(count log runs); see ``merge_sort``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .nodes import (Alloc, Assign, BinOp, Block, Buffer, Const, Contents, DType, Expr, For, If, Let, Load,
                    Select, Stmt, Store, Var, While, add, and_, block, eq, i64, lt, mul, sub)

SCAN_RATIO = 32
INSERTION_MAX = 16
I64 = DType.I64


@dataclass(frozen=True)
class RowWorkspace:
    """The IR names of one workspace and the statements that use it.

    ``size``: the extent of the index it spans (an expression of the kernel's
    sizes); ``count``: the number of coordinates the current row touched;
    ``fresh(stem)``: a new local variable named from ``stem``.
    """
    mark: Buffer
    coords: Buffer
    vals: Buffer | None
    size: Expr
    count: Var
    fresh: Callable[[str], Var]

    @property
    def buffers(self) -> tuple[Buffer, ...]:
        return tuple(b for b in (self.mark, self.coords, self.vals) if b is not None)

    def allocs(self) -> list[Stmt]:
        """The workspace's arrays: ``size`` elements each, twice that for
        ``coords`` (its second half is the merge sort's other buffer).  Marks and
        sums start zeroed and are left so (every row resets the slots it
        touched: ``Contents.CLEAN``); ``coords`` is written before it is read
        (``Contents.UNDEFINED``)."""
        return [Alloc(b, mul(self.size, i64(2)), contents=Contents.UNDEFINED)
                if b is self.coords else Alloc(b, self.size, contents=Contents.CLEAN)
                for b in self.buffers]

    def begin_row(self) -> Stmt:
        return Let(self.count, i64(0))

    def scatter(self, j: Expr, value: Expr | None) -> Stmt:
        """Add ``value`` (None: count only) at coordinate ``j`` of the row."""
        first = If(eq(Load(self.mark, j), i64(0)),
                   block(Store(self.mark, j, i64(1)),
                         Store(self.coords, self.count, j),
                         Assign(self.count, add(self.count, i64(1)))))
        if value is None:
            return first
        return block(first, Store(self.vals, j, value, accumulate=True))

    def end_counted_row(self, row_count: Callable[[Expr], Stmt]) -> Stmt:
        """``row_count(count)`` (the assemble kernel records the row's size),
        then clear the marks the row set."""
        q = self.fresh("ws_q")
        return block(row_count(self.count),
                     For(q, i64(0), self.count,
                         Store(self.mark, Load(self.coords, q), i64(0))))

    def gather_row(self, emit: Callable[[Var, Var], Stmt]) -> Stmt:
        """``emit(j, v)`` for each coordinate ``j`` of the row in increasing order,
        with ``v`` its sum, each slot reset after it is emitted."""
        def visit(j: Var) -> Stmt:
            v = self.fresh("ws_v")
            v = Var(v.name, self.vals.dtype.widened)
            return block(Let(v, Load(self.vals, j)), emit(j, v),
                         Store(self.vals, j, Const(0.0, v.dtype)), Store(self.mark, j, i64(0)))

        jj = self.fresh("ws_j")
        scan = For(jj, i64(0), self.size, If(BinOp("!=", Load(self.mark, jj), i64(0)), visit(jj)))
        q, jq, off = self.fresh("ws_q"), self.fresh("ws_j"), self.fresh("ws_off")
        listed = For(q, i64(0), self.count,
                     block(Let(jq, Load(self.coords, add(off, q))), visit(jq)))
        sort = If(BinOp("<=", self.count, i64(INSERTION_MAX)),
                  insertion_sort(self.coords, self.count, self.fresh),
                  merge_sort(self.coords, self.count, self.size, off, self.fresh))
        dense_enough = BinOp("<=", self.size, mul(self.count, i64(SCAN_RATIO)))
        return If(dense_enough, scan, block(Let(off, i64(0)), sort, listed))


# -- the shapes RowWorkspace writes, for the passes that rewrite them -------------------
def is_scatter(s, mark: Buffer) -> bool:
    """Whether ``s`` is ``scatter``'s first statement: ``if mark[j] == 0:
    mark[j] = 1; coords[n] = j; n = n + 1``."""
    return isinstance(s, If) and isinstance(s.cond, BinOp) and s.cond.op == "==" \
        and isinstance(s.cond.lhs, Load) and s.cond.lhs.buf == mark \
        and isinstance(s.then, Block) and isinstance(s.then.body[-1], Assign)


def is_mark_reset(s, mark: Buffer) -> bool:
    """Whether ``s`` is ``end_counted_row``'s loop ``for q: mark[coords[q]] = 0``."""
    return isinstance(s, For) and isinstance(s.body, Store) and s.body.buf == mark


def is_gather(s, size: Expr, count: Var | None) -> bool:
    """Whether ``s`` is ``gather_row``'s ``if size <= count * SCAN_RATIO: scan
    else: sort``."""
    from .traverse import walk
    return isinstance(s, If) and isinstance(s.cond, BinOp) and s.cond.op == "<=" \
        and s.cond.lhs == size and count is not None and count in walk(s.cond.rhs)


def insertion_sort(buf: Buffer, n: Expr, fresh, start: Expr | None = None,
                   carry: tuple[Buffer, ...] = ()) -> Stmt:
    """Sort ``buf[0, n)`` ascending, by insertion; with ``start``, the entries
    ``buf[start, start + n)``; each buffer of ``carry`` has its entries moved
    as ``buf``'s are (the values of sorted keys)."""
    q, key, r = fresh("srt_q"), fresh("srt_key"), fresh("srt_r")
    held = [Var(fresh("srt_held").name, c.dtype.widened) for c in carry]

    def at(k: Expr) -> Expr:
        return k if start is None else add(start, k)
    before = Load(buf, at(sub(r, i64(1))))
    return For(q, i64(1), n, block(
        Let(key, Load(buf, at(q))),
        *(Let(h, Load(c, at(q))) for h, c in zip(held, carry)),
        Let(r, q),
        While(and_(lt(i64(0), r), lt(key, before)),
              block(Store(buf, at(r), before),
                    *(Store(c, at(r), Load(c, at(sub(r, i64(1))))) for c in carry),
                    Assign(r, sub(r, i64(1))))),
        Store(buf, at(r), key),
        *(Store(c, at(r), h) for h, c in zip(held, carry))))


def merge_runs(buf: Buffer, carry: tuple[Buffer, ...], src: Expr, dst: Expr, lo: Expr,
               mid: Expr, hi: Expr, names: tuple[Var, ...]) -> tuple[Stmt, ...]:
    """Statements merging the ascending runs ``buf[src + lo, src + mid)`` and
    ``buf[src + mid, src + hi)`` into ``buf[dst + lo, dst + hi)``, ``carry``'s
    entries moved alike; ``names``: fresh (a, b, o, x, y, from_b), the last
    boolean.  Branch-free: each step selects the smaller head."""
    a, b, o, x, y, from_b = names

    def at(off: Expr, k: Expr) -> Load:
        return Load(buf, add(off, k))

    def take(k: Var) -> Stmt:            # dst[o++] = src[k++]
        return block(Store(buf, add(dst, o), at(src, k)),
                     *(Store(c, add(dst, o), Load(c, add(src, k))) for c in carry),
                     Assign(k, add(k, i64(1))), Assign(o, add(o, i64(1))))
    return (
        Let(a, lo), Let(b, mid), Let(o, lo),
        While(and_(lt(a, mid), lt(b, hi)), block(
            Let(x, at(src, a)), Let(y, at(src, b)), Let(from_b, lt(y, x)),
            Store(buf, add(dst, o), Select(from_b, y, x)),
            *(Store(c, add(dst, o), Select(from_b, Load(c, add(src, b)), Load(c, add(src, a))))
              for c in carry),
            Assign(a, add(a, Select(from_b, i64(0), i64(1)))),
            Assign(b, add(b, Select(from_b, i64(1), i64(0)))),
            Assign(o, add(o, i64(1))))),
        While(lt(a, mid), take(a)),
        While(lt(b, hi), take(b)))


def merge_sort(buf: Buffer, n: Expr, half: Expr, result: Var, fresh,
               start: Expr | None = None, carry: tuple[Buffer, ...] = ()) -> Stmt:
    """Sort ``buf[0, n)`` ascending by a bottom-up *natural* merge sort, with
    ``buf[half, half + n)`` as the other buffer; ``result`` is assigned the
    offset (0 or ``half``) where the sorted entries end up.  With ``start``,
    the entries are ``buf[start, start + n)``, the other buffer
    ``buf[start + half, start + half + n)`` and ``result`` is ``start`` or
    ``start + half``; each buffer of ``carry`` has its entries moved as
    ``buf``'s are (the values of sorted keys), through the same offsets.

    Each pass merges neighbouring ascending runs, so a row gathered from r
    sorted rows of an operand (Gustavson's rows are unions of B's sorted rows,
    each appending its new coordinates in order) takes ceil(log2 r) passes
    instead of log2 n.
    """
    src, dst, runs, swap = fresh("srt_src"), fresh("srt_dst"), fresh("srt_runs"), fresh("srt_t")
    p, mid, hi = fresh("srt_p"), fresh("srt_mid"), fresh("srt_hi")
    a, b, o = fresh("srt_a"), fresh("srt_b"), fresh("srt_o")
    x, y = fresh("srt_x"), fresh("srt_y")
    from_b = Var(fresh("srt_fromb").name, DType.BOOL)

    def at(off: Expr, k: Expr) -> Load:
        return Load(buf, add(off, k))

    def ascending(k: Var) -> Expr:       # k < n and buf[k - 1] < buf[k] (in src)
        return and_(lt(k, n), lt(at(src, sub(k, i64(1))), at(src, k)))

    one_pass = block(
        Assign(runs, i64(0)),
        Let(p, i64(0)),
        While(lt(p, n), block(
            Let(mid, add(p, i64(1))),
            While(ascending(mid), Assign(mid, add(mid, i64(1)))),
            Let(hi, mid),
            If(lt(hi, n), block(Assign(hi, add(hi, i64(1))),
                                While(ascending(hi), Assign(hi, add(hi, i64(1)))))),
            *merge_runs(buf, carry, src, dst, p, mid, hi, (a, b, o, x, y, from_b)),
            Assign(runs, add(runs, i64(1))),
            Assign(p, hi))),
        Let(swap, src), Assign(src, dst), Assign(dst, swap))
    return block(Let(src, i64(0) if start is None else start),
                 Let(dst, half if start is None else add(start, half)), Let(runs, i64(2)),
                 While(lt(i64(1), runs), one_pass),
                 Assign(result, src))


__all__ = ["INSERTION_MAX", "RowWorkspace", "SCAN_RATIO", "insertion_sort", "is_gather",
           "is_mark_reset", "is_scatter", "merge_sort"]
