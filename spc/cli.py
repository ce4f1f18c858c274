"""The ``spc`` command: ``spc --version``, ``spc show``, ``spc export``, ``spc cache``,
``spc tune``, ``spc bench``.

    spc show spmm --fmt csr --target cuda --arch sm_90 --source
    spc show "y[i] = A[i,j] * x[j]" --format A=csr
    spc export spmv --fmt csr --dtype float64 spmv_export   (then: cd spmv_export && make)
    spc cache info        (or: spc cache clear)
    spc tune ../shared/data/graphs --kernel spmm --n 32 128 --budget 10 --out tune_report
    spc bench --list      (then: spc bench cpu --quick; spc bench call-gpu --help)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    ap = argparse.ArgumentParser(prog="spc", description="spc, a sparse tensor compiler")
    ap.add_argument("--version", action="version", version=f"spc {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    show = sub.add_parser("show", help="print a kernel's scheduled IR (and its source)",
                          description="Print the scheduled loop IR of a named kernel "
                                      "(spmv, spmm, sddmm...) or an expression.")
    _kernel_arguments(show)
    show.add_argument("--source", action="store_true", help="print the LLVM IR / CUDA C too")
    export = sub.add_parser("export", help="write a kernel as a standalone C/CUDA artifact",
                            description="Write a kernel as object code (cpu) or CUDA C "
                                        "(cuda) with a header, a C example that runs it "
                                        "on Matrix Market files and a Makefile "
                                        "(docs/export.md).")
    _kernel_arguments(export)
    export.add_argument("directory", type=Path, help="where to write the files")
    export.add_argument("--index", default="int32", choices=("int32", "int64"),
                        help="the index arrays' type (default int32)")
    export.add_argument("--no-example", action="store_true",
                        help="write the kernel and its header only")
    cache = sub.add_parser("cache", help="the compiled-kernel cache",
                           description="Show or empty the compiled-kernel cache.")
    cache.add_argument("action", nargs="?", default="info", choices=("info", "clear"))
    tune = sub.add_parser("tune", help="tune a kernel over matrix files and record the best",
                          description="Search formats and schedules of a named kernel for "
                                      "each matrix file (.smtx, .mtx, optionally .gz, .npz; "
                                      "folders are searched) and each N, record the winners "
                                      "in the tuning database (used by schedule='auto') "
                                      "and write a report.  A missing or malformed file is "
                                      "reported and skipped; the exit status is 1 then.")
    tune.add_argument("paths", nargs="+", metavar="PATH", help="matrix files or folders")
    tune.add_argument("--kernel", default="spmm", choices=("spmv", "spmm", "sddmm"))
    tune.add_argument("--n", type=int, nargs="+", default=[32], metavar="N",
                      help="dense widths: SpMM's output columns, SDDMM's inner size "
                           "(default 32)")
    tune.add_argument("--target", default="cpu", choices=("cpu", "cuda"))
    tune.add_argument("--budget", type=float, default=10.0, metavar="S",
                      help="seconds per matrix and N after which no new candidate starts "
                           "(default 10)")
    tune.add_argument("--calls", type=int, default=100,
                      help="calls a format conversion is amortized over (default 100)")
    tune.add_argument("--space", default="rules", choices=("rules", "full"),
                      help="rules: the schedules the tuner's rules keep (default); full: "
                           "every schedule spc.schedule_space lists (slower)")
    tune.add_argument("--out", type=Path, default=None, metavar="DIR",
                      help="write report.md, report.csv, trials.csv (and speedup.png with "
                           "matplotlib) here")
    bench = sub.add_parser("bench", help="run a benchmark suite against the anchors",
                           description="Run one of the benchmark suites of a source "
                                       "checkout (benchmarks/bench_*.py: spc beside scipy, "
                                       "torch, numba, cuSPARSE...); arguments after the "
                                       "suite's name go to it (spc bench cpu --help).")
    bench.add_argument("suite", nargs="?", help="the suite (spc bench --list names them)")
    bench.add_argument("--list", action="store_true", help="list the suites")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the suite's own arguments")
    return ap


def _kernel_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments naming a kernel to compile (``show`` and ``export``)."""
    p.add_argument("kernel", help="a named kernel or an expression in index notation")
    p.add_argument("--fmt", help="the format of the named kernel's sparse operand")
    p.add_argument("--format", action="append", default=[], metavar="TENSOR=FORMAT",
                   help="an expression's tensor format (repeatable), e.g. A=csr")
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--arch", help="CUDA arch to render for (e.g. sm_90; default: the "
                                  "current GPU's)")
    p.add_argument("--dtype", default="float32", help="value type (default float32)")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv``; 0 on success, 2 on a bad request (the
    error printed as ``spc: error: ...``)."""
    import spc
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        if args.command == "show":
            return _show(spc, args)
        if args.command == "export":
            out = spc.export(_compile(spc, args), args.directory, index=args.index,
                             example=not args.no_example)
            print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
            return 0
        if args.command == "cache":
            return _cache(spc, args)
        if args.command == "tune":
            return _tune(args)
        if args.command == "bench":
            return _bench(args)
    except spc.SpcError as err:
        print(f"spc: error: {err}", file=sys.stderr)
        return 2
    ap.print_help()
    return 0


def _compile(spc, args):
    """spc.compile with the kernel arguments of ``show`` and ``export``."""
    formats = {}
    for item in args.format:
        name, eq, fmt = item.partition("=")
        if not eq or not name or not fmt:
            raise spc.FormatError(f"--format takes TENSOR=FORMAT, not {item!r}")
        formats[name] = fmt
    options = {"arch": args.arch} if args.target == "cuda" and args.arch else {}
    return spc.compile(args.kernel, fmt=args.fmt, formats=formats or None,
                       target=args.target, dtype=args.dtype, **options)


def _show(spc, args) -> int:
    k = _compile(spc, args)
    print(k.ir)
    schedules = k.schedules if hasattr(k, "kernels") else (k.schedule,)
    for schedule in schedules:
        print(f"# schedule: {schedule}")
    if args.source:
        print(k.source)
    return 0


def _cache(spc, args) -> int:
    if args.action == "clear":
        print(f"removed {spc.cache.clear()} entries from {spc.cache.info()['directory']}")
        return 0
    for key, value in spc.cache.info().items():
        print(f"{key}: {value}")
    return 0


def _tune(args) -> int:
    from .tuning.sweep import matrix_files, sweep
    files = matrix_files(args.paths)
    if not files:
        print("spc tune: no matrix files under " + ", ".join(args.paths), file=sys.stderr)
        return 1
    if any(n < 1 for n in args.n) or args.calls < 1:
        print("spc tune: --n and --calls must be positive", file=sys.stderr)
        return 2
    from .progress import Progress
    with Progress(len(files) * len(args.n), desc="spc tune", unit="case") as bar:
        rows, problems = sweep(files, args.kernel, args.n, target=args.target,
                               budget_s=args.budget, calls=args.calls, out=args.out,
                               space=args.space, say=bar.write,
                               warn=lambda line: bar.write(line, err=True), advance=bar.update)
    if args.out is not None:
        figure = args.out / "speedup.png"              # there only when this run drew it
        print(f"spc tune: wrote {args.out / 'report.md'}"
              + (f" and {figure}" if figure.is_file() else ""))
    return 1 if problems else 0


def _bench(args) -> int:
    from . import bench_suites
    folder = bench_suites.benchmarks_dir()
    if folder is None:
        print("spc bench: the benchmark suites live in a source checkout's benchmarks/ "
              "folder, which this installation has none of (clone the repository and run "
              "spc from it)", file=sys.stderr)
        return 2
    found = bench_suites.suites(folder)
    if args.list or args.suite is None:
        width = max(map(len, found), default=0)
        for name, script in found.items():
            print(f"{name:{width}s}  {bench_suites.summary(script)}")
        return 0
    script = found.get(args.suite)
    if script is None:
        print(f"spc bench: no suite {args.suite!r} (suites: {', '.join(found)})",
              file=sys.stderr)
        return 2
    return bench_suites.run(script, args.args)


if __name__ == "__main__":
    sys.exit(main())
