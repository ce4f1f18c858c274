"""Fixed-seed synthetic sparse matrices for the kernel tests, and result comparison.

``MATRICES`` is a list of :class:`Case` (an id plus a builder), so a test can
parametrize over it with readable ids and build the matrix in the dtype it
tests.  Every builder is deterministic: the same id gives the same matrix.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

import spc


def rng_for(name: str) -> np.random.Generator:
    """A generator seeded from ``name`` (stable across processes)."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def from_mask(mask: np.ndarray, rng: np.random.Generator, dtype) -> sp.csr_matrix:
    """A canonical CSR matrix with uniform(-1, 1) values where ``mask`` is true.

    Values are kept away from zero so no stored entry is an accidental zero.
    """
    rows, cols = np.nonzero(mask)
    mag = rng.uniform(0.1, 1.0, len(rows))
    vals = np.where(rng.random(len(rows)) < 0.5, -mag, mag).astype(dtype)
    m = sp.csr_matrix((vals, (rows, cols)), shape=mask.shape, dtype=dtype)
    m.sum_duplicates()
    return m


def random_mask(rng, shape, density) -> np.ndarray:
    return rng.random(shape) < density


def _random(shape, density):
    def build(rng):
        return random_mask(rng, shape, density)
    return build


def _empty_rows(rng):
    mask = random_mask(rng, (30, 25), 0.3)
    mask[rng.random(30) < 0.5] = False           # about half the rows empty
    mask[0] = mask[-1] = False                   # first and last row empty too
    return mask


def _dense_row(rng):
    mask = random_mask(rng, (40, 50), 0.05)
    mask[17] = True
    return mask


def _dense_col(rng):
    mask = random_mask(rng, (50, 40), 0.05)
    mask[:, 23] = True
    return mask


def _diagonal(rng):
    return np.eye(33, dtype=bool)


def _power_law(rng):
    """Row lengths drawn from a Zipf law (a few long rows, many short or empty)."""
    m, n = 200, 150
    lengths = np.minimum(rng.zipf(1.6, m) - 1, n)
    mask = np.zeros((m, n), dtype=bool)
    for r, length in enumerate(lengths):
        mask[r, rng.choice(n, size=length, replace=False)] = True
    return mask


@dataclass(frozen=True)
class Case:
    id: str
    mask: Callable[[np.random.Generator], np.ndarray]

    def build(self, dtype=np.float64) -> sp.csr_matrix:
        """The matrix as canonical scipy CSR in ``dtype``."""
        rng = rng_for(self.id)
        return from_mask(self.mask(rng), rng, dtype)

    def __str__(self) -> str:
        return self.id


MATRICES: list[Case] = [
    Case("square_40x40", _random((40, 40), 0.15)),
    Case("tall_60x17", _random((60, 17), 0.2)),
    Case("wide_13x70", _random((13, 70), 0.2)),
    Case("rows0_0x9", _random((0, 9), 0.5)),
    Case("cols0_9x0", _random((9, 0), 0.5)),
    Case("empty_0x0", _random((0, 0), 0.5)),
    Case("one_1x1", _random((1, 1), 1.0)),
    Case("nnz0_12x15", _random((12, 15), 0.0)),
    Case("empty_rows_30x25", _empty_rows),
    Case("dense_row_40x50", _dense_row),
    Case("dense_col_50x40", _dense_col),
    Case("diagonal_33", _diagonal),
    Case("power_law_200x150", _power_law),
]
MATRIX_IDS = [c.id for c in MATRICES]


def dense_operand(name: str, shape, dtype=np.float64) -> np.ndarray:
    """A fixed-seed dense uniform(-1, 1) array."""
    return rng_for(name).uniform(-1.0, 1.0, shape).astype(dtype)


def sparse_array(name: str, shape, density: float, dtype=np.float64) -> np.ndarray:
    """A fixed-seed dense numpy array with about ``density`` nonzeros (for n-d tensors)."""
    rng = rng_for(name)
    mask = rng.random(shape) < density
    mag = rng.uniform(0.1, 1.0, shape)
    vals = np.where(rng.random(shape) < 0.5, -mag, mag)
    return np.where(mask, vals, 0.0).astype(dtype)


# ---------------------------------------------------------------------------
# Comparing results
# ---------------------------------------------------------------------------

RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def to_dense(x) -> np.ndarray:
    """scipy.sparse, spc.Tensor, numpy array or scalar -> a dense numpy array."""
    if isinstance(x, spc.Tensor) or hasattr(x, "to_numpy"):
        return x.to_numpy()
    if sp.issparse(x):
        return x.toarray()
    return np.asarray(x)


def assert_allclose(actual, expected, dtype=None, *, scale=None) -> None:
    """Compare ``actual`` (any result family) with ``expected`` densely.

    The tolerance is relative for ``dtype`` (float32: 1e-4, float64: 1e-10),
    with an absolute floor of rtol times ``scale`` (default: the largest
    magnitude in ``expected``, at least 1) for entries that cancel to ~0.
    """
    a = to_dense(actual)
    e = np.asarray(to_dense(expected))
    dt = np.dtype(dtype) if dtype is not None else np.result_type(a.dtype, np.float32)
    rtol = RTOL.get(dt, 1e-4)
    if scale is None:
        scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale)


def pattern_of(x) -> set[tuple[int, ...]]:
    """The set of stored coordinates of a scipy matrix or spc.Tensor."""
    if isinstance(x, spc.Tensor):
        coords, _ = x.to_coo()
        return set(zip(*(c.tolist() for c in coords)))
    coo = sp.coo_matrix(x)
    return set(zip(coo.row.tolist(), coo.col.tolist()))
