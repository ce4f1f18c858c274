"""A conversion that fills an operand's pattern is refused where the result depends on
the pattern (frontend/pattern_reads.py, runtime/pattern_kept.py).

Before: attention, ``max(j, A[i,j])`` or ``stored(A)`` with a scipy csr mask compiled
for dia or bsr silently counted the zeros that fill the diagonals or blocks as entries
(attention with a random dia mask was off by 1.7)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats.format import resolve_format
from spc.frontend.parser import parse
from spc.frontend.pattern_reads import pattern_reads, program_pattern_reads
from spc.runtime.pattern_kept import held_pattern
from test_programs import reference_attention

FILLING = ("dia", "bsr(2,2)")
KEEPING = ("csr", "csc", "coo", "ell", "hyb", "dcsr")


def negative(n=16, density=0.2, seed=1):
    """A random pattern whose entries are all negative: a stored zero changes a max."""
    A = sp.random(n, n, density=density, random_state=seed, format="csr")
    A.data[:] = -1.0 - A.data
    return A


def row_max(A) -> np.ndarray:
    """Max over each row's stored entries, 0 for an empty row."""
    A = sp.csr_matrix(A)
    return np.array([A.data[A.indptr[i]:A.indptr[i + 1]].max(initial=-np.inf)
                     if A.indptr[i + 1] > A.indptr[i] else 0.0 for i in range(A.shape[0])])


def band(n=16, offsets=(-1, 0, 2)):
    """Full in-bounds diagonals: dia stores exactly these entries."""
    return sp.diags([-1.0 - 0.1 * k for k, _ in enumerate(offsets)], offsets,
                    shape=(n, n), format="csr")


@pytest.mark.parametrize("text, want", [
    ("y[i] = A[i,j] * x[j]", set()),
    ("m[i] = max(j, A[i,j])", {"A"}),
    ("m[i] = min(j, A[i,j] * B[i,j])", {"A", "B"}),
    ("m[i] = sum(j, A[i,j] * B[i,j])", set()),
    ("c[i] = sum(j, stored(A[i,j]) * B[i,j])", {"A"}),
    ("C[i,j] = max(A[i,j], 0.5) * B[i,j]", set()),          # element-wise max: values
])
def test_pattern_reads_names_stored_and_max_min_reductions(text, want):
    assert pattern_reads(parse(text)) == want


def test_program_pattern_reads_follow_a_sampled_result_to_its_mask():
    program = [parse(s) for s in spc.api.NAMED_PROGRAMS["attention"][0]
               .format(scale="1.0").split(";")]
    assert {"A", "S"} <= program_pattern_reads(program)
    assert program_pattern_reads([parse("S[i,j] = A[i,j] * B[i,j]"),
                                  parse("y[i] = sum(j, S[i,j])")]) == set()


@pytest.mark.parametrize("fmt, fills", [("csr", False), ("csc", False), ("coo", False),
                                        ("dcsr", False), ("ell", False), ("dense", False),
                                        ("ds", False), ("dia", True), ("bsr(2,2)", True),
                                        ("nm(2,4)", True), ("sd", True)])
def test_formats_say_whether_they_may_fill(fmt, fills):
    assert resolve_format(fmt, 2).may_fill is fills


@pytest.mark.parametrize("fmt", FILLING)
@pytest.mark.parametrize("text", ["m[i] = max(j, A[i,j])", "c[i] = sum(j, stored(A[i,j]))"])
def test_filling_conversion_is_refused_naming_the_operand(fmt, text):
    k = spc.compile(text, formats={"A": fmt}, dtype="float64")
    with pytest.raises(spc.FormatError, match=rf"operand A: .*format {fmt.split('(')[0]}.*"
                                              r"does not hold"):
        k(negative())


@pytest.mark.parametrize("fmt", KEEPING)
def test_pattern_keeping_formats_give_the_stored_entries_max(fmt):
    A = negative()
    k = spc.compile("m[i] = max(j, A[i,j])", formats={"A": fmt}, dtype="float64")
    np.testing.assert_allclose(k(A), row_max(A))


@pytest.mark.parametrize("fmt", FILLING)
def test_full_diagonals_and_blocks_are_accepted(fmt):
    A = band() if fmt == "dia" else sp.kron(sp.random(8, 8, density=0.3, random_state=2),
                                             -np.ones((2, 2)), format="csr")
    k = spc.compile("m[i] = max(j, A[i,j])", formats={"A": fmt}, dtype="float64")
    np.testing.assert_allclose(k(A), row_max(A))


def test_an_operand_given_in_the_format_keeps_its_stored_zeros():
    """The user's own dia storage is taken as it is: its zeros are stored entries."""
    A = negative()
    D = spc.tensor(A, "dia")
    k = spc.compile("m[i] = max(j, A[i,j])", formats={"A": "dia"}, dtype="float64")
    coords, vals = D.to_coo()
    assert (vals == 0).any()                          # the zeros that fill its diagonals
    want = np.array([max(vals[coords[0] == i], default=0.0) for i in range(A.shape[0])])
    np.testing.assert_allclose(k(D), want)


@pytest.mark.parametrize("fmt, convert", [("dia", lambda A: A.todia()),
                                          ("bsr(2,2)", lambda A: sp.bsr_matrix(A, blocksize=(2, 2)))])
