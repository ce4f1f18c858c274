"""unroll_jam: the jam of GPU loops is a pass over the IR (``passes/unroll_jam.py``).

Golden printed IR of the three jammed forms (a lane loop with partial sums, a
lane-split loop jammed when the launch is wide, a block's warp loop); the
interpreter's numbers before and after the pass, jammed and not; the
interpreter running the copies' partial sums as the CUDA code adds them; the
verifier refusing jams the renderer cannot print or that no longer match the
body; and the renderer following the IR: same printed IR, same CUDA source;
no jam in the IR, no jammed code.  Nothing here needs a GPU.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cuda import CUDATarget
from spc.codegen.cuda_c import launch_plan, render_body
from spc.ir.nodes import DType, For, Jam, LoopKind
from spc.ir.printer import format_kernel
from spc.ir.traverse import rewrite, walk
from spc.ir.verify import verify
from spc.passes.unroll_jam import unroll_jam

from matrices import assert_allclose
from test_cuda_render import SMALL, _named_operands, _run_with

CUDA = dict(target="cuda", arch="sm_90")
TTM = ("C[i,l] = T[i,j,k]*M[j,k,l]", {"T": "sdd"})


def _kernels(kernel, **kw):
    return spc.compile(kernel, **CUDA, **kw)._variant(DType.I32).kernels


def _with_jams(kernel, fn):
    """``kernel`` with every loop's jam replaced by ``fn(jam)``."""
    return replace(kernel, body=rewrite(kernel.body, lambda n: replace(n, jam=fn(n.jam))
                                        if isinstance(n, For) and n.jam is not None else n))


def _unjammed(kernel):
    return _with_jams(kernel, lambda jam: None)


def _jams(kernel):
    return [(n.var.name, n.kind, n.jam) for n in walk(kernel.body)
            if isinstance(n, For) and n.jam is not None]


# ---------------------------------------------------------------------------
# Golden IR
# ---------------------------------------------------------------------------

GOLDEN_SPMV = """\
  for i in [0, size_i) @gpu_warp:
    let A0_p0: i64 = i
    let y0_p1: i64 = i
    let acc: f32 = 0.0f
    let acc_lane: f32 = 0.0f
    for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]) @gpu_lane jam(4, copies=[A1_p2, acc_lane, j, x0_p4], sums=[acc_lane: f32], min_trips=96):
      let j: i64 = A1_crd[A1_p2]
      let x0_p4: i64 = j
      acc_lane = acc_lane + A_vals[A1_p2] * x_vals[x0_p4]
    acc = acc + warp_sum(acc_lane)
    y_vals[y0_p1] = acc
"""

GOLDEN_SPMM = """\
  for i in [0, size_i) @gpu_warp:
    let A0_p0: i64 = i
    let C0_p1: i64 = i
    for j in [0, size_j) @gpu_lane_split jam(4, copies=[B1_p5, C_vals_reg, j], when=wide):
      let C_vals_reg: f32 = 0.0f
      for A1_p2 in [A1_pos[A0_p0], A1_pos[A0_p0 + 1]):
        let k: i64 = A1_crd[A1_p2]
        let B0_p4: i64 = k
        let B1_p5: i64 = B0_p4 * size_j + j
        C_vals_reg = C_vals_reg + A_vals[A1_p2] * B_vals[B1_p5]
      C_vals[C0_p1 * size_j + j] = C_vals_reg
"""

