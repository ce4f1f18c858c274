"""bitmap_workspaces: a row workspace's coordinates also kept as bits, and the
row gathered by walking the bits in order (CPU).

``RowWorkspace`` (``ir/workspace.py``) marks the coordinates a row touched in
a byte array over the index, and gathers the row in coordinate order by
scanning those bytes (rows denser than 1/32) or else by sorting the list of
coordinates it touched.  On the CPU the sort was most of SpGEMM's compute
kernel on sparse rows: 60% of its time on cora and 50% on pubmed A @ A (one
thread, this project's VM, 2026-11-29).  This pass adds a bitmap beside the
byte marks, 32 bits to a 64-bit word (so no word reaches the sign bit, and
``x & (x - 1)`` never overflows):

* scatter: a coordinate touched for the first time also sets its bit,
  ``bits[j / 32] += 1 << (j & 31)`` (the byte test stays: testing a bit in the
  loop over products was 2x slower on facebook A @ A), and where its word was
  still zero, the word's bit in a second level, ``words[j / 1024]``;
* gather: where the second level's words are at most ``WORD_SCAN_RATIO`` per
  coordinate the row touched, the second level in order, in each of its
  nonzero words the nonzero words of ``bits`` it marks, and in each of those
  its set bits from the lowest (``ctz``), each word cleared once read;
  otherwise the sort as before, each visited coordinate's words cleared too.
  The scan reads 1/8192 of the bytes the byte scan read, plus one word per
  word of the row's bits.  (With one level, scanning ``bits`` only where it
  had at most 8 words per coordinate, 80% of pubmed's rows and all of
  PROTEINS' were sorted.)

Every row still leaves the workspace zeroed (the claim ``Kernel.workspaces``
records): each set bit belongs to a coordinate of the row, whose word the
gather clears.  Kernels without a gather (SpGEMM's assemble kernel only
counts) are left as they are.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, Call, Contents, DType, For, If, Kernel,
                        Let, Load, Store, Var, While, add, block, i64, mul)
from ..ir.traverse import rewrite
from ..ir.workspace import is_gather, is_scatter
from .map_gpu import FreshNames

I64 = DType.I64
BITS = 32                 # bits used per 64-bit word
WORD_SCAN_RATIO = 8       # scan the bitmap where its second level has at most this many
                          # words per coordinate


def bitmap_workspaces(kernel: Kernel) -> Kernel:
    """A bitmap beside a row workspace's marks, the row gathered through it
    (see the module docstring).

    Requires: a verified kernel.  Ensures: a kernel whose top-level workspace
    allocations are not ``RowWorkspace``'s (marks, coordinates, sums), or
    whose row has no gather as ``RowWorkspace.gather_row`` writes it, is
    returned unchanged; otherwise the same output, with two more workspaces:
    i64 arrays of ``(size + 31) / 32`` and ``(size + 1023) / 1024`` words.
    """
    body = kernel.body.body if isinstance(kernel.body, Block) else (kernel.body,)
    allocs = [s for s in body if isinstance(s, Alloc) and s.buf.name in kernel.workspaces]
    if len(allocs) != 3 or [a.buf.name for a in allocs] != list(kernel.workspaces):
        return kernel
    mark = allocs[0].buf
    if mark.dtype is not DType.I8:
        return kernel
    size = allocs[0].size
    fresh = FreshNames(kernel)
    bits = Buffer(fresh.fresh(f"{mark.name}_bits", I64).name, I64)
    summary = Buffer(fresh.fresh(f"{mark.name}_words", I64).name, I64)
    words = BinOp("/", add(size, i64(BITS - 1)), i64(BITS))
    summary_words = BinOp("/", add(size, i64(BITS * BITS - 1)), i64(BITS * BITS))
    rewritten = _Rewrite(mark, bits, summary, size, summary_words,
                         lambda stem: fresh.fresh(stem, I64))
    new_body = []
    for s in body:
        new_body.append(rewritten.stmt(s))
        if s is allocs[0]:
            new_body.append(Alloc(bits, words, contents=Contents.CLEAN))
            new_body.append(Alloc(summary, summary_words, contents=Contents.CLEAN))
    if not rewritten.ok or rewritten.gathers != 1:
        return kernel
    names = list(kernel.workspaces)
    return replace(kernel, body=Block(tuple(new_body)),
                   workspaces=tuple(names[:1] + [bits.name, summary.name] + names[1:]))


class _Rewrite:
    """The statements of a row with ``bits`` kept beside ``mark``; ``ok`` turns
    False at a gather it cannot read (the caller then keeps the kernel as it is)."""

    def __init__(self, mark: Buffer, bits: Buffer, summary: Buffer, size, summary_words, names):
        self.mark, self.bits, self.summary, self.size = mark, bits, summary, size
        self.summary_words, self.names = summary_words, names
        self.count = None
        self.ok = True
        self.gathers = 0

    def word(self, j):
        return BinOp("/", j, i64(BITS))

    def bit(self, j):
        return BinOp("<<", i64(1), BinOp("&", j, i64(BITS - 1)))

    def stmt(self, s):
        if isinstance(s, Block):
            return Block(tuple(self.stmt(c) for c in s.body))
        if is_scatter(s, self.mark):
            return self.scatter(s)
        if isinstance(s, If) and is_gather(s, self.size, self.count):
            return self.gather(s)
        if isinstance(s, (For, While)):
            return replace(s, body=self.stmt(s.body))
        if isinstance(s, If):
            return replace(s, then=self.stmt(s.then),
                           otherwise=None if s.otherwise is None else self.stmt(s.otherwise))
        return s

    def scatter(self, s: If):
        """``if mark[j] == 0: mark[j] = 1; ...`` -> the same, setting j's bit too
        (and its word's bit in the second level, where the word was zero)."""
        j = s.cond.lhs.index
        self.count = s.then.body[-1].var
        w = self.word(j)
        held = Load(self.bits, w)
        first = If(BinOp("==", held, i64(0)),
                   Store(self.summary, self.word(w),
                         add(Load(self.summary, self.word(w)), self.bit(w))))
        return replace(s, then=block(first, Store(self.bits, w, add(held, self.bit(j))),
                                     *s.then.body))

    def gather(self, s: If):
        """``if size <= count * 32: <byte scan> else: <sort, listed>`` -> ``if
        words <= count * WORD_SCAN_RATIO: <word scan> else: <sort, listed>``."""
        scan = s.then
        if not (isinstance(scan, For) and isinstance(scan.body, If)
                and isinstance(scan.body.then, Block)):
            self.ok = False
            return s
        visit = scan.body.then.body
        self.gathers += 1
        u, y, w, x = (self.names(n) for n in ("ws_u", "ws_y", "ws_w", "ws_x"))
        j = scan.var

        def lowest_first(bits_left: Var, body) -> While:
            """``body`` for each set bit of ``bits_left``, lowest first."""
            return While(BinOp("!=", bits_left, i64(0)), block(
                *body, Assign(bits_left, BinOp("&", bits_left, BinOp("-", bits_left, i64(1))))))

        word_scan = For(u, i64(0), self.summary_words, block(
            Let(y, Load(self.summary, u)),
            If(BinOp("!=", y, i64(0)), block(
                Store(self.summary, u, i64(0)),
                lowest_first(y, (
                    Let(w, add(mul(u, i64(BITS)), Call("ctz", y))),
                    Let(x, Load(self.bits, w)),
                    Store(self.bits, w, i64(0)),
                    lowest_first(x, (Let(j, add(mul(w, i64(BITS)), Call("ctz", x))),
                                     *visit))))))))
        listed = self.listed(s.otherwise)
        return If(BinOp("<=", self.summary_words, mul(self.count, i64(WORD_SCAN_RATIO))),
                  word_scan, listed)

    def listed(self, s):
        """The sort branch with each ``mark[j] = 0`` followed by ``bits[j / 32] = 0``
        and ``words[j / 1024] = 0``."""
        def clear_word(n):
            if isinstance(n, Store) and n.buf == self.mark:
                return Block((n, Store(self.bits, self.word(n.index), i64(0)),
                              Store(self.summary, self.word(self.word(n.index)), i64(0))))
            return n
        return rewrite(s, clear_word)


__all__ = ["BITS", "WORD_SCAN_RATIO", "bitmap_workspaces"]
