"""seed_sums: a sum an epilogue only adds a term to starts at that term
(``passes/seed_sums.py``).  Golden printed IR of SpMM + bias + ReLU on CUDA; the
interpreter's numbers with and without the pass over the edge matrices (the sum's
order changes, so they agree to rounding); what the pass leaves alone; the
rendered source (the CUDA form measured on the H200); nvcc.  No GPU needed."""
from __future__ import annotations

import numpy as np
import pytest

import spc
from spc.ir.nodes import DType, Let, Store, Var
from spc.ir.printer import format_kernel
from spc.passes import pipeline
from spc.passes.seed_sums import seed_sums

from cuda_env import nvcc_many
from matrices import assert_allclose, dense_operand
from test_cuda_render import SMALL, _run_with

CUDA = dict(target="cuda", arch="sm_90")
EPI = "C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])"


def _kernels(expr, formats, **kw):
    return spc.compile(expr, formats=formats, **CUDA, **kw)._variant(DType.I32).kernels


def _unseeded(monkeypatch, expr, formats, **kw):
    """The same kernels from the CUDA pipeline without seed_sums."""
    with monkeypatch.context() as m:
        m.setattr(pipeline, "seed_sums", lambda k: k)
        return _kernels(expr, formats, **kw)


def test_golden_spmm_bias_relu():
    (k,) = _kernels(EPI, {"A": "csr"})
    text = format_kernel(k)
    assert "let acc: f32 = b_vals[b0_p2]" in text
    assert "C_vals[C1_p3] = max(acc, 0.0f)" in text


def test_the_pipeline_without_the_pass_keeps_the_sum_at_zero(monkeypatch):
    (k,) = _unseeded(monkeypatch, EPI, {"A": "csr"})
    text = format_kernel(k)
    assert "let acc: f32 = 0.0f" in text and "max(acc + b_vals[b0_p2], 0.0f)" in text
    assert seed_sums(k) != k and seed_sums(seed_sums(k)) == seed_sums(k)


@pytest.mark.parametrize("matrix", SMALL, ids=str)
@pytest.mark.parametrize("expr, extra", [
    (EPI, ()),
    ("C[i,j] = exp(sum(k, A[i,k]*B[k,j]) + 2*b[j]) + D[i,j]", ("D",)),
])
def test_the_interpreter_agrees_with_and_without_the_pass(monkeypatch, expr, extra, matrix):
    A = matrix.build(np.float64) * 0.1
    m, n = A.shape
    B = dense_operand(f"B{n}", (n, 5), np.float64)
    b = dense_operand("b5", (5,), np.float64)
    ops = dict(A=A, B=B, b=b, **{e: dense_operand(f"{e}{m}", (m, 5), np.float64) for e in extra})
    formats = {"A": "csr"}
    seeded = _kernels(expr, formats, dtype="float64")
    plain = _unseeded(monkeypatch, expr, formats, dtype="float64")
    assert seeded != plain
    kw = dict(formats=formats)
    got = _run_with(seeded, expr, kw, "float64", **ops)
    want = _run_with(plain, expr, kw, "float64", **ops)
    assert_allclose(got, want, np.float64)
    ref = A @ B + 2 * b if "exp" in expr else A @ B + b
    ref = np.exp(ref) + ops["D"] if "exp" in expr else np.maximum(ref, 0)
    assert_allclose(got, ref, np.float64)


@pytest.mark.parametrize("expr", [
    "C[i,j] = relu(sum(k, A[i,k]*B[k,j]) * b[j])",          # a product, not a sum
    "C[i,j] = relu(sum(k, A[i,k]*B[k,j]))",                  # nothing added
    "C[i,j] = max(sum(k, A[i,k]*B[k,j]), b[j])",             # not an addition
])
def test_what_the_pass_leaves_alone(monkeypatch, expr):
    (seeded,) = _kernels(expr, {"A": "csr"})
    (plain,) = _unseeded(monkeypatch, expr, {"A": "csr"})
    assert seeded == plain


def test_a_term_reading_what_the_loop_assigns_is_not_moved():
    from spc.ir.nodes import Block, BinOp, Const, For, Kernel, Load, Buffer, Assign, LoopKind
    f32, i64 = DType.F32, DType.I64
    acc, p, t = Var("acc", f32), Var("p", i64), Var("t", f32)
    X, Y = Buffer("X", f32), Buffer("Y", f32)
    loop = For(p, Const(0, i64), Const(4, i64), Block((
        Assign(acc, BinOp("+", acc, Load(X, p))), Assign(t, Load(X, p)))), LoopKind.SERIAL)
    body = Block((Let(t, Const(0.0, f32)), Let(acc, Const(0.0, f32)), loop,
                  Store(Y, Const(0, i64), BinOp("+", acc, t))))
    k = Kernel("k", (), body)
    assert seed_sums(k) == k
    twice = Block((Let(acc, Const(0.0, f32)), loop.__class__(p, Const(0, i64), Const(4, i64), Block((
        Assign(acc, BinOp("+", acc, Load(X, p))),)), LoopKind.SERIAL),
        Store(Y, Const(0, i64), BinOp("+", acc, BinOp("*", acc, Load(X, Const(0, i64)))))))
    assert seed_sums(Kernel("k", (), twice)) == Kernel("k", (), twice)
    once = Block(twice.body[:2] + (Store(Y, Const(0, i64), BinOp("+", Load(X, Const(0, i64)),
                                                                 acc)),))
    seeded = seed_sums(Kernel("k", (), once)).body.body
    assert seeded[0] == Let(acc, Load(X, Const(0, i64))) and seeded[2].value == acc


def test_the_rendered_source_starts_the_sums_at_the_bias_and_compiles():
    k = spc.compile(EPI, formats={"A": "csr"}, **CUDA)
    src = k.source
    assert "float acc__0 = (spc_ok__0 ? b_vals[b0_p2__0] : (float)0);" in src
    assert "C_vals[C1_p3__0] = spc_max<float>(acc__0, 0.0f);" in src
    (verdict,) = nvcc_many([src])
    assert verdict[0] == 0, verdict[1]
