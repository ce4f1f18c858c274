"""float16 and bfloat16 values: stored in 16 bits, computed in float32, rounded
once per stored entry (ir/nodes.py DType.widened; passes/widen_outputs.py).

Every named kernel over the formats that take them, and a set of expressions,
against a float64 reference computed from the same 16-bit inputs: the relative
error the issue allows is 2e-3 (float16) and 1e-2 (bfloat16); one rounding of
the result is 4.9e-4 and 3.9e-3."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cpu import CPUTarget
from spc.ir.interp import run_kernel
from spc.ir.printer import format_kernel
from spc.ir.nodes import (Buffer, DType, For, Kernel, Let, Load, LoopKind, Param, ParamRole,
                          Store, Var, i64)
from spc.ir.verify import verify

import ml_dtypes  # noqa: E402  (a dependency of spc: numpy arrays of bfloat16)

TYPES = {"float16": 2e-3, "bfloat16": 1e-2}
FORMATS = ["csr", "csc", "coo", "dcsr", "dense", "bsr(2,2)", "ell", "dia", "nm(2,4)", "hyb"]


def _matrix(dtype: str, shape=(24, 18), density=0.3, seed=3) -> sp.csr_matrix:
    """A random matrix whose values are exactly representable in ``dtype`` (one
    empty row, one dense row)."""
    a = sp.random(*shape, density=density, format="lil", random_state=seed, dtype=np.float64)
    a[2, :] = 0
    a[5, :] = np.linspace(0.5, 1.5, shape[1])
    a = a.tocsr()
    a.data = a.data.astype(dtype).astype(np.float64) + 0.0
    a.eliminate_zeros()
    return a


def _dense(shape, dtype: str, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


def _rel_err(got, ref) -> float:
    got = np.asarray(got, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def _values(out) -> np.ndarray:
    if isinstance(out, (spc.Tensor, spc.SumTensor)):
        return out.to_numpy().astype(np.float64)
    return np.asarray(out).astype(np.float64)


@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_named_kernels_in_16_bits(kernel, fmt, dtype):
    A64 = _matrix(dtype)
    if fmt.startswith("nm"):
        A64 = sp.csr_matrix(spc.prune.nm(A64, 2, 4))
    A = spc.tensor(A64, fmt, dtype=dtype)
    k = spc.compile(kernel, fmt=fmt)
    if kernel == "spmv":
        x = _dense(A64.shape[1], dtype, 1)
        out, ref = k(A, x), A64 @ x.astype(np.float64)
    elif kernel == "spmm":
        B = _dense((A64.shape[1], 7), dtype, 2)
        out, ref = k(A, B), A64 @ B.astype(np.float64)
    else:
        X, Y = _dense((A64.shape[0], 5), dtype, 3), _dense((A64.shape[1], 5), dtype, 4)
        out = k(A, X, Y)
        ref = A64.multiply(X.astype(np.float64) @ Y.astype(np.float64).T).toarray()
    assert str(out.dtype) == dtype
    assert _rel_err(_values(out), ref) <= TYPES[dtype]


EXPRESSIONS = [
    ("y[i] = A[i,j] * x[j] + b[i]", {"A": "csr"}),
    ("y[j] = A[i,j] * x[i]", {"A": "csr"}),                # a scatter: the output widens
    ("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csr", "C": "csr"}),
    ("s = A[i,j] * x[i] * y[j]", {"A": "csr"}),
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr", "B": "csr"}),
]


@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("text, formats", EXPRESSIONS, ids=[e for e, _ in EXPRESSIONS])
def test_expressions_in_16_bits(text, formats, dtype):
    k = spc.compile(text, formats=formats)
    A64, B64 = _matrix(dtype, (12, 12)), _matrix(dtype, (12, 12), seed=5)
    ops = {"A": spc.tensor(A64, "csr", dtype=dtype), "B": spc.tensor(B64, "csr", dtype=dtype),
           "x": _dense(12, dtype, 1), "y": _dense(12, dtype, 2), "b": _dense(12, dtype, 3)}
    wide = {n: (v.to_numpy() if isinstance(v, spc.Tensor) else v).astype(np.float64)
            for n, v in ops.items()}
    ref = {"y[i] = A[i,j] * x[j] + b[i]": lambda w: w["A"] @ w["x"] + w["b"],
           "y[j] = A[i,j] * x[i]": lambda w: w["A"].T @ w["x"],
           "C[i,j] = A[i,j] + B[i,j]": lambda w: w["A"] + w["B"],
           "s = A[i,j] * x[i] * y[j]": lambda w: w["x"] @ w["A"] @ w["y"],
           "C[i,j] = A[i,k] * B[k,j]": lambda w: w["A"] @ w["B"]}[text](wide)
    out = k(**{n: ops[n] for n in k.input_names})
    assert str(out.dtype) == dtype
    assert _rel_err(_values(out), ref) <= TYPES[dtype]


@pytest.mark.parametrize("dtype", list(TYPES))
def test_sums_accumulate_in_float32(dtype):
    """A long row of small values: summed in 16 bits, 1 + 4096 * 2**-12 would stay 1
    (each addition rounds away); summed in float32 and rounded once it is 2."""
    n = 4097
    A = sp.csr_matrix(np.ones((1, n)))
    x = np.full(n, 2.0 ** -12, dtype=dtype)
    x[0] = 1.0
    for fmt in ("csr", "csc", "coo"):
        y = spc.compile("spmv", fmt=fmt)(spc.tensor(A, fmt, dtype=dtype), x)
        assert float(y[0]) == 2.0, fmt


def test_the_ir_stores_16_bits_and_widens_outputs_added_into():
    csr = spc.compile("spmv", dtype="float16")
    assert "in A_vals: f16*" in csr.ir and "out y_vals: f16*" in csr.ir
    assert "let acc: f32" in csr.ir
    csc = spc.compile("spmv", fmt="csc", dtype="bfloat16")       # a scatter into y
    assert "in A_vals: bf16*" in csc.ir and "out y_vals: f32*" in csc.ir


def test_the_verifier_refuses_16_bit_scalars():
    k = Kernel("k", (Param(Buffer("o", DType.F32), ParamRole.OUTPUT),),
               Let(Var("v", DType.F16), Load(Buffer("o", DType.F32), Var("i", DType.I64))))
    with pytest.raises(spc.CompileError, match="storage type"):
        verify(k)


def test_the_verifier_refuses_a_let_given_a_value_of_another_type():
    """A float32 scalar given a float64 sum reached LLVM ("cannot store double to
    float*") from fused rows under accumulate="float64"; CUDA C converted it silently."""
    k = Kernel("k", (Param(Buffer("o", DType.F64), ParamRole.OUTPUT),),
               Let(Var("v", DType.F32), Load(Buffer("o", DType.F64), i64(0))))
    with pytest.raises(spc.CompileError, match="declared f32 but given a f64 value"):
        verify(k)


@pytest.mark.parametrize("dt", [DType.F16, DType.BF16])
def test_atomic_16_bit_adds_on_the_cpu_match_the_interpreter(dt):
    """IR that adds atomically into a 16-bit array (the pipelines widen such
    outputs, but any valid IR must run): a compare-and-swap loop per addition."""
    i, n = Var("i", DType.I64), Var("size_n", DType.I64)
    idx, x, out = Buffer("idx", DType.I32), Buffer("x", dt), Buffer("out", dt)
    body = For(i, i64(0), n,
               Store(out, Load(idx, i), Load(x, i), accumulate=True, atomic=True),
               LoopKind.PARALLEL)
    kernel = verify(Kernel("atomic16", (Param(idx, ParamRole.INPUT), Param(x, ParamRole.INPUT),
                                        Param(out, ParamRole.OUTPUT),
                                        Param(n, ParamRole.SIZE)), body))
    rng = np.random.default_rng(0)
    m = 2000
    where = rng.integers(0, 7, m).astype(np.int32)
    vals = rng.uniform(0, 1, m).astype(dt.np)
    want = np.zeros(7, dt.np)
    run_kernel(kernel, {"idx": where, "x": vals, "out": want, "size_n": m})
    target = CPUTarget()
    loaded = target.load(target.build(target.render(kernel), kernel), kernel)
    got = np.zeros(7, dt.np)
    loaded([where, vals.view(np.uint16), got.view(np.uint16)], [m], nthreads=2)
    # each addition rounds in 16 bits, in whatever order threads meet: a few ulps apart
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                               rtol=0.05 if dt is DType.BF16 else 0.01)


