"""lane_groups and flat_positions: how a warp shares out SDDMM's nonzeros is
typed IR (``LaneGroups`` on the lane loop, ``FlatPositions`` on the warp loop),
made by passes (``passes/lane_groups.py``, ``passes/flat_positions.py``).

Golden printed IR; the interpreter's numbers before the passes and after them
for every lane-group size, several splits and flat chunks (the launch symbols'
legal values), over the edge matrices; the interpreter adding a group's
partial sums as the CUDA code does; the verifier refusing groups and flat
positions that do not fit; and the renderer spelling out exactly what the IR
says (no groups, no template; the IR's sizes, the kernels instantiated; no
flat positions, no ``spc_flat``).  nvcc compiles the variants.  No GPU needed.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cuda import CUDATarget
from spc.codegen.cuda_c import launch_plan, render_body, render_params
from spc.ir.jam import jam_of
from spc.ir.nodes import DType, FlatPositions, For
from spc.ir.printer import format_kernel
from spc.ir.traverse import rewrite, walk
from spc.ir.verify import verify
from spc.passes.flat_positions import flat_positions
from spc.passes.lane_groups import lane_groups
from spc.schedule import GROUPS

from matrices import assert_allclose
from test_cuda_render import SMALL, _run_with

CUDA = dict(target="cuda", arch="sm_90")


def _kernels(kernel, **kw):
    return spc.compile(kernel, **CUDA, **kw)._variant(DType.I32).kernels


def _loops(kernel, field):
    return [n for n in walk(kernel.body) if isinstance(n, For) and getattr(n, field) is not None]


def _without(kernel, *fields):
    """``kernel`` with the named For fields cleared everywhere."""
    return replace(kernel, body=rewrite(kernel.body, lambda n: replace(
        n, **{f: None for f in fields}) if isinstance(n, For) else n))


def _with_groups(kernel, fn):
    return replace(kernel, body=rewrite(kernel.body, lambda n: replace(n, groups=fn(n.groups))
                                        if isinstance(n, For) and n.groups is not None else n))


# ---------------------------------------------------------------------------
# Golden IR
# ---------------------------------------------------------------------------

GOLDEN_SDDMM = """\
  for i in [0, size_i) @gpu_warp flat(A1_p3, steps=spc_flat):
    let A0_p0: i64 = i
    let X0_p1: i64 = i
    let S0_p2: i64 = i
    for A1_p3 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]) @gpu_lane groups(k, sums=[acc: f32], lanes=spc_group in [1, 2, 4, 8, 16, 32], warps=spc_split):
      let j: i64 = A1_crd[A1_p3]
      let Y0_p5: i64 = j
      let acc: f32 = 0.0f
      for k in [0, size_k) vector(4, loads=[X_vals[X0_p1 * size_k + k], Y_vals[Y0_p5 * size_k + k]], sums=[acc: f32]):
        let X1_p6: i64 = X0_p1 * size_k + k
        let Y1_p7: i64 = Y0_p5 * size_k + k
        acc = acc + X_vals[X1_p6] * Y_vals[Y1_p7]
      S_vals[A1_p3] = A_vals[A1_p3] * acc
"""

GOLDEN_DENSE = """\
  for i in [0, size_i) @gpu_warp:
    let A0_p0: i64 = i
    let X0_p1: i64 = i
    let S0_p2: i64 = i
    for j in [0, size_j) @gpu_lane groups(k, sums=[acc: f64], lanes=spc_group in [1, 2, 4, 8, 16, 32], warps=spc_split):
      let A1_p3: i64 = A0_p0 * size_j + j
      let Y0_p4: i64 = j
      let S1_p5: i64 = S0_p2 * size_j + j
      let acc: f64 = 0.0
      for k in [0, size_k) vector(2, loads=[X_vals[X0_p1 * size_k + k], Y_vals[Y0_p4 * size_k + k]], sums=[acc: f64]):
        let X1_p6: i64 = X0_p1 * size_k + k
        let Y1_p7: i64 = Y0_p4 * size_k + k
        acc = acc + X_vals[X1_p6] * Y_vals[Y1_p7]
      S_vals[S1_p5] = A_vals[A1_p3] * acc
