"""The CUDA backend without a GPU: map_gpu's IR (golden text and the reference
interpreter before and after the pass), and every kernel of the test matrix
rendered to CUDA C and compiled with ``nvcc -arch=sm_90 -cubin`` (skipped only
where nvcc is absent).  Nothing here needs CuPy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cuda import CUDATarget, header_path
from spc.codegen.cuda_c import host_eval, launch_plan
from spc.ir.interp import run_kernel
from spc.ir.nodes import Buffer, DType, LoopKind, ParamRole
from spc.ir.printer import format_kernel
from spc.passes.flat_positions import flat_positions
from spc.passes.lane_groups import lane_groups
from spc.passes.map_gpu import map_gpu
from spc.passes.mark_noncanonical import mark_noncanonical
from spc.passes.overwrite_outputs import overwrite_outputs
from spc.passes.simplify import simplify
from spc.passes.unroll_jam import unroll_jam
from spc.passes.vector_loads import vector_loads

from matrices import MATRICES, assert_allclose, dense_operand
from test_expressions import CASES as EXPRESSION_CASES

REPO = Path(__file__).resolve().parent.parent
NAMED = ["spmv", "spmm", "sddmm"]
FORMATS = ["csr", "csc", "coo", "dcsr", "dense", "bsr(1,4)", "bsr(4,4)", "bsr(3,5)",
           "bsr(32,32)", "ell", "dia", "nm(2,4)", "nm(4,16)", "hyb"]
EXPRESSIONS = [
    ("C[i,j] = A[i,j]+B[i,j]", {"A": "csr", "B": "csr", "C": "csr"}),
    ("y[j] = A[i,j]*x[i]", {"A": "csr"}),
    ("s = A[i,j]*x[i]*y[j]", {"A": "csr"}),
    ("C[i,j] = A[i,j]+B[i,j]", {"A": "ell", "B": "csr", "C": "csr"}),
    ("C[i,j] = A[i,j]+B[i,j]", {"A": "dia", "B": "nm(4,4)"}),
    ("y[j] = A[i,j]*x[i]", {"A": "bsr(4,4)"}),
]


def _matrix():
    """(id, spc.compile kwargs) for every kernel the render tests cover."""
    out = [(f"{k}-{f}", dict(kernel=k, fmt=f)) for k in NAMED for f in FORMATS]
    out += [(f"{e}-{sorted(f.items())}", dict(kernel=e, formats=f)) for e, f in EXPRESSIONS]
    seen = {e for e, _ in EXPRESSIONS}
    for case in EXPRESSION_CASES:
        for formats in case.format_sets:
            key = f"{case.expr}-{sorted(formats.items())}"
            if key not in seen:
                seen.add(key)
                out.append((f"{case.id}-{sorted(formats.items())}",
                            dict(kernel=case.expr, formats=formats)))
    return out


MATRIX = _matrix()


def _compile(kw, deterministic=False, dtype="float32"):
    kw = dict(kw)
    kernel = kw.pop("kernel")
    return spc.compile(kernel, target="cuda", arch="sm_90", deterministic=deterministic,
                       dtype=dtype, **kw)


# ---------------------------------------------------------------------------
# Rendering without a GPU
# ---------------------------------------------------------------------------

def test_render_needs_no_gpu_and_inlines_the_header():
    k = spc.compile("spmm", fmt="csr", target="cuda", arch="sm_90")
    src = k.source
    assert not any(line.lstrip().startswith("#include") for line in src.splitlines())
    assert "spc_warp_sum" in src and "__global__" in src
    assert "@gpu_warp" in k.ir and "@gpu_lane_split" in k.ir
    assert "# gpu: warp" in k.ir


def test_packaged_header_is_the_runtime_header():
    packaged = REPO / "spc" / "runtime_include" / "spc_cuda.h"
    assert packaged.read_text() == (REPO / "runtime" / "spc_cuda.h").read_text()
    assert header_path().read_text() == packaged.read_text()


def test_call_without_cupy_raises_instead_of_running_on_the_cpu():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: the cuda tests cover calls")
    except ImportError:
        pass
    k = spc.compile("spmv", fmt="csr", target="cuda", arch="sm_90")
    A = sp.random(5, 4, density=0.5, format="csr", dtype=np.float32, random_state=0)
    with pytest.raises(spc.UnsupportedError, match="CuPy"):
        k(A, np.ones(4, dtype=np.float32))


def test_arch_spellings():
    assert CUDATarget(arch="sm_90").arch == "90"
    assert CUDATarget(arch="compute_80").arch == "80"
    assert CUDATarget(arch="9.0").arch == "90"
    with pytest.raises(spc.UnsupportedError):
        CUDATarget(arch="hopper")


# ---------------------------------------------------------------------------
# map_gpu: golden IR
# ---------------------------------------------------------------------------

def _lowered(kernel, **kw):
    ck = spc.compile(kernel, **kw)
    return [simplify(k) for k in ck._variant(DType.I32).program.kernels]


GOLDEN_SPMV = """\
kernel spmv_csr_dense_dense(in A1_crd: i32*, in A1_pos: i32*, in A_vals: f32*, in x_vals: f32*, out y_vals: f32*, size size_i: i64, size size_j: i64):
  # order: i,j
  # output: dense
  # outer_independent: i
  # gpu: warp
  # gpu_unroll: 4
  for i in [0, size_i) @gpu_warp:
    let A0_p0: i64 = i
    let y0_p1: i64 = i
    let acc: f32 = 0.0f
    let acc_lane: f32 = 0.0f
    for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]) @gpu_lane:
      let j: i64 = A1_crd[A1_p2]
      let x0_p4: i64 = j
      acc_lane = acc_lane + A_vals[A1_p2] * x_vals[x0_p4]
    acc = acc + warp_sum(acc_lane)
    y_vals[y0_p1] = acc
