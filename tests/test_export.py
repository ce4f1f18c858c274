"""spc.export: the CPU artifact built with ``cc`` through its Makefile and run on
Matrix Market files (written by scipy.io.mmwrite) with no Python, its result
compared with spc's own; the CUDA artifact compiled with nvcc for sm_90; and
the kernels export refuses, with the reason."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import spc
from spc.exporter.example import DEFAULT_N, fill_value
from spc.exporter.plan import compiled_of, plan_export

from matrices import MATRICES, dense_operand

CC = shutil.which("cc")
MAKE = shutil.which("make")
NVCC = shutil.which("nvcc")
needs_cc = pytest.mark.skipif(CC is None or MAKE is None, reason="cc or make is not installed")
KERNELS = ["spmv", "spmm", "sddmm"]
DTYPES = ["float32", "float64"]
RTOL = {"float32": 1e-6, "float64": 1e-13}   # the same IR, optimized the same way
N = 5                                         # SpMM's columns, SDDMM's inner extent


def dense_inputs(kernel: str, A, dtype) -> list[np.ndarray]:
    """The dense operands of ``kernel`` for sparse operand ``A``."""
    m, k = A.shape
    if kernel == "spmv":
        return [dense_operand("x", (k,), dtype)]
    if kernel == "spmm":
        return [dense_operand("B", (k, N), dtype)]
    return [dense_operand("X", (m, N), dtype), dense_operand("Y", (k, N), dtype)]


def write_mtx(path: Path, x) -> str:
    """``x`` as a Matrix Market file (a vector as one column); its path.  Values
    are written as float64 (exact for float32): scipy's writer pads float32
    values with NUL bytes at precision=17."""
    if isinstance(x, np.ndarray) and x.ndim == 1:
        x = x.reshape(-1, 1)
    x = x.astype(np.float64)
    scipy.io.mmwrite(str(path), x, precision=17)
    return str(path)


def read_result(path: Path) -> np.ndarray:
    """The example's output file as a dense array.  Array files are parsed here:
    scipy.io.mmread dies of a floating point exception on an empty one."""
    text = path.read_text()
    if text.startswith("%%MatrixMarket matrix array"):
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith("%")]
        rows, cols = map(int, lines[0].split())
        vals = np.array([float(v) for v in lines[1:]], dtype=np.float64)
        assert len(vals) == rows * cols
        return vals.reshape(cols, rows).T
    return scipy.io.mmread(str(path)).toarray()


def as_dense(result, shape) -> np.ndarray:
    d = result.toarray() if sp.issparse(result) else np.asarray(result)
    return d.reshape(shape)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(kernel, dtype) -> (compiled kernel, directory with the built example)."""
    cache = {}

    def get(kernel: str, dtype: str, index: str = "int32"):
        key = (kernel, dtype, index)
        if key not in cache:
            k = spc.compile(kernel, fmt="csr", dtype=dtype)
            d = tmp_path_factory.mktemp(f"{kernel}_{dtype}_{index}")
            spc.export(k, d, index=index)
            r = subprocess.run([MAKE, "-C", str(d), "CFLAGS=-O2 -std=c99 -Wall -Werror "
                                "-Wno-unused-function -D_POSIX_C_SOURCE=199309L"],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr
            cache[key] = (k, d)
        return cache[key]
    return get


def run_example(d: Path, files: list[str], *extra: str) -> Path:
    out = d / "out.mtx"
    r = subprocess.run([str(d / "example"), *files, "-o", str(out), *extra],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out


@needs_cc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", MATRICES, ids=str)
def test_cpu_export_matches_spc(built, tmp_path, kernel, dtype, case):
    k, d = built(kernel, dtype)
    A = case.build(dtype)
    dense = dense_inputs(kernel, A, dtype)
    files = [write_mtx(tmp_path / "A.mtx", A)] + [
        write_mtx(tmp_path / f"in{n}.mtx", x) for n, x in enumerate(dense)]
    expected = k(A, *dense)
    got = read_result(run_example(d, files))
    want = as_dense(expected, got.shape)
    assert got.shape == (want.shape if want.ndim == 2 else got.shape)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=RTOL[dtype], atol=0)


@needs_cc
@pytest.mark.parametrize("kernel", KERNELS)
def test_cpu_export_fills_missing_dense_inputs(built, tmp_path, kernel):
    """Given only the matrix, the example fills the dense inputs as documented
    (``fill_value``) and takes -n for an extent no file has."""
    k, d = built(kernel, "float64")
    A = MATRICES[0].build(np.float64)
    shapes = [x.shape for x in dense_inputs(kernel, A, np.float64)]
    shapes = [tuple(DEFAULT_N if s == N else s for s in shape) for shape in shapes]
    dense = [np.array([fill_value(e, n + 1) for e in range(int(np.prod(shape)))]).reshape(shape)
             for n, shape in enumerate(shapes)]
    got = read_result(run_example(d, [write_mtx(tmp_path / "A.mtx", A)]))
    np.testing.assert_allclose(got.reshape(-1), as_dense(k(A, *dense), -1), rtol=1e-13)


@needs_cc
@pytest.mark.parametrize("kernel", KERNELS)
def test_cpu_export_sums_unsorted_duplicate_entries(built, tmp_path, kernel):
    """A coordinate file in any order with repeated entries reads as scipy sums it."""
    rows = np.array([3, 0, 3, 1, 0, 3, 2])
    cols = np.array([1, 2, 1, 0, 2, 4, 3])
    vals = np.array([0.5, -1.0, 0.25, 2.0, 3.0, -0.75, 1.5])
    coo = sp.coo_matrix((vals, (rows, cols)), shape=(4, 5))
    k, d = built(kernel, "float64")
    A = coo.tocsr()
    A.sum_duplicates()
    dense = dense_inputs(kernel, A, np.float64)
    files = [write_mtx(tmp_path / "A.mtx", coo)] + [
        write_mtx(tmp_path / f"in{n}.mtx", x) for n, x in enumerate(dense)]
    got = read_result(run_example(d, files))
    np.testing.assert_allclose(got.reshape(-1), as_dense(k(A, *dense), -1), rtol=1e-13)


@needs_cc
def test_cpu_export_reads_symmetric_files(built, tmp_path):
    k, d = built("spmv", "float64")
    path = tmp_path / "S.mtx"
    path.write_text("%%MatrixMarket matrix coordinate real symmetric\n3 3 3\n"
                    "1 1 2.0\n3 1 -1.5\n2 2 4.0\n")
    x = np.array([1.0, 2.0, 3.0])
    got = read_result(run_example(d, [str(path), write_mtx(tmp_path / "x.mtx", x)]))
    S = np.array([[2.0, 0, -1.5], [0, 4.0, 0], [-1.5, 0, 0]])
    np.testing.assert_allclose(got.reshape(-1), S @ x, rtol=1e-15)


@needs_cc
@pytest.mark.parametrize("kernel", KERNELS)
def test_cpu_export_threads_give_the_same_result(built, tmp_path, kernel):
    """-t 2 starts a pthread for the call; rows are split, the result is identical."""
    k, d = built(kernel, "float64")
    A = MATRICES[-1].build(np.float64)
    dense = dense_inputs(kernel, A, np.float64)
    files = [write_mtx(tmp_path / "A.mtx", A)] + [
        write_mtx(tmp_path / f"in{n}.mtx", x) for n, x in enumerate(dense)]
    one = read_result(run_example(d, files, "-t", "1"))
    two = read_result(run_example(d, files, "-t", "2", "-r", "3"))
    np.testing.assert_array_equal(one, two)


@needs_cc
def test_cpu_export_int64_indices(built, tmp_path):
    k, d = built("spmm", "float32", "int64")
    assert "const int64_t *A1_pos" in (d / f"{k.name}.h").read_text()
    A = MATRICES[0].build(np.float32)
    B = dense_operand("B", (A.shape[1], N), np.float32)
    got = read_result(run_example(d, [write_mtx(tmp_path / "A.mtx", A),
                                      write_mtx(tmp_path / "B.mtx", B)]))
    np.testing.assert_allclose(got, k(A, B), rtol=1e-6)


@needs_cc
def test_cpu_example_rejects_mismatched_shapes(built, tmp_path):
    k, d = built("spmv", "float64")
    A = MATRICES[0].build(np.float64)
    x = np.ones(A.shape[1] + 1)
    r = subprocess.run([str(d / "example"), write_mtx(tmp_path / "A.mtx", A),
                        write_mtx(tmp_path / "x.mtx", x)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "x axis 0 has 41 entries, not 40" in r.stderr


def test_header_lists_every_parameter_in_ir_order(tmp_path):
    """The header is generated from Kernel.params: names in order, a comment each."""
    k = spc.compile("sddmm", fmt="csr", dtype="float32")
    spc.export(k, tmp_path, example=False)
    kernel = k.lowered_kernels()[0]
    header = (tmp_path / f"{kernel.name}.h").read_text()
    run = header[header.index(f"{kernel.name}_run("):]
    names = re.findall(r"\*?(\w+),\s*/\*", run)
    assert names == [p.name for p in kernel.params]
    assert "S_vals needs no initialisation" in header
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{kernel.name}{ext}" for ext in (".h", ".ll", ".o"))


def test_spmm_header_asks_for_a_zeroed_output(tmp_path):
    k = spc.compile("spmm", fmt="csr", dtype="float64")
    spc.export(k, tmp_path, example=False)
    assert "C_vals must hold zeros before each call" in \
        (tmp_path / f"{k.lowered_kernels()[0].name}.h").read_text()


def test_dtype_none_kernel_exports_the_asked_type(tmp_path):
    k = spc.compile("spmv", fmt="csr")
    spc.export(k, tmp_path, dtype="float64", example=False)
    assert "const double *A_vals" in next(tmp_path.glob("*.h")).read_text()


@pytest.mark.parametrize("make, args, message", [
    (lambda: spc.compile("spmm", fmt="csr", reorder_rows="length"), {},
     "computed by the inspector"),
    (lambda: spc.compile("spmv", fmt="csr", dtype="float16"), {}, "float16"),
    (lambda: spc.compile("C[i,j] = A[i,j] + B[i,j]",
                         formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32"), {},
     "IR kernels in sequence"),
    (lambda: spc.compile("spmv", fmt="bsr(2,2)", dtype="float32"), {}, "bsr"),
    (lambda: spc.compile("spmv", fmt="csr", dtype="float32"), {"index": "int16"}, "int16"),
    (lambda: spc.compile("spmv", fmt="csr", dtype="float32"), {"dtype": "float64"},
     "dtype=None"),
    (lambda: spc.compile("y[i] = A[i,j]*x[j]; z[i] = y[i]*y[i]", fuse=False,
                         formats={"A": "csr"}, dtype="float32"), {}, "several compiled"),
], ids=["inspector", "float16", "assembled", "bsr-example", "index", "dtype", "program"])
def test_export_refuses_with_a_reason(tmp_path, make, args, message):
    with pytest.raises(spc.ExportError, match=re.escape(message)):
        spc.export(make(), tmp_path, **args)


def test_bsr_exports_without_the_example(tmp_path):
    """A format the example does not read still exports: object, IR and header."""
    k = spc.compile("spmv", fmt="bsr(2,2)", dtype="float32")
    spc.export(k, tmp_path, example=False)
    header = next(tmp_path.glob("*.h")).read_text()
    assert "A's level" in header and (tmp_path / "Makefile").exists() is False


def test_plan_describes_csr_arrays():
    plan = plan_export(compiled_of(spc.compile("spmv", fmt="csr", dtype="float32"), None))
    what = {d.name: d.what for d in plan.params}
    assert what["A1_pos"].startswith("A's level 1 (compressed, axis 1): positions")
    assert what["size_j"] == "extent of index j (A axis 1, x axis 0)"


@pytest.mark.skipif(NVCC is None or MAKE is None, reason="nvcc or make is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_cuda_export_builds_with_nvcc(tmp_path, kernel, dtype):
    """The CUDA export (kernel, launch function, example) compiles and links for
    sm_90 through its Makefile; no GPU is needed to build it."""
    k = spc.compile(kernel, fmt="csr", dtype=dtype, target="cuda", arch="sm_90")
    spc.export(k, tmp_path)
    name = k.lowered_kernels()[0].name
    assert f"{name}_launch(" in (tmp_path / f"{name}.h").read_text()
    assert k.source in (tmp_path / f"{name}.cu").read_text()    # the rendered kernel, as is
    r = subprocess.run([MAKE, "-C", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "example").exists()


def test_cuda_launch_follows_the_launch_plan(tmp_path):
    """SDDMM's launch takes the stored entries' count (flat enumeration and the
    split need it) and picks a lane-group variant; SpMM's decides spc_wide."""
    sddmm = spc.compile("sddmm", fmt="csr", dtype="float32", target="cuda", arch="sm_90")
    spc.export(sddmm, tmp_path / "sddmm", example=False)
    cu = next((tmp_path / "sddmm").glob("*.cu")).read_text()
    assert "long long len_A1_crd" in cu and "case 32:" in cu
    spmm = spc.compile("spmm", fmt="csr", dtype="float32", target="cuda", arch="sm_90",
                       wide=False)
    spc.export(spmm, tmp_path / "spmm", example=False)
    cu = next((tmp_path / "spmm").glob("*.cu")).read_text()
    assert "int wide = 0;" in cu


def _gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return r.returncode == 0 and "GPU" in r.stdout


@pytest.mark.cuda
@pytest.mark.skipif(NVCC is None or MAKE is None, reason="nvcc or make is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", [MATRICES[-1], MATRICES[7], MATRICES[8]], ids=str)
def test_cuda_export_runs_and_matches_spc(tmp_path, kernel, dtype, case):
    """On a GPU: the CUDA example, built with nvcc for the device (ARCH=native),
    gives spc's CPU result (the GPU sums in another order: a float tolerance)."""
    if not _gpu_present():
        pytest.skip("no NVIDIA GPU (nvidia-smi -L lists none)")
    k = spc.compile(kernel, fmt="csr", dtype=dtype, target="cuda")
    spc.export(k, tmp_path, dtype=None)
    r = subprocess.run([MAKE, "-C", str(tmp_path), "ARCH=native"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    A = case.build(dtype)
    dense = dense_inputs(kernel, A, dtype)
    files = [write_mtx(tmp_path / "A.mtx", A)] + [
        write_mtx(tmp_path / f"in{n}.mtx", x) for n, x in enumerate(dense)]
    got = read_result(run_example(tmp_path, files, "-r", "10"))
    want = as_dense(spc.compile(kernel, fmt="csr", dtype=dtype)(A, *dense), got.shape)
    tol = {"float32": 1e-4, "float64": 1e-10}[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


EXPRESSIONS = [      # (expression, formats, operands by name: "A" sparse 30 x 25, else dense)
    ("s = A[i,j]*x[i]*y[j]", {"A": "csr"}, {"x": (30,), "y": (25,)}),
    ("y[j] = A[i,j]*x[i]", {"A": "csr"}, {"x": (30,)}),
    ("C[i,j] = A[i,j]*B[i,j]", {"A": "csr"}, {"B": (30, 25)}),
    ("C[i,j] = A[i,j]*B[i,j]", {"A": "csr", "C": "csr"}, {"B": (30, 25)}),
    ("y[i] = A[i,j]*x[j]*b[i]", {"A": "csr"}, {"x": (25,), "b": (30,)}),
]


@needs_cc
@pytest.mark.parametrize("expr, formats, dense", EXPRESSIONS, ids=[
    "scalar", "transposed-spmv", "dense-output", "pattern-output", "scaled-rows"])
def test_cpu_export_of_expressions(tmp_path, expr, formats, dense):
    """The example binds any csr/dense expression from the IR's description: scalar,
    matrix and pattern outputs, outputs the kernel adds into."""
    k = spc.compile(expr, formats=formats, dtype="float64")
    spc.export(k, tmp_path)
    r = subprocess.run([MAKE, "-C", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    A = MATRICES[8].build(np.float64)                  # empty_rows_30x25
    ops = {"A": A} | {n: dense_operand(n, shape, np.float64) for n, shape in dense.items()}
    files = [write_mtx(tmp_path / f"{n}.mtx", ops[n]) for n in k.input_names]
    got = read_result(run_example(tmp_path, files))
    want = k(**ops)
    want = want.toarray() if sp.issparse(want) else np.asarray(want)
    np.testing.assert_allclose(got.reshape(-1), want.reshape(-1), rtol=1e-13, atol=1e-15)


@needs_cc
def test_cpu_object_needs_no_spc_runtime(built):
    """The object's undefined symbols are libc's, libm's and pthreads' only: no
    spc thread pool, no libgomp."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    k, d = built("spmm", "float32")
    r = subprocess.run([nm, "-u", str(d / f"{k.name}.o")], capture_output=True, text=True)
    undefined = {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}
    assert undefined <= {"pthread_create", "pthread_join", "memset", "memcpy", "malloc",
                         "free"}, undefined


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("kernel, options", [
    ("spmv", dict(fmt="csr", parallel=False)),      # one warp in all
    ("spmv", dict(fmt="csc")),                       # atomic scatter
    ("spmm", dict(fmt="coo")),
    ("spmv", dict(fmt="ell")),                       # a level scalar
    ("spmm", dict(fmt="bsr(4,4)")),
    ("sddmm", dict(fmt="coo")),
], ids=["single-warp", "csc", "coo-spmm", "ell", "bsr", "coo-sddmm"])
def test_cuda_export_of_other_formats_compiles(tmp_path, kernel, options):
    """Formats the example does not read still export (example=False): the kernel
    and its launch function compile with nvcc for sm_90, without warnings."""
    k = spc.compile(kernel, dtype="float32", target="cuda", arch="sm_90", **options)
    spc.export(k, tmp_path, example=False)
    cu = next(tmp_path.glob("*.cu"))
    r = subprocess.run([NVCC, "-arch=sm_90", "-std=c++17", "-c", "-o", str(tmp_path / "k.o"),
                        str(cu)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr


DATA = Path("/work/shared/data/graphs")


@needs_cc
@pytest.mark.parametrize("graph", ["cora", "pubmed"])
def test_cpu_export_on_a_real_graph(built, tmp_path, graph):
    """A real symmetric pattern file (only its lower triangle stored), read by the
    example's reader; the result agrees with spc on scipy's reading of it."""
    source = DATA / f"{graph}.mtx.gz"
    if not source.exists():
        pytest.skip(f"{source} is absent (real matrices are in /work/shared/data)")
    import gzip
    path = tmp_path / f"{graph}.mtx"
    path.write_bytes(gzip.decompress(source.read_bytes()))
    k, d = built("spmv", "float64")
    A = scipy.io.mmread(str(path)).tocsr().astype(np.float64)
    x = dense_operand("x", (A.shape[1],), np.float64)
    got = read_result(run_example(d, [str(path), write_mtx(tmp_path / "x.mtx", x)]))
    np.testing.assert_allclose(got.reshape(-1), k(A, x), rtol=1e-13)


GRID_KERNELS = [
    ("spmv", {}), ("spmm", {}), ("spmm", {"wide": True}), ("spmm", {"wide": False}),
    ("sddmm", {}), ("sddmm", {"flat": False}), ("sddmm", {"flat": False, "split": 3}),
    ("sddmm", {"group": 4, "flat": False}), ("spmv", {"parallel": False}),
]


@needs_cc
@pytest.mark.parametrize("sms", [132, 8])
@pytest.mark.parametrize("kernel, knobs", GRID_KERNELS,
                         ids=[f"{k}-{sorted(o.items())}" for k, o in GRID_KERNELS])
def test_cuda_grid_is_spc_launchers(tmp_path, monkeypatch, kernel, knobs, sms):
    """The exported <name>_grid, compiled with cc, gives CudaLauncher.grid's launch
    (blocks, launch-choice arguments, lane-group size) for sizes from empty to large."""
    import ctypes
    import itertools
    from spc.codegen import cuda as cuda_target
    from spc.exporter.cuda import render_grid
    k = spc.compile(kernel, fmt="csr", dtype="float32", target="cuda", arch="sm_90", **knobs)
    plan = plan_export(compiled_of(k, None))
    (tmp_path / "grid.c").write_text(render_grid(plan, linkage=""))
    r = subprocess.run([CC, "-O1", "-shared", "-fPIC", "-o", str(tmp_path / "grid.so"),
                        str(tmp_path / "grid.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    grid = getattr(ctypes.CDLL(str(tmp_path / "grid.so")), f"{plan.name}_grid")
    size_names = [d.name for d in plan.params if not d.is_buffer]
    has_span = "long long len_" in render_grid(plan)
    monkeypatch.setattr(cuda_target, "_sm_count", lambda device_id: sms)
    launcher = cuda_target.CudaLauncher(b"", plan.kernel, schedule=plan.schedule)
    values = {"size_i": [0, 1, 1000, 10**6], "size_j": [1, 33, 512], "size_k": [1, 16, 300]}
    for combo in itertools.product(*(values[n] for n in size_names),
                                   [0, 5000, 10**7] if has_span else [None]):
        sizes = dict(zip(size_names, combo[:-1]))
        span = combo[-1]
        blocks, extra, group = ctypes.c_longlong(), (ctypes.c_int * 2)(), ctypes.c_int()
        args = [ctypes.c_longlong(v) for v in sizes.values()]
        if has_span:
            args.append(ctypes.c_longlong(span))
        grid(*args, ctypes.c_int(sms), ctypes.byref(blocks), extra, ctypes.byref(group))
        want_blocks, want_extra, want_group = launcher.grid(sizes, 0, span)
        got = (blocks.value, tuple(extra[:len(want_extra)]), group.value)
        assert got == (want_blocks, tuple(want_extra), want_group), (sizes, span)
