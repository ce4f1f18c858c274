"""block_reductions (passes/block_reductions.py): golden printed IR, the same
numbers before and after in the interpreter (rows shorter and longer than the
block, empty rows, nnz = 0), kernels it must leave alone, and the compiled
CPU kernel against scipy."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.nodes import DType, For, LoopKind
from spc.ir.printer import format_kernel
from spc.ir.traverse import walk
from spc.ir.verify import verify
from spc.passes import block_reductions, simplify

from test_interp import KERNELS, MATRICES, interpret, lower_expr, random_sparse
from test_ir_golden import assert_golden

# rows of 0 to 12 entries: shorter and longer than every width below
MATRICES_HERE = {
    **{k: MATRICES[k] for k in ("6x5", "empty-rows-7x4", "nnz0-3x4", "1x1", "0x3")},
    "ragged-13x12": lambda seed: random_sparse(13, 12, 0.45, seed, empty_rows=True),
}


def _blocked(kernel, width):
    return verify(block_reductions(verify(simplify(kernel)), width=width), "block_reductions")


def test_block_reductions_golden():
    (lowered,) = lower_expr("spmv", {"A": "csr"}, value_dtype=DType.F32).program.kernels
    assert_golden("passes_spmv_csr.3_block_reductions", format_kernel(_blocked(lowered, 4)))


@pytest.mark.parametrize("width", [1, 2, 4, 8])
@pytest.mark.parametrize("matrix", sorted(MATRICES_HERE))
@pytest.mark.parametrize("kernel_id", ["spmv-csr", "spmv-csc", "spmv-dcsr", "spmv-transposed-csr",
                                       "spmv-plus-b-csr", "spmv-coo", "spmm-csr", "sddmm-csr",
                                       "add-csr", "mul-csr"])
def test_block_reductions_preserves_results(kernel_id, matrix, width):
    kernel, formats, case = KERNELS[kernel_id]
    lowered = lower_expr(kernel, formats)
    after = tuple(_blocked(k, width) for k in lowered.program.kernels)
    A = MATRICES_HERE[matrix](61)
    operands, _ = case(A, 62)
    np.testing.assert_allclose(interpret(lowered, operands, kernels=after),
                               interpret(lowered, operands), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_id", ["spmm-csr", "sddmm-csr", "add-csr", "mul-csr"])
def test_block_reductions_leaves_other_kernels_alone(kernel_id):
    """Loops that store, or whose range is a dense [0, size), are not reductions
    over a data-dependent range."""
    kernel, formats, _ = KERNELS[kernel_id]
    for k in lower_expr(kernel, formats).program.kernels:
        k = simplify(k)
        assert block_reductions(k) == k


@pytest.mark.parametrize("kernel_id", ["spmv-csr", "spmv-dcsr"])
def test_block_reductions_applies_to_row_dot_products(kernel_id):
    kernel, formats, _ = KERNELS[kernel_id]
    for k in lower_expr(kernel, formats).program.kernels:
        loops = [n for n in walk(block_reductions(simplify(k))) if isinstance(n, For)]
        assert [n.kind for n in loops if n.kind is not LoopKind.SERIAL] == \
            [LoopKind.VECTOR, LoopKind.SCALAR, LoopKind.SCALAR]


def test_scalar_loops_keep_llvm_from_vectorizing_them():
    """A SCALAR loop's back edge carries vectorize.width 1 and unroll.disable;
    the VECTOR block's carries its width."""
    src = _spmv("csr").source
    assert '!"llvm.loop.vectorize.width", i32 1' in src
    assert '!"llvm.loop.vectorize.width", i32 4' in src
    assert src.count('!"llvm.loop.unroll.disable"') >= 1
    # a width asks LLVM without forcing it: forced (vectorize.enable), a loop LLVM cannot
    # vectorize printed "warning: ... loop not vectorized" on the user's stderr
    assert "llvm.loop.vectorize.enable" not in src


@functools.lru_cache(maxsize=None)
def _spmv(fmt):
    return spc.compile("spmv", fmt=fmt, target="cpu")


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_spmv_matches_scipy_on_ragged_rows(fmt, threads):
    rng = np.random.default_rng(5)
    lengths = rng.choice([0, 1, 3, 4, 5, 6, 7, 8, 9, 11, 40, 130], size=300)
    rows = np.repeat(np.arange(300), lengths)
    cols = np.concatenate([rng.choice(500, n, replace=False) for n in lengths])
    A = sp.csr_matrix((rng.standard_normal(len(rows)).astype(np.float32), (rows, cols)),
                      shape=(300, 500)).asformat(fmt)
    x = rng.standard_normal(A.shape[1]).astype(np.float32)
    k = spc.compile("spmv", fmt=fmt, target="cpu", schedule=spc.Schedule(threads=threads))
    assert ("@vector" in k.ir) == (fmt == "csr")      # csc: a scatter, not a reduction
    np.testing.assert_allclose(k(A, x), A.astype(np.float64) @ x, rtol=1e-4, atol=1e-4)


def test_llvm_remarks_stay_off_the_users_stderr(capfd):
    """A masked VECTOR block LLVM declines to vectorize (a stored() count of a
    dcsr operand: the sum is conditional) made LLVM print "remark: ... loop not
    vectorized" on descriptor 2 at every build; the build passes on only what is
    not a remark (fuzz seed 9301, case 168)."""
    from spc.codegen.cpu import CPUTarget
    program = spc.compile("H[n,k] = F[n,k]*P[k]; X[n] = sum(k, stored(H[n,k]))",
                          formats={"H": "dcsr", "F": "csr"})
    counting = program.kernels[-1]
    target = CPUTarget()
    capfd.readouterr()
    target.optimize(counting.source)
    assert "remark:" not in capfd.readouterr().err
    import os
    from spc.codegen.llvm_remarks import quiet_remarks
    with quiet_remarks():
        os.write(2, b"remark: dropped\nwarning: passed on\n")
    err = capfd.readouterr().err
    assert "remark: dropped" not in err and "warning: passed on" in err
