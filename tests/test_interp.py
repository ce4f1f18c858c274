"""The reference interpreter (``spc.ir.interp.run_kernel``), the living definition of
the loop IR: it agrees with scipy on the named kernels and more, and with the CPU
backend; and it means what the IR says on hand-written kernels.

``lower_expr`` and ``interpret`` are also used by test_passes.py: they do for the
interpreter what ``CompiledKernel._run`` does for compiled kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.api import NAMED_KERNELS
from spc.formats.format import Format, resolve_format
from spc.frontend import ast
from spc.frontend.check import check, index_sizes
from spc.frontend.parser import parse
from spc.ir.interp import RaceError, run_kernel
from spc.ir.lower import OutputKind, Program, lower
from spc.runtime.pack_rows import pack_rows
from spc.ir.nodes import (Alloc, Assign, BinOp, Block, Buffer, Cast, Const, DType, For, If,
                          Kernel, Let, Load, LoopKind, Neg, Param, ParamRole, Select, Store, Var,
                          While, i64)

F64 = DType.F64
I64 = DType.I64


# ---------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Lowered:
    assign: ast.Assignment
    formats: dict[str, Format]
    program: Program

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.tensor for a in self.assign.accesses()))


def lower_expr(kernel: str, formats: dict[str, str] | None = None, *, fmt: str | None = None,
               value_dtype: DType = F64, index_dtype: DType = DType.I32,
               name: str = "k") -> Lowered:
    """Parse, check and lower a named kernel or an expression, as spc.compile does."""
    formats = dict(formats or {})
    if kernel in NAMED_KERNELS:
        text, sparse_ops, _ = NAMED_KERNELS[kernel]
        for op in sparse_ops:
            formats.setdefault(op, fmt or "csr")
    else:
        text = kernel
    assign = parse(text)
    check(assign)
    ranks = {assign.lhs.tensor: len(assign.lhs.indices)}
    for acc in assign.accesses():
        ranks[acc.tensor] = len(acc.indices)
    resolved = {t: resolve_format(formats.get(t, "dense"), r) for t, r in ranks.items()}
    program = lower(assign, resolved, name=name, value_dtype=value_dtype, index_dtype=index_dtype)
    return Lowered(assign, resolved, program)


def _storage(x, fmt: Format, index_dtype: np.dtype) -> spc.Tensor:
    if sp.issparse(x) and fmt.is_dense:
        x = x.toarray()
    t = spc.tensor(x if sp.issparse(x) else np.asarray(x, dtype=np.float64), fmt,
                   dtype=np.float64)
    arrays = [{k: a if k in level.array_dtypes else a.astype(index_dtype) for k, a in lv.items()}
              for level, lv in zip(t.format.levels, t.arrays)]
    return spc.Tensor(t.shape, t.format, arrays, t.vals, validate=True)


def interpret(lowered: Lowered, operands: dict[str, object],
              kernels: tuple[Kernel, ...] | None = None) -> np.ndarray:
    """Run ``kernels`` (default: the lowered program's) in the interpreter on
    ``operands`` and return the output as a dense numpy array.

    Arrays are named as the runtime names them: ``A_vals``, ``A1_pos``,
    ``A1_crd``; sizes ``size_i``.
    """
    program = lowered.program
    kernels = program.kernels if kernels is None else kernels
    index_dtype = np.dtype(program.index_dtype.numpy)
    assign = lowered.assign
    shapes = {n: np.shape(x) if not sp.issparse(x) else x.shape for n, x in operands.items()}
    sizes = index_sizes(assign, shapes)
    tensors = {n: _storage(x, lowered.formats[n], index_dtype) for n, x in operands.items()}
    args: dict[str, object] = {f"size_{ix}": n for ix, n in sizes.items()}
    for name, t in tensors.items():
        args[f"{name}_vals"] = t.vals
        for lvl, level_arrays in enumerate(t.arrays):
            for arr_name, arr in level_arrays.items():
                args[f"{name}{lvl}_{arr_name}"] = arr
        if not t.format.is_dense:
            args.update(t.scalars(name))
    out = program.output
    out_fmt = program.output_format
    out_shape = tuple(sizes[ix] for ix in assign.lhs.indices)
    if program.output_kind == OutputKind.DENSE:
        vals = np.zeros(int(np.prod(out_shape, dtype=np.int64)), dtype=np.float64)
        args[f"{out}_vals"] = vals
        for kernel in kernels:
            run_kernel(kernel, args)
        stored = vals.reshape([out_shape[m] for m in out_fmt.order])
        return np.transpose(stored, np.argsort(out_fmt.order)) if out_shape else stored
    if program.output_kind == OutputKind.PATTERN:
        src = tensors[program.pattern_source]
        vals = np.zeros(src.nnz, dtype=np.float64)
        args[f"{out}_vals"] = vals
        (kernel,) = kernels
        run_kernel(kernel, args)
        return spc.Tensor(out_shape, out_fmt, src.arrays, vals).to_numpy()
    # assembled: count entries per row, prefix sum, fill
    last = out_fmt.nlevels - 1
    dims = [out_shape[m] for m in out_fmt.order]
    pos = np.zeros(int(np.prod(dims[:last], dtype=np.int64)) + 1, dtype=index_dtype)
    args[f"{out}{last}_pos"] = pos
    assemble, compute = kernels
    run_kernel(assemble, args)
    np.cumsum(pos, out=pos)
    nnz = int(pos[-1])
    crd = np.full(nnz, -1, dtype=index_dtype)
    vals = np.zeros(nnz, dtype=np.float64)
    args[f"{out}{last}_crd"] = crd
    args[f"{out}_vals"] = vals
    if program.drops_zeros:               # rows built in a workspace keep nonzero sums only
        kept = args[f"{out}{last}_nnz"] = np.zeros(len(pos) - 1, dtype=index_dtype)
    run_kernel(compute, args)
    if program.drops_zeros:
        pos, crd, vals = pack_rows(pos, kept, crd, vals)
    levels = [{} for _ in range(last)] + [{"pos": pos, "crd": crd}]
    result = spc.Tensor(out_shape, out_fmt, levels, vals)     # validates the assembled pattern
    return result.to_numpy()


def random_sparse(m, n, density, seed, *, empty_rows=False) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    mask = rng.random((m, n)) < density
    if empty_rows and m:
        mask[::3] = False
    vals = rng.uniform(0.5, 1.5, (m, n)) * rng.choice([-1.0, 1.0], (m, n))
    return sp.csr_matrix(np.where(mask, vals, 0.0))


def random_dense(shape, seed) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape)


MATRICES = {
    "6x5": lambda seed: random_sparse(6, 5, 0.4, seed),
    "empty-rows-7x4": lambda seed: random_sparse(7, 4, 0.5, seed, empty_rows=True),
    "nnz0-3x4": lambda seed: random_sparse(3, 4, 0.0, seed),
    "1x1": lambda seed: random_sparse(1, 1, 1.0, seed),
    "0x3": lambda seed: random_sparse(0, 3, 0.5, seed),
}


# ---------------------------------------------------------------------- agreement with scipy


def case_spmv(A, seed):
    x = random_dense(A.shape[1], seed)
    return {"A": A, "x": x}, A @ x


def case_spmm(A, seed):
    B = random_dense((A.shape[1], 3), seed)
    return {"A": A, "B": B}, A @ B


def case_sddmm(A, seed):
    X = random_dense((A.shape[0], 2), seed)
    Y = random_dense((A.shape[1], 2), seed + 1)
    return {"A": A, "X": X, "Y": Y}, A.multiply(X @ Y.T).toarray()


def case_add(A, seed):
    B = random_sparse(*A.shape, 0.4, seed)
    return {"A": A, "B": B}, (A + B).toarray()


def case_mul(A, seed):
    B = random_sparse(*A.shape, 0.6, seed)
    return {"A": A, "B": B}, A.multiply(B).toarray()


def case_spmv_t(A, seed):
    x = random_dense(A.shape[0], seed)
    return {"A": A, "x": x}, A.T @ x


def case_spmv_plus_b(A, seed):
    x = random_dense(A.shape[1], seed)
    b = random_dense(A.shape[0], seed + 1)
    return {"A": A, "x": x, "b": b}, A @ x + b


def case_row_sums(A, seed):
    return {"A": A}, np.asarray(A.sum(axis=1)).reshape(-1)


KERNELS = {
    # id: (kernel, formats, case builder)
    "spmv-csr": ("spmv", {"A": "csr"}, case_spmv),
    "spmv-csc": ("spmv", {"A": "csc"}, case_spmv),
    "spmv-coo": ("spmv", {"A": "coo"}, case_spmv),
    "spmv-dcsr": ("spmv", {"A": "dcsr"}, case_spmv),
    "spmm-csr": ("spmm", {"A": "csr"}, case_spmm),
    "spmm-coo": ("spmm", {"A": "coo"}, case_spmm),
    "sddmm-csr": ("sddmm", {"A": "csr"}, case_sddmm),
    "add-csr": ("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csr", "C": "csr"}, case_add),
    "add-csr-coo-dense-out": ("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "coo"}, case_add),
    "mul-csr": ("C[i,j] = A[i,j] * B[i,j]", {"A": "csr", "B": "csr", "C": "csr"}, case_mul),
    "spmv-transposed-csr": ("y[j] = A[i,j] * x[i]", {"A": "csr"}, case_spmv_t),
    "spmv-plus-b-csr": ("y[i] = A[i,j] * x[j] + b[i]", {"A": "csr"}, case_spmv_plus_b),
    "row-sums-csr": ("y[i] = A[i,j]", {"A": "csr"}, case_row_sums),
    "spmv-ell": ("spmv", {"A": "ell"}, case_spmv),
    "spmv-dia": ("spmv", {"A": "dia"}, case_spmv),
    "spmm-bsr23": ("spmm", {"A": "bsr(2,3)"}, case_spmm),
    "spmm-nm34": ("spmm", {"A": "nm(4,4)"}, case_spmm),
    "sddmm-bsr22": ("sddmm", {"A": "bsr(2,2)", "S": "bsr(2,2)"}, case_sddmm),
    "add-ell-csr": ("C[i,j] = A[i,j] + B[i,j]", {"A": "ell", "B": "csr", "C": "csr"}, case_add),
    "add-dia-nm-dense-out": ("C[i,j] = A[i,j] + B[i,j]", {"A": "dia", "B": "nm(4,4)"}, case_add),
    "add-bsr-bsr-dense-out": ("C[i,j] = A[i,j] + B[i,j]", {"A": "bsr(2,3)", "B": "bsr(2,3)"},
                              case_add),
    "mul-nm-dia": ("C[i,j] = A[i,j] * B[i,j]", {"A": "nm(4,4)", "B": "dia"}, case_mul),
}


@pytest.mark.parametrize("matrix", list(MATRICES))
@pytest.mark.parametrize("kernel_id", list(KERNELS))
def test_interpreter_agrees_with_scipy(kernel_id, matrix):
    kernel, formats, case = KERNELS[kernel_id]
    A = MATRICES[matrix](11)
    operands, expected = case(A, 12)
    lowered = lower_expr(kernel, formats)
    got = interpret(lowered, operands)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_id", ["spmv-csr", "spmv-coo", "spmm-csr", "sddmm-csr",
                                       "add-csr", "spmv-transposed-csr", "spmv-plus-b-csr"])
def test_interpreter_agrees_with_the_cpu_backend(kernel_id):
    kernel, formats, case = KERNELS[kernel_id]
    A = MATRICES["empty-rows-7x4"](21)
    operands, _ = case(A, 22)
    lowered = lower_expr(kernel, formats)
    if kernel in NAMED_KERNELS:
        k = spc.compile(kernel, fmt=formats["A"], dtype="float64")
        names = NAMED_KERNELS[kernel][2]
        compiled = k(*[operands[n] for n in names])
    else:
        k = spc.compile(kernel, formats=formats, dtype="float64")
        compiled = k(**operands)
    compiled = compiled.toarray() if sp.issparse(compiled) else np.asarray(compiled)
    np.testing.assert_allclose(interpret(lowered, operands), compiled, rtol=1e-12, atol=1e-12)


def test_interpreter_runs_int64_index_kernels():
    A = MATRICES["6x5"](31)
    operands, expected = case_spmv(A, 32)
    lowered = lower_expr("spmv", {"A": "csr"}, index_dtype=DType.I64)
    assert lowered.program.compute.param("A1_pos").value.dtype is DType.I64
    np.testing.assert_allclose(interpret(lowered, operands), expected, rtol=1e-12)


def test_interpreter_float32_kernel():
    A = MATRICES["6x5"](41)
    operands, expected = case_spmv(A, 42)
    lowered = lower_expr("spmv", {"A": "csr"}, value_dtype=DType.F32)
    t = spc.tensor(A, "csr", dtype=np.float32)
    args = {"A1_pos": t.arrays[1]["pos"], "A1_crd": t.arrays[1]["crd"], "A_vals": t.vals,
            "x_vals": operands["x"].astype(np.float32), "y_vals": np.zeros(6, np.float32),
            "size_i": 6, "size_j": 5}
    run_kernel(lowered.program.compute, args)
    assert args["y_vals"].dtype == np.float32
    np.testing.assert_allclose(args["y_vals"], expected, rtol=1e-5)


# ---------------------------------------------------------------------- the IR's meaning


def buf(name, dtype=F64):
    return Buffer(name, dtype)


def kernel_of(body, *, inputs=(), outputs=("out",), sizes=(), out_dtype=F64, in_dtype=F64):
    params = tuple(Param(buf(n, in_dtype), ParamRole.INPUT) for n in inputs) \
        + tuple(Param(buf(n, out_dtype), ParamRole.OUTPUT) for n in outputs) \
        + tuple(Param(Var(n, I64), ParamRole.SIZE) for n in sizes)
    return Kernel("t", params, Block(tuple(body)))


def test_for_loop_bounds_are_half_open():
    i = Var("i", I64)
    k = kernel_of([For(i, i64(2), Var("n", I64), Store(buf("out"), i, Const(1.0, F64)))],
                  sizes=("n",))
    out = np.zeros(6)
    run_kernel(k, {"out": out, "n": 5})
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 1, 0])


def test_accumulating_store_adds():
    k = kernel_of([Store(buf("out"), i64(0), Const(2.5, F64), accumulate=True),
                   Store(buf("out"), i64(0), Const(1.0, F64), accumulate=True),
                   Store(buf("out"), i64(1), Const(4.0, F64)),
                   Store(buf("out"), i64(1), Const(3.0, F64))])
    out = np.array([10.0, 10.0])
    run_kernel(k, {"out": out})
    np.testing.assert_array_equal(out, [13.5, 3.0])


def test_while_if_else_select_min_max_neg_cast():
    n = Var("n", I64)
    c = Var("c", I64)
    out = buf("out")
    body = [
        Let(n, i64(0)),
        While(BinOp("<", n, i64(5)), Block((
            If(BinOp("==", n, i64(2)),
               Store(out, n, Const(-1.0, F64)),
               Store(out, n, Cast(BinOp("*", n, n), F64))),
            Assign(n, BinOp("+", n, i64(1)))))),
        Let(c, BinOp("min", i64(7), BinOp("max", i64(3), i64(9)))),
        Store(out, i64(5), Cast(c, F64)),
        Store(out, i64(6), Select(BinOp("<", c, i64(0)), Const(1.0, F64), Neg(Const(2.0, F64)))),
        Store(out, i64(7), Cast(BinOp("/", i64(7), i64(2)), F64)),        # integer division
        Store(out, i64(8), BinOp("/", Const(7.0, F64), Const(2.0, F64))),
    ]
    result = np.zeros(9)
    run_kernel(kernel_of(body), {"out": result})
    np.testing.assert_array_equal(result, [0, 1, -1, 9, 16, 7, -2, 3, 3.5])


def test_alloc_is_a_zeroed_local_array():
    acc = buf("acc")
    i = Var("i", I64)
    body = [Alloc(acc, 4),
            For(i, i64(0), i64(4), Store(acc, i, Cast(i, F64), accumulate=True)),
            For(i, i64(0), i64(4), Store(buf("out"), i, Load(acc, i)))]
    out = np.full(4, 9.0)
    run_kernel(kernel_of(body), {"out": out})
    np.testing.assert_array_equal(out, [0, 1, 2, 3])


def test_index_loads_widen_to_int64():
    idx = Buffer("idx", DType.I32)
    k = Kernel("t", (Param(idx, ParamRole.INPUT), Param(buf("out"), ParamRole.OUTPUT)),
               Store(buf("out"), Load(idx, i64(1)), Const(1.0, F64)))
    out = np.zeros(4)
    run_kernel(k, {"idx": np.array([0, 3], np.int32), "out": out})
    np.testing.assert_array_equal(out, [0, 0, 0, 1])


def test_inputs_are_never_modified():
    """Even a (malformed) kernel storing to an input leaves the caller's array alone."""
    src = buf("src")
    k = Kernel("t", (Param(src, ParamRole.INPUT), Param(buf("out"), ParamRole.OUTPUT)),
               Block((Store(src, i64(0), Const(5.0, F64)),
                      Store(buf("out"), i64(0), Load(src, i64(0))))))
    a = np.array([1.0])
    out = np.zeros(1)
    run_kernel(k, {"src": a, "out": out})
    assert a[0] == 1.0 and out[0] == 5.0


@pytest.mark.parametrize("body", [
    pytest.param([Store(buf("out"), i64(3), Const(1.0, F64))], id="store-past-end"),
    pytest.param([Store(buf("out"), i64(-1), Const(1.0, F64))], id="store-negative"),
    pytest.param([Store(buf("out"), i64(0), Load(buf("src"), i64(2)))], id="load-past-end"),
])
def test_out_of_bounds_access_raises(body):
    k = kernel_of(body, inputs=("src",))
    with pytest.raises(IndexError):
        run_kernel(k, {"src": np.zeros(2), "out": np.zeros(3)})


def test_missing_argument_raises():
    k = kernel_of([], inputs=("src",), sizes=("n",))
    with pytest.raises(KeyError, match="n"):
        run_kernel(k, {"src": np.zeros(1), "out": np.zeros(1)})


# ---------------------------------------------------------------------- races


def _two_level(kind, store):
    """for i in [0, 4) @kind: for j in [0, 3): store(i, j)"""
    i, j = Var("i", I64), Var("j", I64)
    return kernel_of([For(i, i64(0), i64(4), For(j, i64(0), i64(3), store(i, j)), kind)])


@pytest.mark.parametrize("kind", [LoopKind.PARALLEL, LoopKind.GPU_WARP, LoopKind.GPU_BLOCK,
                                  LoopKind.GPU_THREAD, LoopKind.GPU_LANE,
                                  LoopKind.GPU_LANE_SPLIT])
def test_concurrent_iterations_storing_one_entry_are_a_race(kind):
    k = _two_level(kind, lambda i, j: Store(buf("out"), j, Const(1.0, F64), accumulate=True))
    with pytest.raises(RaceError, match=r"out\[0\] is stored by iterations 0 and 1"):
        run_kernel(k, {"out": np.zeros(3)})
    out = np.zeros(3)
    run_kernel(k, {"out": out}, check_races=False)     # sequentially it sums fine
    np.testing.assert_array_equal(out, [4, 4, 4])


@pytest.mark.parametrize("store, want", [
    (lambda i, j: Store(buf("out"), j, Const(1.0, F64), accumulate=True, atomic=True),
     [4, 4, 4]),                                        # atomic: no race
    (lambda i, j: Store(buf("out"), BinOp("+", BinOp("*", i, i64(3)), j), Const(1.0, F64)),
     [1] * 12),                                         # each iteration its own entries
], ids=["atomic", "disjoint"])
def test_atomic_or_disjoint_stores_are_not_races(store, want):
    k = _two_level(LoopKind.GPU_WARP, store)
    out = np.zeros(len(want))
    run_kernel(k, {"out": out})
    np.testing.assert_array_equal(out, want)


def test_one_iteration_storing_an_entry_twice_is_not_a_race():
    k = _two_level(LoopKind.PARALLEL,
                   lambda i, j: Store(buf("out"), i, Const(1.0, F64), accumulate=True))
    out = np.zeros(4)
    run_kernel(k, {"out": out})
    np.testing.assert_array_equal(out, [3, 3, 3, 3])


def test_buffers_allocated_per_iteration_are_private():
    i, j = Var("i", I64), Var("j", I64)
    acc = Buffer("acc", F64)
    body = Block((Alloc(acc, 2),
                  For(j, i64(0), i64(2), Store(acc, j, Const(1.0, F64), accumulate=True)),
                  Store(buf("out"), i, Load(acc, i64(1)))))
    k = kernel_of([For(i, i64(0), i64(5), body, LoopKind.GPU_WARP)])
    out = np.zeros(5)
    run_kernel(k, {"out": out})
    np.testing.assert_array_equal(out, [1] * 5)
