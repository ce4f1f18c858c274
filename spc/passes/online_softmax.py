"""Online softmax: a row's max pass, sum-of-exp pass and weighted-sum pass -> one pass.

The fused attention row kernel (``fuse_rows``, scores inlined or loaded) walks
each row's entries three times:

    let m_acc = -inf; let seen = false
    for p in row: x = score(p); m_acc = max(m_acc, x); seen = true
    let m = select(seen, m_acc, 0)
    let l = 0
    for p in row: x = score(p); l = l + F(p) * exp(x - m)
    let r = 1 / max(l, 1e-30)
    for p in row: x = score(p); for d: O[i,d] += G(p,d) * exp(x - m) * r

``online_softmax`` makes that one walk carrying the running max ``m_acc``, the
running sum ``l`` and the output row (in ``O`` itself, which only this row's
iteration touches), rescaling both by ``exp(m_old - m_new)`` when the max
grows (FlashAttention's recurrence), then scaling the row by ``r`` once:

    for p in row:
      x = score(p)
      let m_old = m_acc; m_acc = max(m_acc, x); seen = true
      if m_old != m_acc:                       # the max grew
        let c = exp(m_old - m_acc)
        l = select(m_old == -inf, 0, l * c);  for d: O[i,d] = select(m_old == -inf, 0, O[i,d] * c)
      l = l + F(p) * exp(x - m_acc)
      for d: O[i,d] += G(p,d) * exp(x - m_acc)
    let m = select(seen, m_acc, 0); let r = 1 / max(l, 1e-30)
    if seen: for d: O[i,d] = O[i,d] * r

The scores are computed once per entry.  ``select(m_old == -inf, 0, ...)``
drops what entries of score -inf summed (``exp(-inf - -inf)`` is NaN) when a
finite score arrives, as the three passes give them weight 0; a row of -inf
scores only gives NaN, as before.  A row with no entries leaves ``O`` at 0.
The rewrite holds for any ``F``, ``G`` and ``x`` (exactly, up to rounding),
since each term depends on ``m`` only through one factor ``exp(e - m)``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..ir.nodes import (Assign, BinOp, Block, Call, Const, DType, For, If, Kernel, Let, Load,
                        ParamRole, Select, Stmt, Store, Var, While, dtype_of)
from ..ir.simplify_expr import simplify_expr
from ..ir.traverse import rewrite, walk


class _NoMatch(Exception):
    pass


def online_softmax(kernel: Kernel, *, recomputed_only: bool = False) -> Kernel:
    """``kernel`` with each max / sum-of-exp / exp-weighted-sum triple of loops
    over the same range (module docstring) made one loop.

    Requires: nothing; a statement list without the triple is left as it is,
    and so is one the rescaling could corrupt: the triple must sit in the
    kernel's independent loops only (``outer_independent``,
    ``rows_independent``: each iteration owns the output entries it stores),
    the kernel must not add to its output's prior contents, and the output
    must be read or written nowhere but in the third loop.
    Ensures: the same numbers (to rounding), each such row walked once; the
    output row accumulates in the output buffer (rescaled in place), so the
    output is read back, never only overwritten.  ``recomputed_only``: rewrite
    only triples whose max loop computes its scores (an inner loop: the inlined
    producer of ``fuse=True``), leaving rows that read stored scores as they are
    (the CUDA pipeline's choice: see its comment).
    """
    if kernel.adds_to_output:
        return kernel
    facts = _Facts(
        assigned=frozenset(n.var.name for n in walk(kernel.body) if isinstance(n, Assign)),
        outputs=frozenset(p.name for p in kernel.params if p.role is ParamRole.OUTPUT),
        independent=frozenset(v for v in (kernel.outer_independent, kernel.rows_independent)
                              if v is not None),
        body=kernel.body, recomputed_only=recomputed_only)
    body = _visit(kernel.body, {}, True, facts)
    return kernel if body is kernel.body else replace(kernel, body=body)


@dataclass(frozen=True)
class _Facts:
    """What the matcher asks of the whole kernel: scalars assigned anywhere,
    output buffers, the independent loops' variables, the body, and whether only
    rows that compute their scores are rewritten."""
    assigned: frozenset
    outputs: frozenset
    independent: frozenset
    body: Stmt
    recomputed_only: bool = False


def _visit(s: Stmt, env: dict, owned: bool, facts: _Facts) -> Stmt:
    """``s`` with every matching triple below it rewritten (``env``: the lets of
    the enclosing statements that are never assigned, by name; ``owned``: every
    enclosing loop is one of the kernel's independent loops)."""
    if isinstance(s, Block):
        inner = dict(env)
        out = []
        for st in s.body:
            out.append(_visit(st, inner, owned, facts))
            if isinstance(st, Let) and st.var.name not in facts.assigned:
                inner[st.var.name] = st.value
        while owned:
            new = _rewrite_once(out, env, facts)
            if new is None:
                break
            out = new
        return s if out == list(s.body) else Block(tuple(out))
    if isinstance(s, For):
        body = _visit(s.body, env, owned and s.var.name in facts.independent, facts)
        return s if body is s.body else replace(s, body=body)
    if isinstance(s, While):
        body = _visit(s.body, env, False, facts)
        return s if body is s.body else replace(s, body=body)
    if isinstance(s, If):
        then = _visit(s.then, env, owned, facts)
        other = None if s.otherwise is None else _visit(s.otherwise, env, owned, facts)
        return s if (then is s.then and other is s.otherwise) else replace(s, then=then,
                                                                             otherwise=other)
    return s


def _rewrite_once(stmts: list, env: dict, facts: _Facts) -> list | None:
    """``stmts`` with the first matching triple rewritten, or None."""
    fors = [n for n, s in enumerate(stmts) if isinstance(s, For)]
    for a, b, c in zip(fors, fors[1:], fors[2:]):
        try:
            return _rewrite(stmts, a, b, c, env, facts)
        except _NoMatch:
            continue
    return None


def _resolve(e, env: dict):
    """``e`` with never-assigned lets of ``env`` substituted until none is left."""
    seen = None
    while e != seen:
        seen, e = e, rewrite(e, lambda n: env.get(n.name, n) if isinstance(n, Var) else n)
    return e


def _names(node) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, Var)}


