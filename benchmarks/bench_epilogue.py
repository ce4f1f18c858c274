"""SpMM + bias + ReLU as one kernel against SpMM alone, on the CPU or the GPU.

    python benchmarks/bench_epilogue.py [cpu|cuda]

Issue 12 asks the fused program (``C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])``,
one kernel) to be no more than 5% slower than SpMM alone.  Three random csr
matrices, float32; the result is checked against numpy first; each time is the
median of 3 medians, the two kernels alternating.  CPU: the median of 15 calls
timed call by call after one warm-up (``common.call_times``).  GPU (torch
operands): the device time per call from ``common.gpu_kernel_time`` (triton's
``do_bench``, L2 flushed before each call, where triton is importable; else
CUDA events around each call); each line names the timer.
"""
import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", nargs="?", default="cpu", choices=("cpu", "cuda"))
    target = ap.parse_args(argv).target
    import spc
    rng = np.random.default_rng(0)
    for (m, k, dens, n) in ((4096, 4096, 0.01, 128), (2048, 2048, 0.05, 64), (16384, 16384, 0.001, 256)):
        A = sp.random(m, k, density=dens, format="csr", dtype=np.float32, random_state=1)
        B = rng.standard_normal((k, n)).astype(np.float32); b = rng.standard_normal(n).astype(np.float32)
        plain = spc.compile("spmm", target=target)
        epi = spc.compile("C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])", formats={"A": "csr"}, target=target)
        if target == "cuda":
            import torch
            At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr).int(), torch.from_numpy(A.indices).int(), torch.from_numpy(A.data), A.shape).cuda()
            Bt, bt = torch.from_numpy(B).cuda(), torch.from_numpy(b).cuda()
            f1, f2 = (lambda: plain(At, Bt)), (lambda: epi(At, Bt, bt))
            want = np.maximum(A @ B + b, 0); got = f2().cpu().numpy()
            timers = set()

            def timeit(f):
                t = common.gpu_kernel_time(torch, f)
                timers.add(t.timer)
                return t.seconds * 1e6
        else:
            f1, f2 = (lambda: plain(A, B)), (lambda: epi(A, B, b))
            want = np.maximum(A @ B + b, 0); got = f2()
            timers = {"call-by-call median"}

            def timeit(f):
                return statistics.median(common.call_times(f, min_repeats=15, warmup=1)) * 1e6
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)
        t1, t2 = [], []
        for _ in range(3):
            t1.append(timeit(f1)); t2.append(timeit(f2))
        a, e = statistics.median(t1), statistics.median(t2)
        print(f"{target} {m}x{k} {dens:.3f} N={n}: spmm {a:.1f} us, spmm+bias+relu {e:.1f} us, ratio {e/a:.3f}; "
              f"kernels: {len(getattr(epi, 'kernels', [epi]))}; timer: {', '.join(sorted(timers))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
