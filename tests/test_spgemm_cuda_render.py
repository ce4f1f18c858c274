"""SpGEMM on CUDA without a GPU: the workspaces_gpu pass's IR (a thread per
row, each row's workspace a hash table in its own slots of the output), the
reference interpreter on the CUDA pipeline's kernels through the runtime
(assemble, prefix sum, compute, pack, as on the GPU), and nvcc compiling what
the renderer prints."""
from __future__ import annotations

import numpy as np
import pytest

import spc
from spc.ir.nodes import Alloc, CompareSwap, Const, DType, For, GridMode, LoopKind, ParamRole
from spc.ir.traverse import walk
from spc.passes.workspaces_gpu import workspaces_gpu

from cuda_env import NVCC, nvcc
from matrices import MATRICES, from_mask, random_mask, rng_for
from test_cuda_render import InterpLauncher   # (the interpreter checks races: chunks own slices)
from test_spgemm import CSR3, SPGEMM, assert_canonical_product, right_operand

MASKED = ("C[i,j] = M[i,j]*A[i,k]*B[k,j]", {**CSR3, "M": "csr"})
KERNELS = [pytest.param(SPGEMM, CSR3, id="spgemm"), pytest.param(*MASKED, id="masked"),
           pytest.param(SPGEMM, {"A": "csc", "B": "csc", "C": "csc"}, id="spgemm-csc"),
           pytest.param("C[i,j] = A[i,k]*B[k,j] + D[i,j]", {**CSR3, "D": "csr"}, id="ab-plus-d")]


def _cuda(expr, formats, dtype="float64"):
    return spc.compile(expr, formats=formats, target="cuda", arch="sm_90", dtype=dtype)


@pytest.mark.parametrize("expr, formats", KERNELS)
def test_rows_map_to_warps_with_hashed_tables_in_the_output(expr, formats):
    """Assemble: a row's products counted (map_gpu gives it a warp, lanes over
    A's row); compute: a warp per row, the lanes inserting by compare-and-swap,
    lane 0 gathering; no workspace or scratch array left."""
    ck = _cuda(expr, formats)
    assemble, compute = ck.lowered_kernels()
    for kernel in (assemble, compute):
        assert kernel.gpu is not None
        assert not any(isinstance(n, Alloc) and n.is_workspace for n in walk(kernel.body))
        assert not [p for p in kernel.params if p.role is ParamRole.SCRATCH]
        assert not kernel.workspaces
    assert not any(isinstance(n, CompareSwap) for n in walk(assemble.body))
    assert compute.gpu.grid is GridMode.WARP
    lanes = [n for n in walk(compute.body) if isinstance(n, For) and n.kind is LoopKind.GPU_LANE]
    assert any(isinstance(n, CompareSwap) for lane in lanes for n in walk(lane.body))
    assert any(isinstance(lane.hi, Const) and lane.hi.value == 1 for lane in lanes)  # lane 0
    assert "_ws_mark" not in ck.ir and "_ws_vals" not in ck.ir


def test_kernels_without_workspaces_are_left_alone():
    ck = spc.compile("C[i,j] = A[i,j]+B[i,j]", formats=CSR3)
    for kernel in ck.lowered_kernels():
        assert workspaces_gpu(kernel) is kernel




def _run_kernels(gpu_kernels, expr, formats, *operands):
    """Call a CPU CompiledKernel of ``expr`` whose kernels are ``gpu_kernels`` (a
    CUDA pipeline's), run by the interpreter."""
    ck = spc.compile(expr, formats=formats, dtype="float64")
    v = ck._variant(DType.I32)
    v.kernels = gpu_kernels
    v.launchers = [InterpLauncher(k) for k in gpu_kernels]
    ck._plan = None
    return ck(*operands)


def _interpreted(expr, formats, *operands):
    """``_run_kernels`` of the default CUDA pipeline's kernels of ``expr``."""
    return _run_kernels(_cuda(expr, formats).lowered_kernels(), expr, formats, *operands)


