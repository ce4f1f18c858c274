"""GPU benchmark of 16-bit values (issue 11): spc's SpMM and SDDMM in float16 and
bfloat16 against its own float32, cuSPARSE through torch at the same precision,
and dense cuBLAS, with the error of each against float64.

    python benchmarks/bench_precision_gpu.py [--data DIR] [--per-family 2] [--ns 128,512]

Per matrix and N, in one process and one profiler session per case: device time
(torch.profiler, the GPU time of one call's kernels) of
- cuSPARSE: ``torch.sparse.mm`` on a CSR tensor in float32 and in float16 / bfloat16;
- dense cuBLAS: ``torch.mm`` of the dense matrix, float16;
- spc: the default schedule in float32, float16 and bfloat16, and ``split_rows=True``
  in float16 (operands prepared once, ``validate=False``).
Errors are relative (max |got - ref| / max |ref|) against float64 computed from the
same 16-bit inputs.  Prints one row per case, then geometric means per family of
spc fp16 / spc fp32 speed and cuSPARSE fp16 / spc fp16.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_gpu import device_times, pick  # noqa: E402
from common import DEFAULT_DATA, entries, load  # noqa: E402
from common import geomean as geo  # noqa: E402 - bench_bsr_gpu imports geo from here too


def rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-family", type=int, default=2)
    ap.add_argument("--ns", default="128,512")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    import torch
    import spc
    ns = [int(n) for n in args.ns.split(",")]
    dev = "cuda"
    print(f"# {datetime.date.today()} {torch.cuda.get_device_name()} torch {torch.__version__}")
    head = ("matrix", "N", "cusp32", "cusp16", "cublas16", "spc32", "spc16", "spcbf16",
            "spc16split", "err16", "errcusp16", "errbf16")
    print(" ".join(f"{h:>10}" for h in head))
    rows = []
    kernels = {}
    for e in pick(entries(args.data), args.per_family):
        A32 = load(e)
        for n in ns:
            rng = np.random.default_rng(0)
            B32 = rng.uniform(-1, 1, (A32.shape[1], n)).astype(np.float32)
            times, errs = {}, {}
            calls = []
            for tdt, name in ((torch.float32, "32"), (torch.float16, "16"),
                              (torch.bfloat16, "bf16")):
                Ad = torch.sparse_csr_tensor(
                    torch.tensor(A32.indptr, device=dev), torch.tensor(A32.indices, device=dev),
                    torch.tensor(A32.data, device=dev).to(tdt), A32.shape)
                B = torch.tensor(B32, device=dev).to(tdt)
                A64 = A32.copy()
                A64.data = Ad.values().double().cpu().numpy()
                ref = A64 @ B.double().cpu().numpy()
                key = ("spc", name)
                if key not in kernels:
                    kernels[key] = spc.compile("spmm", target="cuda")
                k = kernels[key]
                p = k.prepare(Ad)
                got = k(p, B, validate=False)
                errs[name] = rel(got.double().cpu().numpy(), ref)
                calls.append((f"spc{name}", lambda k=k, p=p, B=B: k(p, B, validate=False)))
                if name == "16":
                    ks = kernels.setdefault(("split", name),
                                            spc.compile("spmm", target="cuda", split_rows=True))
                    ps = ks.prepare(Ad)
                    errs["split"] = rel(ks(ps, B, validate=False).double().cpu().numpy(), ref)
                    calls.append(("spc16split", lambda ks=ks, ps=ps, B=B: ks(ps, B,
                                                                            validate=False)))
                    dense = Ad.to_dense()
                    calls.append(("cublas16", lambda d=dense, B=B: torch.mm(d, B)))
                if name in ("32", "16"):
                    try:
                        c = torch.sparse.mm(Ad, B)
                        errs[f"cusp{name}"] = rel(c.double().cpu().numpy(), ref)
                        calls.append((f"cusp{name}", lambda Ad=Ad, B=B: torch.sparse.mm(Ad, B)))
                    except RuntimeError as err:
                        print(f"# cuSPARSE {name}: {err}".splitlines()[0])
            for fn in (f for _, f in calls):
                fn()
            times = device_times(torch, calls, args.reps)
            row = dict(matrix=Path(e.path).stem[:24], family=e.family, N=n, **times,
                       err16=errs.get("16"), errcusp16=errs.get("cusp16"),
                       errbf16=errs.get("bf16"))
            rows.append(row)
            us = lambda key: f"{row.get(key, float('nan')) * 1e6:10.1f}"  # noqa: E731
            print(f"{row['matrix']:>24} {n:>5} " + " ".join(us(h) for h in head[2:9]) +
                  " " + " ".join(f"{row[h] if row[h] is not None else float('nan'):10.1e}"
                                 for h in head[9:]), flush=True)
    print("\n# per family, geometric means (ratios of device time)")
    print(f"{'family':>12} {'N':>5} {'spc32/spc16':>12} {'cusp16/spc16':>13} "
          f"{'cusp32/spc16':>13} {'cublas16/spc16':>15} {'spc32/spcbf16':>14}")
    for fam in sorted({r["family"] for r in rows}):
        for n in ns:
            rs = [r for r in rows if r["family"] == fam and r["N"] == n]
            best16 = lambda r: min(r["spc16"], r.get("spc16split", float("inf")))  # noqa
            print(f"{fam:>12} {n:>5} {geo([r['spc32'] / r['spc16'] for r in rs]):12.2f} "
                  f"{geo([r.get('cusp16', float('nan')) / best16(r) for r in rs]):13.2f} "
                  f"{geo([r['cusp32'] / best16(r) for r in rs]):13.2f} "
                  f"{geo([r['cublas16'] / best16(r) for r in rs]):15.2f} "
                  f"{geo([r['spc32'] / r['spcbf16'] for r in rs]):14.2f}")
    worst = max(max(r["err16"], r["errbf16"] / 5) for r in rows)
    print(f"# worst error: fp16 {max(r['err16'] for r in rows):.1e}, "
          f"bf16 {max(r['errbf16'] for r in rows):.1e} (bars 2e-3, 1e-2)")
    return 0 if worst <= 2e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
