"""Workspaces kept between calls on the CPU (spc/codegen/cpu_workspaces.py) and
the IR claim that allows it (``Alloc.contents``: CLEAN, UNDEFINED), which the
interpreter checks."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cpu import CPUTarget
from spc.codegen.cpu_workspaces import MAX_KEPT, load_workspaces
from spc.ir.interp import ClaimError, run_kernel
from spc.ir.nodes import (Alloc, Block, Buffer, Contents, DType, For, Kernel, Load, Param,
                          ParamRole, Store, Var, i64)
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes.pipeline import cpu_pipeline

from matrices import from_mask, random_mask, rng_for
from test_interp import lower_expr

I64 = DType.I64
SPGEMM = "C[i,j] = A[i,k]*B[k,j]"
CSR3 = {"A": "csr", "B": "csr", "C": "csr"}


@pytest.fixture
def cache():
    """The process's cache, emptied before and after the test."""
    ws = load_workspaces()
    ws.release()
    yield ws
    ws.release()


def _bytes_at(address: int, n: int) -> bytes:
    return ctypes.string_at(address, n)


def test_a_zeroed_take_never_returns_a_dirty_buffer(cache):
    p = cache.take(4096, 1)
    assert _bytes_at(p, 4096) == bytes(4096)
    ctypes.memset(p, 0x5A, 4096)
    cache.give(p, 0)                           # given back dirty
    assert cache.kept() >= 4096
    q = cache.take(4096, 1)
    assert _bytes_at(q, 4096) == bytes(4096)
    cache.give(q, 1)
    r = cache.take(4096, 0)                     # either buffer serves an undefined one
    assert r in (p, q)
    cache.give(r, 0)


def test_a_clean_buffer_is_handed_on_and_a_small_one_is_not(cache):
    p = cache.take(1000, 1)
    cache.give(p, 1)
    assert cache.take(1000, 1) == p            # the kept buffer, zeroed
    cache.give(p, 1)
    big = cache.take(5000, 1)                  # p is too small for it
    assert big != p and _bytes_at(big, 5000) == bytes(5000)
    cache.give(big, 1)
    kept = cache.kept()
    assert kept >= 6000
    cache.release()
    assert cache.kept() == 0


def test_a_buffer_past_the_cap_is_freed_not_kept(cache):
    p = cache.take(MAX_KEPT + 64, 0)
    cache.give(p, 0)
    assert cache.kept() == 0


def _workspace_kernel(contents: Contents, reset: bool) -> Kernel:
    """for r in [0, 4): ws[r] += x; out[r] = ws[r]; (ws[r] = 0 if reset)."""
    out, ws, r, x = Buffer("out", DType.F64), Buffer("ws", DType.F64), Var("r", I64), Var("x", I64)
    body = [Store(ws, r, i64(0) if contents is Contents.UNDEFINED else Load(ws, r),
                  accumulate=False),
            Store(ws, r, Load(ws, r), accumulate=False), Store(out, r, Load(ws, r))]
    if reset:
        body.append(Store(ws, r, i64(0)))
    return verify(Kernel("k", (Param(out, ParamRole.OUTPUT), Param(x, ParamRole.SIZE)),
                         Block((Alloc(ws, x, contents=contents),
                                For(r, i64(0), x, Block(tuple(body)))))))


def test_the_interpreter_checks_a_clean_claim():
    run_kernel(_workspace_kernel(Contents.CLEAN, reset=True),
               {"out": np.zeros(4), "x": np.int64(4)})
    bad = Kernel("k", (Param(Buffer("out", DType.F64), ParamRole.OUTPUT),
                       Param(Var("x", I64), ParamRole.SIZE)),
                 Block((Alloc(Buffer("ws", DType.F64), Var("x", I64), contents=Contents.CLEAN),
                        Store(Buffer("ws", DType.F64), i64(1), i64(3)))))
    with pytest.raises(ClaimError, match="ws is declared clean"):
        run_kernel(verify(bad), {"out": np.zeros(4), "x": np.int64(4)})


