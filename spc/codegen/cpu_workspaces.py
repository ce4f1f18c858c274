"""Workspace memory kept between kernel calls, written as LLVM IR and built once.

A row workspace (SpGEMM's marks, sums and coordinates, ``ir/workspace.py``) is
an array over a whole output index: ``size_j`` elements, zeroed, per chunk of
rows.  Allocating and zeroing it per chunk cost more than the rows themselves
where rows are short (luxembourg_osm A @ A, 114,599 columns, ~3 entries a row:
``calloc`` and its ``memset`` and page faults were ~40% of the call's time).
The IR says when memory may be handed on (``Alloc.contents``): a ``CLEAN``
array is left zeroed by its block, an ``UNDEFINED`` one never read before it
is written.  Kernels built for spc's own runtime (threading "pool") take such
workspaces from this cache and give them back at the end of their block:

* ``spc_ws_take(bytes, zeroed) -> i8*``: a kept buffer of at least ``bytes``
  (a zeroed one when ``zeroed`` is 1), else a new one from ``calloc`` /
  ``malloc``;
* ``spc_ws_give(ptr, clean)``: keep ``ptr`` (as zeroed when ``clean`` is 1), or
  free it when every slot is taken or keeping it would exceed ``MAX_KEPT``.

Each buffer carries its capacity in a ``HEADER``-byte prefix.  ``NSLOTS``
slots hold kept buffers; a slot's state word (empty, busy, zeroed, dirty)
is claimed by compare-and-swap, so threads and concurrent calls share the
cache without a lock.  A buffer given back ``clean`` is all zero: its taker
either got it zeroed (a zeroed slot or ``calloc``) and left the bytes it used
zero, or the bytes past its request were never touched.  Exported kernels
(threading "pthread") use ``calloc`` and ``free`` as before.
"""
from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

from llvmlite import ir

from .native_module import jit_native

I8, I32, I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
I8P = I8.as_pointer()
VOID = ir.VoidType()

