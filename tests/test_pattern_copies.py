"""Reading an operand's pattern through a transposed copy or in a program with a sum
format (both found by the fuzzer's pattern cases, benchmarks/fuzz/gen_pattern.py)."""
from __future__ import annotations

import numpy as np

import spc
from spc.formats.format import resolve_format
from spc.ir.operand_copies import copy_format

# rows 0 and 2 full, row 1 empty: sd stores exactly these entries
X = np.array([[-1.0, -2.0], [0.0, 0.0], [-3.0, -4.0]])


def test_max_over_the_first_index_of_sd_sees_only_stored_entries():
    """The column max reads x through a copy in mode order (1, 0); in sd's own levels
    that copy stored every j of each column (row 1's zeros): it gave [0, 0]."""
    k = spc.compile("C[p] = max(j, x[j,p])", formats={"x": "sd"})
    assert k(x=X).tolist() == [-1.0, -2.0]
    k = spc.compile("C[p] = sum(j, stored(x[j,p]))", formats={"x": "sd"})
    assert k(x=X).tolist() == [2.0, 2.0]


def test_a_copy_never_takes_levels_that_fill():
    sd = resolve_format("sd", 2)
    assert not copy_format(sd, (1, 0)).may_fill
    csr = resolve_format("csr", 2)
    assert copy_format(csr, (1, 0)) == resolve_format("csc", 2)


def test_a_program_with_a_hyb_operand_compiles():
    """ProgramKernel asked a SumFormat for may_fill (AttributeError)."""
    a = np.array([[-1.0, 0.0, -2.0], [0.0, 0.0, 0.0], [0.0, -3.0, 0.0]])
    k = spc.compile("S[i,j] = A[i,j]*2; m[i] = max(j, S[i,j])",
                    formats={"A": "hyb", "S": "csr"})
    assert k(A=a).tolist() == [-2.0, 0.0, -6.0]