"""

GOLDEN_SPMM = """\
kernel spmm_csr_dense_dense(in A1_crd: i32*, in A1_pos: i32*, in A_vals: f32*, in B_vals: f32*, out C_vals: f32*, size size_i: i64, size size_j: i64, size size_k: i64):
  # order: i,k,j
  # output: dense
  # outer_independent: i
  # gpu: warp
  # gpu_unroll: 4
  for i in [0, size_i) @gpu_warp:
    let A0_p0: i64 = i
    let C0_p1: i64 = i
    for j in [0, size_j) @gpu_lane_split:
      let C_vals_reg: f32 = 0.0f
      for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]):
        let k: i64 = A1_crd[A1_p2]
        let B0_p4: i64 = k
        let B1_p5: i64 = B0_p4 * size_j + j
        C_vals_reg = C_vals_reg + A_vals[A1_p2] * B_vals[B1_p5]
      C_vals[C0_p1 * size_j + j] += C_vals_reg
"""

GOLDEN_SDDMM = """\
kernel sddmm_csr_csr_dense_dense(in A1_crd: i32*, in A1_pos: i32*, in A_vals: f32*, out S_vals: f32*, in X_vals: f32*, in Y_vals: f32*, size size_i: i64, size size_j: i64, size size_k: i64):
  # order: i,j,k
  # output: pattern
  # outer_independent: i
  # gpu: warp
  # gpu_unroll: 4
  # gpu_group: k
  # gpu_flat: A1_p3
  for i in [0, size_i) @gpu_warp:
    let A0_p0: i64 = i
    let X0_p1: i64 = i
    let S0_p2: i64 = i
    for A1_p3 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]) @gpu_lane:
      let j: i64 = A1_crd[A1_p3]
      let Y0_p5: i64 = j
      let acc: f32 = 0.0f
      for k in [0, size_k):
        let X1_p6: i64 = X0_p1 * size_k + k
        let Y1_p7: i64 = Y0_p5 * size_k + k
        acc = acc + X_vals[X1_p6] * Y_vals[Y1_p7]
      S_vals[A1_p3] = A_vals[A1_p3] * acc
