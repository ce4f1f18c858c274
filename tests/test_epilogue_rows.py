"""The epilogue_rows pass (CPU): a function of a row's sums applied after the row
is summed in SpMM's order.  Golden printed IR, the interpreter giving the same
numbers before and after (bit for bit), the shapes it leaves alone, and the
compiled kernel against numpy on edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats.format import resolve_format
from spc.frontend.check import check
from spc.frontend.parser import parse
from spc.ir.interp import run_kernel
from spc.ir.lower import lower
from spc.ir.nodes import DType
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes.epilogue_rows import epilogue_rows
from spc.passes.simplify import simplify
from test_ir_golden import assert_golden

SPMM_RELU = "C[i,j] = relu(sum(k, A[i,k] * B[k,j]) + b[j])"


def _lowered(text, formats):
    a = parse(text)
    check(a)
    ranks = {a.lhs.tensor: len(a.lhs.indices), **{x.tensor: len(x.indices)
                                                   for x in a.accesses()}}
    fmts = {t: resolve_format(formats.get(t, "dense"), r) for t, r in ranks.items()}
    return verify(simplify(lower(a, fmts, name="e", value_dtype=DType.F64).compute))


def _args(A, n=5, seed=0):
    rng = np.random.default_rng(seed)
    B, b = rng.standard_normal((A.shape[1], n)), rng.standard_normal(n)
    return {"A1_pos": A.indptr.astype(np.int32), "A1_crd": A.indices.astype(np.int32),
            "A_vals": A.data.copy(), "B_vals": B.reshape(-1).copy(), "b_vals": b,
            "size_i": A.shape[0], "size_j": n, "size_k": A.shape[1]}, B, b


def _matrix(m=9, n=7, seed=1):
    A = sp.random(m, n, density=0.4, format="csr", random_state=seed).tolil()
    A[2, :] = 0                                    # an empty row
    A[4, :] = 1.25                                 # a dense row
    return A.tocsr()


def test_golden():
    assert_golden("epilogue_rows_spmm_relu",
                  format_kernel(verify(epilogue_rows(_lowered(SPMM_RELU, {"A": "csr"})))))


@pytest.mark.parametrize("text", [SPMM_RELU, "C[i,j] = exp(sum(k, A[i,k] * B[k,j]) / 2)",
                                  "C[i,j] = sum(k, A[i,k] * B[k,j]) * b[j] + 1"])
def test_interpreter_same_numbers_before_and_after(text):
    kernel = _lowered(text, {"A": "csr"})
    A = _matrix()
    args, _, _ = _args(A)
    before = dict(args, C_vals=np.zeros(9 * 5))
    run_kernel(kernel, before)
    rewritten = verify(epilogue_rows(kernel))
    assert rewritten is not kernel
    after = dict(args, C_vals=np.zeros(9 * 5))
    run_kernel(rewritten, after)
    np.testing.assert_array_equal(after["C_vals"], before["C_vals"])


@pytest.mark.parametrize("text, formats", [
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}),                        # no epilogue
    ("m[i] = 2 * max(j, A[i,j]) + 1", {"A": "csr"}),                    # no column loop
    ("S[i,j] = A[i,j] * exp(sum(k, X[i,k] * Y[j,k]))", {"A": "csr", "S": "csr"}),  # sampled
])
def test_other_shapes_are_left_alone(text, formats):
    kernel = _lowered(text, formats)
    assert epilogue_rows(kernel) is kernel


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape, density", [((30, 20), 0.2), ((0, 6), 0.0), ((7, 0), 0.0),
                                            ((12, 9), 0.0), ((40, 33), 0.9)])
def test_compiled_spmm_relu_matches_numpy(shape, density, dtype):
    A = sp.random(*shape, density=density, format="csr", random_state=3,
                  dtype=np.float64) if min(shape) else sp.csr_matrix(shape)
    rng = np.random.default_rng(4)
    B, b = rng.standard_normal((shape[1], 21)), rng.standard_normal(21)
    k = spc.compile(SPMM_RELU, formats={"A": "csr"}, dtype=dtype)
    assert k.ir.count("kernel ") == 1 and "_acc" in k.ir      # summed in register tiles
    if dtype == "float16":                         # scipy holds no float16: an spc Tensor
        At = spc.tensor(A, "csr", dtype="float16")
        got = np.asarray(k(At, B.astype(np.float16), b.astype(np.float16))).astype(np.float64)
        A = A.copy()
        A.data = A.data.astype(np.float16).astype(np.float64)
        B, b = B.astype(np.float16).astype(np.float64), b.astype(np.float16).astype(np.float64)
        tol = 5e-3
    else:
        got = k(A.astype(dtype), B.astype(dtype), b.astype(dtype))
        tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, np.maximum(A @ B + b, 0), rtol=tol, atol=tol)


def test_fold_applies_the_function_in_the_tiles_write_backs():
    from spc.passes.epilogue_rows import fold_epilogue
    from spc.passes.register_tile import tile_rows_for_registers
    tiled = verify(tile_rows_for_registers(epilogue_rows(_lowered(SPMM_RELU, {"A": "csr"}))))
    folded = verify(fold_epilogue(tiled))
    text = format_kernel(folded)
    assert "= max(j1_acc[j1_kk] + b_vals[" in text and "C_vals[C1_p3] + b_vals" not in text
    for n in (1, 5, 37):                           # column counts across the tile widths
        A = _matrix(seed=n)
        args, _, _ = _args(A, n=n)
        before = dict(args, C_vals=np.zeros(9 * n))
        run_kernel(tiled, before)
        after = dict(args, C_vals=np.full(9 * n, np.nan))     # every entry written once
        run_kernel(folded, after)
        np.testing.assert_array_equal(after["C_vals"], before["C_vals"])


def test_fold_leaves_a_row_with_a_remainder_loop_alone():
    from spc.passes.epilogue_rows import fold_epilogue
    from spc.passes.register_tile import register_tile
    tiled = register_tile(epilogue_rows(_lowered(SPMM_RELU, {"A": "csr"})), width=8)
    assert fold_epilogue(tiled) is tiled          # columns past the tiles: no single write