@pytest.mark.parametrize("dtype", list(TYPES))
def test_stores_round_to_nearest_even_as_numpy_does(dtype):
    """y = diag(a) x: each product of two 16-bit values is exact in float32, and
    the kernel rounds it once on the store.  The rounding (PTX cvt.rn on the GPU,
    fptrunc or integer arithmetic for bfloat16 in the CPU's LLVM IR) agrees bit
    for bit with numpy's / ml_dtypes' on random values, ties, overflow and NaN."""
    dt = np.dtype(dtype) if dtype == "float16" else np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(7)
    a = rng.uniform(-2, 2, 3000).astype(dt)
    x = rng.uniform(-2, 2, 3000).astype(dt)
    big = 60000.0 if dtype == "float16" else 3.0e38
    special_a = np.array([1 + 2.0 ** -7, 1 + 2.0 ** -10, big, 1.0, 2.0], dtype=dt)
    special_x = np.array([1.5, 1.5, 2.0, np.nan, -np.inf], dtype=dt)
    a, x = np.concatenate([a, special_a]), np.concatenate([x, special_x])
    A = spc.tensor(sp.diags(a.astype(np.float64)).tocsr(), "csr", dtype=dtype)
    y = np.asarray(spc.compile("spmv")(A, x))
    with np.errstate(over="ignore"):
        expect = (a.astype(np.float32) * x.astype(np.float32)).astype(dt)
    nan = np.isnan(expect.astype(np.float32))
    assert np.array_equal(y.view(np.uint16)[~nan], expect.view(np.uint16)[~nan])
    assert np.isnan(y[nan].astype(np.float32)).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_cpu_tensors_in_16_bits(dtype):
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype)
    A64 = _matrix(dtype)
    A = torch.tensor(A64.toarray()).to(tdt)
    B = torch.tensor(_dense((A64.shape[1], 6), dtype, 1).astype(np.float32)).to(tdt)
    for As in (A.to_sparse_csr(), A.to_sparse_coo(), A.to_sparse_csc()):
        out = spc.compile("spmm", fmt=str(As.layout).rpartition("_")[2])(As, B)
        assert out.dtype is tdt
        ref = A64 @ B.double().numpy()
        assert _rel_err(out.double().numpy(), ref) <= TYPES[dtype]


