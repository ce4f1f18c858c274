"""The torch fast path of one kernel as straight-line Python.

``TorchFastPath.generic`` walks its plan (operand kinds, where each size and
parameter comes from) on every call: loops, tuple unpacking and dictionaries
that cost more host time than the launch itself on a GPU host (~20 of ~36 us
per SpMV call on the H200 host, profiled 2026-11-29).  ``specialize`` writes the
same steps out once per kernel, with the plan's answers as literals: one check
per operand property, sizes in locals, the parameter list as one list display.
It covers kernels whose parameters are operand arrays, the output and sizes
(no inspector arrays: those take the generic walk), and defers to the generic
walk wherever the generic walk would do something else than launch (a miss in
the memo, an index dtype not yet built): the two give the same result for the
same call (tests/test_cuda_fast.py runs both).
"""
from __future__ import annotations

from ..ir.lower import OutputKind
from ..ir.nodes import DType
from .cuda_launch import memset_zero
from .torch_fast import SIZE


def specialize(path, feeds):
    """``call(args, validate)`` for TorchFastPath ``path`` whose kernels take
    their parameters as ``feeds`` (its ``_KernelFeed`` list for one index
    dtype; ``path.same_layout`` lists the index dtypes whose feeds match it),
    or None where some parameter is an inspector's array or there are no
    operands (nothing to read the device from: the general path runs)."""
    if not path.kinds or any(isinstance(j, str) for f in feeds for k, j in f.params if k != SIZE):
        return None
    n = len(path.kinds)
    lines = ["def call(args, validate):",
             f"    {', '.join(f'a{k}' for k in range(n))}{',' if n == 1 else ''} = args"]
    add = lines.append
    add(f"    if not ({' and '.join(f'isinstance(a{k}, Tensor)' for k in range(n))}):")
    add("        return None")
    add("    d = a0.get_device()")
    add("    if d < 0" + "".join(f" or a{k}.get_device() != d" for k in range(1, n)) + ":")
    add("        return None")
    lengths: dict[tuple[int, int], str] = {}     # (operand, array) -> its length expression
    pointers: dict[tuple[int, int], str] = {}
    first_sparse = True
    for k, (kind, rank) in enumerate(path.kinds):
        add(f"    s{k} = a{k}.shape")
        if kind == "dense":
            add(f"    if a{k}.layout is not strided or a{k}.dtype is not tdtype "
                f"or len(s{k}) != {rank} or not a{k}.is_contiguous():")
            add("        return None")
            pointers[k, 0] = f"a{k}.data_ptr()"
            lengths[k, 0] = " * ".join(f"s{k}[{a}]" for a in range(rank)) or "1"
            continue
        parents, dim = ("0", "1") if kind == "csr" else ("1", "0")
        add(f"    if a{k}.layout is not layout_{kind} or len(s{k}) != 2:")
        add("        return None")
        # SparseOperands.lookup inlined for a hit: the same live object (so not an
        # inference tensor, which lookup never keeps: reading its _version raises)
        # with the same version counter and shape, and a verdict if one is needed
        add(f"    h = seen(id(a{k}))")
        add(f"    if h is not None and h[0]() is a{k} and h[1] == (a{k}._version, "
            f"s{k}[{parents}], s{k}[{dim}]) and (h[2][4] is not None or not validate):")
        add(f"        e{k} = h[2]")
        add("    else:")
        add(f"        e{k} = lookup(a{k}, {kind!r}, s{k}[{parents}], s{k}[{dim}], validate)")
        add(f"    if e{k} is None or e{k}[3] is not tdtype:")
        add("        return None")
        if first_sparse:
            add(f"    it = index_dtypes.get(e{k}[2])")
            add("    if it is None:")
            add("        return None")
            first_sparse = False
        else:
            add(f"    if index_dtypes.get(e{k}[2]) is not it:")
            add("        return None")
        canonical = "" if not path.needs_canonical[k] else f" and e{k}[4][1]"
        add(f"    if validate and not (e{k}[4][0]{canonical}):")
        add("        return None                   # the general path explains or canonicalizes")
        add(f"    p{k}, n{k} = e{k}[0], e{k}[1]")
        for j in range(3):
            pointers[k, j] = f"p{k}[{j}]"
            lengths[k, j] = f"n{k}[{j}]"
    if first_sparse:
        add("    it = I32")
    size_of = {}
    for ix, where in sorted(path.sources.items()):
        (k0, a0), rest = where[0], where[1:]
        z = size_of[ix] = f"z_{len(size_of)}"
        add(f"    {z} = s{k0}[{a0}]")
        if rest:
            add("    if " + " or ".join(f"s{k}[{a}] != {z}" for k, a in rest) + ":")
            add("        return None                   # the general path explains the mismatch")
    add("    feeds = all_feeds.get(it)")
    add("    if feeds is None or it not in same_layout:")
    add("        return generic(args, validate)")
    add("    if current_device() != d:")
    add("        return None                       # the general path switches devices")
    add("    stream = raw_stream(d)")
    out_shape = "(" + "".join(f"s{k}[{a}], " for k, a in path.out_dims) + ")"
    # the output from an operand's new_empty (its dtype and device are the output's:
    # checked above): ~0.5 us less than torch.empty's keyword parsing (H200 host)
    like = [f"a{k}" for k, (kind, _) in enumerate(path.kinds) if kind == "dense"] + \
        [f"e{k}[5][0]" for k, (kind, _) in enumerate(path.kinds) if kind != "dense"]
    like = like[0]                        # path.kinds is not empty (above)
    if path.output_kind == OutputKind.DENSE:
        add(f"    out = {like}.new_empty({out_shape})")
        add("    out_n = " + (" * ".join(f"s{k}[{a}]" for k, a in path.out_dims) or "1"))
    else:
        add(f"    out_n = n{path.pattern}[0]")
        add(f"    out = {like}.new_empty(out_n)")
    add("    out_ptr = out.data_ptr()")
    add("    if zero[it]:")
    add("        memset_zero(out_ptr, out_n * value_words, stream)")
    for q, feed in enumerate(feeds):
        values, sizes, bufs = [], [], []
        for k, j in feed.params:
            if k == SIZE:
                values.append(size_of[j])
                sizes.append(size_of[j])
            elif k < 0:
                values.append("out_ptr")
                bufs.append("out_n")
            else:
                values.append(pointers[k, j])
                bufs.append(lengths[k, j])
        plan = feed.launch.plan
        span = bufs[plan.lane_buffer] if plan.lane_buffer is not None else "None"
        items = bufs[plan.items_buffer] if plan.items_buffer is not None else "None"
        longest = f"max({', '.join(bufs)})" if len(bufs) > 1 else (bufs[0] if bufs else "0")
        add(f"    feeds[{q}].launch.run(({''.join(v + ', ' for v in values)}), "
            f"({''.join(s + ', ' for s in sizes)}), {longest}, {span}, {items}, stream, d)")
    if path.output_kind == OutputKind.DENSE:
        add("    return out")
    else:
        add(f"    return make_sparse(e{path.pattern}[5][1], e{path.pattern}[5][2], out, "
            f"{out_shape})")
    source = "\n".join(lines) + "\n"
    torch = path.torch
    namespace = dict(
        Tensor=torch.Tensor, strided=torch.strided, tdtype=path.tdtype,
        layout_csr=torch.sparse_csr, layout_csc=torch.sparse_csc,
        lookup=path.sparse.lookup, seen=path.sparse._seen.entries.get,
        index_dtypes=path.index_dtypes, I32=DType.I32,
        all_feeds=path.feeds, same_layout=path.same_layout, generic=path.generic,
        current_device=path._current_device, raw_stream=path._stream,
        zero=path.zero, memset_zero=memset_zero, value_words=path.value_words,
        make_sparse=path.make_sparse.get(path.kinds[path.pattern][0]) if path.pattern is not None
        else None)
    exec(compile(source, f"<spc fast call of {path.ck.name}>", "exec"), namespace)
    call = namespace["call"]
    call.source = source
    return call

