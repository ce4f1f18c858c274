"""spc.Schedule as a value, the knobs it refuses, the schedule a kernel reports, the
pass pipelines it selects, and spc.schedule_space (issue 9, items 1-2)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from cuda_env import NVCC, nvcc_many
from spc.passes.pipeline import cpu_pipeline, cuda_pipeline

CUDA = dict(target="cuda", arch="sm_90")


# ---------------------------------------------------------------------- the value


def test_a_schedule_is_a_frozen_hashable_printable_value():
    s = spc.Schedule(order=["i", "k", "j"], group=8)
    assert s.order == ("i", "k", "j")                       # lists become tuples
    assert s == spc.Schedule(order=("i", "k", "j"), group=8)
    assert len({s, spc.Schedule(order=("i", "k", "j"), group=8)}) == 1
    assert str(s) == "Schedule(order=('i', 'k', 'j'), group=8)"
    assert str(spc.Schedule()) == "Schedule()"
    with pytest.raises(AttributeError):
        s.group = 4
    assert s.replace(group=4).group == 4 and s.group == 8


@pytest.mark.parametrize("knobs, knob", [
    (dict(order="ij"), "order"), (dict(order=("i", 3)), "order"),
    (dict(parallel=None), "parallel"), (dict(parallel=1), "parallel"),
    (dict(threads=0), "threads"), (dict(threads=2.0), "threads"), (dict(threads=True), "threads"),
    (dict(group=3), "group"), (dict(group=64), "group"), (dict(group=True), "group"),
    (dict(split=0), "split"), (dict(wide="yes"), "wide"), (dict(deterministic=0), "deterministic"),
    (dict(flat=True, split=2), "split"),
])
def test_an_illegal_value_names_its_knob(knobs, knob):
    with pytest.raises(spc.ScheduleError, match=f"schedule {knob}: ") as err:
        spc.Schedule(**knobs)
    assert err.value.knob == knob


# ---------------------------------------------------------------------- knobs a kernel refuses


@pytest.mark.parametrize("kernel, options, knob, why", [
    ("spmm", dict(wide=True), "wide", "target='cpu' has no warps"),
    ("sddmm", dict(group=4), "group", "target='cpu'"),
    ("spmm", dict(threads=2, **CUDA), "threads", "grid is sized from each call"),
    ("spmm", dict(group=4, **CUDA), "group", "no lane loop with lane groups"),
    ("spmm", dict(flat=True, **CUDA), "flat", "no warp loop with flat positions"),
    ("spmv", dict(wide=True, **CUDA), "wide", "no @gpu_lane_split loop"),
    ("sddmm", dict(wide=False, **CUDA), "wide", "no @gpu_lane_split loop"),
    ("sddmm", dict(split=2, parallel=False, **CUDA), "split", "parallel=False runs one warp"),
    ("sddmm", dict(schedule=spc.Schedule(order=("j", "i", "k"))), "order", "before its parent"),
    ("spmm", dict(schedule=spc.Schedule(order=("i", "j"))), "order", "exactly once"),
    ("spmm", dict(schedule=spc.Schedule(group=2), group=4, **CUDA), "group", "given as 4"),
])
def test_a_meaningless_or_illegal_knob_is_refused_by_name(kernel, options, knob, why):
    with pytest.raises(spc.ScheduleError, match=why) as err:
        spc.compile(kernel, fmt="csr", **options)
    assert err.value.knob == knob
    assert isinstance(err.value, spc.UnsupportedError)      # what it was before issue 9


def test_an_unknown_compile_option_is_an_spc_error():
    with pytest.raises(spc.UnsupportedError, match="takes no option bogus"):
        spc.compile("spmv", target="cuda", arch="sm_90", bogus=1)


def test_a_hyb_kernel_accepts_a_knob_one_of_its_parts_uses():
    k = spc.compile("spmm", fmt="hyb", wide=True, **CUDA)
    assert k.schedule.wide is True


# ---------------------------------------------------------------------- the schedule a kernel reports


def test_the_reported_schedule_fills_in_spcs_choices():
    from spc.codegen.cpu import CPUTarget
    k = spc.compile("spmm", fmt="csr", dtype="float64", threads=1)
    assert k.schedule == spc.Schedule(order=("i", "k", "j"), threads=1, deterministic=True,
                                      reorder_rows="none", split_rows=False,
                                      tile_cols=CPUTarget().accumulator_bytes // 8)
    g = spc.compile("sddmm", fmt="csr", group=8, **CUDA)
    assert g.schedule == spc.Schedule(order=("i", "j", "k"), deterministic=False, group=8,
                                      reorder_rows="none", split_rows=False,
                                      tensor_cores=False, tf32=False, stage_tiles=False)


def test_the_reported_order_is_in_the_users_names():
    """Index names that are C words are mangled inside spc; the report shows the user's."""
    k = spc.compile("y[int] = A[int,do] * x[do]", formats={"A": "csr"})
    assert k.schedule.order == ("int", "do")
    again = spc.compile("y[int] = A[int,do] * x[do]", formats={"A": "csr"},
                        schedule=k.schedule)
    assert again.ir == k.ir