"""


def _body_text(kernel) -> str:
    lines = format_kernel(kernel).splitlines(keepends=True)
    return "".join(line for line in lines[1:] if not line.startswith("  #"))


@pytest.mark.parametrize("fmt, dtype, golden", [
    ("csr", "float32", GOLDEN_SDDMM),
    ("dense", "float64", GOLDEN_DENSE),
], ids=["csr-flat", "dense-rows"])
def test_golden_ir(fmt, dtype, golden):
    (k,) = _kernels("sddmm", fmt=fmt, dtype=dtype)
    assert _body_text(k) == golden
    # the passes made exactly these fields from a kernel without them (the vector
    # loads, which vector_loads records on a lane group's loop, stay)
    assert flat_positions(lane_groups(_without(k, "groups", "flat"))) == k
    assert flat_positions(_without(k, "flat")) == k


@pytest.mark.parametrize("kernel, fmt", [("spmv", "csr"), ("spmm", "csr"), ("sddmm", "ell"),
                                         ("sddmm", "coo"), ("sddmm", "bsr(4,4)")])
def test_kernels_without_a_gpu_group_are_unchanged(kernel, fmt):
    (k,) = _kernels(kernel, fmt=fmt)
    assert k.gpu is None or k.gpu.group is None
    assert lane_groups(k) is k and flat_positions(k) is k
    assert _loops(k, "groups") == [] and _loops(k, "flat") == []


def test_rows_in_an_inspectors_order_share_lanes_but_do_not_run_flat():
    """Rows taken through a permutation do not cover positions contiguously."""
    (k,) = _kernels("sddmm", fmt="csr", schedule=spc.Schedule(reorder_rows="length"))
    assert len(_loops(k, "groups")) == 1 and _loops(k, "flat") == []
    assert "spc_flat" not in " ".join(render_params(k))


# ---------------------------------------------------------------------------
# The interpreter runs them, for every legal launch value
# ---------------------------------------------------------------------------

LAUNCHES = [dict(split=s) for s in (1, 2, 3)] + [dict(flat=f) for f in (1, 2, 5)]
MATRICES = [c for c in SMALL if c.id in ("tall_60x17", "empty_rows_30x25", "nnz0_12x15",
                                         "dense_row_40x50", "one_1x1")]


@pytest.fixture(scope="module")
def cases():
    """(kernels, the CPU kernel's result) per (format, matrix), made once."""
    out = {}
    for fmt in ("csr", "dcsr", "dense"):
        ks = _kernels("sddmm", fmt=fmt, dtype="float64")
        for m in MATRICES:
            A = m.build(np.float64)
            if A.shape[0] * A.shape[1] > 400:
                A = A[:16, :16].tocsr()
            rng = np.random.default_rng(A.shape[0])
            X = rng.standard_normal((A.shape[0], 9))     # 4 vectors and a rest, 2 wide
            Y = rng.standard_normal((A.shape[1], 9))
            want = spc.compile("sddmm", fmt=fmt, dtype="float64")(A, X, Y)
            out[fmt, m.id] = ks, (A, X, Y), want
    return out


@pytest.mark.parametrize("launch", LAUNCHES, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("matrix", [m.id for m in MATRICES])
@pytest.mark.parametrize("fmt", ["csr", "dcsr", "dense"])
def test_every_launch_keeps_interpreter_results(cases, fmt, matrix, group, launch):
    """Groups of every size, rows split over 1 to 3 warps or positions in flat
    chunks of 1, 2 and 5 steps: the CPU kernel's numbers, as without the passes
    (a kernel without flat positions ignores ``flat``)."""
    ks, args, want = cases[fmt, matrix]
    kw = dict(fmt=fmt)
    got = _run_with(ks, "sddmm", kw, "float64", *args, launch=dict(group=group, **launch))
    assert_allclose(got, want, np.float64)


def test_without_the_passes_the_numbers_agree(cases):
    for (fmt, _), (ks, args, want) in cases.items():
        plain = [_without(k, "groups", "flat", "vector") for k in ks]
        assert_allclose(_run_with(plain, "sddmm", dict(fmt=fmt), "float64", *args), want,
                        np.float64)


def test_a_flat_chunk_walks_rows_of_every_length():
    """Skewed rows (0 to 40 entries, empty ones between): chunks that start and
    end inside rows, and steps that cross many rows at once."""
    rng = np.random.default_rng(5)
    lengths = [0, 40, 0, 0, 1, 2, 0, 33, 3, 0, 0, 0, 5, 1, 1, 1, 0, 17]
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([np.sort(rng.choice(41, size=n, replace=False)) for n in lengths])
    A = sp.csr_matrix((rng.standard_normal(len(rows)), (rows, cols)), shape=(len(lengths), 41))
    X, Y = rng.standard_normal((A.shape[0], 5)), rng.standard_normal((41, 5))
    ks = _kernels("sddmm", fmt="csr", dtype="float64")
    want = A.multiply(X @ Y.T).toarray()
    for group in (1, 8, 32):
        for flat in (1, 3):
            got = _run_with(ks, "sddmm", dict(fmt="csr"), "float64", A, X, Y,
                            launch=dict(group=group, flat=flat))
            np.testing.assert_allclose(got.toarray(), want, rtol=1e-12, atol=1e-12)


def test_the_interpreter_adds_a_groups_partial_sums_as_the_cuda_code_does():
    """One nonzero, X's row [1e8, 1, 1, 1, -1e8, 1, 1, 1] (float32), Y all ones.
    One lane: vector elements summed apart, 1e8 - 1e8 and 2 ones thrice: 6.
    Two lanes: lane 0 takes the vector at 0, (1e8 + 1) + (1 + 1) = 1e8 (float32's
    spacing there is 8), lane 1 the one at 4, -1e8; their sum 0."""
    X = np.array([[1e8, 1, 1, 1, -1e8, 1, 1, 1]], dtype=np.float32)
    Y = np.ones((1, 8), dtype=np.float32)
    A = sp.csr_matrix(np.ones((1, 1), dtype=np.float32))
    kw = dict(fmt="csr")
    ks = _kernels("sddmm", dtype="float32", **kw)
    sums = {g: float(_run_with(ks, "sddmm", kw, "float32", A, X, Y,
                               launch=dict(group=g)).toarray()[0, 0]) for g in (1, 2, 8)}
    assert sums == {1: 6.0, 2: 0.0, 8: 0.0}


def test_a_group_size_outside_the_irs_sizes_is_refused():
    (k,) = _kernels("sddmm", fmt="csr", dtype="float64")
    A = sp.csr_matrix(np.ones((2, 2)))
    X = Y = np.ones((2, 3))
    with pytest.raises(ValueError, match="spc_group|group=3"):
        _run_with([k], "sddmm", dict(fmt="csr"), "float64", A, X, Y, launch=dict(group=3))
    small = _with_groups(k, lambda g: replace(g, sizes=(1, 4)))
    with pytest.raises(ValueError, match="group=2"):
        _run_with([small], "sddmm", dict(fmt="csr"), "float64", A, X, Y, launch=dict(group=2))


# ---------------------------------------------------------------------------
# The verifier
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    (dict(sums=()), "do not match its body"),
    (dict(reduction="j"), "do not match its body"),
    (dict(group="lanes"), "launch symbols"),
    (dict(split="warps"), "launch symbols"),
    (dict(sizes=(1, 3)), "of sizes"),
    (dict(sizes=(4, 2)), "of sizes"),
    (dict(sizes=()), "of sizes"),
])
def test_the_verifier_refuses_groups_that_do_not_fit(changes, message):
    (k,) = _kernels("sddmm", fmt="csr")
    verify(k)
    with pytest.raises(spc.CompileError, match=message):
        verify(_with_groups(k, lambda g: replace(g, **changes)))