"""

GOLDEN_TRANSPOSED = """\
kernel ka906e186_csr_dense_dense(in A1_crd: i32*, in A1_pos: i32*, in A_vals: f32*, in x_vals: f32*, out y_vals: f32*, size size_i: i64, size size_j: i64):
  # order: i,j
  # output: dense
  # gpu: warp
  # gpu_unroll: 4
  for i in [0, size_i) @gpu_warp:
    let A0_p0: i64 = i
    let x0_p1: i64 = i
    for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]) @gpu_lane:
      let j: i64 = A1_crd[A1_p2]
      let y0_p4: i64 = j
      y_vals[y0_p4] atomic+= A_vals[A1_p2] * x_vals[x0_p1]
"""

GOLDEN_SCALAR = """\
kernel k6df2a8b8_csr_dense_dense_dense(in A1_crd: i32*, in A1_pos: i32*, in A_vals: f32*, out s_vals: f32*, in x_vals: f32*, in y_vals: f32*, size size_i: i64, size size_j: i64):
  # order: i,j
  # output: dense
  # gpu: warp
  # gpu_unroll: 4
  for i in [0, size_i) @gpu_warp:
    let acc: f32 = 0.0f
    let A0_p0: i64 = i
    let x0_p1: i64 = i
    let acc_lane: f32 = 0.0f
    for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]) @gpu_lane:
      let j: i64 = A1_crd[A1_p2]
      let y0_p4: i64 = j
      acc_lane = acc_lane + A_vals[A1_p2] * x_vals[x0_p1] * y_vals[y0_p4]
    acc = acc + warp_sum(acc_lane)
    s_vals[0] atomic+= acc
"""

GOLDEN_SCALAR_DETERMINISTIC = """\
kernel k6df2a8b8_csr_dense_dense_dense(in A1_crd: i32*, in A1_pos: i32*, in A_vals: f32*, out s_vals: f32*, in x_vals: f32*, in y_vals: f32*, size size_i: i64, size size_j: i64):
  # order: i,j
  # output: dense
  # gpu: single_warp
  # gpu_unroll: 4
  let acc: f32 = 0.0f
  for i in [0, size_i):
    let A0_p0: i64 = i
    let x0_p1: i64 = i
    let acc_lane: f32 = 0.0f
    for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]) @gpu_lane:
      let j: i64 = A1_crd[A1_p2]
      let y0_p4: i64 = j
      acc_lane = acc_lane + A_vals[A1_p2] * x_vals[x0_p1] * y_vals[y0_p4]
    acc = acc + warp_sum(acc_lane)
  s_vals[0] = acc
