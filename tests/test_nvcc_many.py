"""cuda_env.nvcc_many, the batched nvcc the build checks use, gives each source
the verdict nvcc gives it alone: a broken source fails with its own log while
its unit's others pass, kernels of equal names do not collide, one source cannot
see another's definitions, and a source that defines macros is compiled alone."""
from __future__ import annotations

import pytest

import spc
from cuda_env import NVCC, _header_and_kernels, _unit, nvcc, nvcc_many

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")

CUDA = dict(target="cuda", arch="sm_90")


def _sources():
    spmm = spc.compile("spmm", fmt="csr", **CUDA).source
    spmm_det = spc.compile("spmm", fmt="csr", deterministic=True, **CUDA).source
    sddmm = spc.compile("sddmm", fmt="coo", dtype="float64", **CUDA).source
    return spmm, spmm_det, sddmm


def test_equal_kernel_names_share_a_unit_and_a_broken_source_fails_alone():
    spmm, spmm_det, sddmm = _sources()
    assert _header_and_kernels(spmm)[1] == _header_and_kernels(spmm_det)[1]   # same names
    shapes = [_header_and_kernels(s) for s in (spmm, spmm_det, spmm, sddmm)]
    assert len({header for header, _ in shapes}) == 1
    unit = _unit(shapes[0][0], [(s, names) for s, (_, names) in
                                zip((spmm, spmm_det, spmm, sddmm), shapes)])
    assert nvcc(unit) == (0, "")                     # one unit, no fallback needed
    broken = spmm.replace("{\n    const int spc_lane", "{\n    const int spc_lane = nope;", 1)
    assert broken != spmm
    verdicts = nvcc_many([spmm, broken, spmm_det, spmm, sddmm])
    assert [code == 0 for code, _ in verdicts] == [True, False, True, True, True]
    alone_code, alone_log = nvcc(broken)
    assert alone_code != 0 and "nope" in alone_log
    assert verdicts[1][0] == alone_code and "nope" in verdicts[1][1]


def test_a_source_cannot_use_what_another_in_its_unit_defines():
    spmm, _, sddmm = _sources()
    defines = spmm + "\n__device__ int spc_probe_value = 1;\n"
    uses = sddmm + "\n__device__ int spc_probe_copy = spc_probe_value;\n"
    assert nvcc(defines)[0] == 0 and nvcc(uses)[0] != 0
    assert [code == 0 for code, _ in nvcc_many([defines, uses])] == [True, False]


def test_a_source_that_defines_a_macro_or_includes_is_compiled_alone():
    spmm, _, sddmm = _sources()
    leaky = spmm + "\n#define float double\n"
    assert _header_and_kernels(leaky) is None
    assert _header_and_kernels("__global__ void k() {}") is None
    # were it batched, the macro would turn the next source's floats into doubles
    assert [code == 0 for code, _ in nvcc_many([leaky, sddmm])] == [True, True]


def test_a_unit_compiles_for_the_arch_asked():
    """A kernel using a bf16 atomic add compiles for sm_90 and for sm_75 (through
    its compare-and-swap fallback) in units as alone."""
    src = spc.compile("spmv", fmt="coo", dtype="bfloat16", **CUDA).source
    other = spc.compile("spmv", fmt="csr", dtype="bfloat16", **CUDA).source
    for arch in ("sm_90", "sm_75"):
        assert [v[0] for v in nvcc_many([src, other], arch=arch)] == \
            [nvcc(src, arch)[0], nvcc(other, arch)[0]] == [0, 0]
