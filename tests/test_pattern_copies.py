"""Reading an operand's pattern through a transposed copy or in a program with a sum
format (both found by the fuzzer's pattern cases, benchmarks/fuzz/gen_pattern.py)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

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
    """ProgramKernel asked a SumFormat for may_fill (AttributeError).  S in csr of a hyb A
    read by max keeps A's pattern (P7: it was refused, A's explicit zeros times 2 having
    been dropped from S); in hyb, or from a csr A, it runs as before."""
    a = np.array([[-1.0, 0.0, -2.0], [0.0, 0.0, 0.0], [0.0, -3.0, 0.0]])
    text = "S[i,j] = A[i,j]*2; m[i] = max(j, S[i,j])"
    for fa, fs in (("hyb", "csr"), ("hyb", "hyb"), ("csr", "csr")):
        assert spc.compile(text, formats={"A": fa, "S": fs})(A=a).tolist() == [-2.0, 0.0, -6.0]


B = sp.csr_matrix((np.array([1.0, 0.0, 2.0, 3.0]), np.array([0, 1, 0, 2]),
                   np.array([0, 2, 2, 4])), shape=(3, 3))   # an explicit zero at (0, 1)
W = np.arange(9.0).reshape(3, 3)


@pytest.mark.parametrize("formats", [{"b": "hyb(1)", "W": "sd"}, {"b": "hyb(1)", "W": "hyb"},
                                     {"b": "hyb(1)", "W": "dia"}])
def test_stored_of_a_hyb_operand_beside_a_copied_one(formats):
    """stored(b) of a sum-format b became stored(b__0 + b__1) on the operand-copy path
    (KeyError in the lowerer); it is the sum of its parts' stored()."""
    k = spc.compile("E[i,j] = stored(b[i,j]) + W[i,j]", formats=formats)
    got = k(b=B, W=W)
    got = got.to_numpy() if hasattr(got, "to_numpy") else np.asarray(got)
    assert np.array_equal(got, (B.toarray() != 0) + (np.arange(9) == 1).reshape(3, 3) + W)


@pytest.mark.parametrize("expr, fmt, want", [
    ("m[i] = max(j, b[i,j])", "ell", [0.0, 0.0]), ("m[i] = max(j, b[i,j])", "dia", [0.0, 0.0]),
    ("E[i,j] = stored(b[i,j])", "hyb", [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])])
def test_an_explicit_zero_converted_to_a_slot_format(expr, fmt, want):
    """Row 0 stores -1 and an explicit 0: its max is 0 and it stores 2 entries (csr and
    coo give that; ell and dia would drop the zero, max -1, and are refused: the
    FormatError of runtime/pattern_kept; hyb gives the right answer)."""
    b = sp.csr_matrix((np.array([-1.0, 0.0]), np.array([0, 1]), np.array([0, 2, 2])),
                      shape=(2, 3))
    k = spc.compile(expr, formats={"b": fmt})
    try:
        got = k(b=b)
    except spc.FormatError:
        return                                   # a refusal would be right too
    assert np.asarray(got.to_numpy() if hasattr(got, "to_numpy") else got).tolist() == want


def test_stored_counts_a_duplicated_entry_once_on_every_call_path():
    """A column count over a scipy csr with duplicates: the positional (fast) call took
    D as it is (the kernel 'accepts duplicates': it loads no value of D) and counted
    each duplicate (4 for 2); the keyword call canonicalized it."""
    D = sp.csr_matrix((np.array([-0.5, -0.5, -0.4, -0.4]), np.array([0, 0, 0, 0]),
                       np.array([0, 2, 4, 4])), shape=(3, 1))
    assert not D.has_canonical_format
    k = spc.compile("a[m] = sum(p, stored(D[p,m]))", formats={"D": "csr"})
    assert k(D).tolist() == [2.0]
    assert k(D=D).tolist() == [2.0]
    assert "accepts unsorted/duplicate entries of: D" not in k.ir
    k = spc.compile("a[m] = sum(p, D[p,m])", formats={"D": "csr"})   # a sum still takes them
    assert "accepts unsorted/duplicate entries of: D" in k.ir
    assert np.allclose(k(D), [-1.8])