def test_a_reported_schedule_compiles_to_the_same_kernel():
    k = spc.compile("sddmm", fmt="csr", **CUDA)
    assert spc.compile("sddmm", fmt="csr", schedule=k.schedule, **CUDA).source == k.source


# ---------------------------------------------------------------------- pipelines


def _names(passes):
    return [p.__name__ for p in passes]


@pytest.mark.parametrize("schedule, cpu, cuda", [
    (spc.Schedule(),
     ["simplify", "online_softmax", "collapse_rows", "epilogue_rows", "tile_rows_for_registers", "fold_epilogue",
      "bound_rows", "bitmap_workspaces", "map_parallel",
      "simplify", "mark_noncanonical",
      "block_reductions", "overwrite_outputs", "widen_outputs"],
     ["simplify", "online_softmax", "collapse_rows", "tensorize", "tensorize_nm", "tensorize_chunks",
      "collapse_blocks",
      "workspaces_gpu", "map_gpu", "stage_tiles",
      "simplify", "mark_noncanonical",
      "overwrite_outputs", "widen_outputs", "seed_sums", "lane_groups", "flat_positions", "unroll_jam",
      "vector_loads"]),
    (spc.Schedule(parallel=False),
     ["simplify", "online_softmax", "collapse_rows", "epilogue_rows", "tile_rows_for_registers", "fold_epilogue",
      "bound_rows", "bitmap_workspaces", "simplify", "mark_noncanonical",
      "block_reductions", "overwrite_outputs", "widen_outputs"],
     ["simplify", "online_softmax", "collapse_rows", "collapse_blocks", "workspaces_gpu", "simplify",
      "mark_noncanonical", "overwrite_outputs",
      "widen_outputs", "seed_sums", "lane_groups", "flat_positions", "unroll_jam",
      "vector_loads"]),
], ids=["default", "serial"])
def test_the_pipelines_follow_the_schedule(schedule, cpu, cuda):
    assert _names(cpu_pipeline(schedule)) == cpu
    assert _names(cuda_pipeline(schedule)) == cuda


def test_deterministic_is_a_pipeline_parameter():
    """The scalar reduction takes atomics by default and one warp when deterministic."""
    atomic = spc.compile("s = A[i,j]", formats={"A": "csr"}, **CUDA)
    fixed = spc.compile("s = A[i,j]", formats={"A": "csr"}, deterministic=True, **CUDA)
    assert "atomic" in atomic.ir and "atomic" not in fixed.ir


# ---------------------------------------------------------------------- schedule_space


SPACE_KERNELS = ["spmv", "spmm", "sddmm"]


@pytest.mark.parametrize("kernel", SPACE_KERNELS)
def test_the_cpu_space_lists_each_legal_schedule_once(kernel):
    space = spc.schedule_space(kernel, fmt="csr")
    default = spc.compile(kernel, fmt="csr")
    assert space[0].order == default.schedule.order
    assert len(set(space)) == len(space)
    irs = [spc.compile(kernel, fmt="csr", schedule=s).ir for s in space]
    assert len(set(irs)) == len(irs)                        # no two give the same kernel


def _operands(kernel, A, rng, width=5, rank=3):
    """(operands, scipy's result) of a named kernel on ``A``: SpMM with ``width``
    columns, SDDMM with inner dimension ``rank``."""
    m, n = A.shape
    if kernel == "spmv":
        x = rng.standard_normal(n)
        return (A, x), A @ x
    if kernel == "spmm":
        B = rng.standard_normal((n, width))
        return (A, B), A @ B
    X, Y = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
    return (A, X, Y), A.multiply(X @ Y.T).toarray()


def _matrix():
    """Empty rows, one dense row, the rest random."""
    A = sp.random(9, 7, density=0.3, format="lil", random_state=3)
    A[2, :] = 0
    A[5, :] = np.arange(1, 8)
    return A.tocsr()


