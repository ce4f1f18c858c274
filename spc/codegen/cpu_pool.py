"""spc's CPU thread pool, written as LLVM IR and built once per process.

Kernels run their parallel loop through ``spc_pool_parallel(fn, ctx, lo, hi,
nthreads)``, which calls ``fn(ctx, first, last)`` on chunks of ``[lo, hi)``.
No C compiler is involved: the pool is emitted here with llvmlite, JIT-built
like a kernel, and its entry registered as a symbol the kernels link against.

Why not libgomp: ``GOMP_parallel`` ends with a barrier that waits for every
team thread, even one the OS has not scheduled yet; on a busy machine a call
of 50 us then takes a whole time slice (4-8 ms).  This pool never waits for a
thread that has not started work:

* a job lives in one of ``NSLOTS`` static slots (never freed).  Its *claim
  word* packs a generation (bits 32-63), free seats for workers (bits 24-31)
  and the chunks still unclaimed (bits 0-23).  Everyone takes chunks by a
  compare-and-swap on that word, so a claim succeeds only while the job is
  live and of the generation the claimer saw; a late worker reads only the
  static word and finds no work.  Job fields (fn, ctx, bounds) are read only
  after a successful claim, when the caller cannot have returned;
* the caller takes chunks itself until none is left, then waits only for
  chunks that workers actually claimed (a ``done`` count reaching the number
  of chunks): it spins briefly, then sleeps on the slot's ``wake`` futex, which
  a worker finishing a chunk bumps when the caller says it sleeps, so a
  worker the OS preempted mid-chunk can have the caller's core;
* idle workers spin briefly (``spc_pool_set_spin``) watching an epoch word,
  then sleep on it with a futex; a caller bumps the epoch and wakes up to
  ``nthreads - 1`` sleepers.  A worker spins only while the machine has a core
  to spare: it reads the runnable-thread count (``/proc/loadavg``, see
  ``watch_load``) when it starts spinning and every ``PROBE_EVERY`` pauses,
  and sleeps at once when more threads are runnable than there are cores.
  Measured on the 2-core machine with one busy process: a worker spinning
  there kept its core while the caller queued behind the busy process on the
  other, and the caller stalled for the worker's whole spin (~0.5 ms, about
  2% of 20 us calls); with the probe the p99 of those calls fell to ~45 us.

* a caller looks at the same count every ``CROWD_EVERY`` parallel calls and,
  while more threads are runnable than there are cores, runs its calls alone,
  waking no one.  Measured on the 2-core machine with a load average of 5
  (other jobs), SpMV of 52,428 to 176,468 entries took 6-9 us longer on two
  threads than on one (26.2 against 18.9 us p50 at 52,428), the worker joining
  late and the caller waiting for its chunk.  One busy process beside the
  caller (the issue 8 loaded run) is not crowded: two runnable on two cores.

Every chunk is run exactly once by someone, so results never depend on how
many workers joined (none, after a fork or when no slot is free).
"""
from __future__ import annotations

import ctypes
import os
import platform
import threading
from functools import lru_cache

from llvmlite import ir

from .native_module import jit_native

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
I8P = I8.as_pointer()
VOID = ir.VoidType()

NSLOTS = 16            # jobs in flight at once (calls from several Python threads)
MAX_WORKERS = 255      # seats are 8 bits of the claim word
MAX_CHUNKS = (1 << 24) - 1
CHUNKS_PER_THREAD = 16  # many more chunks than threads balance skewed rows
DEFAULT_SPIN = 20_000  # pause instructions a worker spins before it sleeps (~50-100 us)
WAIT_SPIN = 2_000      # pauses a caller spins for claimed chunks before it sleeps
PROBE_EVERY = 1_024    # spinning pauses between two looks at the machine's load (~25 us)
CROWD_EVERY = 64       # parallel calls between two looks at the machine's load by callers