def test_the_verifier_refuses_groups_where_none_is_printed():
    (k,) = _kernels("sddmm", fmt="csr")
    (lane,) = _loops(k, "groups")
    red = next(n for n in walk(lane.body) if isinstance(n, For))
    moved = replace(k, body=rewrite(k.body, lambda n: replace(n, groups=lane.groups)
                                    if n == red else n))
    with pytest.raises(spc.CompileError, match="lane groups"):
        verify(moved)
    jam = jam_of(lane, 4)           # a jam that fits the body, but lanes are shared out
    assert jam is not None
    jammed = replace(k, body=rewrite(k.body, lambda n: replace(n, jam=jam)
                                     if isinstance(n, For) and n.groups is not None else n))
    with pytest.raises(spc.CompileError, match="lane groups and a jam"):
        verify(jammed)
    # flat positions need the grouped lane loop
    with pytest.raises(spc.CompileError, match="flat positions"):
        verify(_without(k, "groups", "vector"))


@pytest.mark.parametrize("flat, message", [
    (FlatPositions("j"), "flat positions of the loop"),
    (FlatPositions("A1_p3", steps="chunk"), "launch symbol"),
])
def test_the_verifier_refuses_flat_positions_that_do_not_fit(flat, message):
    (k,) = _kernels("sddmm", fmt="csr")
    bad = replace(k, body=rewrite(k.body, lambda n: replace(n, flat=flat)
                                  if isinstance(n, For) and n.flat is not None else n))
    with pytest.raises(spc.CompileError, match=message):
        verify(bad)