@pytest.mark.parametrize("kernel", SPACE_KERNELS)
def test_every_cpu_schedule_gives_scipys_numbers(kernel):
    A = _matrix()
    ops, want = _operands(kernel, A, np.random.default_rng(0))
    for s in spc.schedule_space(kernel, fmt="csr", dtype="float64"):
        got = spc.compile(kernel, fmt="csr", dtype="float64", schedule=s)(*ops)
        got = got.toarray() if hasattr(got, "toarray") else got
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str(s))


@pytest.mark.parametrize("kernel", SPACE_KERNELS)
def test_launch_knobs_leave_the_cuda_source_alone(kernel):
    """A renderer prints: equal IR gives equal source, whatever the launch knobs."""
    by_ir: dict[str, str] = {}
    space = spc.schedule_space(kernel, fmt="csr", **CUDA)
    assert space
    for s in space:
        k = spc.compile(kernel, fmt="csr", schedule=s, **CUDA)
        assert by_ir.setdefault(k.ir, k.source) == k.source, str(s)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_every_kernel_of_the_cuda_spaces_builds_with_nvcc():
    sources = {}
    for kernel in SPACE_KERNELS:
        for s in spc.schedule_space(kernel, fmt="csr", **CUDA):
            k = spc.compile(kernel, fmt="csr", schedule=s, **CUDA)
            sources.setdefault(k.ir, k.source)
    for (code, log), ir in zip(nvcc_many(list(sources.values())), sources):
        assert code == 0, f"{log}\n--- ir ---\n{ir}"


@pytest.mark.parametrize("fmt", ["csr", "coo", "bsr(2,2)", "ell", "dia"])
@pytest.mark.parametrize("kernel", SPACE_KERNELS)
def test_every_cuda_schedule_runs_race_free_in_the_interpreter(kernel, fmt):
    """The CUDA IR of each schedule in the space, run by the reference interpreter
    (which refuses two concurrent iterations storing one entry without an atomic),
    gives scipy's numbers: the GPU's races and wrong answers, seen without a GPU."""
    from spc.ir.nodes import DType
    from test_cuda_render import _run_with
    A = _matrix()
    ops, want = _operands(kernel, A, np.random.default_rng(2))
    seen = set()
    for s in spc.schedule_space(kernel, fmt=fmt, dtype="float64", **CUDA):
        cuda = spc.compile(kernel, fmt=fmt, dtype="float64", schedule=s, **CUDA)
        if cuda.ir in seen:
            continue                                   # launch knobs: the same IR
        seen.add(cuda.ir)
        cpu = dict(fmt=fmt, schedule=spc.Schedule(
            order=s.order, parallel=s.parallel, reorder_rows=s.reorder_rows,
            split_rows=s.split_rows, deterministic=False if s.split_rows else None))
        got = _run_with(cuda._variant(DType.I32).kernels, kernel, cpu, "float64", *ops)
        got = got.toarray() if hasattr(got, "toarray") else got
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str(s))


@pytest.mark.parametrize("expr, formats", [
    ("out[_] = F[i,_] + b", {"F": "bsr(4,3)"}),              # the fuzzer's case: mangled `_`
    ("out[j] = F[i,j] + b[j]", {"F": "bsr(4,3)"}),           # a term that does not split j
    ("y[int] = A[int,do] * x[do]", {"A": "bsr(2,2)"}),       # C words, split
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "bsr(2,2)"}),
])
def test_a_reported_order_with_split_indices_compiles_again(expr, formats):
    """k.schedule names a blocked level's loops ix_blk / ix_in in the user's names, and
    spc.compile takes them back, also for terms that do not split ix."""
    k = spc.compile(expr, formats=formats)
    import re
    assert not any(re.match(r"u[a-z]*_[0-9a-f]{8}_", ix) for ix in k.schedule.order)
    assert spc.compile(expr, formats=formats, schedule=k.schedule).ir == k.ir
    assert spc.schedule_space(expr, formats=formats)


