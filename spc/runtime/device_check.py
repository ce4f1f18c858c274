"""Checking a device operand's storage on its device, with kernels made from the IR.

``storage_problems(t)`` runs, level by level, the kernels that each level
format offers (``Level.device_check``, built from ``formats/storage_check``
through the CUDA target's pipeline and cached like any kernel), all adding
into one two-counter status array, and reads that array back once: one
synchronization, no CuPy elementwise or reduction kernel, and no compilation
beyond spc's own cached kernels.
"""
from __future__ import annotations

import threading

from ..formats.storage_check import ORDER, STRUCTURE
from ..formats.tensor import Tensor
from ..ir.nodes import DType, Kernel
from ..ir.printer import format_kernel
from ..ir.verify import verify
from . import cache

NOT_CHECKED = object()
_launchers: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


def _launcher(kernel: Kernel, target):
    """``kernel`` through ``target``'s default pipeline, built (or loaded from the
    cache) and ready to launch on CuPy arrays."""
    key = (kernel.name, target.cache_key())
    hit = _launchers.get(key)
    if hit is not None:
        return hit
    from ..schedule import Schedule
    for pass_ in target.pipeline(Schedule()):
        kernel = verify(pass_(kernel))
    launcher = cache.load_or_build(
        cache.cache_key(format_kernel(kernel), target.cache_key()),
        lambda: target.build(target.render(kernel), kernel),
        lambda binary: target.load(binary, kernel), target.recognise)
    with _lock:
        _launchers[key] = launcher
    return launcher


def _index_dtype(t: Tensor) -> DType | None:
    kinds = {a.dtype.name for lv in t.arrays for a in lv.values()}
    if kinds <= {"int32"}:
        return DType.I32
    if kinds <= {"int64"}:
        return DType.I64
    return None


def check_plan(t: Tensor):
    """The launches that check Tensor ``t``'s storage: a list of (kernel, its
    buffers by parameter name, its sizes by parameter name), the status array
    left out (every launch adds into the same one); or "structure" where the
    arrays' shapes are wrong already; or ``NOT_CHECKED`` where a level has no
    device check or the index arrays mix types."""
    index = _index_dtype(t)
    levels = t.format.levels
    if index is None:
        return NOT_CHECKED
    plan = []
    count = 1
    for lvl, (level, dim) in enumerate(zip(levels, t.level_dims)):
        arrays = t.arrays[lvl]
        kernels = level.device_check(index, levels[lvl - 1] if lvl else None)
        if kernels is None:
            return NOT_CHECKED
        if not level.lengths_fit(arrays, count):
            return "structure"
        parent = t.arrays[lvl - 1] if lvl else {}
        for kernel in kernels:
            buffers = {"pos": arrays.get("pos"), "crd": arrays.get("crd"),
                       "parent_crd": parent.get("crd")}
            sizes = {"count": count, "dim": dim, "nnz": len(arrays.get("crd", ()))}
            names = {p.name for p in kernel.params}
            plan.append((kernel, {k: v for k, v in buffers.items() if k in names},
                         {k: v for k, v in sizes.items() if k in names}))
        count = level.size(arrays, count, dim)
    if getattr(t.vals, "ndim", None) != 1 or len(t.vals) != count:
        return "structure"
    return plan


def verdict(status) -> str | None:
    """"structure", "order" or None from a status array's two counters."""
    if status[STRUCTURE]:
        return "structure"
    return "order" if status[ORDER] else None


def storage_problems(t: Tensor, cp, target):
    """None if device Tensor ``t`` (CuPy arrays) is well formed; "order" if its
    only problem is unsorted or duplicate coordinates; "structure" otherwise;
    ``NOT_CHECKED`` where ``check_plan`` says so (the caller checks a host
    copy).  Launches on the current stream and synchronizes once."""
    plan = check_plan(t)
    if plan is NOT_CHECKED or isinstance(plan, str) or not plan:
        return plan or None
    wide = plan[0][0].param("crd").value.dtype is DType.I64     # every check reads a crd
    status = cp.zeros(2, dtype=cp.int32)
    for kernel, buffers, sizes in plan:
        args = {**buffers, **sizes, "status": status}
        params = kernel.params
        _launcher(kernel, target)([args[p.name] for p in params if p.name in buffers
                                   or p.name == "status"],
                                  [args[p.name] for p in params if p.name in sizes],
                                  narrow_ok=not wide)
    return verdict(status.get())
