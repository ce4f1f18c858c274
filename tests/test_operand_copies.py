"""Operands whose storage orders conflict are read through copies (issue 13,
part 3): ``C[i,j] = A[i,j]*B[j,i]`` with A and B in csr compiles, B read through
a copy in csc.  Differential tests against numpy over the edge-case matrices in
float32 and float64, the plan (which accesses are copied, in which format), the
log line, the cost (a copy per spc Tensor storage, not per call), refusals that
remain, and hypothesis tests of random two-operand expressions."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings, strategies as st

import spc
from spc.runtime import operand_copies as runtime_copies
from spc.runtime.operand_copies import CopyingKernel, read_copy

from matrices import MATRICES, assert_allclose, from_mask, random_mask, rng_for, sparse_array

DTYPES = [np.float32, np.float64]
EDGE = [c for c in MATRICES if c.id in ("square_40x40", "tall_60x17", "rows0_0x9", "cols0_9x0",
                                        "empty_0x0", "one_1x1", "nnz0_12x15",
                                        "empty_rows_30x25", "dense_row_40x50",
                                        "power_law_200x150")]


def _transposed_partner(a: sp.csr_matrix, name: str, dtype) -> sp.csr_matrix:
    """A fixed-seed matrix of ``a``'s transposed shape, sharing about half of
    ``a.T``'s pattern (so products of ``a`` and its transpose meet)."""
    rng = rng_for(name)
    mask = random_mask(rng, a.shape[::-1], 0.2) | ((a.T.toarray() != 0)
                                                  & (rng.random(a.shape[::-1]) < 0.5))
    return from_mask(mask, rng, dtype)


