"""The condensed format (formats/levels_chunked.py, formats/format.condensed):
rows in windows, each window's distinct columns in chunks of k, a dense window
column per kept column.  Its arrays for a hand-checked matrix, conversions
(scipy, coordinates with duplicates and in any order, the edge matrices, back
to scipy), the checks of malformed arrays, and SpMV, SpMM and SDDMM against
scipy on the CPU and through the CUDA pipeline (interpreted; nvcc compiles it)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.errors import FormatError, InputError
from spc.formats.format import condensed, resolve_format
from spc.formats.levels_chunked import Chunked
from spc.formats.tensor import Tensor, from_coords
from spc.ir.nodes import DType
from matrices import MATRICES, assert_allclose, dense_operand

FORMATS = ["condensed(16,16)", "condensed(16,8)", "condensed(4,3)", "condensed(1,2)"]


def test_arrays_of_a_small_matrix():
    """Windows of 2 rows, chunks of 2 columns: window 0 uses columns 0, 1, 4
    (two chunks, the second padded), window 1 none; values per kept column,
    the window's rows dense (zeros where a row lacks the column)."""
    A = sp.csr_matrix(np.array([[0, 2, 0, 0, 3], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0.]]))
    t = spc.tensor(A, "condensed(2,2)")
    assert t.arrays[1]["pos"].tolist() == [0, 2, 2]
    assert t.arrays[1]["crd"].tolist() == [0, 1, 4, -1]
    assert t.vals.tolist() == [0, 1, 2, 0, 3, 0, 0, 0]
    assert t.format == condensed(2, 2) and str(t.format) == "condensed(2,2)"


def test_levels_and_name():
    fmt = resolve_format("condensed(16,8)", 2)
    assert [repr(lv) for lv in fmt.levels] == ["dense", "chunked(8)", "dense"]
    assert fmt.order == (0, 1, 0) and fmt.block == (16, 1)
    assert fmt != resolve_format("bsr(16,1)", 2) and fmt != condensed(16, 16)


@pytest.mark.parametrize("spec", ["condensed(0,4)", "condensed(16,0)", "condensed(16)"])
def test_bad_parameters_are_refused(spec):
    with pytest.raises(FormatError):
        resolve_format(spec, 2)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("matrix", MATRICES, ids=str)
def test_scipy_round_trip(fmt, matrix):
    A = matrix.build()
    t = spc.tensor(A, fmt)
    k = t.format.levels[1].k
    pos, crd = t.arrays[1]["pos"], t.arrays[1]["crd"]
    assert len(crd) == int(pos[-1]) * k
    np.testing.assert_array_equal(t.to_numpy(), A.toarray())
    np.testing.assert_array_equal(t.to_scipy().toarray(), A.toarray())


def test_duplicates_summed_and_any_order():
    rows = np.array([5, 0, 5, 17, 0, 5])
    cols = np.array([3, 9, 3, 0, 1, 2])
    vals = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    t = from_coords([rows, cols], vals, (20, 10), "condensed(16,2)")
    want = sp.coo_matrix((vals, (rows, cols)), shape=(20, 10)).toarray()
    np.testing.assert_array_equal(t.to_numpy(), want)
    # window 0 keeps columns 1, 2, 3, 9 (two chunks), window 1 column 0 (one)
    assert t.arrays[1]["pos"].tolist() == [0, 2, 3]
    assert t.arrays[1]["crd"].tolist() == [1, 2, 3, 9, 0, -1]


def _arrays(pos, crd):
    return [{}, {"pos": np.array(pos, dtype=np.int32), "crd": np.array(crd, dtype=np.int32)}, {}]


def test_well_formed_arrays_are_accepted():
    t = Tensor((3, 5), condensed(2, 2), _arrays([0, 2, 2], [0, 1, 4, -1]), np.arange(8.0))
    assert t.to_numpy()[0].tolist() == [0, 2, 0, 0, 4]


@pytest.mark.parametrize("pos, crd, why", [
    ([0, 2], [0, 1, 4, -1], "length"),                       # pointers for 1 window, not 2
    ([0, 2, 2], [0, 1, 4], "chunks of"),                     # 3 coordinates for 2 chunks
    ([0, 2, 2], [0, 5, 4, -1], "out of range"),
    ([0, 2, 2], [0, -1, 4, -1], "follows padding"),
    ([0, 2, 2], [1, 0, 4, -1], "unsorted or duplicate"),
    ([0, 2, 2], [0, 1, -1, -1], "whole chunk of padding"),
    ([1, 2, 2], [0, 1, 4, -1], "start at 0"),
])
def test_malformed_arrays_are_refused(pos, crd, why):
    with pytest.raises(InputError, match=why):
        Tensor((3, 5), condensed(2, 2), _arrays(pos, crd), np.zeros(max(len(crd), 1) * 2)[
            :len(crd) * 2])


def test_chunk_size_must_be_positive():
    with pytest.raises(FormatError):
        Chunked(0)


def _operands(kernel, A):
    m, k = A.shape
    if kernel == "spmv":
        return (dense_operand(f"x{k}", (k,)),)
    if kernel == "spmm":
        return (dense_operand(f"B{k}", (k, 5)),)
    return dense_operand(f"X{m}", (m, 3)), dense_operand(f"Y{k}", (k, 3))


def _reference(kernel, A, ops):
    if kernel == "sddmm":
        X, Y = ops
        return A.multiply(X @ Y.T).toarray()
    return A @ ops[0]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("matrix", MATRICES, ids=str)
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_cpu_kernels_match_scipy(kernel, matrix, fmt):
    A = matrix.build()
    ops = _operands(kernel, A)
    got = spc.compile(kernel, fmt=fmt, dtype="float64")(A, *ops)
    assert_allclose(got, _reference(kernel, A, ops), np.float64)


SMALL = [c for c in MATRICES if c.id in ("tall_60x17", "empty_rows_30x25", "nnz0_12x15",
                                         "rows0_0x9", "dense_row_40x50", "one_1x1")]


@pytest.mark.parametrize("fmt", ["condensed(16,16)", "condensed(4,3)"])
@pytest.mark.parametrize("matrix", SMALL, ids=str)
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_cuda_pipeline_matches_scipy(kernel, matrix, fmt):
    """The CUDA target's kernels (scalar: float64 has no tensor-core tile), run
    by the interpreter through the CPU kernel's runtime."""
    from test_cuda_render import _run_with
    A = matrix.build()
    ops = _operands(kernel, A)
    cuda = spc.compile(kernel, fmt=fmt, target="cuda", arch="sm_90", dtype="float64")
    got = _run_with(cuda._variant(DType.I32).kernels, kernel, dict(fmt=fmt), "float64", A, *ops)
    assert_allclose(got, _reference(kernel, A, ops), np.float64)


def test_nvcc_compiles_the_scalar_kernels():
    from cuda_env import NVCC, nvcc_many
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    sources = [spc.compile(kernel, fmt="condensed(16,8)", target="cuda", arch="sm_90",
                           dtype=dtype, tensor_cores=False).source
               for kernel in ("spmv", "spmm", "sddmm") for dtype in ("float32", "float16")]
    for (code, log), source in zip(nvcc_many(sources), sources):
        assert code == 0, f"nvcc failed:\n{log}\n--- source ---\n{source}"
