"""The CUDA candidates spc.tune tries, without a GPU: each one the rules keep
either compiles for sm_90 (rendered, and its distinct sources built by nvcc) or
is refused with a ScheduleError (the search reports it as not applying)."""
import numpy as np
import pytest
import scipy.sparse as sp

from cuda_env import NVCC, nvcc_many

import spc
from spc.tuning.candidates import schedules
from spc.tuning.signature import signature

SKEWED = sp.csr_matrix(np.vstack([np.ones((1, 400)), np.eye(64, 400)[:, ::-1] != 0]),
                       dtype=np.float32)


def rendered(kernel):
    sig = signature(SKEWED)
    kept, _ = schedules(kernel, "csr", sig, 32, "cuda")
    sources = {}
    for s in kept:
        try:
            k = spc.compile(kernel, fmt="csr", target="cuda", arch="sm_90", schedule=s)
        except spc.ScheduleError:
            continue
        sources.setdefault(k.source, []).append(s)
    return kept, sources


@pytest.mark.parametrize("kernel", ["spmm", "sddmm"])
def test_cuda_candidates_render_and_compile(kernel):
    kept, sources = rendered(kernel)
    assert len(kept) > 4                         # the rules keep launch knobs and row splits
    assert sum(len(v) for v in sources.values()) >= 4
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    for (code, log), used_by in zip(nvcc_many(list(sources)), sources.values()):
        assert code == 0, f"nvcc failed for {used_by}:\n{log}"
