"""block_reductions: run irregular reductions in blocks of independent lanes.

SpMV's inner loop ``for p in [pos[i], pos[i+1]): acc = acc + A[p] * x[crd[p]]``
runs a different number of times for every row, and as lowered its sum is one
dependency chain, which LLVM vectorizes with hardware gathers of x in a
64/8/1-entry cascade of loops per row.  This pass gives it two shapes, chosen
per row by its length (a test that is predictable where most rows are short,
as in graphs, or most are long, as in pruned layers):

    let p_lo = lo
    let p_hi = hi
    if p_hi - p_lo <= width:                  # short rows: one guarded block
      for p_lane in [0, width) @vector:
        let p = p_lo + p_lane
        if p < p_hi:
          (the original body)
    else:                                     # longer rows: a lane per accumulator
      let acc_l0 = 0 ... let acc_l3 = 0
      for p_q in [0, (p_hi - p_lo) / width) @scalar:
        let p_l0 = p_lo + (p_q * width + 0)
        (the original body, its variables renamed _l0, adding to acc_l0)
        ... one copy per lane
      acc = acc + ((acc_l0 + acc_l1) + (acc_l2 + acc_l3))
      for p in [p_lo + (p_hi - p_lo) / width * width, p_hi) @scalar:
        (the original body)

The VECTOR block becomes one masked load of the row's coordinates and values
and one masked gather of x instead of a mispredicted branch per nonzero
(pubmed, 4.5 entries a row: 134 -> 60 us on a Zen 5, 2026-11-28).  The SCALAR
loops are not vectorized across iterations; LLVM's SLP vectorizer packs one
iteration's lanes instead: scalar index loads, x loaded lane by lane into a
vector, one vector load of A's values and vector multiply-adds, the shape of
MKL's SpMV kernel, where the gather cascade spent its time in index extracts
and its loops' exits.  Single-threaded p50 against the cascade (2-core Zen 4,
loaded, 2026-11-29, one process, us): rn50 final_dense (102 a row) 39.1 ->
28.1, facebook 70 -> 50, pubmed 78 -> 68, soc-brightkite 542 -> 499, 256 a
row 47 -> 35; ogbl-ddi (500 a row, 17 MB, memory-bound) 817 -> 942 is slower.
The same entries are added; only the order of the additions changes, as the
vectorizer already may change it for a reduction (``reassoc`` on accumulator
updates).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.nodes import (Assign, BinOp, Block, Const, DType, For, If, Kernel, Let, Load, LoopKind,
                        Var, add, i64, lt, mul, sub)
from ..ir.traverse import rewrite, walk

WIDTH = 4      # lanes: an xmm vector of f32 (the short block on Zen 5: 4 beat 8 and 16,
               # pubmed 60 vs 78 vs 128 us; 8 lanes for every row, Zen 4: pubmed 58
               # against 48 us, PROTEINS 309 against 87)


def _stmts(s) -> tuple:
    return s.body if isinstance(s, Block) else (s,)


def _is_reduction(loop: For, outer: set[str]) -> bool:
    """True when ``loop`` is serial, holds only Lets and accumulator updates
    ``acc = acc + e`` of variables declared outside it (``outer``), and reads
    its own variable only through its body (no nested loops, stores or ifs)."""
    if loop.kind is not LoopKind.SERIAL:
        return False
    body = _stmts(loop.body)
    updates = 0
    for s in body:
        if isinstance(s, Let):
            continue
        if not isinstance(s, Assign) or s.var.name not in outer:
            return False
        v = s.value
        if not (isinstance(v, BinOp) and v.op == "+" and v.lhs == s.var):
            return False
        if any(isinstance(n, Var) and n.name == s.var.name for n in walk(v.rhs)):
            return False
        updates += 1
    return updates > 0


def _reads_memory(e) -> bool:
    return any(isinstance(n, Load) for n in walk(e))


def _zero(dtype: DType) -> Const:
    return Const(0 if dtype.is_int else 0.0, dtype)


def _tree_sum(terms: list) -> object:
    """``terms`` added pairwise: ((t0 + t1) + (t2 + t3)) ..."""
    while len(terms) > 1:
        terms = [BinOp("+", terms[k], terms[k + 1]) if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


def _blocked(loop: For, width: int) -> Block:
    """``loop`` as one guarded VECTOR block of ``width`` lanes when it runs at
    most ``width`` times, else as SCALAR blocks of ``width`` lanes, each adding
    into accumulators of its own, then the remaining entries (see the module
    docstring)."""
    name = loop.var.name
    lo, hi = Var(f"{name}_lo", DType.I64), Var(f"{name}_hi", DType.I64)
    block = Var(f"{name}_q", DType.I64)
    body = _stmts(loop.body)
    accs = [s.var for s in body if isinstance(s, Assign)]
    accs = list(dict.fromkeys(accs))
    local = {s.var.name for s in body if isinstance(s, Let)} | {name}
    lanes = []
    for lane in range(width):
        renamed = {n: f"{n}_l{lane}" for n in local} | {a.name: f"{a.name}_l{lane}" for a in accs}

        def rename(n, renamed=renamed):
            return Var(renamed[n.name], n.dtype) if isinstance(n, Var) and n.name in renamed else n
        first = Let(Var(renamed[name], loop.var.dtype),
                    add(lo, add(mul(block, i64(width)), i64(lane))))
        lanes.append(first)
        lanes.extend(rewrite(s, rename) for s in body)
    count = BinOp("/", sub(hi, lo), i64(width))
    main = For(block, i64(0), count, Block(tuple(lanes)), LoopKind.SCALAR)
    inits = [Let(Var(f"{a.name}_l{lane}", a.dtype), _zero(a.dtype))
             for a in accs for lane in range(width)]
    folds = [Assign(a, BinOp("+", a, _tree_sum([Var(f"{a.name}_l{lane}", a.dtype)
                                               for lane in range(width)]))) for a in accs]
    rest = replace(loop, lo=add(lo, mul(count, i64(width))), hi=hi, kind=LoopKind.SCALAR)
    lane = Var(f"{name}_lane", DType.I64)
    guarded = Block((Let(loop.var, add(lo, lane)), If(lt(loop.var, hi), loop.body)))
    short = For(lane, i64(0), i64(width), guarded, LoopKind.VECTOR)
    return Block((Let(lo, loop.lo), Let(hi, loop.hi),
                  If(BinOp("<=", sub(hi, lo), i64(width)), short,
                     Block((*inits, main, *folds, rest)))))


def _rewrite(s, outer: set[str], width: int):
    """``s`` with every matching innermost reduction loop blocked; ``outer``
    holds the variables declared before ``s`` in enclosing scopes."""
    if isinstance(s, Block):
        seen = set(outer)
        out = []
        for t in s.body:
            out.append(_rewrite(t, seen, width))
            if isinstance(t, Let):
                seen.add(t.var.name)
        return Block(tuple(out))
    if isinstance(s, For):
        if _reads_memory(s.lo) or _reads_memory(s.hi):
            if _is_reduction(s, outer):
                return _blocked(s, width)
        return replace(s, body=_rewrite(s.body, outer | {s.var.name}, width))
    if isinstance(s, If):
        return replace(s, then=_rewrite(s.then, outer, width),
                       otherwise=None if s.otherwise is None else _rewrite(s.otherwise, outer, width))
    return s


def block_reductions(kernel: Kernel, *, width: int = WIDTH) -> Kernel:
    """Run every innermost reduction loop over a data-dependent range in blocks
    of ``width`` lanes with an accumulator per lane.

    Requires: nothing (loops that do not match are left alone); ``width`` >= 1
    (1 leaves the kernel as it is).
    Ensures: a serial loop whose bounds are read from memory (a compressed
    level's ``pos``; a dense range ``[0, size)`` vectorizes well already) and
    whose body is Lets and updates ``acc = acc + e`` of scalars declared
    outside it runs, when its trip count is at most ``width``, as ``width``
    guarded lanes of a VECTOR loop, else as SCALAR blocks of ``width`` lanes,
    each lane adding into accumulators of its own that are added into ``acc``
    after the blocks, then a SCALAR loop over the remaining entries; every
    position is visited once and results are unchanged up to the order of
    additions.
    """
    if width <= 1:
        return kernel
    params = {p.name for p in kernel.params}
    return replace(kernel, body=_rewrite(kernel.body, params, width))