def _stmts(s) -> list:
    return list(s.body) if isinstance(s, Block) else [s]


def _rewrite(stmts: list, a: int, b: int, c: int, env: dict, facts: _Facts) -> list:
    loops = [stmts[a], stmts[b], stmts[c]]
    if not all(isinstance(s, Let) for s in stmts[a + 1:b] + stmts[b + 1:c]):
        raise _NoMatch("statements other than lets between the loops")
    lets = {s.var.name: s for s in stmts[:c] if isinstance(s, Let)}
    local = dict(env)
    local.update({s.var.name: s.value for s in stmts[:c]
                  if isinstance(s, Let) and s.var.name not in facts.assigned})
    first, second, third = loops
    if facts.recomputed_only and not any(isinstance(n, For) for n in walk(first.body)):
        raise _NoMatch("the max loop reads stored scores (recomputed_only)")
    for loop in (first, second):
        if loop.var.dtype != third.var.dtype or loop.kind != third.kind or any(
                _resolve(x, local) != _resolve(y, local)
                for x, y in ((loop.lo, third.lo), (loop.hi, third.hi))):
            raise _NoMatch("the loops run over different ranges")
    path1, leaf1, map1 = _align(first, third, local)
    path2, leaf2, map2 = _align(second, third, local)
    if path1[:-1] != path2[:-1]:
        raise _NoMatch("the loops' updates sit under different conditions")
    # the updates go after the statements of the third loop either loop matched
    path = path1[:-1] + (max(path1[-1], path2[-1]),)
    leaf3 = _leaf_of(third, path)

    # the max pass: m_acc = max(m_acc, x) [; seen = true], m_acc from -inf, seen from false
    updates1 = [_renamed(s, map1) for s in leaf1]
    m_acc, seen = _max_updates(updates1, lets)
    m_let = _the_let(stmts[a + 1:b], lambda v: _is_max_of(v, m_acc, seen))
    # the sum pass: l = l + F * exp(e - m), l from 0
    updates2 = [_renamed(s, map2) for s in leaf2]
    if len(updates2) != 1 or not isinstance(updates2[0], Assign):
        raise _NoMatch("the second loop does more than one sum")
    l_acc = updates2[0].var
    step = updates2[0].value
    if not (isinstance(step, BinOp) and step.op == "+" and step.lhs == l_acc) \
            or l_acc.name not in lets or not _is_const(lets[l_acc.name].value, 0):
        raise _NoMatch("the second loop's update is not a sum from 0")
    term2 = step.rhs
    m = m_let.var
    if not _exp_factor(term2, m.name) or _names(term2) & {l_acc.name, m_acc.name, seen.name}:
        raise _NoMatch("the sum's term is not F * exp(e - m)")
    r_let = _the_let(stmts[b + 1:c], lambda v: l_acc.name in _names(v)
                     and not (_names(v) & {m.name, m_acc.name}))
    r = r_let.var
    special = {m.name, r.name, m_acc.name, l_acc.name, seen.name}
    between = [s for s in stmts[a + 1:b] + stmts[b + 1:c] if s is not m_let and s is not r_let]
    if any(_names(s.value) & special for s in between):
        raise _NoMatch("a let between the loops reads the row's max or sum")
    stores = [n for n in walk(tuple(leaf3)) if isinstance(n, Store)]
    if not stores or any(not st.accumulate or st.atomic or st.buf.name not in facts.outputs
                         or not _exp_factor(st.value, m.name)
                         or not _factor(st.value, r.name) for st in stores):
        raise _NoMatch("the third loop's stores are not O += G * exp(e - m) * r")
    store_bufs = {st.buf.name for st in stores}
    if any(isinstance(n, Load) and n.buf.name in store_bufs for lp in loops for n in walk(lp)):
        raise _NoMatch("the loops read the output they sum into")
    if _uses(facts.body, store_bufs) != _uses(third, store_bufs):
        raise _NoMatch("the output is read or written outside the third loop")
    if any(isinstance(n, Assign) for n in walk(tuple(leaf3))):
        raise _NoMatch("the third loop carries scalars")
    if _names(tuple(_with_stores(leaf3, lambda st: replace(st, value=Const(0, DType.I64))))) \
            & {m.name, r.name}:
        raise _NoMatch("the third loop reads the row's max or sum outside its stores")
    outside = _names(tuple(s for st in stores for s in (st.value,))) - {m.name, r.name}
    if outside & {m_acc.name, l_acc.name, seen.name}:
        raise _NoMatch("the weighted sum reads the running max or sum")

    dt = m_acc.dtype
    if l_acc.dtype != dt or any(dtype_of(st.value) != dt for st in stores):
        raise _NoMatch("the max, the sum and the weighted sum differ in type")
    m_old = Var(f"{m_acc.name}_old", dt)
    scale = Var(f"{m_acc.name}_rescale", dt)
    if _names(facts.body) & {m_old.name, scale.name}:
        raise _NoMatch("the names the rewrite declares are taken")
    neg_inf = Const(float("-inf"), dt)
    was_empty = BinOp("==", m_old, neg_inf)

    def rescaled(old):
        return Select(was_empty, Const(0.0, dt), BinOp("*", old, scale))

    def running(e):
        return rewrite(e, lambda n: m_acc if isinstance(n, Var) and n.name == m.name else n)

    def unit(e):
        return simplify_expr(rewrite(e, lambda n: Const(1.0, n.dtype)
                                     if isinstance(n, Var) and n.name == r.name else n))

    rescale = Block((Let(scale, Call("exp", BinOp("-", m_old, m_acc))),
                     Assign(l_acc, rescaled(l_acc)),
                     *_pruned(_with_stores(leaf3, lambda st: Store(
                         st.buf, st.index, rescaled(Load(st.buf, st.index)))))))
    leaf = [Let(m_old, m_acc), *updates1,
            If(BinOp("!=", m_old, m_acc), rescale),
            Assign(l_acc, BinOp("+", l_acc, running(term2))),
            *_with_stores(leaf3, lambda st: replace(st, value=unit(running(st.value))))]
    merged = _replace_leaf(third, path, leaf)
    normalize = _pruned(_with_stores(leaf3, lambda st: Store(
        st.buf, st.index, BinOp("*", Load(st.buf, st.index), r))))
    declared = {third.var.name} | {n.var.name for n in walk(third) if isinstance(n, (Let, For))}
    mine = {n.var.name for n in walk(tuple(normalize)) if isinstance(n, (Let, For))}
    if (_names(tuple(normalize)) - mine) & declared:
        raise _NoMatch("the output's entries depend on the row's entries")
    # a row with no entries keeps 0 (its r may be 1 / 0)
    return (stmts[:a] + between + [merged, m_let, r_let, If(seen, Block(tuple(normalize)))]
            + stmts[c + 1:])


