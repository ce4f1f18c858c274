"""GPU benchmark of unstructured SpMM on tensor cores (issue 11, part 2, third bullet):
spc's condensed SpMM (rows in windows of 16, each window's distinct columns in
chunks, each chunk a dense tile on ``mma.sync``: ``passes/tensorize_chunks.py``) in
float16 and as tf32, against cuSPARSE through torch in float32 and float16, on the
DLMC matrices.

    python benchmarks/bench_condensed_gpu.py [--families transformer,rn50]
                                             [--per-family 4 | --all] [--ns 128,256,512]
                                             [--tiles 32,64] [--reps 20]

Per case (a DLMC matrix, values uniform in [-1, 1) seeded from its file, times an
K x N dense matrix), in one process and one profiler session: device time
(torch.profiler, the GPU time of one call's kernels) of
- cusparse_fp32: ``torch.mm`` of the matrix as a torch CSR tensor in float32 (cuSPARSE
  SpMM), the issue's baseline;
- cusparse_fp16: the same in float16 (where torch's cuSPARSE path takes it);
- spc_f16_<W>: spc's ``condensed(16,16)`` SpMM in float16, ``tile_cols=W``;
- spc_tf32_<W>: spc's ``condensed(16,8)`` SpMM on float32 values with ``tf32=True``;
- spc_unstaged: spc_f16 at the first tile width with ``stage_tiles=False`` (gathered B
  rows read from global memory, not staged in shared memory);
- spc_csr_fp32: spc's own CSR SpMM in float32 (scalar loops).
spc's operands are converted and prepared once and called with ``validate=False``.
Every result is checked against float64 from the same inputs (float16 ones for the
float16 systems, float32 for the others) before timing; a system over the tolerance
is reported and not timed.  Columns ``fill``: the matrix's nonzeros per stored slot of
the condensed(16,16) tiles (what decides whether the tiles pay; a cost rule choosing
the format from it is left to the schedule's tuner).  Prints one row per case, then
per family the geometric mean of cusparse_fp32's time over spc's best (the issue's
done-when: >= 2).
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

from bench_gpu import device_times  # noqa: E402
from bench_precision_gpu import geo, rel  # noqa: E402
from common import DEFAULT_DATA, entries, load, quick_pick  # noqa: E402

# max |error| / max |reference|; tf32 rounds both inputs (10-bit mantissas) and the
# DLMC rows sum up to ~1,200 products
TOL = {"f16": 2e-3, "tf32": 5e-3, "fp32": 1e-4}


def torch_csr(torch, A, dtype):
    """scipy CSR ``A`` as a torch CSR tensor of ``dtype`` on the GPU."""
    return torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)),
                                   torch.from_numpy(A.indices.astype(np.int64)),
                                   torch.from_numpy(A.data.astype(np.float32)),
                                   size=A.shape).to(dtype).cuda()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--families", default="transformer,rn50")
    ap.add_argument("--per-family", type=int, default=4)
    ap.add_argument("--all", action="store_true", help="every matrix of the families")
    ap.add_argument("--ns", default="128,256,512")
    ap.add_argument("--tiles", default="32,64")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    if not (args.data / "MANIFEST.tsv").exists():
        print(f"# skipped: no corpus at {args.data} (MANIFEST.tsv missing; see its README)")
        return 0
    import torch
    import spc
    found = entries(args.data, families=args.families.split(","))
    if not found:
        print(f"# skipped: no DLMC matrix of {args.families} under {args.data}")
        return 0
    picked = found if args.all else quick_pick(found, args.per_family)
    tiles = [int(t) for t in args.tiles.split(",")]
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
          f"{torch.cuda.get_device_name()} torch {torch.__version__}; device time per call "
          f"in microseconds (torch.profiler), {args.reps} calls each; spc "
          f"{spc.__version__}")
    kernels = {}
    for w in tiles:
        kernels[f"spc_f16_{w}"] = ("f16", spc.compile("spmm", fmt="condensed(16,16)",
                                                      target="cuda", dtype="float16",
                                                      tile_cols=w))
        kernels[f"spc_tf32_{w}"] = ("tf32", spc.compile("spmm", fmt="condensed(16,8)",
                                                        target="cuda", dtype="float32",
                                                        tf32=True, tile_cols=w))
    kernels["spc_unstaged"] = ("f16", spc.compile("spmm", fmt="condensed(16,16)",
                                                  target="cuda", dtype="float16",
                                                  tile_cols=tiles[0], stage_tiles=False))
    kernels["spc_csr_fp32"] = ("fp32", spc.compile("spmm", fmt="csr", target="cuda",
                                                   dtype="float32"))
    for name, (_, k) in kernels.items():
        assert name == "spc_csr_fp32" or k.schedule.tensor_cores is True, name
        assert name in ("spc_csr_fp32", "spc_unstaged") or k.schedule.stage_tiles is True, name
    systems = ["cusparse_fp32", "cusparse_fp16", *kernels]
    head = ("matrix", "N", "fill", *systems)
    print(f"{head[0]:>52} " + " ".join(f"{h:>13}" for h in head[1:]))
    rows, failed = [], False
    for entry in picked:
        A = load(entry)
        A16 = A.astype(np.float32)                          # the float16 systems' values
        A16.data = A16.data.astype(np.float16).astype(np.float32)   # (scipy holds no float16)
        t16 = spc.tensor(A, "condensed(16,16)", dtype="float16")
        t8 = spc.tensor(A, "condensed(16,8)", dtype="float32")
        fill = A.nnz / max(len(t16.vals), 1)
        prepared = {name: k.prepare(t16 if kind == "f16" else t8 if kind == "tf32" else A,
                                    name="A") for name, (kind, k) in kernels.items()}
        base = {"cusparse_fp32": torch_csr(torch, A, torch.float32),
                "cusparse_fp16": torch_csr(torch, A16, torch.float16)}
        for n in (int(x) for x in args.ns.split(",")):
            g = torch.Generator(device="cuda").manual_seed(n)
            B32 = torch.rand((A.shape[1], n), generator=g, device="cuda") * 2 - 1
            B16 = B32.half()
            ref32 = A.astype(np.float64) @ B32.double().cpu().numpy()
            ref16 = A16.astype(np.float64) @ B16.double().cpu().numpy()
            calls = [("cusparse_fp32", lambda: torch.mm(base["cusparse_fp32"], B32), "fp32"),
                     ("cusparse_fp16", lambda: torch.mm(base["cusparse_fp16"], B16), "f16")]
            calls += [(name, lambda k=k, p=prepared[name], B=(B16 if kind == "f16" else B32):
                       k(p, B, validate=False), kind) for name, (kind, k) in kernels.items()]
            ok_calls = []
            for name, fn, kind in calls:
                try:
                    out = fn()
                except (RuntimeError, ValueError, NotImplementedError) as err:
                    print(f"# {name} ({entry.name}, N {n}): {type(err).__name__}: "
                          f"{str(err).splitlines()[0][:120]}")
                    continue
                err = rel(out.double().cpu().numpy(), ref16 if kind == "f16" else ref32)
                if err > TOL[kind]:
                    print(f"# {name} ({entry.name}, N {n}): relative error {err:.2e} > "
                          f"{TOL[kind]}: not timed")
                    failed |= name.startswith("spc")
                    continue
                ok_calls.append((name, fn))
            times = device_times(torch, ok_calls, args.reps)
            row = dict(matrix=entry.name, family=entry.family, N=n, fill=fill, **times)
            rows.append(row)
            us = lambda key: f"{row.get(key, float('nan')) * 1e6:13.1f}"  # noqa: E731
            print(f"{entry.name:>52} {n:>13} {fill:13.3f} " + " ".join(us(h) for h in systems),
                  flush=True)
    print("\n# cusparse_fp32 time / spc's best (> 1: spc faster); done-when: >= 2 on the DLMC "
          "families")
    inf = float("inf")
    f16 = [s for s in kernels if s.startswith("spc_f16")]
    tf32 = [s for s in kernels if s.startswith("spc_tf32")]
    for fam in dict.fromkeys(r["family"] for r in rows):
        cells = []
        for label, group in (("f16", f16), ("tf32", tf32), ("cusparse_fp16", ["cusparse_fp16"])):
            ratios = [r.get("cusparse_fp32", inf) / min(r.get(s, inf) for s in group)
                      for r in rows if r["family"] == fam]
            ratios = [x for x in ratios if 0 < x < inf and x == x]
            cells.append(f"{label} {geo(ratios):.2f}x over {len(ratios)} cases" if ratios
                         else f"{label} -")
        print(f"# {fam}: " + "; ".join(cells))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