def test_the_interpreter_fills_an_undefined_workspace_with_garbage():
    out = np.zeros(3)
    k = Kernel("k", (Param(Buffer("out", DType.F64), ParamRole.OUTPUT),
                     Param(Var("x", I64), ParamRole.SIZE)),
               Block((Alloc(Buffer("ws", DType.F64), Var("x", I64),
                            contents=Contents.UNDEFINED),
                      Store(Buffer("out", DType.F64), i64(0), Load(Buffer("ws", DType.F64),
                                                                   i64(2))))))
    run_kernel(verify(k), {"out": out, "x": np.int64(3)})
    assert np.isnan(out[0])


def test_the_printer_shows_the_claim():
    text = format_kernel(_workspace_kernel(Contents.CLEAN, reset=True))
    assert "workspace ws: f64[x] clean" in text


@pytest.mark.parametrize("threading, takes", [("pool", True), ("pthread", False)])
def test_only_kernels_of_spcs_runtime_take_kept_workspaces(threading, takes):
    kernel = lower_expr(SPGEMM, CSR3).program.compute
    for p in cpu_pipeline(spc.Schedule()):
        kernel = verify(p(kernel), p.__name__)
    source = CPUTarget(threading=threading).render(kernel)
    assert ('"spc_ws_take"' in source) is takes
    assert ('"spc_ws_give"' in source) is takes
    assert ('"calloc"' in source) is not takes


def _product(seed: str, m: int, k: int, n: int, density: float) -> tuple:
    rng = rng_for(seed)
    a = from_mask(random_mask(rng, (m, k), density), rng, np.float64)
    b = from_mask(random_mask(rng, (k, n), density), rng, np.float64)
    return a, b


@pytest.mark.parametrize("threads", [1, 2])
def test_calls_of_growing_and_shrinking_widths_match_scipy(cache, threads):
    """Each call takes the buffers the last one gave back (wider or narrower
    rows, and cancelling sums that leave the sums' slots to be reset): the
    results stay scipy's."""
    k = spc.compile(SPGEMM, formats=CSR3, dtype="float64",
                    schedule=spc.Schedule(threads=threads))
    shapes = [(50, 40, 30, 0.2), (400, 300, 2000, 0.02), (60, 30, 10, 0.5),
              (300, 200, 5000, 0.01), (1, 1, 1, 1.0), (0, 5, 7, 0.5), (200, 100, 800, 0.05)]
    for t, (m, kk, n, d) in enumerate(shapes * 2):
        a, b = _product(f"ws-{t % len(shapes)}", m, kk, n, d)
        if t == 3:             # cancellation: [A, -A] @ [B; B] sums to exactly zero
            a.data, b.data = np.ceil(a.data * 8), np.ceil(b.data * 8)   # small integers
            a = sp.hstack([a, -a]).tocsr()
            b = sp.vstack([b, b]).tocsr()
        c = k(A=a, B=b)
        e = (a @ b).tocsr()
        e.eliminate_zeros()
        e.sort_indices()
        assert np.array_equal(c.indptr, e.indptr), t
        assert np.array_equal(c.indices, e.indices), t
        np.testing.assert_allclose(c.data, e.data, rtol=1e-12, atol=1e-12)
    assert cache.kept() > 0


def test_concurrent_calls_share_the_cache_safely(cache):
    """Python threads calling at once (the launch releases the GIL) take and give
    back workspaces concurrently: every result stays scipy's.  The first calls
    race too: before builds were made once under a lock, two threads building
    the same kernel replaced each other's launchers, freeing the code a fast
    plan pointed at (a segmentation fault here)."""
    from concurrent.futures import ThreadPoolExecutor
    k = spc.compile(SPGEMM, formats=CSR3, dtype="float64", schedule=spc.Schedule(threads=2))
    shapes = [(300, 200, 3000, 0.02), (80, 60, 500, 0.1), (200, 100, 20000, 0.01)]
    pairs = [_product(f"conc-{t}", *shapes[t % 3]) for t in range(6)]
    expected = []
    for a, b in pairs:
        e = (a @ b).tocsr()
        e.eliminate_zeros()
        e.sort_indices()
        expected.append(e)

    def run(t):
        a, b = pairs[t % len(pairs)]
        return t % len(pairs), k(a, b)

    with ThreadPoolExecutor(4) as pool:
        for which, c in pool.map(run, range(48)):
            e = expected[which]
            assert np.array_equal(c.indptr, e.indptr) and np.array_equal(c.indices, e.indices)
            np.testing.assert_allclose(c.data, e.data, rtol=1e-12, atol=1e-12)