# (expression, formats, numpy of (A, B)); B is read as B[j,i] (or A as A[k,i])
TRANSPOSED = [
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "csr"},
                 lambda a, b: a * b.T, id="mul-csr-csr-dense"),
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "csr", "C": "csr"},
                 lambda a, b: a * b.T, id="mul-csr-csr-csr"),
    pytest.param("C[i,j] = A[i,j]+B[j,i]", {"A": "csr", "B": "csr", "C": "csr"},
                 lambda a, b: a + b.T, id="add-csr-csr-csr"),
    pytest.param("C[i,j] = A[i,j]-B[j,i]", {"A": "csc", "B": "csc"},
                 lambda a, b: a - b.T, id="sub-csc-csc-dense"),
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "coo", "B": "coo"},
                 lambda a, b: a * b.T, id="mul-coo-coo"),
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "dcsr", "B": "dcsr"},
                 lambda a, b: a * b.T, id="mul-dcsr-dcsr"),
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "ell"},
                 lambda a, b: a * b.T, id="mul-csr-ell"),
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "hyb"},
                 lambda a, b: a * b.T, id="mul-csr-hyb"),
    pytest.param("C[i,j] = A[i,j]", {"A": "csr", "C": "csc"},
                 lambda a, b: a, id="copy-csr-to-csc"),
    pytest.param("y[i] = A[i,j]*B[j,i]", {"A": "csr", "B": "csr"},
                 lambda a, b: (a * b.T).sum(axis=1), id="row-sums-of-product"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", EDGE, ids=str)
@pytest.mark.parametrize("expr, formats, expected", TRANSPOSED)
def test_transposed_operands_match_numpy(expr, formats, expected, case, dtype):
    a = case.build(dtype)
    b = _transposed_partner(a, f"{case.id}-partner", dtype)
    k = spc.compile(expr, formats=formats)
    operands = {"A": a, "B": b} if "B" in expr else {"A": a}
    assert isinstance(k._last, CopyingKernel)
    out = k(**operands)
    assert_allclose(out, expected(a.toarray(), b.toarray()), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", EDGE, ids=str)
def test_spgemm_with_a_csc_left_operand_matches_scipy(case, dtype):
    a = case.build(dtype)
    b = _transposed_partner(a, f"{case.id}-right", dtype)     # a.shape[1] rows
    k = spc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": "csc", "B": "csr", "C": "csr"})
    assert [c.format.name for c in k.copies] == ["csr"]
    out = k(A=a.tocsc(), B=b)
    assert sp.issparse(out) and out.format == "csr"
    assert_allclose(out, (a @ b).toarray(), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cancellation_to_zero_gives_zeros(dtype):
    a = MATRICES[0].build(dtype)
    k = spc.compile("C[i,j] = A[i,j]-B[j,i]", formats={"A": "csr", "B": "csr", "C": "csr"})
    out = k(A=a, B=a.T.tocsr())
    assert_allclose(out, np.zeros(a.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_a_tensor_read_two_ways_matches_numpy(dtype):
    a = MATRICES[0].build(dtype)
    k = spc.compile("C[i,j] = A[i,j]*A[j,i]", formats={"A": "csr", "C": "csr"})
    assert len(k.copies) == 1 and k.copies[0].indices == ("j", "i")
    assert_allclose(k(A=a), (a.multiply(a.T)).toarray(), dtype)


def test_three_tensors_read_in_reversed_order():
    x = sparse_array("copy-3d-x", (4, 5, 6), 0.3)
    y = sparse_array("copy-3d-y", (6, 5, 4), 0.3)
    k = spc.compile("C[i,j,l] = A[i,j,l]*B[l,j,i]", formats={"A": "csf", "B": "csf"})
    out = k(A=spc.tensor(x, "csf"), B=spc.tensor(y, "csf"))
    assert_allclose(out, x * y.transpose(2, 1, 0))


# ---------------------------------------------------------------- the plan, shown


def test_the_copy_is_logged_and_shown():
    logger = logging.getLogger("spc")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    lines = [r.getMessage() for r in records if "read through a copy" in r.getMessage()]
    assert len(lines) == 1 and "B[j,i] is read through a copy of B in csc (B is csr" in lines[0]
    assert "because no loop order visits every sparse level" in lines[0]
    assert k.ir.startswith("# operand copy: B[j,i] is read through a copy of B in csc")
    assert [(c.source, c.format.name) for c in k.copies] == [("B", "csc")]
    assert k.schedule.order == ("i", "j")


@pytest.mark.parametrize("formats, copied", [
    ({"A": "csr", "B": "csr"}, "csc"),
    ({"A": "coo", "B": "coo"}, "coo in mode order (1, 0)"),
    ({"A": "dcsr", "B": "dcsr"}, "dcsc"),
    ({"A": "csr", "B": "dia"}, "csc"),          # slot formats: the copy holds entries only
])
def test_the_copy_keeps_plain_levels_and_names_its_format(formats, copied):
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats=formats)
    assert [str(c.format) for c in k.copies] == [copied]


def test_mangled_names_are_shown_as_written():
    k = spc.compile("C[i,j] = do[i,j]*my_B[j,i]", formats={"do": "csr", "my_B": "csr"})
    assert "my_B[j,i] is read through a copy of my_B in csc" in k.ir
    a = MATRICES[0].build()
    assert_allclose(k(do=a, my_B=a), a.multiply(a.T).toarray())


def test_programs_without_conflicts_are_not_wrapped():
    k = spc.compile("C[i,j] = A[i,j]*B[i,j]", formats={"A": "csr", "B": "csr"})
    assert not isinstance(k._last, CopyingKernel)


# ---------------------------------------------------------------- what a copy costs


def test_a_tensor_operand_is_converted_once_per_storage(monkeypatch):
    calls = []
    real = runtime_copies.copy_structure
    monkeypatch.setattr(runtime_copies, "copy_structure",
                        lambda t, fmt: calls.append(fmt) or real(t, fmt))
    a = MATRICES[0].build()
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"})
    tb = spc.tensor(a.copy(), "csr")
    first = k(A=a, B=tb)
    second = k(A=a, B=tb)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    tb.vals *= 2                                  # values changed in place are seen
    assert_allclose(k(A=a, B=tb), 2 * a.multiply(a.T).toarray())
    assert len(calls) == 1
    tb.vals = tb.vals / 2                         # new values: gathered, no new structure
    assert_allclose(k(A=a, B=tb), a.multiply(a.T).toarray())
    assert len(calls) == 1
    tb.arrays[1]["crd"] = tb.arrays[1]["crd"].copy()   # new level arrays: a new structure
    k(A=a, B=tb)
    assert len(calls) == 2


def test_scipy_operands_are_converted_on_every_call(monkeypatch):
    calls = []
    real = runtime_copies.to_tensor
    monkeypatch.setattr(runtime_copies, "to_tensor",
                        lambda x, fmt, *r: calls.append(fmt) or real(x, fmt, *r))
    a = MATRICES[0].build()
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"})
    k(A=a, B=a)
    k(A=a, B=a)
    assert [f.name for f in calls] == ["csc", "csc"]


def test_prepare_builds_the_copy_once():
    a = MATRICES[0].build()
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"})
    pb = k.prepare(a, "B")
    assert isinstance(pb, spc.Tensor) and any(key[0] == "copy" for key in pb.derived)
    assert_allclose(k(A=a, B=pb), a.multiply(a.T).toarray())


@pytest.mark.parametrize("family", ["scipy", "torch", "spc"])
def test_results_keep_the_callers_family(family):
    a = MATRICES[0].build()
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr", "C": "csr"})
    if family == "torch":
        torch = pytest.importorskip("torch")
        out = k(A=torch.from_numpy(a.toarray()).to_sparse_csr(),
                B=torch.from_numpy(a.toarray()).to_sparse_csr())
        assert isinstance(out, torch.Tensor)
        out = out.to_dense().numpy()
    elif family == "scipy":
        out = k(A=a, B=a)
        assert sp.issparse(out) and out.format == "csr"
    else:
        out = k(A=spc.tensor(a, "csr"), B=spc.tensor(a, "csr"))
        assert isinstance(out, spc.Tensor)
    assert_allclose(out, a.multiply(a.T).toarray())


class _DeviceMatrix:
    """Stands for a cupyx matrix (spc tells device data by its module): ``get()``
    gives the host matrix."""
    __module__ = "cupyx.scipy.sparse._csr"

    def __init__(self, m):
        self.m = m
        self.shape = m.shape

    def get(self):
        return self.m


def test_a_device_operand_is_copied_through_the_host_with_a_warning():
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"})
    b = MATRICES[1].build()
    with pytest.warns(spc.PerformanceWarning, match=r"operand B: read through a copy in csc"
                                                    r".* compile with B in csc"):
        t = read_copy(_DeviceMatrix(b), k.copies[0], np.dtype(np.float64), "B", True)
    assert str(t.format) == str(k.copies[0].format)
    assert_allclose(t.to_scipy("csc"), b.toarray())


# ---------------------------------------------------------------- what stays refused


def test_an_output_in_conflict_with_every_operand_is_computed_in_their_order():
    expr = "C[i,j] = A[i,j]*B[i,j]*D[i,j]*E[i,j]"
    k = spc.compile(expr, formats={"A": "csr", "B": "csr", "D": "csr", "E": "csr", "C": "csc"})
    assert not k.copies and str(k.plan.output.computed) == "csr"
    assert "# output copy: C is computed in csr and converted to csc" in k.ir
    a = MATRICES[0].build()
    out = k(A=a, B=a, D=a, E=a)
    assert sp.issparse(out) and out.format == "csc"
    assert_allclose(out, a.toarray() ** 4)


@pytest.mark.parametrize("fmt", ["coo", "dcsr", "ell", "hyb", "dia", "bsr(2,3)"])
@pytest.mark.parametrize("case", EDGE, ids=str)
def test_outputs_the_kernels_cannot_build_are_converted(case, fmt):
    a = case.build(np.float64)
    k = spc.compile("C[i,j] = 2*A[i,j]", formats={"A": "csr", "C": fmt})
    assert k.plan.output is not None and str(k.plan.output.wanted) == fmt
    out = k(A=spc.tensor(a, "csr"))
    assert str(out.format) == fmt
    assert_allclose(out, 2 * a.toarray())


def test_a_dense_intermediate_output_is_refused_above_the_limit(monkeypatch):
    from spc.ir import operand_copies as planning
    monkeypatch.setattr(planning, "assembled_formats",
                        lambda rank, preferred: [spc.formats.format.resolve_format("dense", rank)])
    k = spc.compile("C[i,j] = A[i,j]", formats={"A": "csr", "C": "coo"})
    assert k.plan.output.computed.is_dense
    a = MATRICES[0].build()
    assert_allclose(k(A=a), a.toarray())
    monkeypatch.setattr(runtime_copies, "DENSE_OUTPUT_LIMIT", a.shape[0] * a.shape[1] - 1)
    with pytest.raises(spc.UnsupportedError, match=r"C would be computed densely \(1600 entries"):
        k(A=a)


@pytest.mark.parametrize("order, copied", [(("i", "j"), "B"), (("j", "i"), "A")])
def test_an_explicit_order_picks_the_operand_copied(order, copied):
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"},
                    schedule=spc.Schedule(order=order))
    assert [c.source for c in k.copies] == [copied] and k.schedule.order == order
    a = MATRICES[0].build()
    assert_allclose(k(A=a, B=a), a.multiply(a.T).toarray())


def test_an_explicit_order_of_a_program_without_conflicts_reads_a_copy():
    """SpMV over csr in the order (j, i): A is read through a copy in csc (a column
    walk scattering into y), logged and listed in ``k.copies``."""
    with pytest.warns(spc.PerformanceWarning, match=r"reads A through a copy in csc, "
                                                    r"converted on every call"):
        k = spc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"},
                        schedule=spc.Schedule(order=("j", "i")))
    assert [(c.source, c.format.name) for c in k.copies] == [("A", "csc")]
    assert k.schedule.order == ("j", "i")
    a = MATRICES[0].build()
    x = np.arange(a.shape[1], dtype=a.dtype)
    assert_allclose(k(A=a, x=x), a @ x)


def test_an_order_that_no_copy_serves_is_still_refused():
    """The output's own storage order: copies of operands cannot change it."""
    with pytest.raises(spc.ScheduleError, match=r"visits 'j' before its parent levels in A "
                                                r".*; the order \('i', 'j'\) works"):
        spc.compile("C[i,j] = A[i,j]*2", formats={"A": "csr", "C": "csr"},
                    schedule=spc.Schedule(order=("j", "i")))


def test_the_schedule_space_of_a_program_with_copies_compiles():
    space = spc.schedule_space("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"})
    assert {s.order for s in space} == {("i", "j"), ("j", "i")}
    a = MATRICES[0].build()
    for s in space:
        k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"}, schedule=s)
        assert_allclose(k(A=a, B=a), a.multiply(a.T).toarray())


# ---------------------------------------------------------------- random expressions

FORMATS_2D = ["csr", "csc", "coo", "dcsr", "dcsc", "dense"]


@st.composite
def two_operand_programs(draw):
    op = draw(st.sampled_from(["*", "+", "-"]))
    ia = draw(st.sampled_from(["i,j", "j,i"]))
    ib = draw(st.sampled_from(["i,j", "j,i"]))
    fa = draw(st.sampled_from(FORMATS_2D))
    fb = draw(st.sampled_from(FORMATS_2D))
    fc = draw(st.sampled_from(["dense", "csr", "csc"]))
    m, n = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    da, db = draw(st.sampled_from([0.0, 0.3, 1.0])), draw(st.sampled_from([0.0, 0.3, 1.0]))
    seed = draw(st.integers(0, 2 ** 16))
    dtype = draw(st.sampled_from(DTYPES))
    return op, ia, ib, fa, fb, fc, (m, n), (da, db), seed, dtype


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_operand_programs())
def test_random_two_operand_expressions_match_numpy(program):
    op, ia, ib, fa, fb, fc, (m, n), (da, db), seed, dtype = program
    expr = f"C[i,j] = A[{ia}] {op} B[{ib}]"
    rng = np.random.default_rng(seed)
    shape = {"i,j": (m, n), "j,i": (n, m)}
    a = from_mask(random_mask(rng, shape[ia], da), rng, dtype)
    b = from_mask(random_mask(rng, shape[ib], db), rng, dtype)
    k = spc.compile(expr, formats={"A": fa, "B": fb, "C": fc})
    out = k(A=a, B=b)
    ad = a.toarray() if ia == "i,j" else a.toarray().T
    bd = b.toarray() if ib == "i,j" else b.toarray().T
    expected = {"*": ad * bd, "+": ad + bd, "-": ad - bd}[op]
    assert_allclose(out, expected, dtype)


