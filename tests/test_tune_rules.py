"""The untuned default: thresholds read from the shipped file, a legal schedule in microseconds."""
import time

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.tuning.rules import parameters, untuned_schedule
from spc.tuning.signature import signature

SMALL = sp.random(30, 30, density=0.1, format="csr", dtype=np.float32, random_state=0)
SKEWED = sp.csr_matrix(np.vstack([np.ones((1, 300)), np.eye(299, 300)]).astype(np.float32))


def test_shipped_parameters_are_read():
    p = parameters()
    assert p["serial_below_work"] >= 0
    assert p["split_from_skew"] is None or p["split_from_skew"] > 1


@pytest.mark.parametrize("params, A, n, want", [
    (dict(serial_below_work=10_000, split_from_skew=None), SMALL, 8, spc.Schedule(parallel=False)),
    (dict(serial_below_work=0, split_from_skew=None), SMALL, 8, spc.Schedule()),
    (dict(serial_below_work=0, split_from_skew=8.0), SKEWED, 8,
     spc.Schedule(split_rows=True, deterministic=False)),
    (dict(serial_below_work=0, split_from_skew=8.0), SMALL, 8, spc.Schedule()),
], ids=["serial", "default", "split", "not-skewed"])
def test_rules(params, A, n, want):
    assert untuned_schedule("spmm", signature(A), n, params=params) == want


@pytest.mark.parametrize("kernel", ["spmm", "sddmm"])
def test_rule_schedules_are_legal_and_correct(kernel):
    params = dict(serial_below_work=0, split_from_skew=2.0)
    s = untuned_schedule(kernel, signature(SKEWED), 4, params=params)
    k = spc.compile(kernel, fmt="csr", schedule=s)
    rng = np.random.default_rng(0)
    if kernel == "spmm":
        B = rng.standard_normal((300, 4)).astype(np.float32)
        np.testing.assert_allclose(k(SKEWED, B), SKEWED @ B, rtol=1e-4, atol=1e-4)
    else:
        X, Y = rng.standard_normal((300, 4)).astype(np.float32), rng.standard_normal((300, 4)).astype(np.float32)
        r = np.repeat(np.arange(300), np.diff(SKEWED.indptr))
        want = SKEWED.data * np.einsum("ij,ij->i", X[r], Y[SKEWED.indices])
        np.testing.assert_allclose(k(SKEWED, X, Y).data, want, rtol=1e-4, atol=1e-5)


def test_choosing_takes_well_under_a_millisecond():
    sig = signature(SKEWED)
    untuned_schedule("spmm", sig, 32)
    t0 = time.perf_counter()
    for _ in range(100):
        untuned_schedule("spmm", sig, 32)
    assert (time.perf_counter() - t0) / 100 < 1e-3