def _matches_scipy_and_compiles(ck, a, b):
    """SpGEMM kernel ``ck`` (CUDA) run by the interpreter gives scipy's a @ b, and
    nvcc compiles its source (where nvcc is)."""
    got = _run_kernels(ck.lowered_kernels(), SPGEMM, CSR3, a, b)
    assert_canonical_product(got, a @ b, np.float64)
    if NVCC is not None:
        code, log = nvcc(ck.source)
        assert code == 0, log


SMALL = [c for c in MATRICES if c.id in ("tall_60x17", "empty_rows_30x25", "nnz0_12x15",
                                          "rows0_0x9", "cols0_9x0", "dense_row_40x50",
                                          "one_1x1")]


@pytest.mark.parametrize("case", SMALL, ids=str)
def test_interpreter_on_cuda_kernels_gives_scipys_product(case):
    a = case.build(np.float64)
    b = right_operand(a, f"{case.id}-cuda-B", 21, 0.2, np.float64)
    c = _interpreted(SPGEMM, CSR3, a, b)
    assert_canonical_product(c, a @ b, np.float64)


def test_interpreter_on_cuda_masked_kernels():
    rng = rng_for("cuda-masked")
    a = from_mask(random_mask(rng, (25, 18), 0.2), rng, np.float64)
    b = from_mask(random_mask(rng, (18, 30), 0.2), rng, np.float64)
    m = from_mask(random_mask(rng, (25, 30), 0.3), rng, np.float64)
    c = _interpreted(*MASKED, m, a, b)
    assert_canonical_product(c, m.multiply(a @ b).tocsr(), np.float64)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("expr, formats", KERNELS)
def test_nvcc_compiles_the_rendered_kernels(expr, formats, dtype):
    ck = _cuda(expr, formats, dtype)
    code, log = nvcc(ck.source)
    assert code == 0, log


def test_a_workspace_no_thread_can_own_reads_a_copy_on_cuda():
    """A sparse vector built under a reduction (one row, shared by every
    iteration of the top loop) has no rows to give threads, a workspace CUDA
    does not generate; since issue 13 part 3 A is read through a csc copy
    instead (no workspace), and nvcc compiles it."""
    ck = _cuda("y[j] = A[i,j]*x[i]", {"A": "csr", "y": "s"})
    assert [c.format.name for c in ck.copies] == ["csc"]
    assert "not generated for CUDA" in ck.ir
    if NVCC is not None:
        code, log = nvcc(ck.source)
        assert code == 0, log


def test_serial_schedule_runs_every_row_on_one_thread():
    ck = spc.compile(SPGEMM, formats=CSR3, target="cuda", arch="sm_90",
                     schedule=spc.Schedule(parallel=False))
    assert "atomic" not in ck.ir
    assert "for i_thread in [0, 1) @gpu_thread:" in ck.ir
    for kernel in ck.lowered_kernels():
        assert kernel.outer_independent == "i_thread"


@pytest.mark.parametrize("name, expr, formats", [
    ("spgemm_csr_cuda", SPGEMM, CSR3), ("spgemm_masked_csr_cuda", *MASKED)])
def test_cuda_ir_matches_golden(name, expr, formats):
    from test_ir_golden import assert_golden
    assert_golden(name, _cuda(expr, formats, "float32").ir)


def _csr(dense):
    import scipy.sparse as sp
    return sp.csr_matrix(np.asarray(dense, dtype=np.float64))