"""


@pytest.mark.parametrize("kernel, kw, deterministic, golden", [
    ("spmv", dict(fmt="csr"), False, GOLDEN_SPMV),
    ("spmm", dict(fmt="csr"), False, GOLDEN_SPMM),
    ("sddmm", dict(fmt="csr"), False, GOLDEN_SDDMM),
    ("y[j] = A[i,j]*x[i]", dict(formats={"A": "csr"}), False, GOLDEN_TRANSPOSED),
    ("s = A[i,j]*x[i]*y[j]", dict(formats={"A": "csr"}), False, GOLDEN_SCALAR),
    ("s = A[i,j]*x[i]*y[j]", dict(formats={"A": "csr"}), True, GOLDEN_SCALAR_DETERMINISTIC),
], ids=["spmv", "spmm", "sddmm", "transposed", "scalar", "scalar-deterministic"])
def test_map_gpu_golden(kernel, kw, deterministic, golden):
    (k,) = _lowered(kernel, **kw)
    mapped = simplify(map_gpu(k, deterministic=deterministic))
    assert format_kernel(mapped) == golden
    # the target's pipeline gives the same IR, marked with what it accepts and
    # what it overwrites, its lane groups and flat positions recorded, its lane loops
    # jammed and its lane group's loop reading vectors where they can
    ck = spc.compile(kernel, target="cuda", arch="sm_90", deterministic=deterministic, **kw)
    assert ck.ir == format_kernel(vector_loads(unroll_jam(flat_positions(lane_groups(
        overwrite_outputs(mark_noncanonical(mapped)))))))


def test_deterministic_mode_has_no_atomics():
    for _, kw in MATRIX:
        assert "atomic" not in _compile(kw, deterministic=True).ir


def test_sparse_outputs_map_one_thread_per_row():
    ck = _compile(dict(kernel="C[i,j] = A[i,j]+B[i,j]",
                       formats={"A": "csr", "B": "csr", "C": "csr"}))
    assert ck.ir.count("@gpu_thread") == 2      # assemble and compute


# ---------------------------------------------------------------------------
# map_gpu: the interpreter gives the same numbers before and after
# ---------------------------------------------------------------------------

class InterpLauncher:
    """Runs a kernel in the reference interpreter with the CPU runtime's calling
    convention (buffers and sizes in parameter order)."""

    def __init__(self, kernel, launch=None):
        self.kernel = kernel
        self.launch = launch

    def __call__(self, buffers, sizes, nthreads=1):
        args, b, s = {}, iter(buffers), iter(sizes)
        for p in self.kernel.params:
            args[p.name] = next(b) if isinstance(p.value, Buffer) else next(s)
        run_kernel(self.kernel, args, launch=self.launch)


def _run_with(kernels, kernel, kw, dtype, *args, launch=None, **kwargs):
    """Call a CPU CompiledKernel of ``kernel`` whose launchers interpret ``kernels``
    (with the launch choices ``launch``, see ``run_kernel``)."""
    ck = spc.compile(kernel, dtype=dtype, **kw)
    v = ck._variant(DType.I32)
    assert [k.params for k in v.kernels] == [k.params for k in kernels]
    v.launchers = [InterpLauncher(k, launch) for k in kernels]
    ck._plan = None          # no fast path: it would call the launchers the same way anyway
    return ck(*args, **kwargs)


SMALL = [c for c in MATRICES if c.id in ("tall_60x17", "empty_rows_30x25", "nnz0_12x15",
                                          "rows0_0x9", "dense_row_40x50", "one_1x1")]


def _named_operands(kernel, A, dtype):
    m, k = A.shape
    if kernel == "spmv":
        return (dense_operand(f"x{k}", (k,), dtype),)
    if kernel == "spmm":
        return (dense_operand(f"B{k}", (k, 3), dtype),)
    return (dense_operand(f"X{m}", (m, 3), dtype), dense_operand(f"Y{k}", (k, 3), dtype))


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("matrix", SMALL, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", NAMED)
def test_map_gpu_keeps_named_kernel_results(kernel, fmt, matrix, deterministic):
    if fmt == "hyb":
        pytest.skip("hyb runs an ell and a csr kernel, both covered here")
    A = matrix.build(np.float64)
    if A.shape[0] * A.shape[1] > 800:
        A = A[:20, :20].tocsr()
    if fmt.startswith("nm"):
        from test_formats import nm_prune
        A = nm_prune(A, *(int(x) for x in fmt[3:-1].split(",")))
    ops = _named_operands(kernel, A, np.float64)
    cuda = spc.compile(kernel, fmt=fmt, target="cuda", arch="sm_90", dtype="float64",
                       deterministic=deterministic)
    got = _run_with(cuda._variant(DType.I32).kernels, kernel, dict(fmt=fmt), "float64", A, *ops)
    want = spc.compile(kernel, fmt=fmt, dtype="float64")(A, *ops)
    assert_allclose(got, want, np.float64)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("expr, formats", EXPRESSIONS, ids=[e for e, _ in EXPRESSIONS])
def test_map_gpu_keeps_expression_results(expr, formats, deterministic):
    rng = np.random.default_rng(5)
    A = sp.random(9, 7, density=0.35, format="csr", random_state=rng)
    B = sp.random(9, 7, density=0.35, format="csr", random_state=rng)
    inputs = {"A": A}
    if "B" in expr:
        inputs["B"] = B
    if "x[i]" in expr:
        inputs["x"] = rng.uniform(-1, 1, 9)
    if "y[j]" in expr and not expr.startswith("y"):
        inputs["y"] = rng.uniform(-1, 1, 7)
    cuda = spc.compile(expr, formats=formats, target="cuda", arch="sm_90", dtype="float64",
                       deterministic=deterministic)
    got = _run_with(cuda._variant(DType.I32).kernels, expr, dict(formats=formats), "float64",
                    **inputs)
    want = spc.compile(expr, formats=formats, dtype="float64")(**inputs)
    assert_allclose(got, want, np.float64)


# ---------------------------------------------------------------------------
# Launch plans
# ---------------------------------------------------------------------------

def test_launch_plans_size_the_grid_from_the_sizes():
    spmm = _compile(dict(kernel="spmm", fmt="csr"))._variant(DType.I32).kernels[0]
    plan = launch_plan(spmm)
    sizes = {"size_i": 100, "size_j": 128, "size_k": 50}
    assert plan.mode == "warp"
    assert host_eval(plan.hi, sizes) - host_eval(plan.lo, sizes) == 100
    assert host_eval(plan.chunk_hi, sizes) == 128
    dcsr = _compile(dict(kernel="spmm", fmt="dcsr"))._variant(DType.I32).kernels[0]
    assert host_eval(launch_plan(dcsr).hi, sizes) is None     # reads A0_pos: persistent grid
    coo = _compile(dict(kernel="spmv", fmt="coo"))._variant(DType.I32).kernels[0]
    assert launch_plan(coo).mode == "single_warp"


def test_lane_loops_are_never_nested_and_kinds_are_gpu_kinds():
    for _, kw in MATRIX:
        ck = _compile(kw)
        for k in (k for part in getattr(ck, "kernels", [ck]) if hasattr(part, "_variant")
                  for k in part._variant(DType.I32).kernels):
            kinds = {n.kind for n in _walk_fors(k.body)}
            assert kinds <= {LoopKind.SERIAL, LoopKind.GPU_BLOCK, LoopKind.GPU_WARP,
                             LoopKind.GPU_THREAD, LoopKind.GPU_LANE, LoopKind.GPU_LANE_SPLIT}


def _walk_fors(s):
    from spc.ir.traverse import walk
    from spc.ir.nodes import For
    return [n for n in walk(s) if isinstance(n, For)]


# ---------------------------------------------------------------------------
# nvcc compiles every generated kernel
# ---------------------------------------------------------------------------

from cuda_env import NVCC, nvcc as _nvcc, nvcc_many  # noqa: E402


@pytest.fixture(scope="module")
def nvcc_results():
    """Every rendered source of the matrix compiled once, many to an nvcc process
    (``nvcc_many``: each source's own verdict and log, as nvcc alone gives it)."""
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    jobs = {}
    for ident, kw in MATRIX:
        for det, dtype in VARIANTS if ident in CORE else VARIANTS[:1]:
            jobs[(ident, det, dtype)] = _compile(kw, det, dtype).source
    verdicts = nvcc_many(list(jobs.values()))
    return {key: (verdict, jobs[key]) for key, verdict in zip(jobs, verdicts)}


VARIANTS = [(False, "float32"), (True, "float32"), (False, "float64"), (False, "float16"),
            (False, "bfloat16")]
# the named kernels and the expressions in every variant, the rest in float32
CORE = {i for i, _ in MATRIX[:len(NAMED) * len(FORMATS) + len(EXPRESSIONS)]}
NVCC_PARAMS = [pytest.param(ident, det, dtype, id=f"{ident}-{dtype}{'-det' if det else ''}")
               for ident, _ in MATRIX
               for det, dtype in (VARIANTS if ident in CORE else VARIANTS[:1])]


@pytest.mark.parametrize("ident, deterministic, dtype", NVCC_PARAMS)
def test_nvcc_compiles_rendered_source(nvcc_results, ident, deterministic, dtype):
    (code, log), source = nvcc_results[(ident, deterministic, dtype)]
    assert code == 0, f"nvcc failed:\n{log}\n--- source ---\n{source}"


def test_two_kernel_source_is_one_translation_unit():
    """An assembled output has two kernels; their joined .source compiles as one."""
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    ck = _compile(dict(kernel="C[i,j] = A[i,j]+B[i,j]",
                       formats={"A": "csr", "B": "csr", "C": "csr"}))
    assert ck.source.count("__global__") == 4          # two kernels, each 64- and 32-bit
    code, log = _nvcc(ck.source)
    assert code == 0, log


def test_params_roles_render_const():
    ck = _compile(dict(kernel="spmv", fmt="csr"))
    k = ck._variant(DType.I32).kernels[0]
    for p in k.params:
        if p.role is ParamRole.INPUT:
            assert f"const {'int' if p.value.dtype is DType.I32 else 'float'}* __restrict__ {p.name}" \
                in ck.source


@pytest.mark.parametrize("kernel, order", [
    ("spmv", ("i_blk", "j_in", "i_in", "j_blk")),
    ("spmm", ("i_blk", "k_in", "i_in", "k_blk", "j")),
    ("spmm", ("i_in", "k_in", "i_blk", "k_blk", "j")),
])
def test_collapse_blocks_never_fuses_a_reduction_into_the_independent_loop(kernel, order):
    """A loop order with a reduction's in-block index second once made collapse_blocks
    fuse it with the block rows and call the fused loop independent: warps then
    raced on the same outputs (found by the schedule-space GPU test).  Fused or not,
    the loop called independent must write its own entries."""
    k = spc.compile(kernel, fmt="bsr(2,2)", target="cuda", arch="sm_90",
                    schedule=spc.Schedule(order=order))
    independent = k.lowered_kernels()[0].outer_independent
    assert independent is None or independent.startswith(("i_blk", "i_in"))
    assert "j_in_flat" not in k.ir and "k_in_flat" not in k.ir


# ---------------------------------------------------------------------------
# The launch shape is a typed field of the IR, printed with it
# ---------------------------------------------------------------------------

def test_the_launch_shape_is_typed_and_printed():
    from spc.ir.nodes import GpuMapping, GridMode
    k = spc.compile("sddmm", fmt="csr", target="cuda", arch="sm_90")
    kernel = k.lowered_kernels()[0]
    assert kernel.gpu == GpuMapping(GridMode.WARP, unroll=4, group="k", flat="A1_p3")
    assert not any(key.startswith("gpu") for key, _ in kernel.attrs)
    assert ["  # gpu: warp", "  # gpu_unroll: 4", "  # gpu_group: k",
            "  # gpu_flat: A1_p3"] == [line for line in k.ir.splitlines() if "# gpu" in line]
    cpu = spc.compile("sddmm", fmt="csr")
    assert cpu.lowered_kernels()[0].gpu is None and "# gpu" not in cpu.ir


@pytest.mark.parametrize("change, message", [
    (dict(group="j"), "gpu group 'j' is not a serial loop"),
    (dict(flat="k"), "gpu flat 'k' is not a lane loop"),
    (dict(unroll=0), "gpu unroll 0 < 1"),
])
def test_the_verifier_checks_the_launch_shape(change, message):
    from dataclasses import replace
    from spc.errors import CompileError
    from spc.ir.verify import verify
    kernel = spc.compile("sddmm", fmt="csr", target="cuda", arch="sm_90").lowered_kernels()[0]
    with pytest.raises(CompileError, match=message):
        verify(replace(kernel, gpu=replace(kernel.gpu, **change)))
