"""The row-fusion pass (``passes/fuse_rows``): golden printed IR, the interpreter
giving the same numbers before (the kernels one after the other, intermediates
in arrays) and after (one kernel, intermediates in scalars), and refusals."""
from __future__ import annotations

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
from spc.passes.fuse_rows import NotFusable, fuse_rows
from test_ir_golden import assert_golden

FORMATS = {"S": "csr", "m": "dense", "r": "dense", "O": "dense", "V": "dense", "y": "dense",
           "z": "dense"}
SOFTMAX = ("m[i] = max(j, S[i,j])",
           "r[i] = 1 / max(sum(j, stored(S[i,j]) * exp(S[i,j] - m[i])), 1e-30)",
           "O[i,d] = stored(S[i,j]) * exp(S[i,j] - m[i]) * V[j,d] * r[i]")


# the same statements over a batch of heads h (issue 12): S (heads x rows x columns)
# stored per head as csr, the intermediates dense over (h, i)
BATCHED_FORMATS = dict(FORMATS, S="dds")
BATCHED_SOFTMAX = ("m[h,i] = max(j, S[h,i,j])",
                   "r[h,i] = 1 / max(sum(j, stored(S[h,i,j]) * exp(S[h,i,j] - m[h,i])), 1e-30)",
                   "O[h,i,d] = stored(S[h,i,j]) * exp(S[h,i,j] - m[h,i]) * V[h,j,d] * r[h,i]")


def _lowered(statements, format_names=FORMATS):
    out = []
    for n, text in enumerate(statements):
        a = parse(text)
        check(a)
        ranks = {a.lhs.tensor: len(a.lhs.indices), **{x.tensor: len(x.indices)
                                                       for x in a.accesses()}}
        formats = {t: resolve_format(format_names[t], r) for t, r in ranks.items()}
        out.append(verify(lower(a, formats, name=f"s{n}", value_dtype=DType.F64).compute))
    return out


def _operands(seed=0):
    S = sp.random(9, 7, density=0.4, format="csr", random_state=seed)
    S = S.tolil()
    S[3, :] = 0                                      # an empty row
    S = S.tocsr()
    V = np.random.default_rng(seed).standard_normal((7, 3))
    return {"S1_pos": S.indptr.astype(np.int32), "S1_crd": S.indices.astype(np.int32),
            "S_vals": S.data.astype(np.float64), "V_vals": V.reshape(-1).copy(),
            "size_i": 9, "size_j": 7, "size_d": 3}


def test_golden():
    fused = verify(fuse_rows(_lowered(SOFTMAX), "softmax_rows"))
    assert_golden("fuse_rows_softmax", format_kernel(fused))


def test_interpreter_same_numbers_before_and_after():
    kernels = _lowered(SOFTMAX)
    args = _operands()
    before = dict(args, m_vals=np.zeros(9), r_vals=np.zeros(9), O_vals=np.zeros(27))
    for k in kernels:
        run_kernel(k, before)
    after = dict(args, O_vals=np.zeros(27))
    run_kernel(verify(fuse_rows(kernels, "fused")), after)
    np.testing.assert_allclose(after["O_vals"], before["O_vals"], rtol=1e-15)
    assert before["O_vals"].any()


def test_intermediates_leave_the_parameters():
    fused = fuse_rows(_lowered(SOFTMAX), "fused")
    names = {p.name for p in fused.params}
    assert {"m_vals", "r_vals"}.isdisjoint(names) and "O_vals" in names
    assert fused.outer_independent == "i"


def _batched_operands(heads=3, seed=0):
    """S as a dds tensor: head h holds the csr rows of a random matrix of its own
    (rows 3 of every head, and all of head 1's row 5, empty)."""
    rng = np.random.default_rng(seed)
    pos, crd, vals = [0], [], []
    for h in range(heads):
        S = sp.random(9, 7, density=0.4, format="lil", random_state=seed + h)
        S[3, :] = 0
        if h == 1:
            S[5, :] = 0
        S = S.tocsr()
        pos.extend(pos[-1] + S.indptr[1:])
        crd.extend(S.indices)
        vals.extend(S.data)
    V = rng.standard_normal((heads, 7, 3))
    return {"S2_pos": np.array(pos, np.int32), "S2_crd": np.array(crd, np.int32),
            "S_vals": np.array(vals), "V_vals": V.reshape(-1).copy(),
            "size_h": heads, "size_i": 9, "size_j": 7, "size_d": 3}


def test_batched_golden():
    # the row nest is (h, i): the heads loop outermost, the rows inside it
    fused = verify(fuse_rows(_lowered(BATCHED_SOFTMAX, BATCHED_FORMATS), "softmax_heads"))
    assert_golden("fuse_rows_softmax_heads", format_kernel(fused))
    assert fused.outer_independent == "h"


@pytest.mark.parametrize("heads", [1, 3])
def test_batched_interpreter_same_numbers_before_and_after(heads):
    kernels = _lowered(BATCHED_SOFTMAX, BATCHED_FORMATS)
    args = _batched_operands(heads)
    rows = heads * 9
    before = dict(args, m_vals=np.zeros(rows), r_vals=np.zeros(rows), O_vals=np.zeros(rows * 3))
    for k in kernels:
        run_kernel(k, before)
    after = dict(args, O_vals=np.zeros(rows * 3))
    run_kernel(verify(fuse_rows(kernels, "fused")), after)
    np.testing.assert_allclose(after["O_vals"], before["O_vals"], rtol=1e-15)
    assert before["O_vals"].any()


def test_batched_refusal():
    # an intermediate over (h, i) read at another row's entry
    with pytest.raises(NotFusable, match="another entry"):
        fuse_rows(_lowered(("y[h,i] = S[h,i,j]", "z[h,i] = S[h,i,j] * y[h,j]"),
                           BATCHED_FORMATS), "f")


@pytest.mark.parametrize("statements, why", [
    (("y[i] = S[i,j] * V[j,d]", "z[j] = y[j]"), "differ|not stored"),
    (("y[i] = S[i,j]", "z[i] = S[i,j] * y[j]"), "another entry"),
])
def test_refusals(statements, why):
    with pytest.raises(NotFusable, match=why):
        fuse_rows(_lowered(statements), "f")
