"""Row workspaces as loop IR: a dense temporary over a sparse output's last
index (TACO's *precompute*; Kjolstad et al., "Tensor Algebra Compilation with
Workspaces", CGO 2019).

A sparse output is appended in storage order, so its last (compressed) index
must be bound by the loop right under its parents.  When that index is bound
under a reduction instead -- Gustavson's SpGEMM ``C[i,j] = A[i,k]*B[k,j]``
visits ``j`` under ``k`` -- each row is first scattered into a workspace over
the index and then gathered into the output:

* ``mark`` (int8): 1 where the current row has an entry;
* ``coords`` (index type): the row's coordinates, in the order first touched,
  ``count`` of them;
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
* otherwise heapsort (O(count log count), in place, no recursion).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .nodes import (Alloc, Assign, BinOp, Block, Buffer, Const, DType, Expr, For, If, Let, Load,
                    Stmt, Store, Var, While, add, and_, block, eq, i64, lt, mul, sub)

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
        """The workspace's arrays, zeroed, each of ``size`` elements."""
        return [Alloc(b, self.size) for b in self.buffers]

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
        q = self.fresh("ws_q")
        jq = self.fresh("ws_j")
        listed = For(q, i64(0), self.count, block(Let(jq, Load(self.coords, q)), visit(jq)))
        sort = If(BinOp("<=", self.count, i64(INSERTION_MAX)),
                  insertion_sort(self.coords, self.count, self.fresh),
                  heap_sort(self.coords, self.count, self.fresh))
        dense_enough = BinOp("<=", self.size, mul(self.count, i64(SCAN_RATIO)))
        return If(dense_enough, scan, block(sort, listed))


def insertion_sort(buf: Buffer, n: Expr, fresh) -> Stmt:
    """Sort ``buf[0, n)`` ascending, by insertion."""
    q, key, r = fresh("srt_q"), fresh("srt_key"), fresh("srt_r")
    before = Load(buf, sub(r, i64(1)))
    return For(q, i64(1), n, block(
        Let(key, Load(buf, q)),
        Let(r, q),
        While(and_(lt(i64(0), r), lt(key, before)),
              block(Store(buf, r, before), Assign(r, sub(r, i64(1))))),
        Store(buf, r, key)))


def _sift_down(buf: Buffer, root: Expr, end: Expr, fresh) -> Stmt:
    """Restore the max-heap property of ``buf[root, end)`` below ``root``."""
    r, c, top = fresh("srt_r"), fresh("srt_c"), fresh("srt_t")
    left = add(mul(r, i64(2)), i64(1))
    return block(
        Let(r, root),
        While(lt(left, end), block(
            Let(c, left),
            If(and_(lt(add(c, i64(1)), end), lt(Load(buf, c), Load(buf, add(c, i64(1))))),
               Assign(c, add(c, i64(1)))),
            If(lt(Load(buf, r), Load(buf, c)),
               block(Let(top, Load(buf, r)), Store(buf, r, Load(buf, c)), Store(buf, c, top),
                     Assign(r, c)),
               Assign(r, end)))))          # in place: stop (2 * end + 1 >= end)


def heap_sort(buf: Buffer, n: Expr, fresh) -> Stmt:
    """Sort ``buf[0, n)`` ascending, by heapsort."""
    t, u, top = fresh("srt_t"), fresh("srt_u"), fresh("srt_t")
    half = BinOp("/", n, i64(2))
    build = For(t, i64(0), half, _sift_down(buf, sub(sub(half, i64(1)), t), n, fresh))
    last = sub(sub(n, i64(1)), u)
    pop = For(u, i64(0), sub(n, i64(1)), block(
        Let(top, Load(buf, i64(0))), Store(buf, i64(0), Load(buf, last)), Store(buf, last, top),
        _sift_down(buf, i64(0), last, fresh)))
    return block(build, pop)


__all__ = ["INSERTION_MAX", "RowWorkspace", "SCAN_RATIO", "heap_sort", "insertion_sort"]
