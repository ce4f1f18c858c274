"""overwrite_outputs: which outputs a kernel stores every entry of once (so the
runtime skips zeroing them), checked by golden IR, by the interpreter (which
poisons a claimed output before the kernel runs) on both pipelines against
scipy, by hand-built IR it must refuse, and by the CPU runtime's allocations.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import spc
from spc.errors import CompileError
from spc.ir.interp import run_kernel
from spc.ir.nodes import (BinOp, Block, Buffer, DType, For, If, Kernel, Let, Load,
                          Param, ParamRole, Store, Var, i64)
from spc.ir.verify import verify
from spc.passes.map_gpu import map_gpu
from spc.passes.overwrite_outputs import overwrite_outputs
from spc.passes.pipeline import cpu_pipeline, cuda_pipeline
from spc.passes.simplify import simplify

from test_interp import KERNELS, MATRICES, interpret, lower_expr
from test_ir_golden import assert_golden
from test_passes import run_pipeline

F64 = DType.F64
PIPELINES = {"cpu": cpu_pipeline(spc.Schedule()), "cuda": cuda_pipeline(spc.Schedule())}


def claims(kernel: str, target: str, **kw) -> list[tuple[str, ...]]:
    return [k.overwrites for k in spc.compile(kernel, target=target, **kw).lowered_kernels()]


@pytest.mark.parametrize("kernel, kw, cpu, cuda", [
    ("spmv", dict(fmt="csr"), [("y_vals",)], [("y_vals",)]),
    # the CPU's register tiles leave a column tail accumulating into C: zeroed
    ("spmm", dict(fmt="csr"), [()], [("C_vals",)]),
    ("sddmm", dict(fmt="csr"), [("S_vals",)], [("S_vals",)]),
    ("spmv", dict(fmt="ell"), [("y_vals",)], [("y_vals",)]),
    ("spmm", dict(fmt="dia"), [()], [("C_vals",)]),
    # coordinates and transposed access store to an entry once per nonzero
    ("spmv", dict(fmt="coo"), [()], [()]),
    ("spmv", dict(fmt="csc"), [()], [()]),
    ("y[j] = A[i,j] * x[i]", dict(formats={"A": "csr"}), [()], [()]),
    ("s = A[i,j]", dict(formats={"A": "csr"}), [()], [()]),
    # the second term adds to the first: only the first overwrites
    ("y[i] = A[i,j] * x[j] + b[i]", dict(formats={"A": "csr"}), [("y_vals",), ()],
     [("y_vals",), ()]),
    # pieces of one row share its entries (atomics); permuted rows are read from memory
    ("spmv", dict(fmt="csr", split_rows=4, deterministic=False), [()], [()]),
    ("spmm", dict(fmt="csr", reorder_rows="length"), [()], [()]),
])
def test_which_outputs_are_overwritten(kernel, kw, cpu, cuda):
    assert claims(kernel, "cpu", **kw) == cpu
    assert claims(kernel, "cuda", **kw) == cuda


def test_a_later_term_keeps_adding():
    k = spc.compile("spmv", fmt="hyb")
    first, second = k.lowered_kernels()
    assert first.overwrites == ("y_vals",) and not first.adds_to_output
    assert second.overwrites == () and second.adds_to_output
    assert "y_vals[y0_p1] += acc" in k.ir


def test_golden_cuda_spmm():
    (lowered,) = lower_expr("spmm", {"A": "csr"}, value_dtype=DType.F32).program.kernels
    mapped = verify(simplify(map_gpu(simplify(lowered))))
    assert "C_vals[C0_p1 * size_j + j] += C_vals_reg" in spc.ir.printer.format_kernel(mapped)
    after = verify(overwrite_outputs(mapped))
    assert_golden("passes_spmm_csr_cuda.overwrite_outputs",
                  spc.ir.printer.format_kernel(after))
    assert after.overwrites == ("C_vals",)


@pytest.mark.parametrize("matrix", list(MATRICES))
@pytest.mark.parametrize("kernel_id", list(KERNELS))
@pytest.mark.parametrize("target", list(PIPELINES))
def test_claimed_outputs_need_no_zeros(target, kernel_id, matrix):
    """The interpreter poisons every claimed output before the kernel runs: the
    results still match scipy's on every kernel, format and edge shape."""
    kernel, formats, case = KERNELS[kernel_id]
    lowered = lower_expr(kernel, formats)
    A = MATRICES[matrix](71)
    operands, expected = case(A, 72)
    try:
        after = tuple(run_pipeline(k, PIPELINES[target]) for k in lowered.program.kernels)
    except spc.SpcError as err:          # a kernel the target refuses
        pytest.skip(str(err))
    got = interpret(lowered, operands, kernels=after)
    np.testing.assert_allclose(got, np.asarray(expected).reshape(np.shape(got)),
                               rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ hand-built IR


OUT = Buffer("out", F64)
SRC = Buffer("src", F64)
POS = Buffer("pos", DType.I32)
I, J, P = Var("i", DType.I64), Var("j", DType.I64), Var("p", DType.I64)
M, N = Var("size_i", DType.I64), Var("size_j", DType.I64)


def kernel(*body, pos=False) -> Kernel:
    params = (Param(SRC, ParamRole.INPUT),) + ((Param(POS, ParamRole.INPUT),) if pos else ()) \
        + (Param(OUT, ParamRole.OUTPUT), Param(M, ParamRole.SIZE), Param(N, ParamRole.SIZE))
    return verify(Kernel("k", params, Block(tuple(body))))


def store(index, accumulate=True, atomic=False) -> Store:
    return Store(OUT, index, Load(SRC, index), accumulate, atomic)


ROW_MAJOR = BinOp("+", BinOp("*", I, N), J)


def dense(*inner, lo=i64(0)) -> For:
    return For(I, lo, M, For(J, i64(0), N, Block(tuple(inner))))


@pytest.mark.parametrize("body, overwritten", [
    (dense(store(ROW_MAJOR)), True),
    # the same entries through a let, with the product written the other way round
    (dense(Let(Var("q", DType.I64), BinOp("*", N, I)),
           store(BinOp("+", J, Var("q", DType.I64)))), True),
    (dense(store(ROW_MAJOR, atomic=True)), False),
    (dense(If(BinOp("<", J, I), store(ROW_MAJOR))), False),            # some entries only
    (dense(store(ROW_MAJOR), store(ROW_MAJOR)), False),                # two stores
    (dense(store(ROW_MAJOR), lo=i64(1)), False),                       # row 0 never stored
    (dense(store(BinOp("+", BinOp("*", I, M), J))), False),            # wrong stride
    (dense(store(I)), False),                                          # j stores i's entry again
    (For(I, i64(0), M, For(P, Load(POS, I), Load(POS, BinOp("+", I, i64(1))),
                           Block((store(P),)))), True),               # a compressed level
    (For(I, i64(0), M, For(P, Load(POS, I), Load(POS, BinOp("+", I, i64(2))),
                           Block((store(P),)))), False),              # overlapping rows
])
def test_hand_built_claims(body, overwritten):
    before = kernel(body, pos=True)
    after = verify(overwrite_outputs(before))
    assert after.overwrites == (("out",) if overwritten else ())
    if not overwritten:
        assert after == before


def test_a_wrong_claim_shows_in_the_interpreter():
    """The poisoning makes a false claim visible: a kernel that stores row 0
    only, claiming the whole output, leaves NaN behind."""
    body = For(J, i64(0), N, Block((store(J, accumulate=False),)))
    k = replace(kernel(body), overwrites=("out",))
    out = np.zeros(6)
    run_kernel(k, {"src": np.arange(6.0), "out": out, "size_i": 2, "size_j": 3})
    assert np.isnan(out[3:]).all() and (out[:3] == [0, 1, 2]).all()


def test_the_verifier_refuses_an_accumulating_overwrite():
    k = replace(kernel(dense(store(ROW_MAJOR))), overwrites=("out",))
    with pytest.raises(CompileError, match="accumulates into it"):
        verify(k)
    with pytest.raises(CompileError, match="not an output buffer"):
        verify(replace(kernel(), overwrites=("src",)))


# ------------------------------------------------------------------ the CPU runtime


def test_the_cpu_fast_path_allocates_by_the_claim():
    import scipy.sparse as sp
    A = sp.random(40, 30, density=0.2, format="csr", random_state=1)
    x = np.random.default_rng(2).standard_normal(30)
    B = np.random.default_rng(3).standard_normal((30, 5))
    spmv, spmm = spc.compile("spmv", fmt="csr"), spc.compile("spmm", fmt="csr")
    for _ in range(3):        # freed result memory comes back to later calls
        np.testing.assert_allclose(spmv(A, x), A @ x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(spmm(A, B), A @ B, rtol=1e-5, atol=1e-5)
    assert spmv._plan.zero is False and spmm._plan.zero is True
