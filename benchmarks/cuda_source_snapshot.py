"""Render the CUDA C of a representative set of kernels and save or compare it.

A safety net for changes to the CUDA pipeline or renderer that should not change
the generated code (the code the H200 has been measured on):

    python benchmarks/cuda_source_snapshot.py --out /tmp/cuda_before    # before
    python benchmarks/cuda_source_snapshot.py --out /tmp/cuda_after     # after
    python benchmarks/cuda_source_snapshot.py --diff /tmp/cuda_before /tmp/cuda_after

The set: SpMV, SpMM and SDDMM over every family of format, float32 and float64;
the schedules that change the mapping (deterministic, split_rows, reorder_rows,
parallel=False, tensor cores, tf32); the expression kernels of the render tests;
the attention program, fused and not, with and without heads.  Each case is one
file, ``<case>.cu``, holding the kernel source (the helper header, which every
source inlines alike, is cut off).  Rendering needs no GPU.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

FORMATS = ["csr", "csc", "coo", "dcsr", "dense", "bsr(4,4)", "bsr(16,16)", "bsr(3,5)", "ell",
           "dia", "hyb", "nm(2,4)"]
NAMED = ["spmv", "spmm", "sddmm"]
EXPRESSIONS = [
    ("y[i] = A[i,j]*x[j] + b[i]", {"A": "csr"}),
    ("C[i,j] = A[i,j]+B[i,j]", {"A": "csr", "B": "csr", "C": "csr"}),
    ("y[j] = A[i,j]*x[i]", {"A": "csr"}),
    ("s = A[i,j]*x[i]*y[j]", {"A": "csr"}),
    ("C[i,j] = A[i,j]+B[i,j]", {"A": "ell", "B": "csr", "C": "csr"}),
    ("y[j] = A[i,j]*x[i]", {"A": "bsr(4,4)"}),
    ("C[i,j] = exp(A[i,k]*B[k,j])", {"A": "csr"}),
    ("m[i] = max(j, A[i,j])", {"A": "csr"}),
    ("C[i,j] = A[i,k]*B[k,j] + D[i,j]", {"A": "csr"}),
    ("S[i,j] = A[i,j]*X[i,k]*Y[j,k]*2", {"A": "coo", "S": "coo"}),
    ("C[i,l] = T[i,j,k]*M[j,k,l]", {"T": "sdd"}),       # a block's warp loop, jammed
]


def cases():
    """(name, spc.compile keyword arguments) of every case."""
    out = []
    for kernel in NAMED:
        for fmt in FORMATS:
            for dtype in ("float32", "float64"):
                out.append((f"{kernel}-{fmt}-{dtype}", dict(kernel=kernel, fmt=fmt, dtype=dtype)))
        for fmt in ("csr", "coo", "bsr(4,4)"):
            out.append((f"{kernel}-{fmt}-deterministic",
                        dict(kernel=kernel, fmt=fmt, deterministic=True)))
            out.append((f"{kernel}-{fmt}-serial",
                        dict(kernel=kernel, fmt=fmt, schedule=dict(parallel=False))))
        out.append((f"{kernel}-csr-split", dict(kernel=kernel, fmt="csr",
                                                schedule=dict(split_rows=True))))
        out.append((f"{kernel}-csr-split64-f64", dict(kernel=kernel, fmt="csr", dtype="float64",
                                                      schedule=dict(split_rows=64))))
        out.append((f"{kernel}-csr-length", dict(kernel=kernel, fmt="csr",
                                                 schedule=dict(reorder_rows="length"))))
        out.append((f"{kernel}-csr-f16", dict(kernel=kernel, fmt="csr", dtype="float16")))
    out.append(("spmm-bsr16-f16-tc", dict(kernel="spmm", fmt="bsr(16,16)", dtype="float16",
                                          schedule=dict(tensor_cores=True))))
    out.append(("spmm-bsr16-bf16-tc", dict(kernel="spmm", fmt="bsr(16,16)", dtype="bfloat16",
                                           schedule=dict(tensor_cores=True))))
    out.append(("spmm-bsr16-f32-tf32", dict(kernel="spmm", fmt="bsr(16,16)", dtype="float32",
                                            schedule=dict(tensor_cores=True, tf32=True))))
    for k, (expr, formats) in enumerate(EXPRESSIONS):
        out.append((f"expr{k}", dict(kernel=expr, formats=formats)))
        out.append((f"expr{k}-f64", dict(kernel=expr, formats=formats, dtype="float64")))
    for fuse in (True, "rows", False):
        for dtype in ("float32", "float64"):
            out.append((f"attention-fuse{fuse}-{dtype}",
                        dict(kernel="attention", fmt="csr", dtype=dtype, fuse=fuse)))
    return out


def render(kw: dict) -> str:
    """The CUDA source of one case, without the inlined helper header."""
    import spc
    kw = dict(kw)
    kernel = kw.pop("kernel")
    schedule = kw.pop("schedule", None)
    if schedule is not None:
        schedule = spc.Schedule(**schedule)
    k = spc.compile(kernel, target="cuda", arch="sm_90", schedule=schedule, **kw)
    return _without_header(k.source)


def _without_header(source: str) -> str:
    from spc.codegen.cuda import header_text
    return source.replace(header_text(), "// <spc_cuda.h>\n")


def _file_name(case: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", case) + ".cu"


def save(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, kw in cases():
        try:
            text = render(kw)
        except Exception as err:                     # an error is part of the snapshot
            text = f"// error: {type(err).__name__}: {err}\n"
            failures += 1
        (out / _file_name(name)).write_text(text)
    print(f"{len(cases())} cases written to {out} ({failures} errors recorded)")
    return 0


def diff(before: Path, after: Path) -> int:
    """Print the differences of the generated code (the printed IR that each
    source carries as ``//`` comments is compared apart: a pass that records a
    decision in the IR changes it, not the code); exit status 1 when code differs."""
    changed = ir_only = 0
    names = sorted({p.name for p in before.glob("*.cu")} | {p.name for p in after.glob("*.cu")})
    for name in names:
        a = (before / name).read_text().splitlines() if (before / name).exists() else []
        b = (after / name).read_text().splitlines() if (after / name).exists() else []
        code_a, code_b = _code(a), _code(b)
        if code_a != code_b:
            changed += 1
            sys.stdout.writelines(line + "\n" for line in difflib.unified_diff(
                code_a, code_b, f"before/{name}", f"after/{name}", lineterm=""))
        elif a != b:
            ir_only += 1
    print(f"{changed} of {len(names)} sources differ in code; {ir_only} more differ only in "
          f"their printed IR (comments)")
    return 1 if changed else 0


def _code(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("//")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write every case's source here")
    ap.add_argument("--diff", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.out is not None:
        return save(args.out)
    if args.diff is not None:
        return diff(*args.diff)
    ap.error("give --out DIR or --diff BEFORE AFTER")


if __name__ == "__main__":
    sys.exit(main())