class _Interpreted:
    """A launcher that runs a kernel in the reference interpreter, seeing the 16-bit
    arrays the CPU runtime passes as their bits (uint16) in their own type."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, buffers, sizes, nthreads=1):
        args, b, s = {}, iter(buffers), iter(sizes)
        for p in self.kernel.params:
            if isinstance(p.value, Buffer):
                arr = next(b)
                args[p.name] = arr.view(p.value.dtype.np) if arr.dtype == np.uint16 else arr
            else:
                args[p.name] = next(s)
        run_kernel(self.kernel, args)


@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("fmt", ["csc", "coo"])
def test_the_interpreter_gives_the_backends_bits(fmt, dtype):
    """Serial scatter SpMV (an output widen_outputs holds in float32): the
    interpreter and the CPU backend add the same float32 numbers in the same
    order and round once.  (A csr row's sum may be reassociated by LLVM's
    vectorizer, so it is compared within tolerance elsewhere.)"""
    A = spc.tensor(_matrix(dtype, (40, 30), density=0.4), fmt, dtype=dtype)
    x = _dense(30, dtype, 1)
    k = spc.compile("spmv", fmt=fmt, parallel=False)
    native = np.asarray(k(A, x))
    ck = k.specialize(dtype)
    v = ck._variant(DType.I32)
    v.launchers = [_Interpreted(kern) for kern in v.kernels]
    interpreted = np.asarray(ck(A, x))
    assert native.dtype == interpreted.dtype == np.dtype(A.dtype)
    assert np.array_equal(native.view(np.uint16), interpreted.view(np.uint16))


@pytest.mark.parametrize("dt", [DType.F16, DType.BF16])
@pytest.mark.parametrize("n", [0, 1, 100_001])
def test_the_cpu_rounds_widened_outputs_as_numpy_does(dt, n):
    """runtime/narrow_cpu: the IR kernel that rounds a widened output agrees bit
    for bit with numpy's / ml_dtypes' conversion, NaN and overflow included, on
    one thread and on several."""
    from spc.runtime.narrow_cpu import narrow, narrow_kernel
    a = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 100
    if n > 6:
        a[3], a[4], a[5] = np.nan, 1e30, -1e30
    got = narrow(CPUTarget(), a, dt, threads=2)
    with np.errstate(over="ignore"):
        expect = a.astype(dt.np)
    nan = np.isnan(a)
    assert got.dtype == dt.np
    assert np.array_equal(got.view(np.uint16)[~nan], expect.view(np.uint16)[~nan])
    assert np.isnan(got[nan].astype(np.float32)).all()
    kernel = narrow_kernel(dt)
    assert kernel.overwrites == ("y",) and f"out y: {dt.value}*" in format_kernel(kernel)


# ------------------------------------------------------------------ accumulate=


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_accumulate_float64_sums_float32_values_in_float64(fmt):
    """1 + (n - 1) * 2**-25 in float32 steps stays near 1 (each small addend
    rounds away or is halved); summed in float64 and rounded once it is
    float32's nearest value.  Scatter outputs (csc, coo) are held in float64."""
    n = 1 << 14
    A = spc.tensor(sp.csr_matrix(np.ones((1, n))), fmt, dtype="float32")
    x = np.full(n, 2.0 ** -25, dtype=np.float32)
    x[0] = 1.0
    k = spc.compile("spmv", fmt=fmt, accumulate="float64")
    y = k(A, x)
    assert y.dtype == np.float32
    assert y[0] == np.float32(1 + (n - 1) * 2.0 ** -25)
    assert "let acc: f64" in k.ir or "out y_vals: f64*" in k.ir
    assert spc.compile("spmv", fmt=fmt)(A, x)[0] != y[0]      # float32 sums lose them


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_accumulate_float64_on_every_kernel(kernel, dtype):
    A64 = _matrix(dtype if dtype != "float32" else "float16")
    A = spc.tensor(A64, "csr", dtype=dtype)
    ops = {"spmv": lambda: [_dense(A64.shape[1], dtype, 1)],
           "spmm": lambda: [_dense((A64.shape[1], 9), dtype, 2)],
           "sddmm": lambda: [_dense((A64.shape[0], 5), dtype, 3),
                             _dense((A64.shape[1], 5), dtype, 4)]}[kernel]()
    wide = [o.astype(np.float64) for o in ops]
    ref = {"spmv": lambda: A64 @ wide[0], "spmm": lambda: A64 @ wide[0],
           "sddmm": lambda: A64.multiply(wide[0] @ wide[1].T).toarray()}[kernel]()
    out = spc.compile(kernel, accumulate="float64")(A, *ops)
    assert str(out.dtype) == dtype
    assert _rel_err(_values(out), ref) <= TYPES.get(dtype, 1e-6)


