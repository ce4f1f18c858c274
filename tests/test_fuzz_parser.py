"""Parser fuzzing (issue 10): every input string either compiles or raises
``spc.SpcError``, never another exception.  Inputs: arbitrary text, text over
index notation's own alphabet, mutated valid expressions, and random format
strings for a valid expression."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spc

VALID = [
    "y[i] = A[i,j]*x[j]",
    "C[i,j] = A[i,k]*B[k,j]",
    "S[i,j] = A[i,j]*X[i,k]*Y[j,k]",
    "y[i] = A[i,j]*x[j] + b[i]",
    "s = A[i,j]*x[i]*y[j]",
    "y[i] = -(A[i,j]*x[j]) * 0.5 + 3*b[i] - -b[i]",
    "C[i,j] = A[i,j]*(B[i,j] + D[i,j])",
    "y[i] = T[i,j,k]*w[j]*v[k]",
    "Z[] = A[]*2.5e-1",
    "y[int] = for[int,float]*auto[float]",
    "NAN[i] = INFINITY[i,j]*warpSize[j] + NULL[i]",
    "acc[i] = A1_p2[i,size_j]*i_blk[size_j]",
]
ALPHABET = "AByxij k,[]=+-*()0123456789.eE_\t\n#$;"
SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def compiles_or_refuses(text: str, **kw) -> None:
    try:
        spc.compile(text, **kw)
    except spc.SpcError:
        pass


@st.composite
def mutated(draw):
    """A valid expression with 1-4 character- or token-level edits."""
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "swap"]))
        ch = draw(st.sampled_from(list(ALPHABET) + ["[]", "()", "--", "**", "1e999", "ü", "\x00",
                                                    "int", "A[i,i]", "=", ",,"]))
        if op == "insert":
            text = text[:pos] + ch + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + 1:]
        elif op == "replace":
            text = text[:pos] + ch + text[pos + 1:]
        elif op == "duplicate":
            end = draw(st.integers(pos, len(text)))
            text = text[:end] + text[pos:end] + text[end:]
        else:
            end = draw(st.integers(pos, len(text)))
            text = text[pos:end] + text[:pos] + text[end:]
    return text


@settings(max_examples=500, **SETTINGS)
@given(st.text(max_size=60))
def test_arbitrary_text_compiles_or_raises_spc_error(text):
    compiles_or_refuses(text)


@settings(max_examples=300, **SETTINGS)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_notation_alphabet_compiles_or_raises_spc_error(text):
    compiles_or_refuses(text)


@settings(max_examples=300, **SETTINGS)
@given(mutated(), st.sampled_from(["float32", "float64"]))
def test_mutated_expression_compiles_or_raises_spc_error(text, dtype):
    compiles_or_refuses(text, dtype=dtype)


FORMAT_PIECES = ["csr", "csc", "coo", "dense", "bsr", "ell", "nm", "dia", "hyb", "sparse", "d", "s",
                 "(", ")", ",", "0", "1", "2", "4", "-1", "99999999999", " ", "x", "1.5", "ü"]


@settings(max_examples=200, **SETTINGS)
@given(st.lists(st.sampled_from(FORMAT_PIECES), max_size=6).map("".join) | st.text(max_size=12))
def test_random_format_string_compiles_or_raises_spc_error(fmt):
    compiles_or_refuses("y[i] = A[i,j]*x[j]", formats={"A": fmt}, dtype="float64")


@pytest.mark.parametrize("text", VALID)
def test_valid_seeds_compile(text):
    """The seeds of the mutations are valid (so mutants start from real programs)."""
    k = spc.compile(text, dtype="float64")
    assert k.source