# futex(2) system call numbers by machine; the pool needs one of them
_FUTEX_NR = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129

ENTRY = "spc_pool_parallel"
CHUNK_FN = ir.FunctionType(VOID, [I8P, I64, I64])       # fn(ctx, first, last)
ENTRY_FN = ir.FunctionType(VOID, [CHUNK_FN.as_pointer(), I8P, I64, I64, I64])

# slot fields, in order; the struct is padded to 128 bytes (two cache lines)
_FIELDS = ("word", "done", "fn", "ctx", "lo", "hi", "chunk", "nchunks", "owner", "asleep",
           "wake")
_SLOT = ir.LiteralStructType([I64, I64, CHUNK_FN.as_pointer(), I8P, I64, I64, I64, I64, I64,
                              I32, I32, ir.ArrayType(I64, 6)])
SEAT = 1 << 24
REM_MASK = SEAT - 1


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def c32(v: int) -> ir.Constant:
    return ir.Constant(I32, v)


class _Emitter:
    """Emits the pool's functions into one module (globals, helpers, entry)."""

    def __init__(self, m: ir.Module, futex_nr: int | None, x86: bool):
        self.m = m
        self.futex_nr = futex_nr
        self.slots = self._global("spc_pool_slots", ir.ArrayType(_SLOT, NSLOTS), align=128)
        self.epoch = self._global("spc_pool_epoch", I32, align=64)
        self.sleepers = self._global("spc_pool_sleepers", I32, align=64)
        self.nworkers = self._global("spc_pool_nworkers", I64, align=64)
        self.growing = self._global("spc_pool_growing", I32)
        self.spin = self._global("spc_pool_spin", I64, init=DEFAULT_SPIN)
        self.cap = self._global("spc_pool_cap", I64, init=MAX_WORKERS + 1)
        self.worker_chunks = self._global("spc_pool_chunks_by_workers", I64, align=64)
        self.probe_fd = self._global("spc_pool_probe_fd", I32, init=-1)
        self.ncpus = self._global("spc_pool_ncpus", I64)
        self.naps = self._global("spc_pool_nap_count", I64, align=64)
        self.calls = self._global("spc_pool_calls", I64, align=64)
        self.alone = self._global("spc_pool_alone", I32, align=64)
        self.alone_calls = self._global("spc_pool_alone_count", I64, align=64)
        self.pread = ir.Function(m, ir.FunctionType(I64, [I32, I8P, I64, I64]), "pread")
        self.syscall = ir.Function(m, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
        self.sched_yield = ir.Function(m, ir.FunctionType(I32, []), "sched_yield")
        self.worker_main = ir.Function(m, ir.FunctionType(I8P, [I8P]), "spc_pool_worker")
        self.worker_main.linkage = "internal"
        self.pthread_create = ir.Function(
            m, ir.FunctionType(I32, [I64.as_pointer(), I8P, self.worker_main.type, I8P]),
            "pthread_create")
        self.pthread_detach = ir.Function(m, ir.FunctionType(I32, [I64]), "pthread_detach")
        self.pause = (ir.Function(m, ir.FunctionType(VOID, []), "llvm.x86.sse2.pause")
                      if x86 else None)

    def _global(self, name, ty, init=0, align=8):
        g = ir.GlobalVariable(self.m, ty, name)
        g.initializer = ir.Constant(ty, None) if not isinstance(ty, ir.IntType) \
            else ir.Constant(ty, init)
        g.align = align
        return g

    # -- small helpers ----------------------------------------------------------
    def field(self, b, slot, name):
        return b.gep(slot, [c32(0), c32(_FIELDS.index(name))])

    def relax(self, b):
        """One spin-wait step (the x86 pause instruction, else a compiler fence)."""
        if self.pause is not None:
            b.call(self.pause, [])
        else:
            b.fence("seq_cst", "singlethread")

    def load(self, b, ptr, order="acquire"):
        return b.load_atomic(ptr, order, ptr.type.pointee.width // 8)

    def cas(self, b, ptr, old, new):
        """(success flag) of compare-and-swap *ptr: old -> new (acquire-release)."""
        res = b.cmpxchg(ptr, old, new, "acq_rel", "acquire")
        return b.extract_value(res, 1)

    def loop(self, b, name, exits: bool = True):
        """(head, exit) blocks (exit None unless ``exits``); the builder is
        positioned in head."""
        fn = b.function
        head = fn.append_basic_block(f"{name}.head")
        exit_ = fn.append_basic_block(f"{name}.exit") if exits else None
        b.branch(head)
        b.position_at_end(head)
        return head, exit_

    # -- the pieces ---------------------------------------------------------------
    def run_claimed(self, b, slot, w):
        """Run the chunk the successful claim of word ``w`` took; return nothing."""
        rem = b.and_(w, c64(REM_MASK))
        nchunks = b.load(self.field(b, slot, "nchunks"))
        idx = b.sub(nchunks, rem)
        lo = b.load(self.field(b, slot, "lo"))
        hi = b.load(self.field(b, slot, "hi"))
        chunk = b.load(self.field(b, slot, "chunk"))
        first = b.add(lo, b.mul(idx, chunk))
        last = b.add(first, chunk)
        last = b.select(b.icmp_signed("<", last, hi), last, hi)
        fn = b.load(self.field(b, slot, "fn"))
        ctx = b.load(self.field(b, slot, "ctx"))
        b.call(fn, [ctx, first, last])

    def claim_loop(self, b, slot, gen, on_chunk):
        """Claim chunks of ``slot`` while its generation is ``gen`` and chunks
        remain, running each and then calling ``on_chunk(b)``."""
        head, exit_ = self.loop(b, "claim")
        fn = b.function
        w = self.load(b, self.field(b, slot, "word"))
        live = b.and_(b.icmp_unsigned("==", b.lshr(w, c64(32)), gen),
                      b.icmp_unsigned("!=", b.and_(w, c64(REM_MASK)), c64(0)))
        try_ = fn.append_basic_block("claim.try")
        b.cbranch(live, try_, exit_)
        b.position_at_end(try_)
        won = fn.append_basic_block("claim.won")
        b.cbranch(self.cas(b, self.field(b, slot, "word"), w, b.sub(w, c64(1))), won, head)
        b.position_at_end(won)
        self.run_claimed(b, slot, w)
        on_chunk(b)
        b.branch(head)
        b.position_at_end(exit_)

    def futex(self, b, op, val, word=None):
        """futex(word, op, val) on ``word`` (default: the epoch); without a
        futex, a wait yields instead."""
        if self.futex_nr is None:
            if op == _FUTEX_WAIT_PRIVATE:
                b.call(self.sched_yield, [])
            return
        b.call(self.syscall, [c64(self.futex_nr), self.epoch if word is None else word,
                              c64(op), val, ir.Constant(I8P, None)])

    # -- functions -----------------------------------------------------------------
    def emit_crowded(self):
        """``spc_pool_crowded()``: whether more threads are runnable on the machine
        than it has cores, read from the probe file (``/proc/loadavg``, whose
        fourth field is "runnable/total"); false without a probe.  A worker that
        spins on a crowded machine keeps a core from a thread that waits for one,
        the caller's included (which then stalls a whole spin, ~0.5 ms)."""
        fn = ir.Function(self.m, ir.FunctionType(I1, []), "spc_pool_crowded")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        fd = self.load(b, self.probe_fd, "monotonic")
        no = fn.append_basic_block("no")
        read = fn.append_basic_block("read")
        b.cbranch(b.icmp_signed("<", fd, c32(0)), no, read)
        b.position_at_end(no)
        b.ret(ir.Constant(I1, 0))
        b.position_at_end(read)
        buf = b.alloca(ir.ArrayType(I8, 64), name="buf")
        text = b.bitcast(buf, I8P)
        n = b.call(self.pread, [fd, text, c64(63), c64(0)])
        k = b.alloca(I64, name="k")
        spaces = b.alloca(I64, name="spaces")
        value = b.alloca(I64, name="value")
        for var in (k, spaces, value):
            b.store(c64(0), var)
        head, exit_ = self.loop(b, "parse")
        kv = b.load(k)
        more = fn.append_basic_block("parse.char")
        b.cbranch(b.icmp_signed("<", kv, n), more, exit_)
        b.position_at_end(more)
        c = b.zext(b.load(b.gep(text, [kv])), I64)
        b.store(b.add(kv, c64(1)), k)
        field = fn.append_basic_block("parse.field")
        skip = fn.append_basic_block("parse.skip")
        b.cbranch(b.icmp_signed("<", b.load(spaces), c64(3)), skip, field)
        b.position_at_end(skip)                       # before the fourth field: count spaces
        sp = b.load(spaces)
        b.store(b.select(b.icmp_unsigned("==", c, c64(ord(" "))), b.add(sp, c64(1)), sp), spaces)
        b.branch(head)
        b.position_at_end(field)                      # the runnable count, up to its '/'
        digit = b.sub(c, c64(ord("0")))
        is_digit = b.icmp_unsigned("<", digit, c64(10))
        acc = fn.append_basic_block("parse.digit")
        b.cbranch(is_digit, acc, exit_)
        b.position_at_end(acc)
        b.store(b.add(b.mul(b.load(value), c64(10)), digit), value)
        b.branch(head)
        b.position_at_end(exit_)
        cpus = self.load(b, self.ncpus, "monotonic")
        b.ret(b.and_(b.icmp_signed(">", cpus, c64(0)),
                     b.icmp_signed(">", b.load(value), cpus)))
        return fn

    def emit_worker(self, crowded):
        """A worker: scan every slot for work; spin watching the epoch; sleep."""
        fn = self.worker_main
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        seen = b.alloca(I32, name="seen")
        k = b.alloca(I64, name="k")
        top, _ = self.loop(b, "top", exits=False)
        b.store(self.load(b, self.epoch, "seq_cst"), seen)
        # scan the slots
        b.store(c64(0), k)
        scan, scan_done = self.loop(b, "scan")
        kv = b.load(k)
        more = fn.append_basic_block("scan.slot")
        b.cbranch(b.icmp_signed("<", kv, c64(NSLOTS)), more, scan_done)
        b.position_at_end(more)
        slot = b.gep(self.slots, [c64(0), kv])
        # take a seat: chunks remain and a seat is free
        seat, seated = self.loop(b, "seat")
        w = self.load(b, self.field(b, slot, "word"))
        open_ = b.and_(b.icmp_unsigned("!=", b.and_(w, c64(REM_MASK)), c64(0)),
                       b.icmp_unsigned("!=", b.and_(w, c64(0xFF << 24)), c64(0)))
        try_seat = fn.append_basic_block("seat.try")
        next_slot = fn.append_basic_block("scan.next")
        b.cbranch(open_, try_seat, next_slot)
        b.position_at_end(try_seat)
        b.cbranch(self.cas(b, self.field(b, slot, "word"), w, b.sub(w, c64(SEAT))), seated, seat)
        b.position_at_end(seated)
        gen = b.lshr(w, c64(32))

        def finished(bb):
            bb.atomic_rmw("add", self.field(bb, slot, "done"), c64(1), "seq_cst")
            bb.atomic_rmw("add", self.worker_chunks, c64(1), "monotonic")
            asleep = self.load(bb, self.field(bb, slot, "asleep"), "seq_cst")
            with bb.if_then(bb.icmp_unsigned("!=", asleep, c32(0))):
                bb.atomic_rmw("add", self.field(bb, slot, "wake"), c32(1), "seq_cst")
                self.futex(bb, _FUTEX_WAKE_PRIVATE, c64(1), self.field(bb, slot, "wake"))
        self.claim_loop(b, slot, gen, finished)
        b.branch(next_slot)
        b.position_at_end(next_slot)
        b.store(b.add(kv, c64(1)), k)
        b.branch(scan)
        # nothing (more) to do: spin while the epoch stays and the machine has a
        # core to spare, then sleep on the epoch
        b.position_at_end(scan_done)
        b.store(c64(0), k)
        spin, spun = self.loop(b, "spin")
        nap = fn.append_basic_block("spin.nap")
        changed = b.icmp_unsigned("!=", self.load(b, self.epoch, "monotonic"), b.load(seen))
        step = fn.append_basic_block("spin.step")
        b.cbranch(changed, top, step)
        b.position_at_end(step)
        kv = b.load(k)
        b.store(b.add(kv, c64(1)), k)
        self.relax(b)
        look = fn.append_basic_block("spin.look")
        go_on = fn.append_basic_block("spin.on")
        b.cbranch(b.icmp_unsigned("==", b.and_(kv, c64(PROBE_EVERY - 1)), c64(0)), look, go_on)
        b.position_at_end(look)
        b.cbranch(b.call(crowded, []), nap, go_on)
        b.position_at_end(go_on)
        b.cbranch(b.icmp_signed("<", kv, self.load(b, self.spin, "monotonic")), spin, spun)
        b.position_at_end(nap)
        b.atomic_rmw("add", self.naps, c64(1), "monotonic")
        b.branch(spun)
        b.position_at_end(spun)
        b.atomic_rmw("add", self.sleepers, c32(1), "seq_cst")
        still = b.icmp_unsigned("==", self.load(b, self.epoch, "seq_cst"), b.load(seen))
        with b.if_then(still):
            self.futex(b, _FUTEX_WAIT_PRIVATE, b.zext(b.load(seen), I64))
        b.atomic_rmw("sub", self.sleepers, c32(1), "seq_cst")
        b.branch(top)

    def emit_grow(self):
        """``spc_pool_grow(n)``: start workers until there are n (at most
        MAX_WORKERS); returns how many there are.  A call that finds another
        growing returns at once."""
        fn = ir.Function(self.m, ir.FunctionType(I64, [I64]), "spc_pool_grow")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        want = fn.args[0]
        want = b.select(b.icmp_signed("<", want, c64(MAX_WORKERS)), want, c64(MAX_WORKERS))
        have = self.load(b, self.nworkers)
        done = fn.append_basic_block("done")
        lock = fn.append_basic_block("lock")
        b.cbranch(b.icmp_signed(">=", have, want), done, lock)
        b.position_at_end(lock)
        got = self.cas(b, self.growing, c32(0), c32(1))
        start = fn.append_basic_block("start")
        b.cbranch(got, start, done)
        b.position_at_end(start)
        tid = b.alloca(I64, name="tid")
        head, exit_ = self.loop(b, "grow")
        n = self.load(b, self.nworkers)
        create = fn.append_basic_block("create")
        b.cbranch(b.icmp_signed("<", n, want), create, exit_)
        b.position_at_end(create)
        rc = b.call(self.pthread_create, [tid, ir.Constant(I8P, None), self.worker_main,
                                          ir.Constant(I8P, None)])
        ok = fn.append_basic_block("created")
        b.cbranch(b.icmp_signed("==", rc, c32(0)), ok, exit_)
        b.position_at_end(ok)
        b.call(self.pthread_detach, [b.load(tid)])
        b.store_atomic(b.add(n, c64(1)), self.nworkers, "release", 8)
        b.branch(head)
        b.position_at_end(exit_)
        b.store_atomic(c32(0), self.growing, "release", 4)
        b.branch(done)
        b.position_at_end(done)
        b.ret(self.load(b, self.nworkers))
        return fn

    def emit_entry(self, grow, crowded):
        """``spc_pool_parallel(fn, ctx, lo, hi, nthreads)``: see the module docstring."""
        fn = ir.Function(self.m, ENTRY_FN, ENTRY)
        body, ctx, lo, hi, nthreads = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        total = b.sub(hi, lo)
        cap = self.load(b, self.cap, "monotonic")          # spc_pool_set_cap's
        nt = b.select(b.icmp_signed("<", nthreads, cap), nthreads, cap)
        nt = b.select(b.icmp_signed("<", total, nt), total, nt)
        serial = fn.append_basic_block("serial")
        pick = fn.append_basic_block("pick")
        b.cbranch(b.icmp_signed("<=", nt, c64(1)), serial, pick)
        b.position_at_end(serial)
        with b.if_then(b.icmp_signed(">", total, c64(0))):
            b.call(body, [ctx, lo, hi])
        b.ret_void()

        # on a crowded machine (more runnable threads than cores, looked at every
        # CROWD_EVERY parallel calls) the caller runs the call alone: a worker woken
        # there waits for a core, and the caller then waits for its chunk
        b.position_at_end(pick)
        old = b.atomic_rmw("add", self.calls, c64(1), "monotonic")
        with b.if_then(b.icmp_unsigned("==", b.and_(old, c64(CROWD_EVERY - 1)), c64(0))):
            b.store_atomic(b.zext(b.call(crowded, []), I32), self.alone, "monotonic", 4)
        shared = fn.append_basic_block("shared")
        alone = fn.append_basic_block("alone")
        b.cbranch(b.icmp_unsigned("!=", self.load(b, self.alone, "monotonic"), c32(0)),
                  alone, shared)
        b.position_at_end(alone)
        b.atomic_rmw("add", self.alone_calls, c64(1), "monotonic")
        b.branch(serial)
        # a free slot, else run serially
        b.position_at_end(shared)
        k = b.alloca(I64, name="k")
        b.store(c64(0), k)
        head, _ = self.loop(b, "pick", exits=False)
        kv = b.load(k)
        try_ = fn.append_basic_block("pick.try")
        b.cbranch(b.icmp_signed("<", kv, c64(NSLOTS)), try_, serial)
        b.position_at_end(try_)
        slot = b.gep(self.slots, [c64(0), kv])
        owner = self.field(b, slot, "owner")
        free = b.icmp_unsigned("==", self.load(b, owner, "monotonic"), c64(0))
        taken = fn.append_basic_block("pick.taken")
        nxt = fn.append_basic_block("pick.next")
        cas_block = fn.append_basic_block("pick.cas")
        b.cbranch(free, cas_block, nxt)
        b.position_at_end(cas_block)
        b.cbranch(self.cas(b, owner, c64(0), c64(1)), taken, nxt)
        b.position_at_end(nxt)
        b.store(b.add(kv, c64(1)), k)
        b.branch(head)

        b.position_at_end(taken)
        workers = b.call(grow, [b.sub(nt, c64(1))])
        seats = b.select(b.icmp_signed("<", workers, b.sub(nt, c64(1))), workers,
                         b.sub(nt, c64(1)))
        # chunk = max(1, total / (nt * CHUNKS_PER_THREAD)), nchunks <= MAX_CHUNKS
        chunk = b.sdiv(total, b.mul(nt, c64(CHUNKS_PER_THREAD)))
        chunk = b.select(b.icmp_signed("<", chunk, c64(1)), c64(1), chunk)
        floor = b.sdiv(b.add(total, c64(MAX_CHUNKS - 1)), c64(MAX_CHUNKS))
        chunk = b.select(b.icmp_signed("<", chunk, floor), floor, chunk)
        nchunks = b.sdiv(b.add(total, b.sub(chunk, c64(1))), chunk)
        for name, v in (("fn", body), ("ctx", ctx), ("lo", lo), ("hi", hi), ("chunk", chunk),
                        ("nchunks", nchunks), ("done", c64(0))):
            b.store(v, self.field(b, slot, name))
        word = self.field(b, slot, "word")
        gen = b.and_(b.add(b.lshr(self.load(b, word, "monotonic"), c64(32)), c64(1)),
                     c64(0xFFFFFFFF))
        new = b.or_(b.or_(b.shl(gen, c64(32)), b.shl(seats, c64(24))), nchunks)
        b.store_atomic(new, word, "release", 8)
        # wake sleepers (spinning workers see the epoch change themselves)
        b.atomic_rmw("add", self.epoch, c32(1), "seq_cst")
        sleeping = self.load(b, self.sleepers, "seq_cst")
        with b.if_then(b.icmp_signed(">", sleeping, c32(0))):
            self.futex(b, _FUTEX_WAKE_PRIVATE, seats)
        # the caller takes chunks too, then waits for the chunks workers claimed
        mine = b.alloca(I64, name="mine")
        b.store(c64(0), mine)
        self.claim_loop(b, slot, gen, lambda bb: bb.store(bb.add(bb.load(mine), c64(1)), mine))
        target = b.sub(nchunks, b.load(mine))
        spins = b.alloca(I64, name="spins")
        b.store(c64(0), spins)
        wait, waited = self.loop(b, "wait")
        finished = b.icmp_signed(">=", self.load(b, self.field(b, slot, "done")), target)
        step = fn.append_basic_block("wait.step")
        b.cbranch(finished, waited, step)
        b.position_at_end(step)
        sv = b.load(spins)
        b.store(b.add(sv, c64(1)), spins)
        self.relax(b)
        with b.if_then(b.icmp_signed(">", sv, c64(WAIT_SPIN))):
            # sleep until a worker finishes a chunk: the core is free for it
            asleep, wake = self.field(b, slot, "asleep"), self.field(b, slot, "wake")
            b.store_atomic(c32(1), asleep, "seq_cst", 4)
            seq = self.load(b, wake, "seq_cst")
            still = b.icmp_signed("<", self.load(b, self.field(b, slot, "done"), "seq_cst"),
                                  target)
            with b.if_then(still):
                self.futex(b, _FUTEX_WAIT_PRIVATE, b.zext(seq, I64), wake)
            b.store_atomic(c32(0), asleep, "seq_cst", 4)
        b.branch(wait)
        b.position_at_end(waited)
        b.store_atomic(c64(0), owner, "release", 8)
        b.ret_void()

    def emit_controls(self):
        """``spc_pool_set_spin(n)``, ``spc_pool_set_cap(n)`` (threads per call at most:
        1 to MAX_WORKERS + 1) and ``spc_pool_worker_chunks()``."""
        fn = ir.Function(self.m, ir.FunctionType(VOID, [I64]), "spc_pool_set_spin")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.store_atomic(fn.args[0], self.spin, "monotonic", 8)
        b.ret_void()
        fn = ir.Function(self.m, ir.FunctionType(VOID, [I64]), "spc_pool_set_cap")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        n = fn.args[0]
        n = b.select(b.icmp_signed("<", n, c64(1)), c64(1), n)
        n = b.select(b.icmp_signed(">", n, c64(MAX_WORKERS + 1)), c64(MAX_WORKERS + 1), n)
        b.store_atomic(n, self.cap, "monotonic", 8)
        b.ret_void()
        fn = ir.Function(self.m, ir.FunctionType(I64, []), "spc_pool_worker_chunks")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(self.load(b, self.worker_chunks, "monotonic"))
        fn = ir.Function(self.m, ir.FunctionType(VOID, [I64, I64]), "spc_pool_set_probe")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.store_atomic(fn.args[1], self.ncpus, "monotonic", 8)
        b.store_atomic(b.trunc(fn.args[0], I32), self.probe_fd, "monotonic", 4)
        b.store_atomic(c64(0), self.calls, "monotonic", 8)     # the next call looks
        b.store_atomic(c32(0), self.alone, "monotonic", 4)
        b.ret_void()
        fn = ir.Function(self.m, ir.FunctionType(I64, []), "spc_pool_alone_calls")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(self.load(b, self.alone_calls, "monotonic"))
        fn = ir.Function(self.m, ir.FunctionType(I64, []), "spc_pool_naps")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(self.load(b, self.naps, "monotonic"))


def emit_pool_module(triple: str = "", datalayout: str = "", machine: str | None = None) -> str:
    """The pool's LLVM IR text for ``machine`` (default: this one's).

    Ensures: defines ``spc_pool_parallel`` (ENTRY_FN), ``spc_pool_grow``,
    ``spc_pool_set_spin``, ``spc_pool_set_cap`` and ``spc_pool_worker_chunks``.  Where the futex
    system call number is unknown, idle workers yield instead of sleeping.
    """
    machine = (machine or platform.machine()).lower()
    m = ir.Module(name="spc_pool")
    m.triple = triple
    m.data_layout = datalayout
    e = _Emitter(m, _FUTEX_NR.get(machine), machine in ("x86_64", "amd64"))
    crowded = e.emit_crowded()
    e.emit_worker(crowded)
    e.emit_entry(e.emit_grow(), crowded)
    e.emit_controls()
    return str(m)


class Pool:
    """The loaded pool: its entry address and ctypes handles on its controls."""

    def __init__(self, engine):
        self.engine = engine
        addr = engine.get_function_address
        self.entry = addr(ENTRY)
        self.grow = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(addr("spc_pool_grow"))
        self.set_spin = ctypes.CFUNCTYPE(None, ctypes.c_int64)(addr("spc_pool_set_spin"))
        self.set_cap = ctypes.CFUNCTYPE(None, ctypes.c_int64)(addr("spc_pool_set_cap"))
        self.worker_chunks = ctypes.CFUNCTYPE(ctypes.c_int64)(addr("spc_pool_worker_chunks"))
        self.set_probe = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64)(
            addr("spc_pool_set_probe"))
        self.naps = ctypes.CFUNCTYPE(ctypes.c_int64)(addr("spc_pool_naps"))
        self.crowded = ctypes.CFUNCTYPE(ctypes.c_bool)(addr("spc_pool_crowded"))
        self.alone_calls = ctypes.CFUNCTYPE(ctypes.c_int64)(addr("spc_pool_alone_calls"))


_LOCK = threading.Lock()
_KEEP: list = []
LOAD_FILE = "/proc/loadavg"


def watch_load(pool: Pool, path: str = LOAD_FILE, cpus: int | None = None) -> bool:
    """Let ``pool``'s idle workers read the machine's runnable-thread count from
    ``path`` (/proc/loadavg's format) and stop spinning while it exceeds
    ``cpus`` (default: the machine's).  Ensures: the file stays open for the
    process's life (workers read it at any time); False, and workers spin as
    before, where it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    pool.set_probe(fd, cpus or os.cpu_count() or 0)
    _KEEP.append(fd)
    return True


@lru_cache(maxsize=None)
def load_pool() -> Pool | None:
    """Build the pool for this process and register ``spc_pool_parallel`` as a
    symbol kernels link against; None where that is impossible (not Linux).

    Ensures: the pool's code is never freed (workers may be inside it until the
    process exits), so it is kept alive with an extra reference.
    """
    import llvmlite.binding as llvm
    if platform.system() != "Linux":
        return None
    with _LOCK:
        pool = Pool(jit_native(emit_pool_module))
        watch_load(pool)
        llvm.add_symbol(ENTRY, pool.entry)
        _KEEP.append(pool)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(pool))
    return pool