def _uses(node, bufs: set) -> int:
    """How many loads and stores of ``bufs`` ``node`` holds."""
    return sum(1 for n in walk(node) if isinstance(n, (Load, Store)) and n.buf.name in bufs)


def _is_const(e, value) -> bool:
    return isinstance(e, Const) and e.value == value


def _max_updates(updates: list, lets: dict) -> tuple[Var, Var]:
    """(running max, seen flag) of the first loop's updates ``m_acc = max(m_acc,
    x)`` and ``seen = true``, each declared by a let (-inf, false)."""
    m_acc = seen = None
    for s in updates:
        if not isinstance(s, Assign):
            raise _NoMatch("the first loop does more than a max")
        if s.var.dtype is DType.BOOL and _is_const(s.value, True) and seen is None:
            seen = s.var
        elif isinstance(s.value, BinOp) and s.value.op == "max" and s.value.lhs == s.var \
                and s.var.name not in _names(s.value.rhs) and m_acc is None:
            m_acc = s.var
        else:
            raise _NoMatch("the first loop does more than a max")
    if seen is None:
        raise _NoMatch("no flag says whether the row has entries")
    if m_acc is None or not m_acc.dtype.is_float or m_acc.name not in lets \
            or not _is_const(lets[m_acc.name].value, float("-inf")):
        raise _NoMatch("no running max from -inf")
    if seen.name not in lets or not _is_const(lets[seen.name].value, False):
        raise _NoMatch("the seen flag does not start false")
    if seen.name in _names(tuple(updates)) - {seen.name}:
        raise _NoMatch("the seen flag is read in the loop")
    return m_acc, seen


