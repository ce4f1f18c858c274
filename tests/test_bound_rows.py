"""bound_rows (spc/passes/bound_rows.py): an assemble kernel sizes rows of few
products by their products; the compute kernel's kept counts and the runtime's
pack give the same output."""
from __future__ import annotations

import numpy as np
import pytest

from spc.ir.interp import run_kernel
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes.bound_rows import bound_rows

from matrices import MATRICES, from_mask, random_mask, rng_for
from test_interp import interpret, lower_expr, _storage
from test_ir_golden import assert_golden

SPGEMM = "C[i,j] = A[i,k]*B[k,j]"
CSR3 = {"A": "csr", "B": "csr", "C": "csr"}
PROGRAMS = {
    "spgemm": (SPGEMM, CSR3),
    "masked": ("C[i,j] = M[i,j]*A[i,k]*B[k,j]", {"A": "csr", "B": "csr", "C": "csr", "M": "csr"}),
    "sum": ("C[i,j] = A[i,k]*B[k,j] + A[i,k]*D[k,j]",
            {"A": "csr", "B": "csr", "C": "csr", "D": "csr"}),
}


def _operands(case, names):
    a = case.build(np.float64)
    rng = rng_for(f"{case.id}-bound")
    out = {"A": a}
    for n in names:
        if n in ("B", "D"):
            out[n] = from_mask(random_mask(rng, (a.shape[1], 23), 0.2), rng, np.float64)
        elif n == "M":
            out[n] = from_mask(random_mask(rng, (a.shape[0], 23), 0.5), rng, np.float64)
    return out


def test_golden_ir_of_the_assemble_kernel():
    lowered = lower_expr(SPGEMM, CSR3)
    assemble = verify(bound_rows(lowered.program.kernels[0]), "bound_rows")
    assert_golden("bound_rows_spgemm", format_kernel(assemble))


def test_other_kernels_are_unchanged():
    lowered = lower_expr(SPGEMM, CSR3)
    compute = lowered.program.compute
    assert bound_rows(compute) is compute
    spmv = lower_expr("y[i] = A[i,j]*x[j]", {"A": "csr"}).program.kernels[0]
    assert bound_rows(spmv) is spmv


@pytest.mark.parametrize("most", [0, 3, 32, 10**9])
@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_the_interpreter_gives_the_same_output(case, program, most):
    expr, formats = PROGRAMS[program]
    lowered = lower_expr(expr, formats)
    ops = _operands(case, [n for n in formats if n not in ("A", "C")])
    before = interpret(lowered, ops)
    assemble, compute = lowered.program.kernels
    bounded = verify(bound_rows(assemble, most=most), "bound_rows")
    np.testing.assert_array_equal(interpret(lowered, ops, kernels=(bounded, compute)), before)


@pytest.mark.parametrize("most", [0, 4, 10**9])
def test_sizes_are_between_the_count_and_the_bound(most):
    """Each row's size is at least its exact count, and above it only where the
    row has at most ``most`` products (then at most the products and the extent)."""
    rng = rng_for("bound-sizes")
    a = from_mask(random_mask(rng, (60, 30), 0.15), rng, np.float64)
    b = from_mask(random_mask(rng, (30, 8), 0.4), rng, np.float64)
    lowered = lower_expr(SPGEMM, CSR3)
    assemble = lowered.program.kernels[0]

    def sizes(kernel):
        args = {"size_i": 60, "size_j": 8, "size_k": 30,
                "C1_pos": np.zeros(61, np.int32)}
        for name, m in (("A", a), ("B", b)):
            t = _storage(m, lowered.formats[name], np.dtype(np.int32))
            args[f"{name}1_pos"], args[f"{name}1_crd"] = t.arrays[1]["pos"], t.arrays[1]["crd"]
        run_kernel(kernel, args)
        return args["C1_pos"][1:]

    exact = sizes(assemble)
    bounded = sizes(verify(bound_rows(assemble, most=most), "bound_rows"))
    products = np.array([np.diff(b.indptr)[a.indices[a.indptr[r]:a.indptr[r + 1]]].sum()
                         for r in range(60)])
    small = products <= most
    assert np.array_equal(bounded[~small], exact[~small])
    assert np.array_equal(bounded[small], np.minimum(products[small], 8))
    assert np.all(bounded >= exact)
