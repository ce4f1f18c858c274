"""``spc.export``: a compiled kernel as a standalone artifact (no Python needed).

For target="cpu": ``<name>.o`` (object code for the compiling CPU), ``<name>.ll``
(its LLVM IR) and ``<name>.h`` (the entry and a call with named parameters).
For target="cuda": ``<name>.cu`` (the rendered kernel plus a host launch
function sizing the grid as spc's launcher does) and ``<name>.h``.  Both come
with ``spc_mtx.h`` (a Matrix Market reader), ``example.c`` / ``example.cu``
(runs the kernel on .mtx files) and a ``Makefile``.  See docs/export.md.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ExportError
from .plan import compiled_of, plan_export

_C_DIR = Path(__file__).resolve().parent / "c"


def export(kernel, directory, *, dtype=None, index: str = "int32",
           example: bool = True) -> Path:
    """Write ``kernel`` (what ``spc.compile`` returned) into ``directory`` as a
    standalone artifact, and return the directory's path.

    ``dtype``: the value type to export a ``dtype=None`` kernel for (default
    float32).  ``index``: the index arrays' type, "int32" or "int64".
    ``example``: also write the C example (``spc_mtx.h``, ``example.c`` or
    ``example.cu``, ``Makefile``), which needs csr and dense operands of rank
    at most 2.  Requires: one kernel without inspectors or workspaces, float32
    or float64 values; otherwise an ``spc.ExportError`` says why.  Ensures:
    the files named in docs/export.md exist in ``directory`` (created if
    missing; files of the same names are replaced).
    """
    from ..ir.nodes import DType
    dt = None if dtype is None else DType.from_numpy(str(dtype))
    plan = plan_export(compiled_of(kernel, dt), index)
    if example and plan.example_problem is not None:
        raise ExportError(f"{plan.name}: no C example: {plan.example_problem}; pass "
                          f"example=False to export the kernel and its header only")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if plan.target.name == "cpu":
        from .cpu import makefile, write_cpu
        write_cpu(plan, out)
        example_name, cuda = "example.c", False
    elif plan.target.name == "cuda":
        from .cuda import makefile, write_cuda
        write_cuda(plan, out)
        example_name, cuda = "example.cu", True
    else:
        raise ExportError(f"target {plan.target.name!r} has no export")
    if example:
        from .example import render_example
        shutil.copyfile(_C_DIR / "spc_mtx.h", out / "spc_mtx.h")
        (out / example_name).write_text(render_example(plan, f"{plan.name}.h", cuda))
        (out / "Makefile").write_text(makefile(plan))
    return out


__all__ = ["export"]