def _is_max_of(v, m_acc: Var, seen: Var) -> bool:
    """Whether ``v`` is the row's max: ``m_acc`` or ``select(seen, m_acc, _)``."""
    if v == m_acc:
        return True
    return isinstance(v, Select) and v.cond == seen \
        and v.if_true == m_acc and m_acc.name not in _names(v.if_false)


def _the_let(stmts: list, pred) -> Let:
    found = [s for s in stmts if isinstance(s, Let) and pred(s.value)]
    if len(found) != 1:
        raise _NoMatch("no single let of the row's max or sum")
    return found[0]


def _exp_factor(e, m: str) -> bool:
    """Whether ``e`` is a product with one factor ``exp(x - m)`` (``x`` free of
    ``m``) and ``m`` nowhere else."""
    if isinstance(e, Call) and e.fn == "exp" and isinstance(e.value, BinOp) \
            and e.value.op == "-" and isinstance(e.value.rhs, Var) and e.value.rhs.name == m:
        return m not in _names(e.value.lhs)
    if isinstance(e, BinOp) and e.op == "*":
        left, right = m in _names(e.lhs), m in _names(e.rhs)
        if left != right:
            return _exp_factor(e.lhs if left else e.rhs, m)
    return False


def _factor(e, r: str) -> bool:
    """Whether ``e`` is a product with one factor ``r`` and ``r`` nowhere else."""
    if isinstance(e, Var):
        return e.name == r
    if isinstance(e, BinOp) and e.op == "*":
        left, right = r in _names(e.lhs), r in _names(e.rhs)
        if left != right:
            return _factor(e.lhs if left else e.rhs, r)
    return False


def _renamed(s, names: dict):
    return rewrite(s, lambda n: names.get(n.name, n) if isinstance(n, Var) else n)


