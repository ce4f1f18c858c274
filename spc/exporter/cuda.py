"""The CUDA export: the rendered kernel and a host launch function, in one .cu.

``<name>.cu`` is the CUDA target's rendered source (the same text
``spc.compile(..., target="cuda").source`` shows) followed by
``<name>_launch``, which sizes the grid from the call's sizes as spc's
launcher does (``codegen/cuda.py``: ``CudaLauncher.grid`` and the choices it
calls, ported to C from the kernel's ``LaunchPlan``) and launches on a
stream.  It always launches the 64-bit index variant (spc switches to the
``_i32`` variant when every length is below 2**30; the export does not know
the lengths).  ``<name>.h`` declares it for C or C++ callers.
"""
from __future__ import annotations

from ..codegen import cuda as cuda_target
from ..codegen.cuda_c import c_elem_type, c_name, launch_plan
from ..ir.nodes import BinOp, Buffer, Cast, Const, Neg, ParamRole, Var
from ..passes.map_gpu import THREADS_PER_BLOCK, WARPS_PER_BLOCK
from .cpu import header_comment, output_contract
from .plan import ExportPlan

_ARCH_DEFAULT = "native"


def launch_span(plan: ExportPlan) -> str | None:
    """The buffer parameter whose length the launch needs (a lane-group kernel's
    lane loop runs over it: SDDMM's stored entries), or None."""
    lp = launch_plan(plan.kernel)
    if lp.group is None or lp.lane_buffer is None:
        return None
    buffers = [p for p in plan.kernel.params if isinstance(p.value, Buffer)]
    return buffers[lp.lane_buffer].name


def span_parameter(plan: ExportPlan) -> str | None:
    """The launch function's length parameter for ``launch_span``, or None."""
    span = launch_span(plan)
    return None if span is None else f"len_{c_name(span)}"


def host_c(e, sizes: set[str]) -> str | None:
    """Integer IR expression ``e`` of sizes and constants as C (long long), or None
    when it reads memory or anything the host does not know (host_eval's domain)."""
    if isinstance(e, Const):
        return f"{int(e.value)}LL"
    if isinstance(e, Var):
        return c_name(e.name) if e.name in sizes else None
    if isinstance(e, Neg):
        v = host_c(e.operand, sizes)
        return None if v is None else f"(-{v})"
    if isinstance(e, Cast) and not e.dtype.is_float:
        return host_c(e.value, sizes)
    if isinstance(e, BinOp) and e.op in ("+", "-", "*", "/", "min", "max"):
        a, b = host_c(e.lhs, sizes), host_c(e.rhs, sizes)
        if a is None or b is None:
            return None
        if e.op == "/":
            return f"({b} != 0 ? {a} / {b} : 0LL)"
        if e.op in ("min", "max"):
            return f"SPC_{e.op.upper()}LL({a}, {b})"
        return f"({a} {e.op} {b})"
    return None


def _c_param(p, const_inputs: bool = True) -> str:
    v = p.value
    if isinstance(v, Buffer):
        const = "const " if p.role is ParamRole.INPUT else ""
        return f"{const}{c_elem_type(v.dtype)} *{c_name(v.name)}"
    return f"long long {c_name(v.name)}"


def _signature(plan: ExportPlan, with_comments: bool) -> list[str]:
    """The launch function's parameter lines."""
    docs = list(plan.params)
    lines = [(_c_param(d.param), d.what) for d in docs]
    span = span_parameter(plan)
    if span is not None:
        lines.append((f"long long {span}",
                      f"length of {launch_span(plan)} (the lane loop's total trip count)"))
    lines.append(("cudaStream_t stream", "the stream to launch on (0: the default stream)"))
    if not with_comments:
        return [f"    {decl}{',' if k < len(lines) - 1 else ')'}"
                for k, (decl, _) in enumerate(lines)]
    width = max(len(decl) for decl, _ in lines) + 2
    return [f"    {(decl + (',' if k < len(lines) - 1 else ')')).ljust(width)}/* {what} */"
            for k, (decl, what) in enumerate(lines)]


def render_header(plan: ExportPlan) -> str:
    name = plan.name
    guard = f"SPC_EXPORT_{name.upper()}_CUDA_H"
    return "\n".join(header_comment(plan) + [
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <cuda_runtime_api.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"/* Launch {name} on ``stream`` with device pointers; returns the launch's error",
        " * (cudaSuccess when the grid is empty).  The grid is sized from the sizes as",
        " * spc's launcher sizes it.  " + output_contract(plan) + " */",
        f"cudaError_t {name}_launch(",
        *_signature(plan, True)[:-1], _signature(plan, True)[-1].replace(")", ");", 1),
        "",
        "/* The grid <name>_launch uses (blocks, launch-choice arguments, lane-group size),",
        " * for a GPU of sms multiprocessors: for callers launching the kernel themselves. */",
        f"void {name}_grid(" + ", ".join(_size_params(plan) + [
            "int sms", "long long *blocks", "int *extra", "int *group"]) + ");",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif /* {guard} */",
        "",
    ])