def test_interpreter_drops_cancelled_entries_and_keeps_nan():
    a = _csr([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    b = _csr([[2.0, 0.0], [-2.0, 5.0], [np.nan, 0.0]])
    c = _interpreted(SPGEMM, CSR3, a, b)
    expected = a @ b
    expected.sort_indices()
    assert np.array_equal(c.indptr, expected.indptr)       # (0, 0) cancelled: dropped
    assert np.array_equal(c.indices, expected.indices)
    np.testing.assert_array_equal(c.data, expected.data)   # the NaN sum is kept


def test_interpreter_with_colliding_keys_probes_and_wraps():
    """Row 0 scatters 6 products (a table of 16 slots, 64 columns): keys 0, 16,
    32, 48 share slot 0 and 15, 31 slot 15, whose probe wraps to slot 0."""
    b = np.zeros((3, 64))
    b[0, [0, 16, 15]] = [1.0, 2.0, 3.0]
    b[1, [32, 48, 31]] = [4.0, 5.0, 6.0]
    b[2, [0, 63]] = [7.0, 8.0]
    a = _csr([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [2.0, 0.0, 3.0]])
    c = _interpreted(SPGEMM, CSR3, a, _csr(b))
    assert_canonical_product(c, a @ _csr(b), np.float64)


@pytest.mark.parametrize("cols, density", [(700, 0.05), (700, 0.5), (5000, 0.02)],
                         ids=["shared-merge-sorted", "global-direct", "global-hashed"])
def test_interpreter_on_wide_rows(cols, density):
    """Rows of more than 16 entries in tables smaller than the index (merge
    sort of the compacted slots) and as large (the slots already in order),
    in a warp's shared table (up to 256 slots in float64) and in the output's
    slots."""
    rng = rng_for(f"cuda-wide-{cols}-{density}")
    a = from_mask(random_mask(rng, (6, 8), 0.5), rng, np.float64)
    b = from_mask(random_mask(rng, (8, cols), density), rng, np.float64)
    assert_canonical_product(_interpreted(SPGEMM, CSR3, a, b), a @ b, np.float64)


def test_rows_choose_the_shared_or_the_global_table():
    """One kernel, every table: a row whose table fits the warp's shared
    array (256 float64 slots) holds it there, a longer one in the output; a
    direct table (the whole index) keeps sums only, a hashed one keys too."""
    ck = _cuda(SPGEMM, CSR3)
    compute = ck.lowered_kernels()[1]
    shared = [n for n in walk(compute.body) if isinstance(n, Alloc) and n.shared]
    assert [a.size for a in shared] == [256, 256, 32, 32, 32]   # one table for every kind;
    assert [a.buf.dtype for a in shared] == [DType.I32, DType.F64,  # the lanes' gathers'
                                             DType.I64, DType.F64, DType.I32]  # windows
    assert "if ht_size <= 256:" in ck.ir and "if ht_size == size_j:" in ck.ir
    b = np.zeros((2, 3000))
    b[0, ::300] = 1.0                     # row 0 of A @ B: 10 products, a shared table
    b[1, ::2] = 2.0                       # row 1: 1500 products, the output's slots
    a = _csr([[1.0, 0.0], [1.0, 1.0]])
    c = _interpreted(SPGEMM, CSR3, a, _csr(b))
    assert_canonical_product(c, a @ _csr(b), np.float64)


def test_interpreter_on_one_thread_for_every_row():
    rng = rng_for("cuda-serial")
    a = from_mask(random_mask(rng, (20, 15), 0.2), rng, np.float64)
    b = from_mask(random_mask(rng, (15, 40), 0.2), rng, np.float64)
    schedule = spc.Schedule(parallel=False)
    gpu_kernels = spc.compile(SPGEMM, formats=CSR3, target="cuda", arch="sm_90",
                              dtype="float64", schedule=schedule).lowered_kernels()
    assert_canonical_product(_run_kernels(gpu_kernels, SPGEMM, CSR3, a, b), a @ b, np.float64)


@pytest.mark.parametrize("expr, formats", KERNELS)
def test_interpreter_on_every_kernel_shape(expr, formats):
    rng = rng_for(f"cuda-shapes-{expr}-{sorted(formats.items())}")
    a = from_mask(random_mask(rng, (30, 20), 0.15), rng, np.float64)
    b = from_mask(random_mask(rng, (20, 25), 0.15), rng, np.float64)
    other = from_mask(random_mask(rng, (30, 25), 0.2), rng, np.float64)
    cpu = spc.compile(expr, formats=formats, dtype="float64")
    names = sorted(set(formats) - {"C"})
    args = {"A": a, "B": b, "M": other, "D": other}
    expected = cpu(*(args[n] for n in cpu.input_names))
    got = _interpreted(expr, formats, *(args[n] for n in cpu.input_names))
    assert names
    np.testing.assert_allclose(got.toarray(), expected.toarray(), rtol=1e-12, atol=1e-12)
    assert np.array_equal(got.indptr, expected.indptr)
    assert np.array_equal(got.indices, expected.indices)


@pytest.mark.parametrize("cols", [1, 5, 64, 700])
def test_table_sizes_bound_the_products_and_the_extent(cols):
    """The assemble kernel's table sizes: 0 for a row with no products, else a
    power of two of at least twice its products below the extent, or the
    extent itself (a direct table); never more than the extent."""
    from spc.ir.interp import run_kernel
    rng = rng_for(f"cuda-table-sizes-{cols}")
    a = from_mask(random_mask(rng, (40, 30), 0.15), rng, np.float64)
    b = from_mask(random_mask(rng, (30, cols), 0.3), rng, np.float64)
    assemble = _cuda(SPGEMM, CSR3).lowered_kernels()[0]
    sizes = np.zeros(41, dtype=np.int32)
    run_kernel(assemble, {"A1_pos": a.indptr, "A1_crd": a.indices, "B1_pos": b.indptr,
                          "B1_crd": b.indices, "C1_pos": sizes, "size_i": 40, "size_j": cols,
                          "size_k": 30})
    products = np.array([np.diff(b.indptr)[a.indices[a.indptr[r]:a.indptr[r + 1]]].sum()
                         for r in range(40)])
    table = sizes[1:]
    assert np.all(table[products == 0] == 0)
    hashed = (products > 0) & (table < cols)
    assert np.all(table[hashed] >= 2 * products[hashed])
    assert np.all(table[hashed] & (table[hashed] - 1) == 0)          # powers of two
    assert np.all(table[(products > 0) & ~hashed] == cols)
    assert (products > 0).any()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 100, 257])