GOLDEN_TTM = """\
  for T0_p0 in [T0_pos[0], T0_pos[1]) @gpu_block:
    let i: i64 = T0_crd[T0_p0]
    let C0_p2: i64 = i
    for l in [0, size_l) @gpu_warp jam(4, copies=[C1_p3, M2_p8, acc, acc_lane, l]):
      let C1_p3: i64 = C0_p2 * size_l + l
      let acc: f32 = 0.0f
      for j in [0, size_j):
        let T1_p4: i64 = T0_p0 * size_j + j
        let M0_p5: i64 = j
        let acc_lane: f32 = 0.0f
        for k in [0, size_k) @gpu_lane:
          let T2_p6: i64 = T1_p4 * size_k + k
          let M1_p7: i64 = M0_p5 * size_k + k
          let M2_p8: i64 = M1_p7 * size_l + l
          acc_lane = acc_lane + T_vals[T2_p6] * M_vals[M2_p8]
        acc = acc + warp_sum(acc_lane)
      C_vals[C1_p3] = acc
"""


def _body_text(kernel) -> str:
    lines = format_kernel(kernel).splitlines(keepends=True)
    return "".join(line for line in lines[1:] if not line.startswith("  #"))


@pytest.mark.parametrize("kernel, kw, golden", [
    ("spmv", dict(fmt="csr"), GOLDEN_SPMV),
    ("spmm", dict(fmt="csr"), GOLDEN_SPMM),
    (TTM[0], dict(formats=TTM[1]), GOLDEN_TTM),
], ids=["lane-sums", "lane-split-wide", "block-warp"])
def test_golden_ir(kernel, kw, golden):
    (k,) = _kernels(kernel, **kw)
    assert _body_text(k) == golden
    assert "  # gpu_unroll: 4" in format_kernel(k).splitlines()
    # the pass made exactly these jams from the unjammed kernel
    assert unroll_jam(_unjammed(k)) == k


def test_a_factor_of_one_jams_nothing():
    (k,) = _kernels("spmv", fmt="csr")
    plain = _unjammed(k)
    one = replace(plain, gpu=replace(plain.gpu, unroll=1))
    assert unroll_jam(one) == one
    assert "jam(" not in format_kernel(one)


def test_the_lane_group_loop_is_not_jammed():
    """SDDMM over csr: its lane loop is shared out among lane groups at launch
    (``For.groups``, which lane_groups records before this pass runs)."""
    (k,) = _kernels("sddmm", fmt="csr")
    assert any(isinstance(n, For) and n.groups is not None for n in walk(k.body))
    assert _jams(k) == []
    assert unroll_jam(k) == k


def test_a_lane_loop_inside_a_jammed_warp_loop_stays_unjammed():
    (k,) = _kernels(TTM[0], formats=TTM[1])
    assert [(name, kind) for name, kind, _ in _jams(k)] == [("l", LoopKind.GPU_WARP)]


# ---------------------------------------------------------------------------
# The interpreter runs the jam
# ---------------------------------------------------------------------------

def _always(jam: Jam) -> Jam:
    return replace(jam, min_trips=0)


def test_the_interpreter_adds_the_copies_partial_sums_as_the_cuda_code_does():
    """One row of 8 float32 values, x all ones.  Jammed 4 ways, copy 0 sums
    1e8 - 1e8 and copies 1..3 two ones each: exactly 6.  One at a time,
    1e8 + 1 rounds back to 1e8 (float32's spacing there is 8): 3."""
    A = sp.csr_matrix(np.array([[1e8, 1, 1, 1, -1e8, 1, 1, 1]], dtype=np.float32))
    x = np.ones(8, dtype=np.float32)
    kw = dict(fmt="csr")
    (k,) = _kernels("spmv", dtype="float32", **kw)
    jammed = _run_with([_with_jams(k, _always)], "spmv", kw, "float32", A, x)
    plain = _run_with([_unjammed(k)], "spmv", kw, "float32", A, x)
    short = _run_with([k], "spmv", kw, "float32", A, x)    # 8 < min_trips: unjammed
    assert (float(jammed[0]), float(plain[0]), float(short[0])) == (6.0, 3.0, 3.0)


