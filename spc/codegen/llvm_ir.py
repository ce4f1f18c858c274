"""Loop IR -> LLVM IR text, with llvmlite's IR builder.

Each kernel becomes three functions:

* ``<name>.body(params..., lo, hi)``: the kernel with its outermost parallel loop
  restricted to ``[lo, hi)`` (or the whole kernel when nothing is parallel);
  array parameters are ``noalias`` so loops vectorize without runtime checks;
* ``<name>.worker(ctx)``: a thread's loop that takes chunks of the parallel
  loop from a shared atomic counter (dynamic scheduling) and runs ``body``;
* ``<name>(i8** bufs, i64* sizes, i64 nthreads)``: the entry point the runtime
  calls.  It runs ``worker`` on ``nthreads`` threads: spc's own pool
  (threading "pool", see cpu_pool.py: ``<name>.chunk(ctx, first, last)`` runs
  one chunk, and the caller never waits for a thread that has not started
  work), libgomp's persistent pool (``GOMP_parallel``), or ``nthreads - 1``
  pthreads started per call and joined.  If a thread cannot be started the
  others simply take its chunks, so the result never depends on how many
  threads ran.
"""
from __future__ import annotations

import contextlib

from llvmlite import ir

from ..errors import CompileError
from . import cpu_pool, cpu_workspaces
from ..ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, Cast, Const, Contents, DType, For, If,
                        Kernel, Let, Load, LoopKind, Neg, Select, Store, Var, WarpSum, Call,
                        While, dtype_of)

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
VOID = ir.VoidType()
I8P = I8.as_pointer()
# Float flags.  Every operation may fuse into an FMA; only the update of a scalar
# accumulator (``acc = acc + v``) may also reassociate, which is what lets LLVM
# vectorize a reduction loop.  Elsewhere reassociation would let it vectorize the
# wrong loop (e.g. across nonzeros of a register-tiled SpMM, with gathers).
CONTRACT = ("contract",)
REDUCE = ("reassoc", "contract", "nsz")
MAX_THREADS = 256
_LOOP_SELF = "spc.loop.self"     # stands for a loop metadata node's reference to itself

I16 = ir.IntType(16)
_LL = {DType.F16: ir.HalfType(), DType.BF16: I16, DType.F32: F32, DType.F64: F64, DType.I8: I8,
       DType.I16: I16, DType.I32: I32, DType.I64: I64, DType.BOOL: I1}
# bfloat16 arrays are i16 bit patterns (llvmlite has no bfloat type): the upper
# half of a float32, rounded to nearest even on the way in


def ll_type(dt: DType) -> ir.Type:
    return _LL[dt]


@contextlib.contextmanager
def _loop_blocks(b: ir.IRBuilder, name: str):
    """Yield (cond, body, exit) blocks; the caller fills cond and body."""
    fn = b.function
    yield (fn.append_basic_block(f"{name}.cond"), fn.append_basic_block(f"{name}.body"),
           fn.append_basic_block(f"{name}.exit"))