@pytest.mark.parametrize("expr, formats, order, loops", [
    ("out = w[i,p]*w[i,p]", {"w": "bsr(1,4)"}, ("i", "p"), ("i", "p_blk", "p_in")),
    ("y[i] = H[i,j]*x[j]", {"H": "bsr(2,4)"}, ("i", "j"), ("i_blk", "j_blk", "i_in", "j_in")),
    ("R[l] = H[p,l]", {"H": "bsr(4,4)"}, ("p", "l"), ("p_blk", "l_blk", "p_in", "l_in")),
    ("C[i,j] = A[i,k]*B[k,j]", {"A": "bsr(2,2)"}, ("i", "k", "j"),
     ("i_blk", "k_blk", "j", "i_in", "k_in")),
    # a dia operand's l beside bsr's l_blk, l_in: KeyError 'l' checking the expansion
    # (fuzz seed 1313, cases 64-67)
    ("s = Q[l,p]*D[l,p]", {"Q": "bsr(3,1)", "D": "dia"}, ("l", "p"),
     ("l_blk", "l_in", "p")),
])
def test_an_order_over_the_expressions_indices_splits_blocked_ones(expr, formats, order,
                                                                   loops):
    """A user's order names indices, not a blocked level's loops: each index a
    bsr operand splits stands for its block loop and its in-block loop (blocks
    first, as bsr stores them), and the kernel gives scipy's numbers."""
    from spc.frontend.parser import parse
    k = spc.compile(expr, formats=formats, schedule=spc.Schedule(order=order))
    assert f"# order: {','.join(loops)}" in k.ir
    rng = np.random.default_rng(3)
    names = {}
    for acc in parse(expr).accesses():
        shape = tuple({"i": 6, "j": 8, "k": 4, "p": 8, "l": 12}[ix] for ix in acc.indices)
        names[acc.tensor] = rng.standard_normal(shape) * (rng.random(shape) < 0.5)
    got = k(*[names[n] for n in k.input_names])
    subs = parse(expr)
    spec = ",".join("".join(a.indices) for a in subs.accesses()) + "->" + "".join(subs.lhs.indices)
    want = np.einsum(spec, *[names[a.tensor] for a in subs.accesses()])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_an_order_against_a_blocked_storage_reads_a_plain_copy():
    """An order visiting bsr's columns first is served by a copy of H in csc (logged,
    in ``k.copies``); refused before, naming the split loops."""
    k = spc.compile("y[i] = H[i,j]*x[j]", formats={"H": "bsr(2,4)"},
                    schedule=spc.Schedule(order=("j", "i")))
    assert [(c.source, c.format.name) for c in k.copies] == [("H", "csc")]
    assert k.schedule.order == ("j", "i")
    A = _matrix()
    x = np.random.default_rng(3).standard_normal(A.shape[1])
    np.testing.assert_allclose(k(H=A, x=x), A @ x, rtol=1e-5)


def test_an_order_against_the_outputs_storage_is_refused_with_the_order_that_works():
    with pytest.raises(spc.ScheduleError, match=r"visits 'j' before its parent levels in A "
                                                r".*; the order \('i', 'j'\) works"):
        spc.compile("C[i,j] = A[i,j]*2", formats={"A": "csr", "C": "csr"},
                    schedule=spc.Schedule(order=("j", "i")))


# ---------------------------------------------------------------------- launch choices reported


def _launched(kernel, monkeypatch, sizes, lengths, **knobs):
    """A CUDA kernel whose launchers (no GPU: built from no binary) have sized
    one launch of ``sizes`` and buffer ``lengths`` on a 132-multiprocessor GPU."""
    from spc.codegen import cuda
    from spc.ir.nodes import DType
    monkeypatch.setattr(cuda, "_sm_count", lambda device_id: 132)
    k = spc.compile(kernel, fmt="csr", **CUDA, **knobs)
    v = k._variant(DType.I32)
    v.launchers = [cuda.CudaLauncher(b"", kern, schedule=k._schedule) for kern in v.kernels]
    assert k.schedule.wide is knobs.get("wide") and k.schedule.group is knobs.get("group")
    for launcher in v.launchers:
        launcher.configure(sizes, lengths, 0)
    return k


def test_the_reported_schedule_fills_in_the_last_launchs_choices(monkeypatch):
    # SpMM, 1000 x 1000, N = 512: spc_wide decided from the sizes
    k = _launched("spmm", monkeypatch, [1000, 512, 1000], [5000, 1001, 5000, 512000, 512000])
    assert k.schedule.wide in (True, False)
    # SDDMM, K = 64: a lane group and warps per row, or flat positions
    s = _launched("sddmm", monkeypatch, [1000, 1000, 64], [5000, 1001, 5000, 5000, 64000,
                                                            64000]).schedule
    assert s.group in spc.schedule.GROUPS
    assert (s.flat is True and s.split is None) or (s.flat is False and s.split >= 1)


def test_a_launch_knob_asked_for_is_reported_as_asked(monkeypatch):
    k = _launched("spmm", monkeypatch, [1000, 512, 1000], [5000, 1001, 5000, 512000, 512000],
                  wide=False)
    assert k.schedule.wide is False
    k = _launched("sddmm", monkeypatch, [1000, 1000, 64], [5000, 1001, 5000, 5000, 64000, 64000],
                  group=8)
    assert k.schedule.group == 8
