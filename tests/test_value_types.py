"""The value type a call computes in (runtime/value_types.py, runtime/dispatch.py):
dtype=None follows the operands, an explicit dtype converts what it can convert
exactly, once warned, and refuses what it would round."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.ir.nodes import DType
from spc.runtime.value_types import lossless, promoted


def _csr(dtype):
    return sp.random(6, 5, density=0.5, format="csr", random_state=1, dtype=dtype)


@pytest.mark.parametrize("names, expect", [
    ({"A": "float32", "x": "float32"}, DType.F32),
    ({"A": "float32", "x": "float64"}, DType.F64),
    ({"A": "float32", "x": "int64"}, DType.F64),
    ({"A": "float32", "x": "int8"}, DType.F32),
    ({"A": "int32", "x": "bool"}, DType.F64),
    ({"A": "float32", "x": None}, DType.F32),
    ({"A": None, "x": None}, DType.F64),
])
def test_promotion(names, expect):
    assert promoted(names) is expect


@pytest.mark.parametrize("bad", ["complex64", "<U1", "object"])
def test_promotion_refuses_what_no_kernel_computes_in(bad):
    with pytest.raises(spc.DTypeError, match="operand x"):
        promoted({"A": "float32", "x": bad})


@pytest.mark.parametrize("src, dst, ok", [
    ("float32", DType.F64, True), ("float64", DType.F32, False), ("int16", DType.F32, True),
    ("int32", DType.F32, False), ("int32", DType.F64, True), ("bool", DType.F32, True),
    ("complex64", DType.F64, False),
])
def test_lossless(src, dst, ok):
    assert lossless(src, dst) is ok


def test_each_type_gets_its_own_specialization():
    k = spc.compile("spmv")
    assert k.dtype is None and set(k.specializations) == {DType.F32}
    y32 = k(_csr(np.float32), np.ones(5, np.float32))
    y64 = k(_csr(np.float64), np.ones(5, np.float64))
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    assert set(k.specializations) == {DType.F32, DType.F64}
    assert k.specialize("float64") is k.specializations[DType.F64]
    np.testing.assert_allclose(y64, _csr(np.float64) @ np.ones(5))
    assert "f64" in k.ir or "double" in k.source          # the last call's specialization
    assert k(_csr(np.float32), np.ones(5, np.float32)).dtype == np.float32


def test_python_lists_take_the_other_operands_type():
    k = spc.compile("spmv")
    assert k(_csr(np.float32), [1.0] * 5).dtype == np.float32
    assert k(_csr(np.float64), [1] * 5).dtype == np.float64


def test_explicit_dtype_warns_once_per_operand_and_type():
    k = spc.compile("spmv", dtype="float64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            k(_csr(np.float32), np.ones(5))
    assert [type(w.message) for w in caught] == [spc.DTypeWarning]
    assert "operand A" in str(caught[0].message)


def test_explicit_dtype_refuses_rounding_even_by_keyword():
    k = spc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32")
    with pytest.raises(spc.DTypeError, match="operand x: .* would be rounded"):
        k(A=_csr(np.float32), x=np.ones(5, np.int64))


def test_prepare_follows_the_operands_type():
    k = spc.compile("spmv")
    p = k.prepare(_csr(np.float64))
    assert p.dtype == np.float64
    np.testing.assert_allclose(k(p, np.ones(5)), _csr(np.float64) @ np.ones(5))


def test_an_unknown_dtype_is_refused_at_compile_time():
    with pytest.raises(spc.DTypeError, match="dtype must be None"):
        spc.compile("spmv", dtype="complex64")
