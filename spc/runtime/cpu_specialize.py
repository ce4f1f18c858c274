"""The CPU fast call of one kernel as straight-line Python.

``CompiledKernel._fast_call`` walks its ``_FastPlan`` on every call; on a
small SpMV that walk is about 2.4 of the call's 3.6 us (the check, the launch
and the allocation take 1.2; this machine, 2026-11-29), more than scipy's
whole call.  ``specialize`` writes the same steps out once per kernel with the
plan's answers as literals.  It covers plans without inspector arrays (those
keep the walk); the two return the same result for the same call
(tests/test_cpu_specialize.py runs both).
"""
from __future__ import annotations

import numpy as np

from ..formats.inspect_numba import compressed_in_bounds, looks_valid
from ..formats.tensor import Tensor, _is_scipy_sparse
from .launch_cpu import launch, launch_in_bounds, launch_valid


def specialize(ck, plan, view, scipy_result, call_work, small_work):
    """``call(args, validate)`` doing what ``ck._fast_call`` does under ``plan``
    (``view``: the _CompressedView class; ``scipy_result``: the scipy classes a
    pattern result may share; ``call_work``/``small_work``: the thread rule),
    or None where the plan reads inspector arrays or assembles its output
    (``ck._assembled_call`` runs those)."""
    if plan.inspected or not plan.operands or plan.assembled:
        return None
    n = len(plan.operands)
    lines = ["def call(args, validate, given=None):",
             f"    {', '.join(f'x{k}' for k in range(n))}{',' if n == 1 else ''} = args"]
    add = lines.append
    if plan.pattern >= 0:
        add("    if given is not None:")
        add("        return None          # out= is for dense results: the general path says so")
    arrays: dict[tuple[int, str], str] = {}
    sparse_work, dense_work = [], []
    # one sparse operand, one kernel: its check runs in the launch's dispatch
    fused = len(plan.launches) == 1 and sum(kind != "dense" for kind, _, _ in plan.operands) == 1
    fused_check = fused_view = ""
    for k, (kind, rank, canonical) in enumerate(plan.operands):
        if kind == "dense":
            add(f"    if type(x{k}) is not ndarray or (x{k}.dtype is not dtype and x{k}.dtype != "
                f"dtype) or x{k}.ndim != {rank} or not x{k}.flags.c_contiguous:")
            add("        return None")
            add(f"    s{k} = x{k}.shape")
            arrays[k, "arr"] = f"x{k}"
            dense_work.append(f"x{k}.size")
            continue
        scipy_ok = f"getattr(x{k}, 'format', None) != {kind!r} or not is_scipy(x{k})"
        if k == plan.pattern:
            scipy_ok += f" or type(x{k}) not in scipy_result"
        add(f"    if type(x{k}) is Tensor:")
        add(f"        x{k} = view_of(x{k}, {kind!r})")
        add(f"        if type(x{k}) is not View:")
        add("            return None")
        # the scipy classes of this format pass at a set lookup (~20 ns against ~110 ns
        # for the attribute and isinstance tests, which still take their subclasses)
        add(f"    elif type(x{k}) not in known_{kind} and ({scipy_ok}):")
        add("        return None")
        add(f"    c{k}, p{k}, v{k} = x{k}.indices, x{k}.indptr, x{k}.data")
        add(f"    if (v{k}.dtype is not dtype and v{k}.dtype != dtype) or (c{k}.dtype is not i32 "
            f"and c{k}.dtype != i32) or (p{k}.dtype is not i32 and p{k}.dtype != i32) "
            f"or len(v{k}) != len(c{k}):")
        add("        return None")
        add(f"    s{k} = x{k}.shape")
        parents, dim = ("0", "1") if kind == "csr" else ("1", "0")
        if fused:                         # checked by the launch (below)
            fused_check = f"p{k}, c{k}, s{k}[{parents}], s{k}[{dim}]"
            fused_view = "True" if canonical else f"type(x{k}) is View"
        else:
            check = f"looks_valid(p{k}, c{k}, s{k}[{parents}], s{k}[{dim}], True, True)"
            if not canonical:             # spc Tensors are canonical: check so
                check = (f"({check} if type(x{k}) is View else compressed_in_bounds(p{k}, "
                         f"c{k}, s{k}[{parents}], s{k}[{dim}]))")
            add(f"    if validate and not {check}:")
            add("        return None      # malformed or non-canonical: the general path explains")
        arrays[k, "indices"], arrays[k, "indptr"], arrays[k, "data"] = f"c{k}", f"p{k}", f"v{k}"
        sparse_work.append(f"len(c{k})")
    for _, where in plan.checks:
        (k0, a0), rest = where[0], where[1:]
        add("    if " + " or ".join(f"s{k}[{a}] != s{k0}[{a0}]" for k, a in rest) + ":")
        add("        return None          # the general path explains the mismatch")
    for d, (k, a) in enumerate(plan.first):
        add(f"    z{d} = s{k}[{a}]")
    new = "zeros" if plan.zero else "empty"
    if plan.pattern >= 0:
        add(f"    out = {new}(len(c{plan.pattern}), dtype=dtype)")
        flat = "out"
    else:
        shape = "".join(f"z{d}, " for d in plan.out_dims)
        add("    if given is None:")
        add(f"        out = {new}(({shape}), dtype=dtype)")
        add("    else:                    # out=: anything unusual takes the general path")
        add("        out = given")
        add(f"        if type(out) is not ndarray or (out.dtype is not dtype and out.dtype != dtype) "
            f"or out.shape != ({shape}) or not out.flags.c_contiguous "
            f"or not out.flags.writeable:")
        add("            return None")
        reads = [name for name in arrays.values()]
        if reads:
            add("        if " + " or ".join(f"share(out, {r})" for r in reads) + ":")
            add("            return None")
        if plan.zero:
            add("        out.fill(0)")
        flat = "out" if len(plan.out_dims) == 1 else "out.reshape(-1)"
    if plan.parallel:
        free = " * ".join(f"z{d}" for d in plan.free) or "1"
        add(f"    nt = max_threads if call_work({' + '.join(sparse_work) or '0'}, "
            f"{' + '.join(dense_work) or '0'}, {free}) >= small_work else 1")
    else:
        add("    nt = 1")
    if len(plan.launches) > 1 and flat != "out":
        add(f"    flat = {flat}")
        flat = "flat"
    arrays[-1, "out"] = flat
    if ck._np_dtype.itemsize == 2:         # 16-bit floats: numba's launcher sees their bits
        for key in [key for key in arrays if key[1] in ("arr", "data", "out")]:
            arrays[key] = f"{arrays[key]}.view(u16)"
    for q, (address, get, ints) in enumerate(plan.launches):
        bufs = "".join(arrays[k, what] + ", " for k, what in get)
        args = f"{address}, nt, ({bufs}), ({''.join(f'z{d}, ' for d in ints)})"
        if fused:
            add("    if not validate:")
            add(f"        launch({args})")
            if fused_view == "True":
                add(f"    elif not launch_valid({args}, {fused_check}):")
            else:                         # spc Tensors are canonical: check so
                add(f"    elif not (launch_valid({args}, {fused_check}) if {fused_view} else "
                    f"launch_in_bounds({args}, {fused_check})):")
            add("        return None      # malformed or non-canonical: the general path explains")
        else:
            add(f"    launch({args})")
    if plan.pattern >= 0:
        add(f"    return pattern_result(args[{plan.pattern}], x{plan.pattern}, out, "
            f"({''.join(f'z{d}, ' for d in plan.out_dims)}))")
    else:
        add("    return out" if plan.out_dims else "    return out if given is not None else out[()]")
    source = "\n".join(lines) + "\n"
    namespace = dict(
        ndarray=np.ndarray, dtype=ck._np_dtype, i32=np.dtype(np.int32), Tensor=Tensor,
        u16=np.dtype(np.uint16),
        View=view, view_of=view.of, is_scipy=_is_scipy_sparse, scipy_result=scipy_result,
        **{f"known_{kind}": frozenset(t for t in scipy_result if t.__name__.startswith(kind))
           for kind in ("csr", "csc")},
        looks_valid=looks_valid, compressed_in_bounds=compressed_in_bounds,
        zeros=np.zeros, empty=np.empty, share=np.may_share_memory, call_work=call_work,
        small_work=small_work, max_threads=ck._max_threads, launch=launch,
        launch_in_bounds=launch_in_bounds, launch_valid=launch_valid,
        pattern_result=ck._pattern_result)
    exec(compile(source, f"<spc fast call of {ck.name}>", "exec"), namespace)
    call = namespace["call"]
    call.source = source
    return call