class _FunctionEmitter:
    """Emits the statements of one kernel into one LLVM function."""

    def __init__(self, b: ir.IRBuilder, buffers: dict[str, ir.Value], scalars: dict[str, ir.Value],
                 keep_workspaces: bool = False):
        self.b = b
        self.keep_workspaces = keep_workspaces    # cpu_workspaces' cache serves workspaces
        self.buffers = dict(buffers)
        self.scopes: list[dict[str, ir.Value]] = [dict()]
        self.params = dict(scalars)
        self.entry = b.function.entry_basic_block
        self.float_flags = CONTRACT

    # -- variables ---------------------------------------------------------------
    def _alloca(self, ty: ir.Type, name: str) -> ir.Value:
        with self.b.goto_block(self.entry):
            if self.entry.instructions:
                self.b.position_before(self.entry.instructions[0])
            return self.b.alloca(ty, name=name)

    def declare(self, var: Var) -> ir.Value:
        slot = self._alloca(ll_type(var.dtype), var.name)
        self.scopes[-1][var.name] = slot
        return slot

    def slot(self, name: str) -> ir.Value | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    @contextlib.contextmanager
    def scope(self):
        self.scopes.append({})
        try:
            yield
        finally:
            self.scopes.pop()

    # -- expressions ---------------------------------------------------------------
    def expr(self, e) -> ir.Value:
        b = self.b
        if isinstance(e, Const):
            if e.dtype is DType.BOOL:
                return ir.Constant(I1, int(bool(e.value)))
            ty = ll_type(e.dtype)
            return ir.Constant(ty, float(e.value) if e.dtype.is_float else int(e.value))
        if isinstance(e, Var):
            slot = self.slot(e.name)
            if slot is not None:
                return b.load(slot, name=e.name)
            if e.name in self.params:
                return self.params[e.name]
            raise CompileError(f"variable {e.name} is used before it is defined")
        if isinstance(e, Load):
            ptr = b.gep(self.buffers[e.buf.name], [self.expr(e.index)], inbounds=True)
            return self.widen(b.load(ptr), e.buf.dtype)
        if isinstance(e, Neg):
            v = self.expr(e.operand)
            return b.fneg(v) if dtype_of(e.operand).is_float else b.neg(v)
        if isinstance(e, Cast):
            return self.cast(self.expr(e.value), dtype_of(e.value), e.dtype)
        if isinstance(e, Select):
            return b.select(self.expr(e.cond), self.expr(e.if_true), self.expr(e.if_false))
        if isinstance(e, WarpSum):
            return self.expr(e.value)      # one lane per thread on a CPU: the sum is the value
        if isinstance(e, Call):
            return self.math(e.fn, self.expr(e.value), dtype_of(e.value))
        if isinstance(e, BinOp):
            if e.op in ("&&", "||"):
                return self.short_circuit(e)
            lhs, rhs = self.expr(e.lhs), self.expr(e.rhs)
            return self.binop(e.op, lhs, rhs, dtype_of(e.lhs))
        raise CompileError(f"cannot emit expression {e!r}")

    def widen(self, v, dt: DType):
        """A loaded array element ``v`` of ``dt`` as its widened type (DType.widened)."""
        b = self.b
        if dt is DType.F16:
            return b.fpext(v, F32)
        if dt is DType.BF16:
            return b.bitcast(b.shl(b.zext(v, I32), ir.Constant(I32, 16)), F32)
        if dt.is_int and dt is not DType.I64:
            return b.sext(v, I64)
        return v

    def narrow(self, v, vt: DType, dt: DType):
        """Value ``v`` of type ``vt`` as an element of an array of ``dt``, no wider:
        floats rounded to nearest even (float64 to 16 bits through float32: LLVM's
        direct double -> half is a compiler-rt call the JIT cannot resolve on x86;
        a bfloat16 NaN stays a quiet NaN), integers truncated."""
        b = self.b
        if vt is dt:
            return v
        if vt is DType.F64 and dt is not DType.F32 and dt.is_float:
            v = b.fptrunc(v, F32)
        if dt in (DType.F32, DType.F16):
            return b.fptrunc(v, _LL[dt])          # float16: F16C's vcvtps2ph
        if dt is DType.BF16:
            bits = b.bitcast(v, I32)
            odd = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
            rounded = b.lshr(b.add(bits, b.add(odd, ir.Constant(I32, 0x7FFF))),
                             ir.Constant(I32, 16))
            quiet = b.or_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 0x40))
            nan = b.fcmp_unordered("uno", v, v)
            return b.trunc(b.select(nan, quiet, rounded), I16)
        return b.trunc(v, _LL[dt])

    def atomic_add16(self, ptr, value, dt: DType) -> None:
        """``*ptr += value`` on a 16-bit float array element, atomically: a
        compare-and-swap loop (x86 has no 16-bit float atomic addition)."""
        b = self.b
        bits_ptr = b.bitcast(ptr, I16.as_pointer())
        start = b.load(bits_ptr)
        loop, done = b.append_basic_block("cas.loop"), b.append_basic_block("cas.done")
        entry = b.block
        b.branch(loop)
        b.position_at_end(loop)
        old = b.phi(I16)
        old.add_incoming(start, entry)
        as_elem = b.bitcast(old, _LL[dt]) if dt is DType.F16 else old
        new = self.narrow(b.fadd(self.widen(as_elem, dt), value), DType.F32, dt)
        new_bits = b.bitcast(new, I16) if dt is DType.F16 else new
        pair = b.cmpxchg(bits_ptr, old, new_bits, "monotonic", "monotonic")
        seen = b.extract_value(pair, 0)
        old.add_incoming(seen, b.block)
        b.cbranch(b.extract_value(pair, 1), done, loop)
        b.position_at_end(done)

    def cast(self, v, src: DType, dst: DType):
        b = self.b
        if src is dst:
            return v
        if src.is_float and dst.is_float:
            return b.fpext(v, ll_type(dst)) if dst is DType.F64 else b.fptrunc(v, ll_type(dst))
        if src.is_float:
            return b.fptosi(v, ll_type(dst))
        if dst.is_float:
            return b.sitofp(v, ll_type(dst))
        return b.sext(v, ll_type(dst)) if dst is DType.I64 else b.trunc(v, ll_type(dst))

    def math(self, fn: str, v, dt: DType):
        """``fn(v)`` through LLVM's intrinsic (``llvm.exp.f32``...: the C library's
        ``expf`` where the CPU has no instruction for it)."""
        ty = ll_type(dt)
        module = self.b.module
        if fn == "ctz":                          # 64 for 0: the intrinsic's flag says defined
            callee = module.globals.get("llvm.cttz.i64") or ir.Function(
                module, ir.FunctionType(ty, [ty, ir.IntType(1)]), name="llvm.cttz.i64")
            return self.b.call(callee, [v, ir.Constant(ir.IntType(1), 0)])
        name = f"llvm.{'fabs' if fn == 'abs' else fn}.{'f32' if dt is DType.F32 else 'f64'}"
        callee = module.globals.get(name)
        if callee is None:
            callee = ir.Function(module, ir.FunctionType(ty, [ty]), name=name)
        return self.b.call(callee, [v])

    def binop(self, op: str, a, c, dt: DType):
        b = self.b
        if dt.is_float:
            if op == "+":
                return b.fadd(a, c, flags=self.float_flags)
            if op == "-":
                return b.fsub(a, c, flags=self.float_flags)
            if op == "*":
                return b.fmul(a, c, flags=self.float_flags)
            if op == "/":
                return b.fdiv(a, c)
            if op in ("min", "max"):
                cmp = b.fcmp_ordered("<" if op == "min" else ">", a, c)
                return b.select(cmp, a, c)
            if op == "!=":       # true for NaN operands, as in C and the interpreter
                return b.fcmp_unordered("!=", a, c)
            return b.fcmp_ordered(op, a, c)
        if op == "+":
            return b.add(a, c, flags=("nsw",))
        if op == "-":
            return b.sub(a, c, flags=("nsw",))
        if op == "*":
            return b.mul(a, c, flags=("nsw",))
        if op == "/":
            return b.sdiv(a, c)
        if op == "&":
            return b.and_(a, c)
        if op == "<<":
            return b.shl(a, c)
        if op in ("min", "max"):
            return b.select(b.icmp_signed("<" if op == "min" else ">", a, c), a, c)
        return b.icmp_signed(op, a, c)

    def short_circuit(self, e: BinOp):
        b = self.b
        lhs = self.expr(e.lhs)
        start = b.block
        rhs_block = b.append_basic_block("sc.rhs")
        done = b.append_basic_block("sc.done")
        if e.op == "&&":
            b.cbranch(lhs, rhs_block, done)
        else:
            b.cbranch(lhs, done, rhs_block)
        b.position_at_end(rhs_block)
        rhs = self.expr(e.rhs)
        rhs_end = b.block
        b.branch(done)
        b.position_at_end(done)
        phi = b.phi(I1)
        phi.add_incoming(ir.Constant(I1, 0 if e.op == "&&" else 1), start)
        phi.add_incoming(rhs, rhs_end)
        return phi

    # -- statements ---------------------------------------------------------------
    def stmt(self, s) -> None:
        b = self.b
        if isinstance(s, Block):
            heap = []
            for child in s.body:
                if isinstance(child, Alloc) and child.is_workspace:
                    heap.append((child, self.workspace(child)))
                else:
                    self.stmt(child)
            for alloc, ptr in reversed(heap):    # workspaces live until their block ends
                if self._kept(alloc):
                    clean = int(alloc.contents is Contents.CLEAN)
                    b.call(self._libc(cpu_workspaces.GIVE, VOID, [I8P, I64]),
                           [ptr, ir.Constant(I64, clean)])
                else:
                    b.call(self._libc("free", VOID, [I8P]), [ptr])
        elif isinstance(s, Alloc) and s.is_workspace:
            self.stmt(Block((s,)))
        elif isinstance(s, Let):
            value = self.expr(s.value)
            b.store(value, self.declare(s.var))
        elif isinstance(s, Assign):
            slot = self.slot(s.var.name)
            if slot is None:
                raise CompileError(f"assignment to undeclared variable {s.var.name}")
            v = s.value
            if (isinstance(v, BinOp) and v.op == "+" and isinstance(v.lhs, Var)
                    and v.lhs.name == s.var.name and s.var.dtype.is_float):
                rhs = self.expr(v.rhs)            # acc = acc + rhs: a reduction
                value = b.fadd(b.load(slot), rhs, flags=REDUCE)
            else:
                value = self.expr(v)
            b.store(value, slot)
        elif isinstance(s, Store):
            ptr = b.gep(self.buffers[s.buf.name], [self.expr(s.index)], inbounds=True)
            value = self.expr(s.value)
            dt, vt = s.buf.dtype, dtype_of(s.value)
            if dt.is_float and dt is not vt:     # arithmetic in vt, then rounded once
                if s.atomic:                     # each addition in the array's precision
                    value = self.narrow(value, vt, DType.F32)
                    if dt is DType.F32:
                        b.atomic_rmw("fadd", ptr, value, "monotonic")
                    else:
                        self.atomic_add16(ptr, value, dt)
                    return
                if s.accumulate:
                    old = self.widen(b.load(ptr), dt)
                    value = b.fadd(self.cast(old, dt.widened, vt), value, flags=CONTRACT)
                b.store(self.narrow(value, vt, dt), ptr)
                return
            if dt.is_int and dt is not DType.I64:
                value = self.narrow(value, dtype_of(s.value), dt)
            if s.atomic:
                b.atomic_rmw("fadd" if dt.is_float else "add", ptr, value, "monotonic")
                return
            if s.accumulate:
                old = b.load(ptr)
                value = b.fadd(old, value, flags=CONTRACT) if dt.is_float else b.add(old, value)
            b.store(value, ptr)
        elif isinstance(s, Alloc):
            arr = self._alloca(ir.ArrayType(ll_type(s.buf.dtype), s.size), s.buf.name)
            b.store(ir.Constant(arr.type.pointee, None), arr)
            self.buffers[s.buf.name] = b.gep(arr, [ir.Constant(I64, 0), ir.Constant(I64, 0)])
        elif isinstance(s, For):
            self.for_loop(s.var, self.expr(s.lo), self.expr(s.hi), s.body,
                          self._vector_hint(s) if s.kind is LoopKind.VECTOR else
                          self._scalar_hint() if s.kind is LoopKind.SCALAR else None)
        elif isinstance(s, While):
            with _loop_blocks(b, "while") as (cond, body, exit_):
                b.branch(cond)
                b.position_at_end(cond)
                b.cbranch(self.expr(s.cond), body, exit_)
                b.position_at_end(body)
                with self.scope():
                    self.stmt(s.body)
                b.branch(cond)
                b.position_at_end(exit_)
        elif isinstance(s, If):
            cond = self.expr(s.cond)
            if s.otherwise is None:
                with b.if_then(cond):
                    with self.scope():
                        self.stmt(s.then)
            else:
                with b.if_else(cond) as (then, otherwise):
                    with then:
                        with self.scope():
                            self.stmt(s.then)
                    with otherwise:
                        with self.scope():
                            self.stmt(s.otherwise)
        else:
            raise CompileError(f"cannot emit statement {s!r}")

    def _libc(self, name: str, ret: ir.Type, args: list) -> ir.Function:
        """The C library function ``name`` declared in this module."""
        m = self.b.module
        fn = m.globals.get(name)
        return fn if fn is not None else ir.Function(m, ir.FunctionType(ret, args), name)

    def _kept(self, s: Alloc) -> bool:
        """Whether workspace ``s`` comes from (and goes back to) the cache of
        workspaces kept between calls: its contents claim allows it."""
        return self.keep_workspaces and s.contents is not Contents.ZEROED

    def workspace(self, s: Alloc) -> ir.Value:
        """Emit a workspace ``s``: ``calloc(size, element)`` (zeroed heap memory,
        whose pages the system zeroes lazily when it is large), or where its
        ``contents`` allow and the kernel runs in spc's runtime, a buffer of the
        cache kept between calls (``cpu_workspaces``: zeroed for a CLEAN one);
        returns the raw pointer the enclosing block frees or gives back.  The
        size is at least one element, so that an empty workspace is a valid
        pointer too."""
        b = self.b
        ty = ll_type(s.buf.dtype)
        n = self.expr(s.size)
        n = b.select(b.icmp_signed("<", n, ir.Constant(I64, 1)), ir.Constant(I64, 1), n)
        width = ir.Constant(I64, max(1, s.buf.dtype.nbytes))
        if self._kept(s):
            zeroed = ir.Constant(I64, int(s.contents is Contents.CLEAN))
            raw = b.call(self._libc(cpu_workspaces.TAKE, I8P, [I64, I64]),
                         [b.mul(n, width), zeroed], name=s.buf.name)
        else:
            raw = b.call(self._libc("calloc", I8P, [I64, I64]), [n, width], name=s.buf.name)
        self.buffers[s.buf.name] = b.bitcast(raw, ty.as_pointer())
        return raw

    def _vector_hint(self, loop: For):
        """``llvm.loop`` metadata asking LLVM to vectorize ``loop`` (a VECTOR loop)
        rather than unroll it: ``[0, n)`` with a constant n <= 16 is vectorized
        n lanes wide.  The node refers to itself, as LLVM requires; llvmlite
        cannot say so, so it names itself by a marker that ``emit_module``
        rewrites (``_LOOP_SELF``)."""
        m = self.b.module
        width = loop.hi.value if isinstance(loop.hi, Const) and isinstance(loop.lo, Const) \
            and loop.lo.value == 0 and 1 < loop.hi.value <= 16 else None
        ops = [ir.MetaDataString(m, _LOOP_SELF),
               m.add_metadata([ir.MetaDataString(m, "llvm.loop.unroll.disable")])]
        if width is not None:       # a width asks without forcing: no warning where the
            ops.append(m.add_metadata([ir.MetaDataString(m, "llvm.loop.vectorize.width"),
                                       ir.Constant(I32, width)]))   # vectorizer declines
        else:
            ops.append(m.add_metadata([ir.MetaDataString(m, "llvm.loop.vectorize.enable"),
                                       ir.Constant(I1, 1)]))
        return m.add_metadata(ops)

    def _scalar_hint(self):
        """``llvm.loop`` metadata keeping a SCALAR loop one iteration at a time:
        vectorize width 1 and no unrolling (the SLP vectorizer may still pack
        the independent lanes of one iteration, which is what the loop is for)."""
        m = self.b.module
        return m.add_metadata([
            ir.MetaDataString(m, _LOOP_SELF),
            m.add_metadata([ir.MetaDataString(m, "llvm.loop.vectorize.width"),
                            ir.Constant(I32, 1)]),
            m.add_metadata([ir.MetaDataString(m, "llvm.loop.unroll.disable")])])

    def for_loop(self, var: Var, lo, hi, body, hint=None) -> None:
        b = self.b
        with self.scope():
            slot = self.declare(var)
            b.store(lo, slot)
            with _loop_blocks(b, f"for.{var.name}") as (cond, body_block, exit_):
                b.branch(cond)
                b.position_at_end(cond)
                b.cbranch(b.icmp_signed("<", b.load(slot), hi), body_block, exit_)
                b.position_at_end(body_block)
                with self.scope():
                    self.stmt(body)
                b.store(b.add(b.load(slot), ir.Constant(I64, 1), flags=("nsw",)), slot)
                back = b.branch(cond)
                if hint is not None:
                    back.set_metadata("llvm.loop", hint)
                b.position_at_end(exit_)