def _size_params(plan: ExportPlan) -> list[str]:
    """The grid function's leading parameters: the sizes, then the span length."""
    out = [f"long long {c_name(p.name)}" for p in plan.kernel.params
           if not isinstance(p.value, Buffer)]
    span = span_parameter(plan)
    return out + ([f"long long {span}"] if span is not None else [])


def render_grid(plan: ExportPlan, linkage: str = 'extern "C" ') -> str:
    """``<name>_grid(sizes..., [span,] sms, &blocks, extra, &group)``: the launch
    spc's launcher makes for these sizes on a GPU of ``sms`` multiprocessors
    (``CudaLauncher.grid``): the blocks (0: nothing to launch), the launch-choice
    arguments after the kernel's own (``extra[0..1]``: spc_wide, or spc_split
    and spc_flat) and the lane-group size (0 unless a lane-group kernel).
    Host C, valid as C and C++."""
    kernel, name = plan.kernel, plan.name
    lp = launch_plan(kernel)
    sched = plan.schedule
    sizes = {p.name for p in kernel.params if not isinstance(p.value, Buffer)}
    lo, hi = host_c(lp.lo, sizes), host_c(lp.hi, sizes)
    body = [
        f"    const long long persistent = (long long)sms * {2048 // THREADS_PER_BLOCK};",
        "    (void)persistent;",
        "    *blocks = 0; extra[0] = 0; extra[1] = 0; *group = 0;",
    ]
    if lp.mode == "single_warp":
        body.append("    *blocks = 1;")
    elif lp.group is not None:
        body += _group_grid(plan, lp, sched, sizes, lo, hi)
    elif lo is None or hi is None:
        body.append("    *blocks = persistent;")
        if lp.chunk_lo is not None:
            body.append(f"    extra[0] = {1 if sched.wide is True else 0};")
    else:
        body.append(f"    long long items = SPC_MAXLL(0LL, {hi} - {lo});")
        if lp.chunk_lo is not None:
            body.append(f"    long long span = SPC_MAXLL(0LL, {host_c(lp.chunk_hi, sizes)} - "
                        f"{host_c(lp.chunk_lo, sizes)});")
            if lp.wide_width == 32 or sched.wide is False:
                body.append("    int wide = 0;")
            elif sched.wide is True:
                body.append("    int wide = 1;")
            else:
                body.append(f"    int wide = items * ((span + 31) / 32) >= (long long)sms * "
                            f"{cuda_target.NARROW_WARPS_PER_SM};")
            body += [f"    long long width = wide ? {lp.wide_width} : 32;",
                     "    items *= (span + width - 1) / width;",
                     "    extra[0] = wide;"]
        per = {"warp": f"(items + {WARPS_PER_BLOCK - 1}) / {WARPS_PER_BLOCK}",
               "thread": f"(items + {lp.threads - 1}) / {lp.threads}",
               "block": "items"}[lp.mode]
        body.append(f"    *blocks = SPC_MINLL({per}, 2147483647LL);")
    params = _size_params(plan) + ["int sms", "long long *blocks", "int *extra", "int *group"]
    return "\n".join([
        "#ifndef SPC_MINLL",
        "#define SPC_MINLL(a, b) ((a) < (b) ? (a) : (b))",
        "#define SPC_MAXLL(a, b) ((a) > (b) ? (a) : (b))",
        "#endif",
        "",
        f"/* The launch of {name} spc's launcher makes for these sizes on a GPU of sms",
        " * multiprocessors: blocks (0: nothing to launch), extra[0..1] (the launch-choice",
        " * arguments after the kernel's own) and the lane-group size (0: none). */",
        f"{linkage}void {name}_grid({', '.join(params)})",
        "{",
        *body,
        "}",
        "",
    ])


def render_launch(plan: ExportPlan) -> str:
    """The host grid and launch functions (C++ for nvcc), after the rendered kernel."""
    kernel, name = plan.kernel, plan.name
    lp = launch_plan(kernel)
    args = [c_name(p.name) for p in kernel.params]
    extra: list[str] = []
    if lp.chunk_lo is not None:
        extra = ["extra[0]"]
    elif lp.group is not None:
        extra = ["extra[0]"] + (["extra[1]"] if lp.flat else [])
    size_args = [c_name(p.name) for p in kernel.params if not isinstance(p.value, Buffer)]
    span = span_parameter(plan)
    if span is not None:
        size_args.append(span)
    launch = f"<<<(unsigned)blocks, {lp.threads}, 0, stream>>>({', '.join(args + extra)})"
    if lp.group is None:
        call = [f"    {name}{launch};"]
    else:
        call = ["    switch (group) {"]
        call += [f"    case {g}: {name}_g{g}{launch}; break;" for g in lp.group_sizes]
        call += ["    default: return cudaErrorInvalidValue;", "    }"]
    return "\n".join([
        "",
        "// ---- host grid and launch functions, generated by spc.export ----",
        render_grid(plan),
        f'extern "C" cudaError_t {name}_launch(',
        *_signature(plan, False),
        "{",
        "    int device = 0, sms = 0, extra[2], group;",
        "    long long blocks;",
        "    cudaError_t err = cudaGetDevice(&device);",
        "    if (err == cudaSuccess)",
        "        err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);",
        "    if (err != cudaSuccess) return err;",
        f"    {name}_grid({', '.join(size_args + ['sms', '&blocks', 'extra', '&group'])});",
        "    if (blocks <= 0) return cudaSuccess;",
        "    (void)extra; (void)group;",
        *call,
        "    return cudaGetLastError();",
        "}",
        "",
    ])


