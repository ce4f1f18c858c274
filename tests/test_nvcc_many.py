"""cuda_env.nvcc_many, the batched nvcc the build checks use, gives each source
the verdict nvcc gives it alone: a broken source fails with its own log while
its unit's others pass, equal kernel names of two sources do not collide, a
source cannot name what another defines nor redefine what the header defines
unseen, and a source with anything else at file scope is compiled alone."""
from __future__ import annotations

import pytest

import spc
from cuda_env import NVCC, _header_and_names, _unit, nvcc, nvcc_many

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")

CUDA = dict(target="cuda", arch="sm_90")


def _sources():
    spmm = spc.compile("spmm", fmt="csr", **CUDA).source
    spmm_det = spc.compile("spmm", fmt="csr", deterministic=True, **CUDA).source
    sddmm = spc.compile("sddmm", fmt="coo", dtype="float64", **CUDA).source
    return spmm, spmm_det, sddmm


def test_equal_kernel_names_share_a_unit_and_a_broken_source_fails_alone():
    spmm, spmm_det, sddmm = _sources()
    assert _header_and_names(spmm)[1] == _header_and_names(spmm_det)[1]   # same names
    assert "spmm_csr_dense_dense_body" in _header_and_names(spmm)[1]
    shapes = [_header_and_names(s) for s in (spmm, spmm_det, spmm, sddmm)]
    assert len({header for header, _ in shapes}) == 1
    unit = _unit(shapes[0][0], [(s, names) for s, (_, names) in
                                zip((spmm, spmm_det, spmm, sddmm), shapes)])
    assert "namespace" not in unit
    assert nvcc(unit) == (0, "")                     # one unit, no fallback needed
    broken = spmm.replace("{\n    const int spc_lane", "{\n    const int spc_lane = nope;", 1)
    assert broken != spmm and _header_and_names(broken) is not None
    verdicts = nvcc_many([spmm, broken, spmm_det, spmm, sddmm])
    assert [code == 0 for code, _ in verdicts] == [True, False, True, True, True]
    alone_code, alone_log = nvcc(broken)
    assert alone_code != 0 and "nope" in alone_log
    assert verdicts[1][0] == alone_code and "nope" in verdicts[1][1]


def test_a_source_cannot_name_what_another_defines():
    """``uses`` calls spmm's body template, which only ``spmm`` defines: alone it
    fails, and in a unit after ``spmm`` it fails too (spmm's names are renamed)."""
    spmm, _, sddmm = _sources()
    call = ("    if (threadIdx.x == 12345) spmm_csr_dense_dense_body<int>("
            "0, 0, 0, 0, 0, 0, 0, 0, 0);\n")
    uses = sddmm.replace("    const int spc_lane", call + "    const int spc_lane", 1)
    assert uses != sddmm and _header_and_names(uses) is not None
    assert nvcc(uses)[0] != 0
    assert [code == 0 for code, _ in nvcc_many([spmm, uses])] == [True, False]


def test_a_source_redefining_a_header_function_is_compiled_alone_and_fails():
    spmm, _, sddmm = _sources()
    header = _header_and_names(spmm)[0]
    assert "void spc_f32_to_f16_atomic_add(" in header
    clash = sddmm + ("\n__device__ __forceinline__ void spc_f32_to_f16_atomic_add("
                     "unsigned short* p, float v) {}\n")
    assert _header_and_names(clash) is None          # a file-scope name not *_body: alone
    assert nvcc(clash)[0] != 0
    assert [code == 0 for code, _ in nvcc_many([spmm, clash])] == [True, False]


@pytest.mark.parametrize("extra", [
    "\n#define float double\n",                        # would change the next source
    "\n__device__ int spc_probe_value = 1;\n",        # a name another could use
    "\nstruct spc_probe { int x; };\n",
])
def test_a_source_with_more_at_file_scope_is_compiled_alone(extra):
    spmm, _, sddmm = _sources()
    assert _header_and_names(spmm + extra) is None
    assert [code == 0 for code, _ in nvcc_many([spmm + extra, sddmm])] == [True, True]


def test_a_source_not_shaped_as_spc_renders_is_compiled_alone():
    assert _header_and_names("__global__ void k() {}") is None
    assert [code for code, _ in nvcc_many(["__global__ void k() {}",
                                           "__global__ void k() {}"])] == [0, 0]


def test_a_unit_compiles_for_the_arch_asked():
    """A kernel using a bf16 atomic add compiles for sm_90 and for sm_75 (through
    its compare-and-swap fallback) in units as alone."""
    src = spc.compile("spmv", fmt="coo", dtype="bfloat16", **CUDA).source
    other = spc.compile("spmv", fmt="csr", dtype="bfloat16", **CUDA).source
    for arch in ("sm_90", "sm_75"):
        assert [v[0] for v in nvcc_many([src, other], arch=arch)] == \
            [nvcc(src, arch)[0], nvcc(other, arch)[0]] == [0, 0]
