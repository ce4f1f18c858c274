"""The collapse_rows pass (``passes/collapse_rows``): a batch loop (heads) around a
shared sparse matrix's rows becomes one loop over (head, row) pairs.  Golden
printed IR, the interpreter giving the same numbers before and after, and the
kernels it leaves alone."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from spc.formats.format import resolve_format
from spc.frontend.check import check
from spc.frontend.parser import parse
from spc.ir.interp import run_kernel
from spc.ir.lower import lower
from spc.ir.nodes import DType
from spc.ir.printer import format_kernel
from spc.ir.verify import verify
from spc.passes.collapse_rows import collapse_rows
from spc.passes.simplify import simplify
from test_ir_golden import assert_golden

# a batch of heads over one shared mask: SpMM per head, and a row max per head
HEADS_SPMM = "O[h,i,d] = A[i,j] * V[h,j,d]"
HEADS_MAX = "m[h,i] = max(j, S[h,i,j])"


def _kernels(text: str, formats: dict[str, str]):
    a = parse(text)
    check(a)
    ranks = {a.lhs.tensor: len(a.lhs.indices), **{x.tensor: len(x.indices)
                                                   for x in a.accesses()}}
    fmts = {t: resolve_format(formats.get(t, "dense"), r) for t, r in ranks.items()}
    return [simplify(verify(k)) for k in lower(a, fmts, name="k", value_dtype=DType.F64).kernels]


def _mask(seed=0, n=9):
    A = sp.random(n, n, density=0.3, format="lil", random_state=seed)
    A[2, :] = 0                                          # an empty row
    A[4, :] = 1.5                                        # a full row
    return A.tocsr()


def test_golden():
    (k,) = _kernels(HEADS_SPMM, {"A": "csr"})
    collapsed = verify(collapse_rows(k))
    assert_golden("collapse_rows_heads_spmm", format_kernel(collapsed))
    assert collapsed.outer_independent == "h_i_flat"


@pytest.mark.parametrize("heads", [0, 1, 3])
def test_interpreter_same_numbers_before_and_after(heads):
    (k,) = _kernels(HEADS_SPMM, {"A": "csr"})
    A = _mask()
    V = np.random.default_rng(1).standard_normal((heads, 9, 5))
    args = {"A1_pos": A.indptr.astype(np.int32), "A1_crd": A.indices.astype(np.int32),
            "A_vals": A.data.copy(), "V_vals": V.reshape(-1).copy(),
            "size_h": heads, "size_i": 9, "size_j": 9, "size_d": 5}
    before = dict(args, O_vals=np.zeros(heads * 45))
    run_kernel(k, before)
    after = dict(args, O_vals=np.zeros(heads * 45))
    run_kernel(verify(collapse_rows(k)), after)
    np.testing.assert_array_equal(after["O_vals"], before["O_vals"])
    want = np.stack([A @ V[h] for h in range(heads)]) if heads else np.zeros(0)
    np.testing.assert_allclose(after["O_vals"], want.reshape(-1), rtol=1e-14)


def test_only_the_lowerers_claim_lets_rows_collapse():
    (k,) = _kernels(HEADS_SPMM, {"A": "csr"})
    assert k.rows_independent == "i"
    assert collapse_rows(replace(k, rows_independent=None)) == replace(k, rows_independent=None)


def test_a_row_max_per_head_over_a_dds_tensor_collapses():
    (k,) = _kernels(HEADS_MAX, {"S": "dds"})
    assert collapse_rows(k).outer_independent == "h_i_flat"


@pytest.mark.parametrize("text, formats", [
    ("C[i,j] = A[i,k] * B[k,j]", {}),                    # a dense nest: no index arrays read
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "bsr(4,4)"}),     # a block's rows: a constant trip
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}),              # no loop between rows and positions
    ("y[j] = A[i,j] * x[i]", {"A": "csr"}),              # rows that add into shared entries
    ("y[j] = A[i,j] * x[i]", {"A": "bsr(4,4)"}),         # j_in outer, block rows adding into
                                                         # the same y[j]: no rows_independent
    ("Z[j,m,q] = (S[m,j]*B[q,m] + 1.)*0.25", {"S": "csc", "B": "csc"}),
])                                                       # rows m merged with S's column j: the
                                                         # merge position is carried row to row
def test_kernels_left_unchanged(text, formats):
    (k,) = _kernels(text, formats)
    assert collapse_rows(k) == k


def test_a_merge_carried_across_rows_keeps_its_loop_nest():
    """Fuzz seed 2026 cases 385-387: collapsing (j, m) restarted S's merge position
    at every m, so rows past the first stored entry of a column read nothing."""
    import spc
    S = sp.random(5, 4, density=0.5, format="csc", random_state=3)
    B = sp.random(6, 5, density=0.5, format="csc", random_state=4)
    k = spc.compile("Z[j,m,q] = (S[m,j]*B[q,m] + 1.)*0.25 - 0.125",
                    formats={"S": "csc", "B": "csc"}, dtype="float64")
    want = (np.einsum("mj,qm->jmq", S.toarray(), B.toarray()) + 1.0) * 0.25 - 0.125
    np.testing.assert_allclose(k(S, B), want, rtol=1e-14)