def _group_grid(plan, lp, sched, sizes, lo, hi) -> list[str]:
    """The grid of a lane-group kernel (CudaLauncher.group_grid in C)."""
    span = span_parameter(plan)
    glo, ghi = host_c(lp.group_lo, sizes), host_c(lp.group_hi, sizes)
    llo, lhi = host_c(lp.lane_lo, sizes), host_c(lp.lane_hi, sizes)
    out = [
        f"    long long red = {'-1' if glo is None or ghi is None else f'SPC_MAXLL(0LL, {ghi} - {glo})'};",
        f"    long long rows = {'-1' if lo is None or hi is None else f'SPC_MAXLL(0LL, {hi} - {lo})'};",
        f"    long long span = {span if span is not None else '-1'};",
        "    double mean = -1.0;                    /* unknown */",
    ]
    if llo is not None and lhi is not None:
        out.append(f"    mean = (double)SPC_MAXLL(0LL, {lhi} - {llo});")
    else:
        out.append("    if (span >= 0 && rows > 0) mean = (double)span / (double)rows;")
    if sched.group is not None:
        out.append(f"    int g = {int(sched.group)};")
    else:
        out += ["    int g = 1;",
                "    if (red < 0) g = 8;",
                f"    else while (g < 32 && red >= {cuda_target.GROUP_ELEMENTS}LL * g * 2) g *= 2;"]
    out += ["    *group = g;", "    (void)span; (void)mean;"]
    if lp.flat and span is not None and sched.flat is not False:
        cond = "span >= 0" if sched.flat is True else "span >= 0 && mean >= 0.0"
        out += [
            f"    if ({cond}) {{",
            "        long long steps = (span + (32 / g) - 1) / (32 / g);",
            f"        long long want = (long long)sms * {cuda_target.FLAT_WARPS_PER_SM};",
            f"        long long per_warp = SPC_MAXLL(1LL, SPC_MINLL({cuda_target.FLAT_MAX_STEPS}LL, (steps + want - 1) / want));",
            "        long long warps = (steps + per_warp - 1) / per_warp;",
            f"        *blocks = SPC_MAXLL(1LL, (warps + {WARPS_PER_BLOCK - 1}) / {WARPS_PER_BLOCK});",
            "        extra[0] = 1;",
            "        extra[1] = (int)per_warp;",
            "        return;",
            "    }",
        ]
    fixed = None if sched.split is None else int(sched.split)
    out += [
        "    if (rows < 0) {",
        f"        extra[0] = {fixed if fixed is not None else 1};",
        "        *blocks = persistent;",
        "        return;",
        "    }",
    ]
    if fixed is not None:
        out.append(f"    int split = {fixed};")
    else:
        out += [
            "    int split = 1;",
            "    if (rows > 0 && mean >= 0.0) {",
            f"        long long want = ((long long)sms * {cuda_target.SPLIT_WARPS_PER_SM} + rows - 1) / rows;",
            "        long long most = ((long long)(mean * g) + 31) / 32;",
            "        split = (int)SPC_MAXLL(1LL, SPC_MINLL(want, most));",
            "    }",
        ]
    out += [
        "    extra[0] = split;",
        f"    *blocks = SPC_MINLL((rows * split + {WARPS_PER_BLOCK - 1}) / {WARPS_PER_BLOCK}, 2147483647LL);",
    ]
    return out


def makefile(plan: ExportPlan) -> str:
    name = plan.name
    arch = f"sm_{plan.target.arch}" if plan.target.arch else _ARCH_DEFAULT
    return "\n".join([
        f"# Builds the example of the spc export of {name} with nvcc (no Python needed).",
        "NVCC ?= nvcc",
        f"ARCH ?= {arch}",
        "NVCCFLAGS ?= -O3 -std=c++17",
        "",
        f"example: example.cu {name}.cu {name}.h spc_mtx.h",
        f"\t$(NVCC) $(NVCCFLAGS) -arch=$(ARCH) -o $@ example.cu {name}.cu",
        "",
        "clean:",
        "\trm -f example",
        "",
        ".PHONY: clean",
        "",
    ])


def write_cuda(plan: ExportPlan, directory) -> list[str]:
    """Write ``<name>.cu`` (kernel and launch function) and ``<name>.h``."""
    name = plan.name
    source = plan.source + "\n#include <cuda_runtime.h>\n" + render_launch(plan)
    (directory / f"{name}.cu").write_text(source)
    (directory / f"{name}.h").write_text(render_header(plan))
    return [f"{name}.cu", f"{name}.h"]
