"""The CPU fast call written out per kernel (runtime/cpu_specialize.py): the
same results and the same refusals as the plan walk (``_fast_call``) it
replaces, on every operand family the fast path takes and on random problems."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc


def _same(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return
    if sp.issparse(a) or isinstance(a, spc.Tensor):
        assert type(a) is type(b)
        a, b = a.toarray() if sp.issparse(a) else a.to_numpy(), \
            b.toarray() if sp.issparse(b) else b.to_numpy()
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _both(k, args, validate=True):
    return k._fast(args, validate), k._fast_call(args, validate)


def _matrix(fmt="csr", seed=0):
    A = sp.random(30, 20, density=0.2, format="csr", random_state=seed, dtype=np.float32)
    A = A.tolil()
    A[3, :] = 1.0                  # a dense row
    A[4, :] = 0.0                  # an empty row
    return A.asformat(fmt)


@pytest.mark.parametrize("kernel, fmt", [("spmv", "csr"), ("spmv", "csc"), ("spmm", "csr"),
                                         ("spmm", "csc"), ("sddmm", "csr")])
@pytest.mark.parametrize("family", ["scipy", "spc"])
def test_the_written_call_matches_the_walk(kernel, fmt, family):
    rng = np.random.default_rng(1)
    A = _matrix(fmt)
    if family == "spc":
        A = spc.tensor(A, fmt)
    if kernel == "spmv":
        ops = (rng.standard_normal(20).astype(np.float32),)
    elif kernel == "spmm":
        ops = (rng.standard_normal((20, 7)).astype(np.float32),)
    else:
        ops = (rng.standard_normal((30, 5)).astype(np.float32),
               rng.standard_normal((20, 5)).astype(np.float32))
    k = spc.compile(kernel, fmt=fmt)
    k(A, *ops)
    assert k._fast is not k._fast_call and "def call" in k._fast.source
    fast, walk = _both(k, (A,) + ops)
    assert fast is not None
    _same(fast, walk)
    # what the walk declines, the written call declines
    bad_dtype = (A,) + tuple(o.astype(np.float64) for o in ops)
    strided = (A,) + tuple(np.stack([o, o], -1)[..., 0] for o in ops)
    wrong_shape = (A,) + tuple(np.concatenate([o, o]) for o in ops)
    for args in (bad_dtype, strided, wrong_shape, (A.T,) + ops if family == "scipy" else None):
        if args is not None:
            _same(*_both(k, args))


def test_malformed_and_int64_operands_are_declined_alike():
    k = spc.compile("spmv", fmt="csr")
    x = np.ones(20, np.float32)
    A = _matrix()
    k(A, x)
    bad = A.copy()
    bad.indices[0] = 99
    wide = A.copy()
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    for args in ((bad, x), (wide, x)):
        assert _both(k, args) == (None, None)
    assert k._fast((bad, x), False) is not None           # validate=False: taken as given
    with pytest.raises(spc.InputError):
        k(bad, x)


def test_random_problems_agree():
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from test_hypothesis import problems

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(problems())
    def check(p):
        try:
            k = spc.compile(p.expr, formats=p.formats, dtype=p.dtype)
            args = tuple(p.inputs[n] for n in k.input_names)
            k(*args)                     # positional: plans the fast call
        except spc.SpcError:
            return
        if not isinstance(k._last, spc.CompiledKernel):   # operand copies: no fast path
            return
        if k._plan is not None and k._fast is not k._fast_call:
            _same(*_both(k, args))

    check()


EDGES = {
    "0x5": sp.csr_matrix((0, 5), dtype=np.float32),
    "5x0": sp.csr_matrix((5, 0), dtype=np.float32),
    "nnz0": sp.csr_matrix((4, 6), dtype=np.float32),
    "one-dense-row": sp.csr_matrix(np.ones((1, 7), np.float32)),
}


@pytest.mark.parametrize("edge", list(EDGES))
@pytest.mark.parametrize("kernel, fmt", [("spmv", "csr"), ("spmm", "csc"), ("sddmm", "csr")])
def test_edge_shapes_agree_with_scipy(kernel, fmt, edge):
    rng = np.random.default_rng(3)
    A = EDGES[edge].asformat(fmt)
    m, n = A.shape
    if kernel == "spmv":
        ops = (rng.standard_normal(n).astype(np.float32),)
    elif kernel == "spmm":
        ops = (rng.standard_normal((n, 3)).astype(np.float32),)
    else:
        ops = (rng.standard_normal((m, 3)).astype(np.float32),
               rng.standard_normal((n, 3)).astype(np.float32))
    k = spc.compile(kernel, fmt=fmt)
    out = k(A, *ops)                     # the written-out call, or the general path
    _same(*_both(k, (A,) + ops))
    want = A.multiply(ops[0] @ ops[1].T).toarray() if kernel == "sddmm" else A @ ops[0]
    got = out.toarray() if sp.issparse(out) else out
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _spoil(A, how: str):
    """A copy of csr ``A`` (at least 5 rows, row 3 full) broken in one way."""
    B = A.copy()
    if how == "pointer-start":
        B.indptr[0] = 1
    elif how == "pointer-decreases":
        B.indptr[2] = B.indptr[3] + 1
    elif how == "pointer-end":
        B.indptr[-1] += 1
    elif how == "coordinate-high":
        B.indices[B.indptr[3]] = B.shape[1]
    elif how == "coordinate-negative":
        B.indices[B.indptr[3]] = -1
    elif how == "unsorted":
        lo, hi = B.indptr[3], B.indptr[4]
        B.indices[lo:hi] = B.indices[lo:hi][::-1].copy()
        B.data[lo:hi] = B.data[lo:hi][::-1].copy()
        B.has_sorted_indices = False
    elif how == "duplicates":
        lo = B.indptr[3]
        B.indices[lo + 1] = B.indices[lo]
        B.has_canonical_format = False
    return B


MALFORMED = ["pointer-start", "pointer-decreases", "pointer-end", "coordinate-high",
             "coordinate-negative"]


def _operands(kernel, A, rng):
    m, n = A.shape
    if kernel == "spmv":
        return (rng.standard_normal(n).astype(np.float32),)
    if kernel == "spmm":
        return (rng.standard_normal((n, 3)).astype(np.float32),)
    return (rng.standard_normal((m, 3)).astype(np.float32),
            rng.standard_normal((n, 3)).astype(np.float32))


@pytest.mark.parametrize("how", MALFORMED)
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_the_check_in_the_launch_refuses_malformed_operands(kernel, how):
    """The written call checks the operand in its launch (``launch_in_bounds``, ``launch_valid``):
    a malformed one is declined before anything runs, and the call raises
    InputError from the general path."""
    k = spc.compile(kernel, fmt="csr")
    A = _matrix()
    ops = _operands(kernel, A, np.random.default_rng(5))
    k(A, *ops)
    assert "launch_valid(" in k._fast.source
    bad = _spoil(A, how)
    assert _both(k, (bad,) + ops) == (None, None)
    with pytest.raises(spc.InputError):
        k(bad, *ops)


@pytest.mark.parametrize("how", ["unsorted", "duplicates"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_unsorted_or_duplicate_operands_give_scipys_answer(kernel, how):
    """Kernels that only walk the operand take it as it is (bounds checked in
    the launch); SDDMM, whose result keeps the pattern, declines it in the
    written call and the general path canonicalizes it."""
    k = spc.compile(kernel, fmt="csr")
    A = _matrix()
    ops = _operands(kernel, A, np.random.default_rng(6))
    k(A, *ops)
    B = _spoil(A, how)
    dense = B.toarray()                      # duplicates summed, as scipy reads them
    fast, walk = _both(k, (B,) + ops)
    _same(fast, walk)
    got = k(B, *ops)
    if kernel == "sddmm":
        assert fast is None
        got, want = got.toarray(), dense * (ops[0] @ ops[1].T)
    else:
        assert fast is not None
        want = dense @ ops[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_the_checked_launch_runs_spc_tensors_and_unchecked_calls(kernel):
    k = spc.compile(kernel, fmt="csr")
    A = _matrix()
    ops = _operands(kernel, A, np.random.default_rng(7))
    ref = k(A, *ops)
    for args, validate in (((spc.tensor(A, "csr"),) + ops, True), ((A,) + ops, False)):
        fast, walk = _both(k, args, validate)
        assert fast is not None
        _same(fast, walk)
        got = fast.to_scipy() if isinstance(fast, spc.Tensor) else fast
        _same(got if not sp.issparse(ref) else sp.csr_matrix(got), ref)