def test_lane_merge_sort_sorts_keys_with_their_values(n):
    """The warp's merge sort (a pass's merges on the lanes), run by the
    interpreter with its race check: keys at an offset, values alongside."""
    from spc.ir import hash_rows
    from spc.ir.interp import run_kernel
    from spc.ir.nodes import Buffer, Kernel, Param, Var, i64
    from spc.ir.verify import verify
    keys, vals = Buffer("keys", DType.I32), Buffer("vals", DType.F64)
    count = iter(range(1000))

    def fresh(stem):
        return Var(f"{stem}{next(count)}", DType.I64)
    w = Var("w", DType.I64)
    body = For(w, i64(0), i64(1), hash_rows.lane_merge_sort(keys, i64(n), i64(5), fresh,
                                                            carry=(vals,)), LoopKind.GPU_WARP)
    kernel = verify(Kernel("sort", (Param(keys, ParamRole.OUTPUT), Param(vals, ParamRole.OUTPUT)),
                           body))
    rng = np.random.default_rng(n)
    k = rng.permutation(10 * n + 1)[:n].astype(np.int32)
    a = np.full(5 + 2 * n + 3, -7, np.int32)
    v = np.zeros(len(a))
    a[5:5 + n], v[5:5 + n] = k, k * 0.5
    run_kernel(kernel, {"keys": a, "vals": v})
    assert a[5:5 + n].tolist() == sorted(k.tolist())
    assert (v[5:5 + n] == a[5:5 + n] * 0.5).all()
    assert (a[:5] == -7).all() and (a[5 + 2 * n:] == -7).all()


def test_deterministic_schedule_runs_a_thread_per_row_without_atomics():
    """deterministic=True: no atomic addition (its order changes from run to
    run): each row on its own thread, tables in the output's slots."""
    ck = spc.compile(SPGEMM, formats=CSR3, target="cuda", arch="sm_90", dtype="float64",
                     schedule=spc.Schedule(deterministic=True))
    compute = ck.lowered_kernels()[1]
    assert compute.gpu.grid is GridMode.THREAD
    assert not any(isinstance(n, CompareSwap) or getattr(n, "atomic", False)
                   for n in walk(compute.body))
    rng = rng_for("cuda-deterministic")
    a = from_mask(random_mask(rng, (20, 15), 0.2), rng, np.float64)
    b = from_mask(random_mask(rng, (15, 40), 0.2), rng, np.float64)
    _matches_scipy_and_compiles(ck, a, b)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sixteen_bit_products_sum_in_float32(dtype):
    """16-bit values: the shared table's sums and the output's slots (widened
    by widen_outputs) hold float32, as the CPU's workspace does; nvcc compiles."""
    ck = _cuda(SPGEMM, CSR3, dtype)
    compute = ck.lowered_kernels()[1]
    shared = {a.buf.name: a.buf.dtype for a in walk(compute.body) if isinstance(a, Alloc)
              and a.shared}
    assert sorted(shared.values(), key=str) == sorted([DType.I32, DType.F32, DType.I64,
                                                       DType.F32, DType.I32], key=str)
    assert compute.param("C_vals").value.dtype is DType.F32
    if NVCC is not None:
        code, log = nvcc(ck.source)
        assert code == 0, log