def test_accumulate_is_never_narrower_than_the_values():
    with pytest.raises(spc.DTypeError, match="less precision"):
        spc.compile("spmv", accumulate="float32")(sp.eye(3, format="csr"), np.ones(3))
    with pytest.raises(spc.DTypeError, match="float32 or float64"):
        spc.compile("spmv", accumulate="float16")
    k = spc.compile("spmv", dtype="float64", accumulate="float64")
    assert k(sp.eye(3, format="csr"), np.ones(3)).dtype == np.float64


def test_the_verifier_refuses_a_store_that_widens():
    o = Buffer("o", DType.F64)
    k = Kernel("k", (Param(o, ParamRole.OUTPUT),),
               Store(o, i64(0), Load(Buffer("o32", DType.F32), i64(0))))
    with pytest.raises(spc.CompileError):
        verify(k)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kernel", ["spmv", "sddmm"])
def test_torch_operands_of_a_sum_format_in_16_bits(kernel, dtype):
    """hyb (a sum of formats) splits torch operands on the host and returns torch:
    neither step goes through scipy, which holds no 16-bit values."""
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype)
    A64 = _matrix(dtype)
    A = torch.tensor(A64.toarray()).to(tdt).to_sparse_csr()
    if kernel == "spmv":
        x = torch.tensor(_dense(A64.shape[1], "float32", 1)).to(tdt)
        out, ref = spc.compile(kernel, fmt="hyb")(A, x), A64 @ x.double().numpy()
    else:
        X = torch.tensor(_dense((A64.shape[0], 4), "float32", 2)).to(tdt)
        Y = torch.tensor(_dense((A64.shape[1], 4), "float32", 3)).to(tdt)
        out = spc.compile(kernel, fmt="hyb")(A, X, Y).to_dense()
        ref = A64.multiply(X.double().numpy() @ Y.double().numpy().T).toarray()
    assert out.dtype is tdt
    assert _rel_err(out.double().numpy(), ref) <= TYPES[dtype]


