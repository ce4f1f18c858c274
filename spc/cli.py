"""The ``spc`` command: ``spc --version``, ``spc show``, ``spc cache``.

    spc show spmm --fmt csr --target cuda --arch sm_90 --source
    spc show "y[i] = A[i,j] * x[j]" --format A=csr
    spc cache info        (or: spc cache clear)
"""
from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    ap = argparse.ArgumentParser(prog="spc", description="spc, a sparse tensor compiler")
    ap.add_argument("--version", action="version", version=f"spc {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    show = sub.add_parser("show", help="print a kernel's scheduled IR (and its source)",
                          description="Print the scheduled loop IR of a named kernel "
                                      "(spmv, spmm, sddmm...) or an expression.")
    show.add_argument("kernel", help="a named kernel or an expression in index notation")
    show.add_argument("--fmt", help="the format of the named kernel's sparse operand")
    show.add_argument("--format", action="append", default=[], metavar="TENSOR=FORMAT",
                      help="an expression's tensor format (repeatable), e.g. A=csr")
    show.add_argument("--target", default="cpu", choices=("cpu", "cuda"))
    show.add_argument("--arch", help="CUDA arch to render for (e.g. sm_90; default: the "
                                     "current GPU's)")
    show.add_argument("--dtype", default="float32", help="value type (default float32)")
    show.add_argument("--source", action="store_true", help="print the LLVM IR / CUDA C too")
    cache = sub.add_parser("cache", help="the compiled-kernel cache",
                           description="Show or empty the compiled-kernel cache.")
    cache.add_argument("action", nargs="?", default="info", choices=("info", "clear"))
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv``; 0 on success, 2 on a bad request (the
    error printed as ``spc: error: ...``)."""
    import spc
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        if args.command == "show":
            return _show(spc, args)
        if args.command == "cache":
            return _cache(spc, args)
    except spc.SpcError as err:
        print(f"spc: error: {err}", file=sys.stderr)
        return 2
    ap.print_help()
    return 0


def _show(spc, args) -> int:
    formats = {}
    for item in args.format:
        name, eq, fmt = item.partition("=")
        if not eq or not name or not fmt:
            raise spc.FormatError(f"--format takes TENSOR=FORMAT, not {item!r}")
        formats[name] = fmt
    options = {"arch": args.arch} if args.target == "cuda" and args.arch else {}
    k = spc.compile(args.kernel, fmt=args.fmt, formats=formats or None, target=args.target,
                    dtype=args.dtype, **options)
    print(k.ir)
    print(f"# schedule: {k.schedule}")
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


if __name__ == "__main__":
    sys.exit(main())
