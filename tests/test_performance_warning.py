"""spc.PerformanceWarning: converting an operand to a format that stores many times
the entries it holds is said (pointing at the caller's line); the usual conversions
and small operands are not."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import spc

A = sp.random(2000, 2000, density=0.001, format="csr", random_state=0)   # 4,000 scattered
x = np.ones(2000)


def _caught(fn):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        fn()
    return [w for w in got if issubclass(w.category, spc.PerformanceWarning)]


@pytest.mark.parametrize("kernel, formats, stored", [
    ("spmv", dict(fmt="bsr(16,16)"), "908,544"),
    ("y[i] = A[i,j] * x[j]", dict(formats={"A": "dense"}), "4,000,000"),
])
def test_an_inflating_conversion_warns_at_the_callers_line(kernel, formats, stored):
    k = spc.compile(kernel, **formats)
    got = _caught(lambda: k(A, x))
    assert len(got) == 1
    message = str(got[0].message)
    assert "operand A" in message and "4,000 stored entries" in message and stored in message
    assert got[0].filename == __file__


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "ell", "hyb"])
def test_ordinary_conversions_are_quiet(fmt):
    k = spc.compile("spmv", fmt=fmt)
    assert _caught(lambda: k(A, x)) == []


def test_small_operands_are_quiet_and_a_prepared_operand_warns_only_when_prepared():
    small = sp.random(100, 100, density=0.001, format="csr", random_state=1)
    k = spc.compile("spmv", fmt="bsr(16,16)")
    assert _caught(lambda: k(small, np.ones(100))) == []
    prepared = []
    assert len(_caught(lambda: prepared.append(k.prepare(A)))) == 1
    assert _caught(lambda: k(prepared[0], x)) == []
