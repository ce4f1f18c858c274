"""Passes, each tested two ways: golden printed IR before and after on a small
kernel, and the reference interpreter giving the same numbers before and after
on random inputs.  Also the verifier, which runs after lowering and every pass.

Golden files: tests/golden/passes_*.ir (regenerate with SPC_UPDATE_GOLDEN=1).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from spc.errors import CompileError
from spc.ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, Cast, Const, DType, For, If,
                          Kernel, Let, Load, LoopKind, Param, ParamRole, Select, Store, Var,
                          While, i64)
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes import DEFAULT_PIPELINE, collapse_blocks, map_parallel, simplify
from spc.passes.register_tile import register_tile, tile_rows_for_registers
from spc.ir.traverse import walk

from test_interp import KERNELS, MATRICES, interpret, lower_expr, random_dense
from test_ir_golden import assert_golden

F64 = DType.F64
I64 = DType.I64


def run_pipeline(kernel: Kernel, passes) -> Kernel:
    for p in passes:
        kernel = verify(p(kernel), p.__name__)
    return kernel


def parallel_loops(kernel: Kernel) -> list[For]:
    return [n for n in walk(kernel.body) if isinstance(n, For) and n.kind is LoopKind.PARALLEL]


def tile4(kernel: Kernel) -> Kernel:
    return register_tile(kernel, width=4)


def tile3(kernel: Kernel) -> Kernel:
    return register_tile(kernel, width=3)


# ---------------------------------------------------------------------- golden before/after


@pytest.mark.parametrize("kernel_id", ["spmv-csr", "spmv-transposed-csr"])
def test_simplify_and_map_parallel_golden(kernel_id):
    kernel, formats, _ = KERNELS[kernel_id]
    (lowered,) = lower_expr(kernel, formats, value_dtype=DType.F32).program.kernels
    stem = "passes_" + kernel_id.replace("-", "_")
    assert_golden(f"{stem}.0_lowered", format_kernel(lowered))
    simplified = verify(simplify(lowered))
    assert_golden(f"{stem}.1_simplify", format_kernel(simplified))
    assert_golden(f"{stem}.2_map_parallel", format_kernel(verify(map_parallel(simplified))))


def test_register_tile_golden():
    kernel, formats, _ = KERNELS["spmm-csr"]
    (lowered,) = lower_expr(kernel, formats, value_dtype=DType.F32).program.kernels
    before = verify(simplify(lowered))
    assert_golden("passes_spmm_csr.1_simplify", format_kernel(before))
    assert_golden("passes_spmm_csr.2_register_tile_w4", format_kernel(verify(tile4(before))))


# ---------------------------------------------------------------------- what each pass does


def test_simplify_folds_level_arithmetic():
    kernel, formats, _ = KERNELS["spmv-csr"]
    (lowered,) = lower_expr(kernel, formats).program.kernels
    assert "0 * size_i" in format_kernel(lowered)
    assert "0 * " not in format_kernel(simplify(lowered))


@pytest.mark.parametrize("cond, kept", [(True, "then"), (False, "else"), (None, "both")])
def test_simplify_removes_if_on_a_constant(cond, kept):
    out = Buffer("out", F64)
    n = Var("n", I64)
    test = Const(cond, DType.BOOL) if cond is not None else BinOp("<", n, i64(3))
    k = Kernel("t", (Param(out, ParamRole.OUTPUT), Param(n, ParamRole.SIZE)),
               Block((If(test, Store(out, i64(0), Const(1.0, F64)),
                         Store(out, i64(0), Const(2.0, F64))),)))
    body = simplify(k).body
    ifs = [s for s in walk(body) if isinstance(s, If)]
    stores = [s for s in walk(body) if isinstance(s, Store)]
    if kept == "both":
        assert len(ifs) == 1 and len(stores) == 2
    else:
        assert ifs == [] and [s.value.value for s in stores] == [1.0 if kept == "then" else 2.0]


def test_simplify_flattens_nested_blocks_and_trivial_arithmetic():
    out = Buffer("out", F64)
    n = Var("n", I64)
    k = Kernel("t", (Param(out, ParamRole.OUTPUT), Param(n, ParamRole.SIZE)),
               Block((Block((Store(out, BinOp("+", BinOp("*", i64(1), n), i64(0)),
                                   BinOp("*", Const(1.0, F64), Const(3.0, F64))),)),)))
    assert format_kernel(simplify(k)).splitlines()[1:] == ["  out[n] = 3.0"]


@pytest.mark.parametrize("kernel_id", list(KERNELS))
def test_simplify_is_idempotent(kernel_id):
    kernel, formats, _ = KERNELS[kernel_id]
    for k in lower_expr(kernel, formats).program.kernels:
        once = simplify(k)
        assert simplify(once) == once


@pytest.mark.parametrize("kernel_id, parallel", [
    ("spmv-csr", True), ("spmm-csr", True), ("sddmm-csr", True), ("add-csr", True),
    ("spmv-dcsr", True), ("spmv-plus-b-csr", True),
    ("spmv-transposed-csr", False),    # y[j] += ...: rows scatter into shared entries
    ("spmv-csc", False),               # the outer loop runs over columns: a scatter too
    ("spmv-coo", False),               # a merge loop over row segments, not a for loop
])
def test_map_parallel_marks_only_independent_outer_loops(kernel_id, parallel):
    kernel, formats, _ = KERNELS[kernel_id]
    for k in lower_expr(kernel, formats).program.kernels:
        after = verify(map_parallel(simplify(k)))
        loops = parallel_loops(after)
        if parallel:
            assert len(loops) == 1
            top = after.body.body if isinstance(after.body, Block) else (after.body,)
            assert top == (loops[0],), "the parallel loop is the kernel's only top statement"
        else:
            assert loops == [] and after == simplify(k)
        assert map_parallel(after) == after


def test_map_parallel_respects_the_outer_independent_attribute():
    kernel, formats, _ = KERNELS["spmv-csr"]
    (k,) = lower_expr(kernel, formats).program.kernels
    assert k.outer_independent == "i"
    stripped = replace(k, outer_independent=None)
    assert parallel_loops(map_parallel(stripped)) == []


def test_map_parallel_keeps_loops_that_read_outer_variables_serial():
    out = Buffer("out", F64)
    n, i, base = Var("n", I64), Var("i", I64), Var("base", I64)
    k = Kernel("t", (Param(out, ParamRole.OUTPUT), Param(n, ParamRole.SIZE)),
               Block((For(i, i64(0), n, Store(out, BinOp("+", base, i), Const(1.0, F64))),)),
               outer_independent="i")
    k2 = Kernel("t", k.params, Block((Let(base, i64(0)),) + k.body.body),
                outer_independent=k.outer_independent)
    assert parallel_loops(map_parallel(k2)) == []


def test_tile_rows_for_registers_tiles_spmm():
    kernel, formats, _ = KERNELS["spmm-csr"]
    (k,) = lower_expr(kernel, formats).program.kernels
    after = verify(tile_rows_for_registers(simplify(k)))
    allocs = sorted(n.size for n in walk(after.body) if isinstance(n, Alloc))
    assert allocs == [1, 2, 4, 8, 16, 32], "float64 kernels tile by 32, 16, ..., 2, 1 columns"


@pytest.mark.parametrize("kernel_id", ["spmv-csr", "sddmm-csr", "add-csr", "spmv-coo"])
def test_tile_rows_for_registers_leaves_other_kernels_alone(kernel_id):
    kernel, formats, _ = KERNELS[kernel_id]
    for k in lower_expr(kernel, formats).program.kernels:
        assert tile_rows_for_registers(simplify(k)) == simplify(k)


# ---------------------------------------------------------------------- same numbers before and after


PASSES = {
    "simplify": (simplify,),
    "collapse_blocks": (simplify, collapse_blocks),
    "map_parallel": (map_parallel,),
    "simplify+map_parallel": (simplify, map_parallel),
    "register_tile_w3": (simplify, tile3),
    "register_tile_w4": (simplify, tile4),
    "tile_rows_for_registers": (simplify, tile_rows_for_registers),
    "default_pipeline": DEFAULT_PIPELINE,
}

# spmm with 13 columns so that float64 tiles of 8 and 4 and a remainder all run
WIDE_KERNELS = {
    "spmm13-csr": ("spmm", {"A": "csr"},
                   lambda A, seed: {"A": A, "B": random_dense((A.shape[1], 13), seed)}),
}


def operands_for(kernel_id, A, seed):
    if kernel_id in WIDE_KERNELS:
        return WIDE_KERNELS[kernel_id][2](A, seed)
    operands, _ = KERNELS[kernel_id][2](A, seed)
    return operands


@pytest.mark.parametrize("matrix", ["6x5", "empty-rows-7x4"])
@pytest.mark.parametrize("kernel_id", ["spmv-csr", "spmv-coo", "spmv-dcsr", "spmm-csr",
                                       "spmm13-csr", "sddmm-csr", "add-csr", "mul-csr",
                                       "spmv-transposed-csr", "spmv-plus-b-csr",
                                       "spmv-ell", "spmv-dia", "spmm-bsr23", "spmm-nm34",
                                       "sddmm-bsr22", "add-ell-csr"])
@pytest.mark.parametrize("pass_id", list(PASSES))
def test_pass_preserves_results(pass_id, kernel_id, matrix):
    kernel, formats, _ = (WIDE_KERNELS.get(kernel_id) or KERNELS[kernel_id])
    lowered = lower_expr(kernel, formats)
    after = tuple(run_pipeline(k, PASSES[pass_id]) for k in lowered.program.kernels)
    A = MATRICES[matrix](51)
    operands = operands_for(kernel_id, A, 52)
    before_result = interpret(lowered, operands)
    after_result = interpret(lowered, operands, kernels=after)
    np.testing.assert_allclose(after_result, before_result, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- the verifier


OUT = Buffer("out", F64)
SRC = Buffer("src", F64)
N = Var("n", I64)
I = Var("i", I64)
J = Var("j", I64)
X = Var("x", F64)


def params() -> tuple[Param, ...]:
    return (Param(SRC, ParamRole.INPUT), Param(OUT, ParamRole.OUTPUT), Param(N, ParamRole.SIZE))


def kernel(*body) -> Kernel:
    return Kernel("bad", params(), Block(tuple(body)))


def store(index, value=Const(1.0, F64), buf=OUT):
    return Store(buf, index, value)


VALID = {
    "empty": kernel(),
    "loop-store": kernel(For(I, i64(0), N, store(I, Load(SRC, I)))),
    "parallel-top": kernel(For(I, i64(0), N, store(I), LoopKind.PARALLEL)),
    "let-assign": kernel(Let(X, Const(0.0, F64)), Assign(X, Const(1.0, F64)), store(i64(0), X)),
    "alloc": kernel(Alloc(Buffer("tmp", F64), 4), Store(Buffer("tmp", F64), i64(0), Load(SRC, i64(0))),
                    store(i64(0), Load(Buffer("tmp", F64), i64(0)))),
}

INVALID = {
    # id: (kernel, a word the message contains, or a tuple of alternatives)
    "undefined-variable": (kernel(store(J)), "'j'"),
    "loop-variable-after-its-loop": (kernel(For(I, i64(0), N, store(I)), store(I)), "'i'"),
    "let-out-of-scope": (kernel(For(I, i64(0), N, Let(X, Const(1.0, F64))), store(i64(0), X)),
                         "'x'"),
    "let-used-before-definition": (kernel(store(i64(0), X), Let(X, Const(1.0, F64))), "'x'"),
    "assign-undeclared": (kernel(Assign(X, Const(1.0, F64))), "'x'"),
    "assign-to-loop-variable": (kernel(For(I, i64(0), N, Block((Assign(I, N), store(I))))), "'i'"),
    "assign-to-size-parameter": (kernel(Assign(N, i64(0)), store(i64(0))), "'n'"),
    "store-to-input": (kernel(store(i64(0), buf=SRC)), "'src'"),
    "store-to-unknown-buffer": (kernel(store(i64(0), buf=Buffer("nowhere", F64))), "'nowhere'"),
    "load-from-unknown-buffer": (kernel(store(i64(0), Load(Buffer("nowhere", F64), i64(0)))),
                                 "'nowhere'"),
    "float-load-index": (kernel(store(i64(0), Load(SRC, Const(0.0, F64)))), "src"),
    "float-store-index": (kernel(store(Const(0.0, F64))), "out"),
    "float-loop-bound": (kernel(For(I, i64(0), Const(3.0, F64), store(I))), ("bound", "integer")),
    "parallel-nested": (kernel(For(I, i64(0), N, For(J, i64(0), N, store(J), LoopKind.PARALLEL))),
                        "parallel"),
    "parallel-with-a-sibling": (kernel(Let(X, Const(0.0, F64)),
                                       For(I, i64(0), N, store(I), LoopKind.PARALLEL)), "parallel"),
    "parallel-inside-if": (kernel(If(BinOp("<", i64(0), N),
                                     For(I, i64(0), N, store(I), LoopKind.PARALLEL))), "parallel"),
    "if-condition-not-boolean": (kernel(If(N, store(i64(0)))), "condition"),
    "while-condition-not-boolean": (kernel(While(i64(0), store(i64(0)))), "condition"),
    "select-condition-not-boolean": (kernel(store(i64(0), Select(N, Const(1.0, F64),
                                                                 Const(2.0, F64)))),
                                     ("condition", "boolean")),
    "logic-on-integers": (kernel(If(BinOp("&&", N, N), store(i64(0)))), "&&"),
}


@pytest.mark.parametrize("case", list(VALID))
def test_verifier_accepts_valid_ir(case):
    k = VALID[case]
    assert verify(k, "test") is k


@pytest.mark.parametrize("case", list(INVALID))
def test_verifier_rejects_malformed_ir(case):
    k, word = INVALID[case]
    with pytest.raises(CompileError) as info:
        verify(k, "test")
    msg = str(info.value)
    assert "bad" in msg and "after test" in msg, "the message names the kernel and the stage"
    alternatives = word if isinstance(word, tuple) else (word,)
    assert any(w in msg for w in alternatives), msg


@pytest.mark.parametrize("kernel_id", list(KERNELS))
def test_every_lowered_kernel_verifies_after_every_pass(kernel_id):
    kernel, formats, _ = KERNELS[kernel_id]
    for dtype in (DType.F32, DType.F64):
        for k in lower_expr(kernel, formats, value_dtype=dtype).program.kernels:
            run_pipeline(verify(k, "lower"), DEFAULT_PIPELINE)


def test_collapse_blocks_golden():
    lowered = lower_expr("spmm", {"A": "bsr(2,3)"})
    kernel = simplify(lowered.program.kernels[0])
    collapsed = collapse_blocks(kernel)
    assert_golden("passes_spmm_bsr23.0_simplify", format_kernel(kernel))
    assert_golden("passes_spmm_bsr23.1_collapse_blocks", format_kernel(collapsed))
    assert collapsed.outer_independent == "i_in_flat"


@pytest.mark.parametrize("kernel_id", ["spmv-csr", "spmm-csr", "sddmm-bsr22", "add-csr"])
def test_collapse_blocks_leaves_other_shapes_alone(kernel_id):
    kernel, formats, _ = KERNELS[kernel_id]
    for k in lower_expr(kernel, formats).program.kernels:
        k = simplify(k)
        assert collapse_blocks(k) == k


@pytest.mark.parametrize("features, dtype, widths", [
    ("+avx,+avx2,+fma", "float32", [64, 32, 16, 8, 4, 2, 1]),
    ("+avx,+avx2,+fma", "float64", [32, 16, 8, 4, 2, 1]),
    ("+avx,+avx2,+fma,+avx512f", "float32", [256, 128, 64, 32, 16, 8, 4, 2, 1]),
    ("+avx,+avx2,+fma,+avx512f", "float64", [128, 64, 32, 16, 8, 4, 2, 1]),
])
def test_register_tiles_fill_half_the_vector_registers(features, dtype, widths):
    import spc
    from spc.passes.register_tile import register_tiles
    k = spc.compile("spmm", fmt="csr", dtype=dtype, features=features)
    assert [w for kern in k.lowered_kernels() for w in register_tiles(kern)] == widths
    assert k.schedule.tile_cols == widths[0]


@pytest.mark.parametrize("tile_cols, widths", [(4, [4, 2, 1]), (32, [32, 16, 8, 4, 2, 1]),
                                               (1024, None)])
def test_tile_cols_sets_the_widest_register_tile(tile_cols, widths):
    import scipy.sparse as sp
    import spc
    from spc.passes.register_tile import register_tiles
    k = spc.compile("spmm", fmt="csr", dtype="float64", tile_cols=tile_cols)
    got = [w for kern in k.lowered_kernels() for w in register_tiles(kern)]
    assert got == (widths or [1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1])
    assert k.schedule.tile_cols == tile_cols
    A = sp.random(30, 20, density=0.3, format="csr", random_state=0)
    B = np.random.default_rng(0).standard_normal((20, 1100))
    np.testing.assert_allclose(k(A, B), A @ B, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, kw, message", [
    ("spmv", dict(tile_cols=64), "tile_cols: this kernel has no row update"),
    ("spmm", dict(tile_cols=64, target="cuda", arch="sm_90"),
     "tile_cols: on target=.cuda., the columns of a tensor-core tile"),
    ("spmm", dict(tile_cols=48), "tile_cols: must be a power of two from 4 to 1024"),
])
def test_tile_cols_where_it_means_nothing_is_refused(kernel, kw, message):
    import spc
    with pytest.raises(spc.ScheduleError, match=message):
        spc.compile(kernel, fmt="csr", **kw)