# ---------------------------------------------------------------------------
# Module assembly
# ---------------------------------------------------------------------------

def _split_parallel(kernel: Kernel) -> For | None:
    body = kernel.body
    stmts = body.body if isinstance(body, Block) else (body,)
    if len(stmts) == 1 and isinstance(stmts[0], For) and stmts[0].kind is LoopKind.PARALLEL:
        return stmts[0]
    return None


def _param_types(kernel: Kernel) -> list[ir.Type]:
    return [ll_type(p.value.dtype).as_pointer() if isinstance(p.value, Buffer) else I64
            for p in kernel.params]


def _unpack(b: ir.IRBuilder, kernel: Kernel, bufs, sizes) -> list[ir.Value]:
    """Load every parameter from the (i8** bufs, i64* sizes) calling convention."""
    values, nbuf, nsize = [], 0, 0
    for p in kernel.params:
        if isinstance(p.value, Buffer):
            raw = b.load(b.gep(bufs, [ir.Constant(I64, nbuf)]))
            values.append(b.bitcast(raw, ll_type(p.value.dtype).as_pointer(), name=p.name))
            nbuf += 1
        else:
            values.append(b.load(b.gep(sizes, [ir.Constant(I64, nsize)]), name=p.name))
            nsize += 1
    return values


def emit_module(kernel: Kernel, triple: str = "", datalayout: str = "",
                threading: str = "pthread") -> str:
    """The LLVM IR text of ``kernel`` (see the module docstring for its functions).

    ``threading`` is "pool" (spc's pool; ``cpu_pool.load_pool()`` must have
    run), "pthread" (threads started per call) or "gomp" (libgomp's persistent
    thread pool through ``GOMP_parallel``; the library must be loaded).  With
    "pool", workspaces whose contents allow it come from spc's cache of
    workspaces kept between calls (``cpu_workspaces.load_workspaces()`` must
    have run); otherwise from ``calloc``.
    """
    m = ir.Module(name=kernel.name)
    m.triple = triple
    m.data_layout = datalayout
    par = _split_parallel(kernel)
    ptypes = _param_types(kernel)

    # body(params..., lo, hi)
    body_fn = ir.Function(m, ir.FunctionType(VOID, ptypes + [I64, I64]), f"{kernel.name}.body")
    body_fn.linkage = "internal"
    for arg, p in zip(body_fn.args, kernel.params):
        arg.name = p.name
        if isinstance(p.value, Buffer):
            arg.add_attribute("noalias")
    b = ir.IRBuilder(body_fn.append_basic_block("entry"))
    emitter = _FunctionEmitter(
        b, {p.name: a for p, a in zip(kernel.params, body_fn.args) if isinstance(p.value, Buffer)},
        {p.name: a for p, a in zip(kernel.params, body_fn.args) if not isinstance(p.value, Buffer)},
        keep_workspaces=threading == "pool")
    lo_arg, hi_arg = body_fn.args[-2], body_fn.args[-1]
    if par is not None:
        emitter.for_loop(par.var, lo_arg, hi_arg, par.body)
    else:
        emitter.stmt(kernel.body)
    b.ret_void()

    # entry(i8** bufs, i64* sizes, i64 nthreads)
    entry_fn = ir.Function(m, ir.FunctionType(VOID, [I8P.as_pointer(), I64.as_pointer(), I64]),
                           kernel.name)
    bufs, sizes, nthreads = entry_fn.args
    b = ir.IRBuilder(entry_fn.append_basic_block("entry"))
    params = _unpack(b, kernel, bufs, sizes)
    if par is None:
        b.call(body_fn, params + [ir.Constant(I64, 0), ir.Constant(I64, 0)])
        b.ret_void()
    else:
        bound = _FunctionEmitter(
            b, {p.name: v for p, v in zip(kernel.params, params) if isinstance(p.value, Buffer)},
            {p.name: v for p, v in zip(kernel.params, params) if not isinstance(p.value, Buffer)})
        lo, hi = bound.expr(par.lo), bound.expr(par.hi)
        _emit_parallel(m, kernel, b, body_fn, params, bufs, sizes, nthreads, lo, hi, threading)
    return _self_references(str(m))