TAKE, GIVE = "spc_ws_take", "spc_ws_give"
TAKE_FN = ir.FunctionType(I8P, [I64, I64])        # take(bytes, zeroed)
GIVE_FN = ir.FunctionType(VOID, [I8P, I64])       # give(ptr, clean)
NSLOTS = 64
HEADER = 64                  # bytes before each buffer: its capacity (keeps 16-byte alignment)
MAX_KEPT = 256 << 20         # bytes kept at most, all buffers together
EMPTY, BUSY, ZEROED, DIRTY = 0, 1, 2, 3
_SLOT = ir.LiteralStructType([I64, I64, I8P, ir.ArrayType(I64, 5)])   # state, cap, ptr; 64 bytes


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def emit_workspaces_module(triple: str = "", datalayout: str = "") -> str:
    """The cache's LLVM IR text.  Ensures: defines ``spc_ws_take``,
    ``spc_ws_give``, ``spc_ws_kept`` (bytes kept now) and ``spc_ws_release``
    (frees every kept buffer)."""
    m = ir.Module(name="spc_workspaces")
    m.triple = triple
    m.data_layout = datalayout
    slots = ir.GlobalVariable(m, ir.ArrayType(_SLOT, NSLOTS), "spc_ws_slots")
    slots.initializer = ir.Constant(slots.type.pointee, None)
    slots.align = 64
    kept = ir.GlobalVariable(m, I64, "spc_ws_kept_bytes")
    kept.initializer = c64(0)
    kept.align = 64
    calloc = ir.Function(m, ir.FunctionType(I8P, [I64, I64]), "calloc")
    malloc = ir.Function(m, ir.FunctionType(I8P, [I64]), "malloc")
    free = ir.Function(m, ir.FunctionType(VOID, [I8P]), "free")

    def field(b, k, which):
        return b.gep(slots, [c64(0), k, ir.Constant(I32, which)])

    def for_slots(b, body):
        """``body(b, k, next_block)`` for k in [0, NSLOTS); the builder ends after the loop."""
        fn = b.function
        head, step, done = (fn.append_basic_block(n) for n in ("slot.head", "slot.step",
                                                                 "slot.done"))
        k = b.alloca(I64)
        b.store(c64(0), k)
        b.branch(head)
        b.position_at_end(head)
        kv = b.load(k)
        inside = fn.append_basic_block("slot.body")
        b.cbranch(b.icmp_signed("<", kv, c64(NSLOTS)), inside, done)
        b.position_at_end(inside)
        body(b, kv, step)
        b.position_at_end(step)
        b.store(b.add(kv, c64(1)), k)
        b.branch(head)
        b.position_at_end(done)

    def claim(b, k, state):
        """Whether slot k moved from ``state`` to BUSY."""
        res = b.cmpxchg(field(b, k, 0), state, c64(BUSY), "acq_rel", "acquire")
        return b.extract_value(res, 1)

    # take(bytes, zeroed)
    take = ir.Function(m, TAKE_FN, TAKE)
    want, zeroed = take.args
    b = ir.IRBuilder(take.append_basic_block("entry"))

    def try_take(b, k, step):
        fn = b.function
        state = b.load_atomic(field(b, k, 0), "acquire", 8)
        usable = b.or_(b.icmp_signed("==", state, c64(ZEROED)),
                       b.and_(b.icmp_signed("==", state, c64(DIRTY)),
                              b.icmp_signed("==", zeroed, c64(0))))
        claimed = fn.append_basic_block("take.claimed")
        got = fn.append_basic_block("take.got")
        small = fn.append_basic_block("take.small")
        attempt = fn.append_basic_block("take.attempt")
        b.cbranch(usable, attempt, step)
        b.position_at_end(attempt)
        b.cbranch(claim(b, k, state), claimed, step)
        b.position_at_end(claimed)
        cap = b.load(field(b, k, 1))
        b.cbranch(b.icmp_signed(">=", cap, want), got, small)
        b.position_at_end(small)                  # too small for this call: keep it
        b.store_atomic(state, field(b, k, 0), "release", 8)
        b.branch(step)
        b.position_at_end(got)
        ptr = b.load(field(b, k, 2))
        b.atomic_rmw("sub", kept, cap, "monotonic")
        b.store_atomic(c64(EMPTY), field(b, k, 0), "release", 8)
        b.ret(ptr)

    for_slots(b, try_take)
    total = b.add(want, c64(HEADER))
    fn = b.function
    zero_blk, raw_blk, have = (fn.append_basic_block(n) for n in ("new.zero", "new.raw",
                                                                   "new.have"))
    b.cbranch(b.icmp_signed("!=", zeroed, c64(0)), zero_blk, raw_blk)
    b.position_at_end(zero_blk)
    z = b.call(calloc, [total, c64(1)])
    b.branch(have)
    b.position_at_end(raw_blk)
    r = b.call(malloc, [total])
    b.branch(have)
    b.position_at_end(have)
    base = b.phi(I8P)
    base.add_incoming(z, zero_blk)
    base.add_incoming(r, raw_blk)
    null = fn.append_basic_block("new.null")
    ok = fn.append_basic_block("new.ok")
    b.cbranch(b.icmp_unsigned("==", b.ptrtoint(base, I64), c64(0)), null, ok)
    b.position_at_end(null)
    b.ret(ir.Constant(I8P, None))
    b.position_at_end(ok)
    b.store(want, b.bitcast(base, I64.as_pointer()))
    b.ret(b.gep(base, [c64(HEADER)]))

    # give(ptr, clean)
    give = ir.Function(m, GIVE_FN, GIVE)
    ptr, clean = give.args
    b = ir.IRBuilder(give.append_basic_block("entry"))
    fn = give
    none = fn.append_basic_block("give.none")
    search = fn.append_basic_block("give.search")
    over = fn.append_basic_block("give.over")
    b.cbranch(b.icmp_unsigned("==", b.ptrtoint(ptr, I64), c64(0)), none, search)
    b.position_at_end(none)
    b.ret_void()
    b.position_at_end(search)
    base = b.gep(ptr, [c64(-HEADER)])
    cap = b.load(b.bitcast(base, I64.as_pointer()))
    before = b.atomic_rmw("add", kept, cap, "monotonic")
    fits = b.icmp_signed("<=", b.add(before, cap), c64(MAX_KEPT))
    look = fn.append_basic_block("give.look")
    b.cbranch(fits, look, over)
    b.position_at_end(look)
    state = b.select(b.icmp_signed("!=", clean, c64(0)), c64(ZEROED), c64(DIRTY))

    def try_give(b, k, step):
        fn = b.function
        free_slot = b.icmp_signed("==", b.load_atomic(field(b, k, 0), "monotonic", 8),
                                  c64(EMPTY))
        attempt = fn.append_basic_block("give.attempt")
        claimed = fn.append_basic_block("give.claimed")
        b.cbranch(free_slot, attempt, step)
        b.position_at_end(attempt)
        b.cbranch(claim(b, k, c64(EMPTY)), claimed, step)
        b.position_at_end(claimed)
        b.store(cap, field(b, k, 1))
        b.store(ptr, field(b, k, 2))
        b.store_atomic(state, field(b, k, 0), "release", 8)
        b.ret_void()

    for_slots(b, try_give)
    b.branch(over)
    b.position_at_end(over)                       # not kept: free it
    b.atomic_rmw("sub", kept, cap, "monotonic")
    b.call(free, [base])
    b.ret_void()

    # kept() -> bytes, release()
    f = ir.Function(m, ir.FunctionType(I64, []), "spc_ws_kept")
    b = ir.IRBuilder(f.append_basic_block("entry"))
    b.ret(b.load_atomic(kept, "monotonic", 8))
    f = ir.Function(m, ir.FunctionType(VOID, []), "spc_ws_release")
    b = ir.IRBuilder(f.append_basic_block("entry"))

    def release_one(b, k, step):
        fn = b.function
        for held in (ZEROED, DIRTY):
            nxt = fn.append_basic_block("release.next")
            claimed = fn.append_basic_block("release.claimed")
            b.cbranch(claim(b, k, c64(held)), claimed, nxt)
            b.position_at_end(claimed)
            b.atomic_rmw("sub", kept, b.load(field(b, k, 1)), "monotonic")
            b.call(free, [b.gep(b.load(field(b, k, 2)), [c64(-HEADER)])])
            b.store_atomic(c64(EMPTY), field(b, k, 0), "release", 8)
            b.branch(step)
            b.position_at_end(nxt)
        b.branch(step)

    for_slots(b, release_one)
    b.ret_void()
    return str(m)