def test_a_sampled_result_of_a_hyb_operand_keeps_its_pattern():
    """D = Z * x has Z's pattern (2 entries in row 0) though x is 0 at (0, 0).  A csr D of
    a hyb Z is assembled in a row workspace, which wrote nonzero values only (P7, then
    refused): a statement without a reduction now keeps every entry it touches, in every
    format pairing; a product with a reduction still drops what cancels, as scipy's."""
    Z = sp.csr_matrix(np.array([[-1.0, 0.0, 2.0]]))
    x = np.array([[0.0, 1.0, 1.0]])
    text = "D[m,n] = Z[m,n]*x[m,n]; v[m] = sum(n, stored(D[m,n]))"
    for fd, fz in (("csr", "hyb"), ("hyb", "hyb"), ("csr", "csr")):
        assert spc.compile(text, formats={"D": fd, "Z": fz})(Z=Z, x=x).tolist() == [2.0]
    k = spc.compile("D[m,n] = Z[m,n]*x[m,n]; v[m] = max(n, D[m,n])",
                    formats={"D": "csr", "Z": "hyb"})
    assert k(Z=Z, x=-x).tolist() == [0.0]          # max over D's entries (-0.0, -2.0)
    D = spc.compile("D[m,n] = Z[m,n]*x[m,n]", formats={"D": "csr", "Z": "hyb"})(Z, x)
    assert D.nnz == 2 and D.to_numpy().tolist() == [[-0.0, 0.0, 2.0]]


def test_a_hyb_operands_explicit_zeros_are_kept_or_refused():
    """Fuzz seed 4109, case 78: u = X*1 sampled from X in hyb(1), whose explicit zero a
    later max reads: the answer counts the zero, or the conversion is refused."""
    X = sp.csr_matrix((np.array([-1.0, 0.0, -2.0]), np.array([0, 1, 2]), np.array([0, 2, 3])),
                      shape=(2, 3))
    k = spc.compile("u[q,i] = X[q,i]*1; Q[q] = max(i, u[q,i])",
                    formats={"X": "hyb(1)", "u": "csr"})
    try:
        got = k(X=X).tolist()
    except spc.FormatError as err:
        assert "X" in str(err)
    else:
        assert got == [0.0, -2.0]


def test_a_product_still_drops_what_cancels():
    """SpGEMM keeps scipy's rule: a sum that cancels to 0 is not stored."""
    A = sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 0.0]]))
    B = sp.csr_matrix(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    for fa in ("csr", "hyb"):
        C = spc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": fa, "B": "csr", "C": "csr"})(A, B)
        assert C.nnz == 0

@pytest.mark.parametrize("fa", ["hyb(2)", "csr", "ell(7)"])
@pytest.mark.parametrize("fo", ["coo", "csr"])
def test_a_sampled_product_of_a_hyb_mask_keeps_the_masks_pattern(fa, fo):
    """Fuzz seed 9713, case 526: ``A = A_ * (C P^T)`` sampled by a hyb(2) ``A_`` (SDDMM)
    went through a row workspace, whose drain dropped the sums that came out 0 (a
    statement with a reduction, taken for SpGEMM): ``stored(A)`` missed row 0, where
    C is 0.  Each term sampled by one sparse operand over the output's indices now
    keeps what it touched, in every format pairing, as csr and coo masks did."""
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 7), np.float32)
    mask[0] = rng.uniform(-1, 1, 7)
    mask[1, 2] = 0.5
    C = rng.uniform(-1, 1, (3, 16)).astype(np.float32)
    C[0] = 0
    P = rng.uniform(-1, 1, (7, 16)).astype(np.float32)
    k = spc.compile("A[j,m] = A_[j,m]*C[j,l]*P[m,l]; Y[j] = sum(m, stored(A[j,m]))",
                    formats={"A": fo, "A_": fa})
    assert k(A_=sp.csr_matrix(mask), C=C, P=P).tolist() == [7.0, 1.0, 0.0]
    masked = spc.compile("C[i,j] = M[i,j]*A[i,k]*B[k,j]",
                         formats={"M": "hyb(1)", "A": "csr", "B": "csr", "C": "csr"})
    A = sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 0.0]]))
    B = sp.csr_matrix(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    M = sp.csr_matrix(np.ones((2, 2)))
    assert masked(M=M, A=A, B=B).nnz == 0            # two sparse factors: scipy's rule