def _align(loop: For, third: For, env: dict):
    """(path, leaf, names): ``loop``'s body matches ``third``'s statement for
    statement (names declared mapped to ``third``'s, ``names``) down to its
    ``leaf`` statements, reached through the ``If`` statements at ``path``
    (position of each If, then the leaf's start in the innermost list)."""
    names = {loop.var.name: third.var}
    mine, theirs, path = _stmts(loop.body), _stmts(third.body), []
    while True:
        n = 0
        while n < len(mine) and n < len(theirs) and _same(mine[n], theirs[n], names, env):
            n += 1
        rest_mine, rest_theirs = mine[n:], theirs[n:]
        if rest_mine and rest_theirs and isinstance(rest_mine[0], If) \
                and isinstance(rest_theirs[0], If) and len(rest_mine) == len(rest_theirs) == 1 \
                and rest_mine[0].otherwise is None and rest_theirs[0].otherwise is None \
                and _same_expr(rest_mine[0].cond, rest_theirs[0].cond, names, env):
            path.append(n)
            mine, theirs = _stmts(rest_mine[0].then), _stmts(rest_theirs[0].then)
            continue
        path.append(n)
        return tuple(path), rest_mine, names


def _leaf_of(third: For, path: tuple) -> list:
    stmts = _stmts(third.body)
    for n in path[:-1]:
        stmts = _stmts(stmts[n].then)
    return stmts[path[-1]:]


def _replace_leaf(third: For, path: tuple, leaf: list) -> For:
    def go(stmts: list, depth: int) -> list:
        n = path[depth]
        if depth == len(path) - 1:
            return stmts[:n] + leaf
        inner = stmts[n]
        return stmts[:n] + [replace(inner, then=Block(tuple(go(_stmts(inner.then), depth + 1))))]
    return replace(third, body=Block(tuple(go(_stmts(third.body), 0))))


def _same_expr(x, y, names: dict, env: dict) -> bool:
    return _resolve(_renamed(x, names), env) == _resolve(y, env)


def _same(s, t, names: dict, env: dict) -> bool:
    """Whether statement ``s`` does what ``t`` does, ``s``'s names mapped by
    ``names`` (extended with what both declare when they match)."""
    if isinstance(s, Let) and isinstance(t, Let):
        if s.var.dtype == t.var.dtype and _same_expr(s.value, t.value, names, env):
            names[s.var.name] = t.var
            return True
        return False
    if isinstance(s, Assign) and isinstance(t, Assign):
        return names.get(s.var.name) == t.var and _same_expr(s.value, t.value, names, env)
    if isinstance(s, For) and isinstance(t, For):
        if s.kind != t.kind or s.var.dtype != t.var.dtype or not (
                _same_expr(s.lo, t.lo, names, env) and _same_expr(s.hi, t.hi, names, env)):
            return False
        trial = dict(names)
        trial[s.var.name] = t.var
        a, b = _stmts(s.body), _stmts(t.body)
        if len(a) != len(b) or not all(_same(x, y, trial, env) for x, y in zip(a, b)):
            return False
        names.update(trial)
        return True
    return False


def _with_stores(stmts: list, fn) -> list:
    return list(rewrite(tuple(stmts), lambda n: fn(n) if isinstance(n, Store) else n))


def _pruned(stmts: list) -> list:
    """``stmts`` without the lets no store, loop bound or later kept let reads,
    and without loops left storing nothing."""
    out, live = [], set()
    for s in reversed(stmts):
        if isinstance(s, Let):
            if s.var.name in live:
                out.append(s)
                live |= _names(s.value)
        elif isinstance(s, For):
            body = _pruned(_stmts(s.body))
            if any(isinstance(n, Store) for n in walk(tuple(body))):
                out.append(replace(s, body=Block(tuple(body))))
                live |= _names((s.lo, s.hi)) | _names(tuple(body))
        elif isinstance(s, Store):
            out.append(s)
            live |= _names((s.index, s.value))
        else:
            raise _NoMatch("the weighted sum does more than lets, loops and stores")
    return out[::-1]