class Workspaces:
    """The loaded cache: ctypes handles on its functions (tests and ``release``)."""

    def __init__(self, engine):
        self.engine = engine
        addr = engine.get_function_address
        self.take_address, self.give_address = addr(TAKE), addr(GIVE)
        self.take = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(
            self.take_address)
        self.give = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(self.give_address)
        self.kept = ctypes.CFUNCTYPE(ctypes.c_int64)(addr("spc_ws_kept"))
        self.release = ctypes.CFUNCTYPE(None)(addr("spc_ws_release"))


_LOCK = threading.Lock()
_KEEP: list = []


@lru_cache(maxsize=None)
def load_workspaces() -> Workspaces:
    """Build the cache for this process and register ``spc_ws_take`` and
    ``spc_ws_give`` as symbols kernels link against.  Ensures: its code and
    memory live as long as the process (kernels may run in any thread)."""
    import llvmlite.binding as llvm
    with _LOCK:
        cache = Workspaces(jit_native(emit_workspaces_module))
        llvm.add_symbol(TAKE, cache.take_address)
        llvm.add_symbol(GIVE, cache.give_address)
        _KEEP.append(cache)
    return cache


def release_workspaces() -> None:
    """Free every workspace kept between calls (they are kept up to ``MAX_KEPT``
    bytes; a later call allocates afresh)."""
    load_workspaces().release()