# ---------------------------------------------------------------- CUDA, without a GPU

CUDA_CASES = [
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "csr"}, id="dense-out"),
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "csr", "C": "csr"}, id="csr-out"),
    pytest.param("C[i,j] = A[i,k]*B[k,j]", {"A": "csc", "B": "csr", "C": "csr"}, id="spgemm"),
    pytest.param("C[i,j] = A[i,j]+B[j,i]", {"A": "coo", "B": "coo"}, id="coo-sum"),
    pytest.param("C[i,j] = A[i,k]*B[k,j]", {"A": "csr", "B": "csc", "C": "csr"},
                 id="gustavson-copy"),
    pytest.param("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "csr", "C": "coo"}, id="coo-out"),
]


def _cuda(expr, formats, dtype="float64"):
    return spc.compile(expr, formats=formats, target="cuda", arch="sm_90", dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("expr, formats", CUDA_CASES)
def test_nvcc_compiles_kernels_that_read_copies(expr, formats, dtype):
    from cuda_env import NVCC, nvcc
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    k = _cuda(expr, formats, dtype)
    assert isinstance(k._last, CopyingKernel) and "__global__" in k.source
    code, log = nvcc(k.source)
    assert code == 0, log


@pytest.mark.parametrize("case", [c for c in EDGE if c.id != "power_law_200x150"], ids=str)
@pytest.mark.parametrize("expr, formats", CUDA_CASES)
def test_interpreter_on_cuda_kernels_reading_copies_matches_numpy(expr, formats, case):
    """The CUDA pipeline's kernels, run by the reference interpreter through the
    CPU runtime (which builds the copies as the CUDA runtime does, on the host)."""
    from spc.ir.nodes import DType
    from test_cuda_render import InterpLauncher
    gpu = _cuda(expr, formats)._last.inner.lowered_kernels()
    k = spc.compile(expr, formats=formats, dtype="float64")._last
    v = k.inner._variant(DType.I32)
    v.kernels = gpu
    v.launchers = [InterpLauncher(g) for g in gpu]
    k.inner._plan = None
    a = case.build(np.float64)
    b = _transposed_partner(a, f"{case.id}-cuda", np.float64)
    out = k(A=a, B=b)
    ad, bd = a.toarray(), b.toarray()
    expected = ad @ bd if "A[i,k]" in expr else ad * bd.T if "*" in expr else ad + bd.T
    assert_allclose(out, expected, np.float64)


@pytest.mark.cuda
@pytest.mark.parametrize("family", ["cupy", "torch"])
@pytest.mark.parametrize("expr, formats, transposed, reference", [
    ("C[i,j] = A[i,j]*B[j,i]", {"A": "csr", "B": "csr"}, True, lambda a, b: a * b.T),
    ("C[i,j] = A[i,k]*B[k,j]", {"A": "csr", "B": "csc", "C": "csr"}, True, lambda a, b: a @ b),
    ("C[i,j] = A[i,j]*B[i,j]", {"A": "csr", "B": "csr", "C": "coo"}, False,
     lambda a, b: a * b),
    ("s = A[i,j]*B[j,i]", {"A": "csr", "B": "csr"}, True, lambda a, b: (a * b.T).sum()),
])
def test_device_operands_read_through_copies_give_device_results(family, expr, formats,
                                                                 transposed, reference):
    """Copies of device operands are built on the host and the result comes back on
    the device, in the operands' family, with a PerformanceWarning."""
    from cuda_env import cupy_or_skip_module
    cp = cupy_or_skip_module()
    a = MATRICES[1].build()
    b = a.T.tocsr() if transposed else (2 * a).tocsr()          # B's shape: B[j,i] or B[i,j]
    if family == "torch":
        torch = pytest.importorskip("torch")
        dev = lambda m: torch.sparse_csr_tensor(                        # noqa: E731
            *(torch.from_numpy(x).cuda() for x in (m.indptr, m.indices, m.data)), m.shape)
        host = lambda r: r.cpu().to_dense().numpy() if r.layout != torch.strided \
            else r.cpu().numpy()                                         # noqa: E731
    else:
        import cupyx.scipy.sparse as cpsp
        dev = lambda m: cpsp.csr_matrix(m)                              # noqa: E731
        host = lambda r: (r.get().toarray() if hasattr(r, "get") and cpsp.issparse(r)
                          else r.to_scipy("csr").toarray() if isinstance(r, spc.Tensor)
                          else cp.asnumpy(r))                            # noqa: E731
    k = _cuda(expr, formats)
    with pytest.warns(spc.PerformanceWarning, match="host and back"):
        out = k(A=dev(a), B=dev(b))
    assert type(out).__module__.split(".")[0] in (("torch",) if family == "torch" else
                                                   ("cupy", "cupyx", "spc"))
    if isinstance(out, spc.Tensor):
        assert isinstance(out.vals, cp.ndarray)
    assert_allclose(np.asarray(host(out)).ravel(),
                    np.asarray(reference(a.toarray(), b.toarray())).ravel())


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_unsorted_and_duplicate_scipy_input_is_summed_in_the_copy(layout):
    rows, cols = np.array([0, 0, 2, 1, 0]), np.array([2, 1, 0, 1, 2])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = sp.coo_matrix((vals, (rows, cols)), shape=(3, 3))
    if layout == "csr":                        # unsorted columns, a duplicate (0, 2)
        b = sp.csr_matrix((vals[[0, 1, 4, 3, 2]], cols[[0, 1, 4, 3, 2]], [0, 3, 4, 5]),
                          shape=(3, 3))
    a = sp.csr_matrix(np.arange(1.0, 10.0).reshape(3, 3))
    k = spc.compile("C[i,j] = A[i,j]*B[j,i]", formats={"A": "csr", "B": "csr"})
    assert_allclose(k(A=a, B=b), a.toarray() * b.toarray().T)


@pytest.mark.parametrize("expr, formats, quadratic", [
    ("C[i,j] = A[i,k]*B[k,j]", {"A": "csr", "B": "csc", "C": "csr"}, True),
    ("C[i,j] = A[i,k]*B[j,k]", {"A": "csr", "B": "csr", "C": "csr"}, True),
    ("C[i,j] = A[i,k]*B[k,j]", {"A": "csr", "B": "csr", "C": "csr"}, False),   # Gustavson
    ("y[i] = A[i,j]*x[j]", {"A": "csr", "y": "sparse"}, False),              # SpMV's rows
    ("C[i,j] = M[i,j]*A[i,k]*B[k,j]", {"M": "csr", "A": "csr", "B": "csc", "C": "csr"},
     False),                                                                 # M drives j
    ("C[i,j] = A[i,k]*B[j,k]", {"A": "csr", "B": "csr"}, False),              # dense output
])
def test_inner_products_over_a_nested_dense_loop_are_recognised(expr, formats, quadratic):
    from spc.formats.format import resolve_format
    from spc.frontend.parser import parse
    from spc.ir.operand_copies import dense_inner_products
    assign = parse(expr)
    ranks = {a.tensor: len(a.indices) for a in (assign.lhs,) + assign.accesses()}
    fmts = {t: resolve_format(formats.get(t, "dense"), r) for t, r in ranks.items()}
    assert dense_inner_products(assign, fmts) == quadratic


def test_a_refusal_of_the_cuda_pipeline_is_answered_by_a_copy():
    """A sparse vector built in a workspace under a reduction: lowering accepts it,
    the CUDA pipeline does not (no rows to give threads); A is read through a csc
    copy instead, which nvcc compiles."""
    from cuda_env import NVCC, nvcc
    k = _cuda("y[i] = A[m,i]*x[m]", {"A": "csr", "y": "coo"})
    assert [c.format.name for c in k.copies] == ["csc"] and "not generated for CUDA" in k.ir
    if NVCC is not None:
        code, log = nvcc(k.source)
        assert code == 0, log


def _min_over_entries(H, x):
    """w[l] = min over q of H[q,l]*x[q] where both store an entry (0 where none)."""
    out = np.zeros(H.shape[1])
    for l in range(H.shape[1]):
        v = [H[q, l] * x[q] for q in range(H.shape[0]) if H[q, l] != 0 and x[q] != 0]
        out[l] = min(v) if v else 0.0
    return out


@pytest.mark.parametrize("fmts", [{"H": "csr", "X": "coo"}, {"H": "nm(1,2)", "X": "sparse"},
                                  {"H": "csr", "X": "sparse"}])
def test_a_min_over_rows_with_a_sparse_vector_reads_a_copy(fmts):
    """Fuzz seed 5101 case 892: the copy planner stored the copy in the order the other
    operands allow (q first), where a min reduction needs the output's index first."""
    H = np.array([[1.0, 0.0, -2.0, 0.0], [0.0, 3.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.5, 0.0], [2.0, 0.0, 0.0, 4.0]])
    x = np.array([1.0, 0.0, 2.0, -1.0, 0.5])
    k = spc.compile("w[l] = min(q, H[q,l]*X[q])", formats=fmts)
    np.testing.assert_allclose(k(H, x), _min_over_entries(H, x))


@pytest.mark.parametrize("text, fmts", [
    ("S[j,d] = min(p, U[j,p]*a[p,d])", {"U": "hyb(1)"}),
    ("S[j,d] = relu(min(p, U[j,p]*a[p,d]) + lo[d])", {"U": "hyb(1)", "a": "ds", "lo": "csf"}),
])
def test_a_hyb_operand_inside_a_min_is_read_through_a_csr_copy(text, fmts):
    """Fuzz seed 5101 case 1396: the planner judged U fine as hyb (lowering reads a sum
    format as its parts), which the composite kernel refuses inside a reduction."""
    rng = np.random.default_rng(5)
    U = sp.random(5, 6, density=0.5, format="csr", random_state=2)
    a = np.where(rng.random((6, 3)) < 0.7, rng.uniform(-1, 1, (6, 3)), 0.0)
    lo = rng.uniform(-1, 1, 3)
    Ud = U.toarray()
    ref = np.zeros((5, 3))
    for j in range(5):
        for d in range(3):
            v = [Ud[j, p] * a[p, d] for p in range(6)
                 if Ud[j, p] != 0 and (a[p, d] != 0 or "a" not in fmts)]
            ref[j, d] = min(v) if v else 0.0
    k = spc.compile(text, formats=fmts)
    if "lo" in text:
        ref = np.maximum(ref + lo, 0.0)
        got = k(U=U, a=a, lo=lo)
    else:
        got = k(U=U, a=a)
    np.testing.assert_allclose(got, ref)
    assert any(c.source == "U" for c in k.copies)