def test_a_scipy_operand_in_the_format_keeps_its_stored_zeros(fmt, convert):
    """A scipy dia or bsr matrix stores whole diagonals or blocks (its nnz counts the
    zeros in them): given for that format it is taken as stored, not refused."""
    A = negative()
    M = convert(A)
    k = spc.compile("m[i] = max(j, A[i,j])", formats={"A": fmt}, dtype="float64")
    want = spc.compile("m[i] = max(j, A[i,j])", formats={"A": fmt}, dtype="float64")(
        spc.tensor(M, fmt))
    np.testing.assert_allclose(k(M), want)
    assert (want == 0).any()                          # the stored zeros count


def test_values_only_kernels_still_convert_freely():
    A = negative()
    x = np.arange(16.0)
    for fmt in FILLING:
        y = spc.compile("y[i] = A[i,j] * x[j]", formats={"A": fmt}, dtype="float64")(A, x)
        np.testing.assert_allclose(y, A @ x)


def test_a_dense_operand_counts_its_nonzeros():
    A = negative().toarray()
    with pytest.raises(spc.FormatError, match="operand A: "):
        spc.compile("m[i] = max(j, A[i,j])", formats={"A": "dia"}, dtype="float64")(A)


def test_prepare_refuses_the_filling_conversion():
    k = spc.compile("m[i] = max(j, A[i,j])", formats={"A": "dia"}, dtype="float64")
    with pytest.raises(spc.FormatError, match="operand A: "):
        k.prepare(negative())


@pytest.mark.parametrize("fmt", FILLING)
def test_attention_with_a_mask_the_format_fills_is_refused(fmt):
    rng = np.random.default_rng(0)
    Q, K, V = (rng.standard_normal((16, 4)) for _ in range(3))
    att = spc.compile("attention", fmt=fmt, dtype="float64")
    with pytest.raises(spc.FormatError, match="operand A: .*does not hold"):
        att(negative(), Q, K, V)
    with pytest.raises(spc.FormatError, match="operand A: "):     # over heads too
        att(negative(), *(np.stack([x, x]) for x in (Q, K, V)))


def test_attention_with_full_diagonals_in_dia_matches_csr():
    rng = np.random.default_rng(0)
    Q, K, V = (rng.standard_normal((16, 4)) for _ in range(3))
    A = band()
    A.data[:] = 1.0
    got = spc.compile("attention", fmt="dia", dtype="float64")(A, Q, K, V)
    want = spc.compile("attention", fmt="csr", dtype="float64")(A, Q, K, V)
    np.testing.assert_allclose(got, reference_attention(A.toarray(), Q, K, V), atol=1e-12)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_held_pattern_counts_duplicates_once_and_explicit_zeros():
    A = sp.coo_matrix(([1.0, 2.0, 0.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    assert held_pattern(A).tolist() == [1, 2]
    assert held_pattern(spc.tensor(A.tocsr(), "csr")).tolist() == [1, 2]
    assert held_pattern(np.array([[0.0, 1.0], [2.0, 0.0]])).tolist() == [1, 2]
    D = sp.dia_matrix((np.array([[0.0, 5.0, 0.0]]), [1]), shape=(3, 3))   # (0,1), (1,2)
    assert held_pattern(D).tolist() == [1, 5] and D.nnz == 2


def explicit_zero():
    """Row 0 stores -1 and an explicit 0 (its max is 0, it stores 2 entries)."""
    return sp.csr_matrix((np.array([-1.0, 0.0]), np.array([0, 1]), np.array([0, 2, 2])),
                         shape=(2, 4))


@pytest.mark.parametrize("fmt", ["ell", "nm(2,4)"])
def test_a_conversion_dropping_explicit_zeros_is_refused(fmt):
    """ell and nm keep no explicit zeros (formats/convert.py): max and stored() would miss
    them."""
    for text in ("m[i] = max(j, b[i,j])", "E[i,j] = stored(b[i,j])"):
        with pytest.raises(spc.FormatError, match="operand b: .*drop 1 that it does" if
                           fmt == "ell" else "operand b: .*would store"):
            spc.compile(text, formats={"b": fmt})(explicit_zero())


def test_a_conversion_adding_and_dropping_as_many_is_refused():
    """dia drops the zero at (0, 1) and fills (1, 1): the same count, another pattern."""
    with pytest.raises(spc.FormatError, match="store 1 entries .* and drop 1"):
        spc.compile("m[i] = max(j, b[i,j])", formats={"b": "dia"})(explicit_zero())


@pytest.mark.parametrize("fmt", ["csr", "coo", "hyb"])
def test_explicit_zeros_count_where_the_format_keeps_them(fmt):
    assert spc.compile("m[i] = max(j, b[i,j])", formats={"b": fmt})(
        explicit_zero()).tolist() == [0.0, 0.0]


@pytest.mark.cuda
@pytest.mark.parametrize("fmt", FILLING)
def test_attention_on_the_gpu_refuses_a_filled_mask(fmt):
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    rng = np.random.default_rng(0)
    Q, K, V = (cp.asarray(rng.standard_normal((16, 4))) for _ in range(3))
    with pytest.raises(spc.FormatError, match="operand A: .*does not hold"):
        spc.compile("attention", fmt=fmt, target="cuda", dtype="float64")(negative(), Q, K, V)
    k = spc.compile("m[i] = max(j, A[i,j])", formats={"A": fmt}, target="cuda",
                    dtype="float64")
    with pytest.raises(spc.FormatError, match="operand A: .*does not hold"):
        k(negative())