def test_the_verifier_refuses_flat_positions_off_the_top_loop():
    (k,) = _kernels("sddmm", fmt="dense")
    (lane,) = _loops(k, "groups")
    bad = replace(k, body=rewrite(k.body, lambda n: replace(n, flat=FlatPositions(lane.var.name))
                                  if n == lane else n))
    with pytest.raises(spc.CompileError, match="flat positions"):
        verify(bad)


# ---------------------------------------------------------------------------
# The renderer spells out what the IR says
# ---------------------------------------------------------------------------

def test_no_groups_in_the_ir_no_lane_groups_in_the_code():
    """Without LaneGroups (nor the vector loads only a group's loop has) the lane
    loop is a plain one: a lane per nonzero, no template over spc_group."""
    (k,) = _kernels("sddmm", fmt="csr")
    plain = _without(k, "groups", "flat", "vector")
    verify(plain)
    body = render_body(plain)
    assert "spc_group" not in body and "spc_sub" not in body and "spc_flat" not in body
    assert launch_plan(plain).group is None
    assert "spc_split" not in " ".join(render_params(plain))
    source = CUDATarget("sm_90").render(plain)
    assert "_g1(" not in source and "int spc_group" not in source


def test_no_flat_positions_in_the_ir_no_flat_code():
    (k,) = _kernels("sddmm", fmt="csr")
    rows = _without(k, "flat")
    verify(rows)
    assert "spc_flat" in render_body(k) and "spc_flat" not in render_body(rows)
    assert render_params(rows)[-1:] == ["const int spc_split"]
    assert launch_plan(k).flat and not launch_plan(rows).flat


def test_the_irs_sizes_are_the_kernels_instantiated():
    (k,) = _kernels("sddmm", fmt="csr")
    source = CUDATarget("sm_90").render(k)
    assert [g for g in GROUPS if f"_g{g}(" in source] == list(GROUPS)
    two = _with_groups(k, lambda g: replace(g, sizes=(1, 8)))
    verify(two)
    source = CUDATarget("sm_90").render(two)
    assert [g for g in GROUPS if f"_g{g}(" in source] == [1, 8]
    assert launch_plan(two).group_sizes == (1, 8)


def test_the_split_and_flat_symbols_are_the_irs():
    """The C names of the launch symbols come from the IR's fields (verified to
    be the launcher's), so a renamed symbol shows in the source."""
    (k,) = _kernels("sddmm", fmt="csr")
    renamed = replace(k, body=rewrite(k.body, lambda n: replace(
        n, flat=replace(n.flat, steps="chunk")) if isinstance(n, For) and n.flat else n))
    assert "spc_chunk > 0" in render_body(renamed)
    assert "spc_flat" not in render_body(renamed)
    assert "flat(A1_p3, steps=spc_chunk)" in format_kernel(renamed)


# ---------------------------------------------------------------------------
# nvcc compiles the variants the IR can ask for
# ---------------------------------------------------------------------------

def test_nvcc_compiles_every_lane_group_variant():
    from cuda_env import NVCC, nvcc_many
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    target = CUDATarget("sm_90")
    sources = []
    for fmt, dtype in (("csr", "float32"), ("dense", "float64"), ("dcsr", "float16")):
        (k,) = _kernels("sddmm", fmt=fmt, dtype=dtype)
        sources += [target.render(k), target.render(_without(k, "flat")),
                    target.render(_with_groups(k, lambda g: replace(g, sizes=(2, 32))))]
    for (code, log), source in zip(nvcc_many(sources), sources):
        assert code == 0, f"nvcc failed:\n{log}\n--- source ---\n{source}"