def test_the_launch_choice_runs_the_split_loop_jammed_or_not():
    """SpMM's column loop jammed when wide, one column at a time when not: the
    same numbers (no sums cross the copies), and the race checker sees each
    column stored once either way."""
    A = sp.random(9, 7, density=0.4, format="csr", dtype=np.float64, random_state=3)
    B = np.random.default_rng(0).standard_normal((7, 6))
    kw = dict(fmt="csr")
    ks = _kernels("spmm", dtype="float64", **kw)
    want = A @ B
    for launch in ({"wide": True}, {"wide": False}, None):
        got = _run_with(ks, "spmm", kw, "float64", A, B, launch=launch)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


FORMATS = ["csr", "csc", "coo", "dcsr", "ell", "dia", "bsr(4,4)"]


@pytest.mark.parametrize("matrix", [c for c in SMALL if c.id in (
    "tall_60x17", "empty_rows_30x25", "nnz0_12x15", "dense_row_40x50")], ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kernel", ["spmv", "spmm", "sddmm"])
def test_the_pass_keeps_interpreter_results(kernel, fmt, matrix):
    """Before the pass, after it, and after it with every jam taken whatever the
    trip count (small matrices' rows are shorter than ``min_trips``), as the
    CPU kernel computes."""
    A = matrix.build(np.float64)
    if A.shape[0] * A.shape[1] > 800:
        A = A[:20, :20].tocsr()
    ops = _named_operands(kernel, A, np.float64)
    kw = dict(fmt=fmt)
    ks = _kernels(kernel, dtype="float64", **kw)
    want = spc.compile(kernel, fmt=fmt, dtype="float64")(A, *ops)
    for variant in (ks, [_unjammed(k) for k in ks], [_with_jams(k, _always) for k in ks]):
        assert_allclose(_run_with(variant, kernel, kw, "float64", A, *ops), want, np.float64)


def test_the_block_warp_jam_keeps_interpreter_results():
    rng = np.random.default_rng(1)
    T = rng.standard_normal((5, 3, 4)) * (rng.random((5, 1, 1)) < 0.6)
    M = rng.standard_normal((3, 4, 6))
    expr, formats = TTM
    ks = _kernels(expr, formats=formats, dtype="float64")
    assert any(kind is LoopKind.GPU_WARP for k in ks for _, kind, _ in _jams(k))
    want = np.einsum("ijk,jkl->il", T, M)
    for variant in (ks, [_unjammed(k) for k in ks]):
        got = _run_with(variant, expr, dict(formats=formats), "float64", T=T, M=M)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# The verifier
# ---------------------------------------------------------------------------

def _first_jammed(kernel):
    return next(n for n in walk(kernel.body) if isinstance(n, For) and n.jam is not None)


def _rejam(kernel, **changes):
    loop = _first_jammed(kernel)
    return replace(kernel, body=rewrite(kernel.body, lambda n: replace(n, jam=replace(
        n.jam, **changes)) if n == loop else n))


@pytest.mark.parametrize("kernel, fmt, changes, message", [
    ("spmv", "csr", dict(copies=("A1_p2", "j")), "does not match its body"),
    ("spmv", "csr", dict(sums=()), "does not match its body"),
    ("spmv", "csr", dict(factor=1), "factor 1 < 2"),
    ("spmv", "csr", dict(launch="wide"), "waits for a launch choice"),
    ("spmm", "csr", dict(launch=None), "waits for a launch choice"),
    ("spmm", "csr", dict(min_trips=96), "with sums or min_trips"),
    ("spmm", "csr", dict(launch="narrow"), "waits for a launch choice"),
])
def test_the_verifier_refuses_jams_that_do_not_fit(kernel, fmt, changes, message):
    (k,) = _kernels(kernel, fmt=fmt)
    verify(k)
    with pytest.raises(spc.CompileError, match=message):
        verify(_rejam(k, **changes))


def test_the_verifier_refuses_a_jam_on_a_serial_loop():
    (k,) = _kernels("spmm", fmt="csr")
    serial = next(n for n in walk(k.body) if isinstance(n, For) and n.kind is LoopKind.SERIAL)
    bad = replace(k, body=rewrite(k.body, lambda n: replace(n, jam=Jam(4, (serial.var.name,)))
                                  if n == serial else n))
    with pytest.raises(spc.CompileError, match="lane and warp loops only"):
        verify(bad)


# ---------------------------------------------------------------------------
# The renderer prints what the IR says
# ---------------------------------------------------------------------------

def test_no_jam_in_the_ir_no_jammed_code():
    for kernel, kw in (("spmv", dict(fmt="csr")), ("spmm", dict(fmt="csr")),
                       (TTM[0], dict(formats=TTM[1]))):
        (k,) = _kernels(kernel, **kw)
        assert "spc_ok__" in render_body(k)
        assert "spc_ok__" not in render_body(_unjammed(k))


def test_a_jam_without_a_minimum_trip_count_is_printed_without_the_short_loop():
    (k,) = _kernels("spmv", fmt="csr")
    always = render_body(_with_jams(k, _always))
    assert " >= 96) {" in render_body(k) and " >= 96) {" not in always
    assert "spc_ok__1" in always


def test_the_wide_chunk_is_the_jams_factor():
    (k,) = _kernels("spmm", fmt="csr")
    assert launch_plan(k).wide_width == 128
    assert launch_plan(_unjammed(k)).wide_width == 32
    assert launch_plan(_with_jams(k, lambda j: replace(j, factor=2))).wide_width == 64


def _configurations():
    """Ways to compile kernels, several of which give the same IR (launch knobs
    shape the launch, not the IR; deterministic None and False agree)."""
    out = []
    for fmt in ("csr", "coo", "ell"):
        out += [("spmm", dict(fmt=fmt, schedule=spc.Schedule(wide=w))) for w in (None, True, False)]
        out += [("spmv", dict(fmt=fmt, deterministic=d)) for d in (None, False)]
        out += [("sddmm", dict(fmt=fmt, schedule=spc.Schedule(group=g, split=s)))
                for g, s in ((None, None), (4, 2), (32, 1))]
        out += [("sddmm", dict(fmt=fmt, schedule=spc.Schedule(group=g, flat=f)))
                for g, f in ((8, True), (None, False))]
    return out


def test_same_printed_ir_same_cuda_source():
    """The renderer reads nothing the printed IR does not show: kernels compiled
    different ways that print the same render the same source."""
    seen: dict[str, tuple[str, str]] = {}
    shared = grouped = 0
    for kernel, kw in _configurations():
        try:
            ck = spc.compile(kernel, **CUDA, **kw)
        except spc.ScheduleError:          # a launch knob the kernel has no loop for
            continue
        for k in ck._variant(DType.I32).kernels:
            text, source = format_kernel(k), CUDATarget("sm_90").render(k)
            if text in seen:
                shared += 1
                grouped += "groups(" in text and "flat(" in text
                assert seen[text][1] == source, f"{kernel} {kw}: same IR, other source"
            seen[text] = (kernel, source)
    # spmm over csr and ell: 2 more each (coo's, one warp, refuses wide); spmv: 1
    # per format; sddmm over csr (lane groups and flat positions): 4 more, the
    # launch knobs shaping the launch, not the IR (coo's sddmm, one warp, and
    # ell's, a block per row, refuse group, split and flat)
    assert (shared, grouped) == (11, 4)


def test_rendering_a_rebuilt_kernel_gives_the_same_source():
    """A kernel rebuilt node by node (equal, not identical objects) renders alike."""
    for kernel, kw in (("spmv", dict(fmt="csr")), ("spmm", dict(fmt="coo")),
                       (TTM[0], dict(formats=TTM[1]))):
        (k,) = _kernels(kernel, **kw)
        rebuilt = replace(k, body=rewrite(k.body, lambda n: replace(n)))
        assert rebuilt == k and rebuilt.body is not k.body
        assert format_kernel(rebuilt) == format_kernel(k)
        assert render_body(rebuilt) == render_body(k)
