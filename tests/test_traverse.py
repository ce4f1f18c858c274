"""spc.ir.traverse's walk and rewrite, the stack-based walk and the per-type field
cache, against the plain recursive definitions they replaced (same nodes, same
order, same rebuilt trees) on scheduled CPU and CUDA kernels."""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace

import pytest

import spc
from spc.ir.nodes import Const, DType, LoopKind, Var
from spc.ir.traverse import rewrite, walk


def _walk_reference(node):
    if isinstance(node, tuple):
        for n in node:
            yield from _walk_reference(n)
        return
    if not is_dataclass(node) or isinstance(node, type):
        return
    yield node
    for f in fields(node):
        child = getattr(node, f.name)
        if isinstance(child, tuple) or is_dataclass(child):
            yield from _walk_reference(child)


def _rewrite_reference(node, fn):
    if isinstance(node, tuple):
        return tuple(_rewrite_reference(n, fn) for n in node)
    if not is_dataclass(node) or isinstance(node, type):
        return node
    changes = {}
    for f in fields(node):
        old = getattr(node, f.name)
        if isinstance(old, tuple) or (is_dataclass(old) and not isinstance(old, type)):
            new = _rewrite_reference(old, fn)
            if new is not old:
                changes[f.name] = new
    if changes:
        node = replace(node, **changes)
    return fn(node)


KERNELS = [
    dict(kernel="spmm", fmt="csr"),
    dict(kernel="sddmm", fmt="bsr(2,2)"),
    dict(kernel="C[i,j] = A[i,j]+B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"}),
    dict(kernel="spmm", fmt="csr", target="cuda", arch="sm_90"),
    dict(kernel="sddmm", fmt="coo", target="cuda", arch="sm_90"),
    dict(kernel="spmv", fmt="ell", target="cuda", arch="sm_90", deterministic=True),
]


def _kernels(kw):
    return spc.compile(**kw)._variant(DType.I32).kernels


@pytest.mark.parametrize("kw", KERNELS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_walk_visits_what_the_recursive_walk_visits_in_its_order(kw):
    for kernel in _kernels(kw):
        got, want = list(walk(kernel)), list(_walk_reference(kernel))
        assert len(got) == len(want) > 10
        assert all(g is w for g, w in zip(got, want))


def _bump(n):
    """Every int constant plus one, every serial loop made a vector loop: a
    rewrite that changes leaves and inner nodes."""
    if isinstance(n, Const) and n.dtype.is_int:
        return replace(n, value=n.value + 1)
    if getattr(n, "kind", None) is LoopKind.SERIAL:
        return replace(n, kind=LoopKind.VECTOR)
    return n


@pytest.mark.parametrize("kw", KERNELS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_rewrite_builds_what_the_recursive_rewrite_builds(kw):
    for kernel in _kernels(kw):
        got, want = rewrite(kernel, _bump), _rewrite_reference(kernel, _bump)
        assert got == want and got != kernel
        assert rewrite(kernel, lambda n: n) == kernel


@dataclass(frozen=True)
class _Holder:
    cls: type
    items: tuple
    name: str


def test_a_class_valued_field_is_not_walked_into_and_tuples_nest():
    """A field holding a dataclass class is a value, not a node; nested tuples
    are flattened; non-node values (str, int, list) are skipped."""
    v, c = Var("x", DType.I64), Const(1, DType.I64)
    h = _Holder(cls=Var, items=((v, 3), [c], (c,)), name="h")
    assert list(walk(h)) == list(_walk_reference(h)) == [h, v, c]
    assert rewrite(h, lambda n: n) == _rewrite_reference(h, lambda n: n) == h
