"""SpMM + bias + ReLU as one kernel against SpMM alone, on the CPU or the GPU.

    python benchmarks/bench_epilogue.py [cpu|cuda]

Issue 12 asks the fused program (``C[i,j] = relu(sum(k, A[i,k]*B[k,j]) + b[j])``,
one kernel) to be no more than 5% slower than SpMM alone.  Three random csr
matrices, float32; the result is checked against numpy first; each time is the
median of 3 medians of repeated calls (on the GPU, torch operands, CUDA events
around bursts of 50 calls: per-call throughput, host and device overlapped),
the two kernels alternating.
"""
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp

import spc

def main(target: str = "cpu") -> int:
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
            def timeit(f):
                # device time per call: CUDA events around 50 back-to-back calls, so
                # the host's launch cost overlaps the kernels (a single call between
                # two events measures the host instead when the kernel is short)
                f(); torch.cuda.synchronize(); ts = []
                for _ in range(10):
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record()
                    for _ in range(50):
                        f()
                    e1.record(); torch.cuda.synchronize(); ts.append(e0.elapsed_time(e1) * 1e3 / 50)
                return statistics.median(ts)
        else:
            f1, f2 = (lambda: plain(A, B)), (lambda: epi(A, B, b))
            want = np.maximum(A @ B + b, 0); got = f2()
            def timeit(f):
                f(); ts = []
                for _ in range(15):
                    t = time.perf_counter(); f(); ts.append((time.perf_counter() - t) * 1e6)
                return statistics.median(ts)
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)
        t1, t2 = [], []
        for _ in range(3):
            t1.append(timeit(f1)); t2.append(timeit(f2))
        a, e = statistics.median(t1), statistics.median(t2)
        print(f"{target} {m}x{k} {dens:.3f} N={n}: spmm {a:.1f} us, spmm+bias+relu {e:.1f} us, ratio {e/a:.3f}; kernels: {len(getattr(epi, 'kernels', [epi]))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
