"""Checking a level's arrays with a kernel made from the loop IR (on a GPU).

A device operand's storage is checked where it lives, by kernels built like
any other: the IR below goes through the target's pipeline and renderer.  One
kernel checks one level.  It reads the level's arrays once and counts what it
finds wrong in ``status``, an int32 array of two counters:

* ``status[STRUCTURE]``: entries that make the arrays malformed (a pointer
  array that does not start at 0, decreases, or does not end at the number of
  coordinates; a coordinate outside ``[0, dim)``);
* ``status[ORDER]``: entries out of the order the level promises (unsorted or
  repeated coordinates below one parent), which canonicalizing repairs.

Every load stays in bounds whatever the arrays hold (positions are clamped to
``[0, nnz)`` before they are read), so a malformed operand is counted, never
read past its end.  The caller checks what a kernel cannot see first: the
arrays' lengths against the parent count.

Parameters, by name: ``pos``/``crd`` (the level's arrays), ``parent_crd`` (a
singleton level's parent coordinates, where the order spans both levels),
``status`` (out), ``count`` (parent positions), ``dim`` (the level's
dimension), ``nnz`` (``len(crd)``).
"""
from __future__ import annotations

from functools import lru_cache

from ..ir.nodes import (BinOp, Block, Buffer, Cast, Const, DType, For, If, Kernel, Let, Load, Param,
                        ParamRole, Store, Var, add, and_, i64, lt, or_)
from ..ir.verify import verify

STRUCTURE, ORDER = 0, 1
STATUS = Buffer("status", DType.I32)
COUNT, DIM, NNZ = (Var(n, DType.I64) for n in ("count", "dim", "nnz"))


def _flag(which: int) -> Store:
    return Store(STATUS, i64(which), Const(1, DType.I32), accumulate=True)


def _wide(e) -> Cast:
    """An index array's entry as int64 (its arithmetic must not wrap)."""
    return Cast(e, DType.I64)


def _out_of_range(c) -> BinOp:
    return or_(lt(c, i64(0)), BinOp("<=", DIM, c))


def _out_of_order(prev, c, strict: bool) -> BinOp:
    return BinOp("<=", c, prev) if strict else lt(c, prev)


@lru_cache(maxsize=None)
def compressed_check(index: DType, *, ordered: bool, unique: bool) -> Kernel:
    """The check of a compressed level (``pos``, ``crd``) below ``count`` parents.

    Ensures: ``status[STRUCTURE]`` grows unless ``pos[0] == 0``,
    ``pos[q] <= pos[q + 1]`` for every q, ``pos[count] == nnz`` and every
    coordinate is in ``[0, dim)``; with ``ordered``, ``status[ORDER]`` grows
    where a coordinate is below (``unique``: not above) its predecessor in
    the same segment.  One iteration per parent, plus one for the last pointer.
    """
    pos, crd = Buffer("pos", index), Buffer("crd", index)
    q, p = Var("q", DType.I64), Var("p", DType.I64)
    lo, hi = Var("lo", DType.I64), Var("hi", DType.I64)
    a, b, c = Var("a", DType.I64), Var("b", DType.I64), Var("c", DType.I64)
    checks = [Let(c, _wide(Load(crd, p))), If(_out_of_range(c), _flag(STRUCTURE))]
    if ordered:
        prev = _wide(Load(crd, BinOp("-", p, i64(1))))
        checks.append(If(lt(a, p), If(_out_of_order(prev, c, unique), _flag(ORDER))))
    row = Block((
        Let(lo, _wide(Load(pos, q))),
        Let(hi, _wide(Load(pos, add(q, i64(1))))),
        If(or_(or_(lt(hi, lo), lt(lo, i64(0))), lt(NNZ, hi)), _flag(STRUCTURE)),
        Let(a, BinOp("max", lo, i64(0))),
        Let(b, BinOp("min", hi, NNZ)),
        For(p, a, b, Block(tuple(checks))),
    ))
    body = For(q, i64(0), add(COUNT, i64(1)), Block((
        If(BinOp("==", q, i64(0)),
           If(BinOp("!=", _wide(Load(pos, i64(0))), i64(0)), _flag(STRUCTURE))),
        If(BinOp("==", q, COUNT),
           If(BinOp("!=", _wide(Load(pos, q)), NNZ), _flag(STRUCTURE)),
           row),
    )))
    name = f"spc_check_compressed_{index.value}{'_ordered' if ordered else ''}" \
           f"{'_unique' if unique else ''}"
    return verify(Kernel(name, (Param(pos, ParamRole.INPUT), Param(crd, ParamRole.INPUT),
                                Param(STATUS, ParamRole.OUTPUT), Param(COUNT, ParamRole.SIZE),
                                Param(DIM, ParamRole.SIZE), Param(NNZ, ParamRole.SIZE)), body))


@lru_cache(maxsize=None)
def singleton_check(index: DType, *, after_parent: bool, unique: bool) -> Kernel:
    """The check of a singleton level (``crd``, one coordinate per parent).

    Ensures: ``status[STRUCTURE]`` grows for every coordinate outside
    ``[0, dim)``; with ``after_parent`` (``parent_crd`` holds the parent
    level's coordinates, which the parent's own check keeps in order),
    ``status[ORDER]`` grows where two neighbours share the parent coordinate
    and the second's coordinate is below (``unique``: not above) the first's:
    the two levels together are then not in lexicographic order.
    """
    crd, parent = Buffer("crd", index), Buffer("parent_crd", index)
    p, c = Var("p", DType.I64), Var("c", DType.I64)
    checks = [Let(c, _wide(Load(crd, p))), If(_out_of_range(c), _flag(STRUCTURE))]
    params = [Param(crd, ParamRole.INPUT)]
    if after_parent:
        before = BinOp("-", p, i64(1))
        same = BinOp("==", _wide(Load(parent, before)), _wide(Load(parent, p)))
        checks.append(If(lt(i64(0), p),
                         If(and_(same, _out_of_order(_wide(Load(crd, before)), c, unique)),
                            _flag(ORDER))))
        params.append(Param(parent, ParamRole.INPUT))
    body = For(p, i64(0), COUNT, Block(tuple(checks)))
    name = f"spc_check_singleton_{index.value}{'_after_parent' if after_parent else ''}" \
           f"{'_unique' if unique else ''}"
    return verify(Kernel(name, (*params, Param(STATUS, ParamRole.OUTPUT),
                                Param(COUNT, ParamRole.SIZE), Param(DIM, ParamRole.SIZE)), body))