@pytest.mark.parametrize("cols", [200, 600], ids=["shared", "output"])
def test_direct_rows_gathered_by_the_lanes_drop_zeros_keep_nan(cols):
    """Direct tables (products at least half the index) gathered by the lanes:
    cancelled sums dropped (holes before later entries: the windows move
    values down in place), a NaN kept, in the shared table and the output's."""
    rng = rng_for(f"cuda-direct-lanes-{cols}")
    b = np.zeros((2, cols))
    b[0, :] = rng.uniform(1, 2, cols)
    b[1, ::3] = -b[0, ::3]                 # every third column cancels in row 0 of A @ B
    b[1, 7] = np.nan
    _same_product_as_scipy(_csr(b), rtol=0.0)


def _same_product_as_scipy(b, rtol: float):
    """A = [[1, 1], [0, 1]] times ``b`` through the interpreted CUDA kernels has
    scipy's pattern exactly (cancelled sums dropped, NaN kept) and its values
    (to ``rtol``; NaN equal to NaN)."""
    a = _csr([[1.0, 1.0], [0.0, 1.0]])
    c = _interpreted(SPGEMM, CSR3, a, b)
    expected = (a @ b).tocsr()
    expected.sort_indices()
    assert np.array_equal(c.indptr, expected.indptr)
    assert np.array_equal(c.indices, expected.indices)
    np.testing.assert_allclose(c.data, expected.data, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("per_row", [40, 400], ids=["shared", "output"])
def test_hashed_rows_gathered_by_the_lanes_drop_zeros_keep_nan(per_row):
    """Hashed tables (products far fewer than the index) compacted by the
    lanes 32 slots at a time and merge-sorted on them: cancelled sums dropped,
    a NaN kept, in the shared table and in the output's slots."""
    rng = rng_for(f"cuda-hashed-lanes-{per_row}")
    cols = 20000
    b = np.zeros((2, cols))
    where = rng.choice(cols, per_row, replace=False)
    b[0, where] = rng.uniform(1, 2, per_row)
    b[1, where[::3]] = -b[0, where[::3]]          # a third of the row cancels
    b[1, where[1]] = np.nan
    b[1, rng.choice(cols, 50, replace=False)] += 3.0
    _same_product_as_scipy(_csr(b), rtol=1e-15)


def test_other_emits_are_gathered_by_lane_zero(monkeypatch):
    """An emit of another shape than SpGEMM's plain one is run by lane 0
    (``for ht_lane in [0, 1) @gpu_lane``) through the lowerer's own statements,
    after the lanes' inserts: the interpreter's numbers and nvcc still agree."""
    import spc.passes.workspaces_gpu as wg
    monkeypatch.setattr(wg, "_emits_plainly", lambda *args: False)
    ck = _cuda(SPGEMM, CSR3)
    compute = ck.lowered_kernels()[1]
    lane0 = [n for n in walk(compute.body) if isinstance(n, For) and n.kind is LoopKind.GPU_LANE
             and isinstance(n.hi, Const) and n.hi.value == 1]
    assert len(lane0) >= 4            # {direct, hashed} x {shared, output}
    rng = rng_for("cuda-lane-zero")
    a = from_mask(random_mask(rng, (30, 20), 0.2), rng, np.float64)
    b = from_mask(random_mask(rng, (20, 700), 0.1), rng, np.float64)
    _matches_scipy_and_compiles(ck, a, b)
