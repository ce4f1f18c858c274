"""Regression tests for failures found by probing spc off the happy path (issue 10):
each used to give a non-spc exception or the wrong behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc import config
from spc.formats.format import resolve_format
from spc.formats.levels import Compressed


@pytest.mark.parametrize("a,b", [("ell(4)", "ell(8)"), ("nm(2,4)", "nm(1,4)"),
                                 ("bsr(2,2)", "bsr(4,4)"), ("ell", "ell(8)")])
def test_parametric_formats_differ_by_their_parameters(a, b):
    fa, fb = resolve_format(a, 2), resolve_format(b, 2)
    assert fa != fb
    assert len({fa, fb}) == 2


@pytest.mark.parametrize("name", ["csr", "ell(4)", "nm(2,4)", "bsr(2,2)", "dia"])
def test_equal_parameters_give_equal_formats(name):
    assert resolve_format(name, 2) == resolve_format(name, 2)
    assert hash(resolve_format(name, 2)) == hash(resolve_format(name, 2))


def test_levels_compare_by_uniqueness():
    assert Compressed(unique=False) != Compressed()
    assert Compressed() == Compressed(unique=True)


def test_bad_thread_count_is_an_spc_error(monkeypatch):
    monkeypatch.setenv("SPC_NUM_THREADS", "abc")
    with pytest.raises(spc.SpcError, match="SPC_NUM_THREADS"):
        config.num_threads()


@pytest.mark.parametrize("name", ["self", "validate", "args", "kwargs"])
def test_any_tensor_name_can_be_passed_by_keyword(name):
    k = spc.compile(f"y[i] = A[i,j]*{name}[j]", formats={"A": "csr"}, dtype="float64")
    A = sp.random(5, 4, density=0.5, format="csr", random_state=1)
    x = np.arange(4.0)
    np.testing.assert_allclose(k(A=A, **{name: x}), A @ x)


def test_validate_keyword_still_works():
    k = spc.compile("spmv", fmt="csr", dtype="float64")
    A = sp.random(5, 4, density=0.5, format="csr", random_state=1)
    np.testing.assert_allclose(k(A, np.ones(4), validate=False), A @ np.ones(4))


def test_blocked_operand_into_a_sparse_output_is_refused_clearly():
    with pytest.raises(spc.UnsupportedError, match="blocked operand"):
        spc.compile("C[i,j] = A[i,j]", formats={"A": "bsr(4,1)", "C": "csr"})


@pytest.mark.parametrize("a,x,y", [
    (np.inf, [1.0, -2.0], [1.0, 1.0]),      # inf * (1 - 2) = -inf, not inf - 2 inf = nan
    (-np.inf, [3.0, 1.0], [1.0, -1.0]),
    (2.0, [np.inf, 1.0], [1.0, 0.0]),
    (np.nan, [1.0, 1.0], [1.0, 1.0]),
])
def test_sddmm_propagates_inf_and_nan_as_scipy_does(a, x, y):
    A = sp.csr_matrix(np.array([[a]]))
    X, Y = np.array([x]), np.array([y])
    want = A.multiply(X @ Y.T).toarray()
    got = spc.compile("sddmm", fmt="csr", dtype="float64")(A, X, Y).toarray()
    np.testing.assert_array_equal(got, want)


def _hyb_operands(family):
    rng = np.random.default_rng(2)
    A = sp.random(7, 6, density=0.5, format="csr", random_state=4)
    X, Y = rng.standard_normal((7, 3)), rng.standard_normal((6, 3))
    want = A.multiply(X @ Y.T).toarray()
    if family == "scipy-dense-side":
        return (A, sp.csr_matrix(X), Y), want
    torch = pytest.importorskip("torch")
    return (torch.tensor(A.toarray()).to_sparse_csr(), torch.tensor(X), torch.tensor(Y)), want


@pytest.mark.parametrize("family", ["scipy-dense-side", "torch"])
def test_hyb_sddmm_returns_the_operands_family(family):
    args, want = _hyb_operands(family)
    out = spc.compile("sddmm", fmt="hyb", dtype="float64")(*args)
    dense = out.toarray() if sp.issparse(out) else out.to_dense().numpy()
    np.testing.assert_allclose(dense, want, rtol=1e-12, atol=1e-12)