@pytest.mark.parametrize("dtype", list(TYPES))
def test_16_bit_tensors_come_to_scipy_as_float32(dtype):
    """scipy.sparse holds no 16-bit values: to_scipy widens them (exactly)."""
    A64 = _matrix(dtype)
    m = spc.tensor(A64, "csr", dtype=dtype).to_scipy()
    assert m.dtype == np.float32
    np.testing.assert_array_equal(m.toarray(), A64.toarray().astype(np.float32))
    assert (m @ np.ones(A64.shape[1], np.float32)).dtype == np.float32    # scipy can use it


def test_outputs_read_back_or_added_into_are_widened_and_only_stored_ones_are_not():
    """widen_outputs: a 16-bit output the kernel reads back (out[i] = out[i] + x[i], a
    plain store) or adds into is held in float32; one only ever stored stays 16-bit."""
    from spc.ir.nodes import (BinOp, Block, Buffer, DType, For, Kernel, Load, Param,
                              ParamRole, Store, Var, i64)
    from spc.passes.widen_outputs import widen_outputs
    n = Var("size_n", DType.I64)
    i = Var("i", DType.I64)
    x, out = Buffer("x", DType.F16), Buffer("out", DType.F16)

    def kernel(value, accumulate=False):
        body = For(i, i64(0), n, Store(out, i, value, accumulate=accumulate))
        return Kernel("k", (Param(x, ParamRole.INPUT), Param(out, ParamRole.OUTPUT),
                            Param(n, ParamRole.SIZE)), Block((body,)))

    held = lambda k: k.param("out").value.dtype                    # noqa: E731
    assert held(widen_outputs(kernel(BinOp("+", Load(out, i), Load(x, i))))) is DType.F32
    assert held(widen_outputs(kernel(Load(x, i), accumulate=True))) is DType.F32
    assert held(widen_outputs(kernel(Load(x, i)))) is DType.F16