def _self_references(text: str) -> str:
    """Loop metadata made distinct and self-referring (see ``_vector_hint``)."""
    marker = f'!"{_LOOP_SELF}"'
    if marker not in text:
        return text
    lines = text.split("\n")
    for k, line in enumerate(lines):
        if marker in line and " = !{" in line:
            name = line.split(" = ", 1)[0]
            lines[k] = line.replace(" = !{", " = distinct !{", 1).replace(marker, name, 1)
    return "\n".join(lines)


def _emit_parallel(m, kernel, b, body_fn, params, bufs, sizes, nthreads, lo, hi,
                   threading: str) -> None:
    """Run body over [lo, hi) on up to ``nthreads`` threads, chunks from a counter."""
    ctx_ty = ir.LiteralStructType([I8P.as_pointer(), I64.as_pointer(), I64, I64, I64,
                                   I64.as_pointer()])
    worker = ir.Function(m, ir.FunctionType(I8P, [I8P]), f"{kernel.name}.worker")
    worker.linkage = "internal"
    wb = ir.IRBuilder(worker.append_basic_block("entry"))
    ctx = wb.bitcast(worker.args[0], ctx_ty.as_pointer())
    field = [wb.load(wb.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)])) for k in range(6)]
    w_bufs, w_sizes, w_lo, w_hi, w_chunk, w_counter = field
    w_params = _unpack(wb, kernel, w_bufs, w_sizes)
    total = wb.sub(w_hi, w_lo)
    loop = worker.append_basic_block("take")
    run = worker.append_basic_block("run")
    done = worker.append_basic_block("done")
    wb.branch(loop)
    wb.position_at_end(loop)
    start = wb.atomic_rmw("add", w_counter, w_chunk, "monotonic")
    wb.cbranch(wb.icmp_signed(">=", start, total), done, run)
    wb.position_at_end(run)
    first = wb.add(w_lo, start)
    last = wb.add(first, w_chunk)
    last = wb.select(wb.icmp_signed("<", last, w_hi), last, w_hi)
    wb.call(body_fn, w_params + [first, last])
    wb.branch(loop)
    wb.position_at_end(done)
    wb.ret(ir.Constant(I8P, None))

    pthread_create = ir.Function(m, ir.FunctionType(I32, [I64.as_pointer(), I8P,
                                                         worker.type, I8P]), "pthread_create")
    pthread_join = ir.Function(m, ir.FunctionType(I32, [I64, I8P.as_pointer()]), "pthread_join")

    fn = b.function
    total = b.sub(hi, lo)
    nt = b.select(b.icmp_signed("<", nthreads, ir.Constant(I64, MAX_THREADS)), nthreads,
                  ir.Constant(I64, MAX_THREADS))
    nt = b.select(b.icmp_signed("<", total, nt), total, nt)
    serial = fn.append_basic_block("serial")
    threaded = fn.append_basic_block("threaded")
    b.cbranch(b.icmp_signed("<=", nt, ir.Constant(I64, 1)), serial, threaded)
    b.position_at_end(serial)
    b.call(body_fn, params + [lo, hi])
    b.ret_void()

    b.position_at_end(threaded)
    if threading == "pool":
        _emit_pool_call(m, kernel, b, body_fn, bufs, sizes, lo, hi, nt)
        return
    # chunk = max(1, total / (nt * 16)): many more chunks than threads balance skewed rows
    chunk = b.sdiv(total, b.mul(nt, ir.Constant(I64, 16)))
    chunk = b.select(b.icmp_signed("<", chunk, ir.Constant(I64, 1)), ir.Constant(I64, 1), chunk)
    counter = b.alloca(I64, name="counter")
    b.store(ir.Constant(I64, 0), counter)
    ctx = b.alloca(ctx_ty, name="ctx")
    for k, v in enumerate([bufs, sizes, lo, hi, chunk, counter]):
        b.store(v, b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
    ctx_raw = b.bitcast(ctx, I8P)
    if threading == "gomp":
        # GOMP_parallel(fn, data, nthreads, flags) runs fn on nthreads pool threads
        # (the caller among them) and returns when all are done
        gomp_fn = ir.Function(m, ir.FunctionType(VOID, [I8P]), f"{kernel.name}.gomp_worker")
        gomp_fn.linkage = "internal"
        gb = ir.IRBuilder(gomp_fn.append_basic_block("entry"))
        gb.call(worker, [gomp_fn.args[0]])
        gb.ret_void()
        gomp = ir.Function(m, ir.FunctionType(VOID, [gomp_fn.type, I8P, I32, I32]), "GOMP_parallel")
        b.call(gomp, [gomp_fn, ctx_raw, b.trunc(nt, I32), ir.Constant(I32, 0)])
        b.ret_void()
        return
    tids = b.alloca(ir.ArrayType(I64, MAX_THREADS), name="tids")
    ok = b.alloca(ir.ArrayType(I1, MAX_THREADS), name="started")
    emitter = _FunctionEmitter(b, {}, {})
    t = Var("t", DType.I64)

    def each_thread(action):
        with emitter.scope():
            slot = emitter.declare(t)
            b.store(ir.Constant(I64, 1), slot)
            cond = fn.append_basic_block("threads.cond")
            body = fn.append_basic_block("threads.body")
            exit_ = fn.append_basic_block("threads.exit")
            b.branch(cond)
            b.position_at_end(cond)
            b.cbranch(b.icmp_signed("<", b.load(slot), nt), body, exit_)
            b.position_at_end(body)
            idx = b.load(slot)
            action(idx)
            b.store(b.add(idx, ir.Constant(I64, 1)), slot)
            b.branch(cond)
            b.position_at_end(exit_)

    def start_thread(idx):
        tid_ptr = b.gep(tids, [ir.Constant(I64, 0), idx])
        rc = b.call(pthread_create, [tid_ptr, ir.Constant(I8P, None), worker, ctx_raw])
        b.store(b.icmp_signed("==", rc, ir.Constant(I32, 0)),
                b.gep(ok, [ir.Constant(I64, 0), idx]))

    def join_thread(idx):
        started = b.load(b.gep(ok, [ir.Constant(I64, 0), idx]))
        with b.if_then(started):
            tid = b.load(b.gep(tids, [ir.Constant(I64, 0), idx]))
            b.call(pthread_join, [tid, ir.Constant(I8P.as_pointer(), None)])

    each_thread(start_thread)
    b.call(worker, [ctx_raw])
    each_thread(join_thread)
    b.ret_void()


def _emit_pool_call(m, kernel, b, body_fn, bufs, sizes, lo, hi, nt) -> None:
    """Run body over [lo, hi) through spc's pool (``spc_pool_parallel``, see
    cpu_pool.py): a ``chunk(ctx, first, last)`` function unpacks the
    parameters from ``ctx = {bufs, sizes}`` and runs body on one chunk."""
    ctx_ty = ir.LiteralStructType([I8P.as_pointer(), I64.as_pointer()])
    chunk_fn = ir.Function(m, cpu_pool.CHUNK_FN, f"{kernel.name}.chunk")
    chunk_fn.linkage = "internal"
    cb = ir.IRBuilder(chunk_fn.append_basic_block("entry"))
    raw, first, last = chunk_fn.args
    ctx = cb.bitcast(raw, ctx_ty.as_pointer())
    c_bufs, c_sizes = (cb.load(cb.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
                       for k in range(2))
    cb.call(body_fn, _unpack(cb, kernel, c_bufs, c_sizes) + [first, last])
    cb.ret_void()

    ctx = b.alloca(ctx_ty, name="ctx")
    for k, v in enumerate([bufs, sizes]):
        b.store(v, b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
    entry = ir.Function(m, cpu_pool.ENTRY_FN, cpu_pool.ENTRY)
    b.call(entry, [chunk_fn, b.bitcast(ctx, I8P), lo, hi, nt])
    b.ret_void()
