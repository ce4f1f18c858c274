"""A deterministic text form of the loop IR (used by golden tests and cache keys)."""
from __future__ import annotations

from .nodes import (Alloc, CompareSwap, Assign, BinOp, Block, Buffer, Cast, Const, Contents, DType,
                    For, If, Jam, Kernel, LaneGroups, Let, Load, LoopKind, Neg, Select, Stmt, Store, ToTF32, Var, WarpSum, Call,
                    VectorLoads, While, Expr)

_PREC = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, "+": 5, "-": 5, "*": 6, "/": 6, "&": 7,
         "<<": 8}          # bit operations bind tightest here: any operand of << in parentheses


WARP_OPS = {"+": "sum", "max": "max", "min": "min", "||": "any"}   # WarpSum's op, by name


def format_expr(e: Expr, prec: int = 0) -> str:
    """Render an expression with the fewest parentheses that keep its meaning."""
    if isinstance(e, Const):
        if e.dtype is DType.BOOL:
            return "true" if e.value else "false"
        if e.dtype.is_float:
            text = repr(float(e.value))
            finite = text not in ("inf", "-inf", "nan")
            return text + ("f" if e.dtype is DType.F32 and finite else "")
        return str(int(e.value))
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Load):
        return f"{e.buf.name}[{format_expr(e.index)}]"
    if isinstance(e, Neg):
        return f"-{format_expr(e.operand, 7)}"
    if isinstance(e, Cast):
        return f"{e.dtype.value}({format_expr(e.value)})"
    if isinstance(e, Select):
        return (f"select({format_expr(e.cond)}, {format_expr(e.if_true)}, "
                f"{format_expr(e.if_false)})")
    if isinstance(e, WarpSum):
        return f"warp_{WARP_OPS[e.op]}({format_expr(e.value)})"
    if isinstance(e, ToTF32):
        return f"tf32({format_expr(e.value)})"
    if isinstance(e, Call):
        return f"{e.fn}({format_expr(e.value)})"
    if isinstance(e, BinOp):
        if e.op in ("min", "max"):
            return f"{e.op}({format_expr(e.lhs)}, {format_expr(e.rhs)})"
        if e.op == "==" and isinstance(e.rhs, Const) and e.rhs.dtype is DType.BOOL \
                and not e.rhs.value:
            return f"!({format_expr(e.lhs)})"          # the lowerer's "not"
        p = _PREC[e.op]
        text = f"{format_expr(e.lhs, p)} {e.op} {format_expr(e.rhs, p + 1)}"
        return f"({text})" if p < prec else text
    raise TypeError(f"not an expression: {e!r}")


def format_jam(jam: Jam) -> str:
    """``jam(4, copies=[j, x], sums=[acc: f32], min_trips=96, when=wide)``."""
    parts = [str(jam.factor), f"copies=[{', '.join(jam.copies)}]"]
    if jam.sums:
        parts.append(f"sums=[{', '.join(f'{v.name}: {v.dtype.value}' for v in jam.sums)}]")
    if jam.min_trips:
        parts.append(f"min_trips={jam.min_trips}")
    if jam.launch is not None:
        parts.append(f"when={jam.launch}")
    return f"jam({', '.join(parts)})"


def format_vector(vector: VectorLoads) -> str:
    """``vector(4, loads=[X[i * K + k], Y[j * K + k]], sums=[acc: f32])``."""
    loads = ", ".join(format_expr(x) for x in vector.loads)
    sums = ", ".join(f"{v.name}: {v.dtype.value}" for v in vector.sums)
    return f"vector({vector.width}, loads=[{loads}], sums=[{sums}])"


def launch_symbol(name: str) -> str:
    """The printed (and CUDA C) name of the launch symbol ``name``
    (``LaneGroups.group``, ``FlatPositions.steps``...): ``spc_group``, ``spc_flat``."""
    return f"spc_{name}"


def format_groups(groups: LaneGroups) -> str:
    """``groups(k, sums=[acc: f32], lanes=spc_group in [1, 2, 4, 8, 16, 32],
    warps=spc_split)``: the shared reduction loop, its sums, the launch symbols."""
    sums = ", ".join(f"{v.name}: {v.dtype.value}" for v in groups.sums)
    sizes = ", ".join(str(g) for g in groups.sizes)
    return (f"groups({groups.reduction}, sums=[{sums}], lanes={launch_symbol(groups.group)} in [{sizes}], "
            f"warps={launch_symbol(groups.split)})")


def _stmt_lines(s: Stmt, depth: int, out: list[str]) -> None:
    pad = "  " * depth
    if isinstance(s, Block):
        for child in s.body:
            _stmt_lines(child, depth, out)
    elif isinstance(s, Let):
        out.append(f"{pad}let {s.var.name}: {s.var.dtype.value} = {format_expr(s.value)}")
    elif isinstance(s, Assign):
        out.append(f"{pad}{s.var.name} = {format_expr(s.value)}")
    elif isinstance(s, Store):
        op = ("atomic+=" if s.atomic else "+=") if s.accumulate else "="
        out.append(f"{pad}{s.buf.name}[{format_expr(s.index)}] {op} {format_expr(s.value)}")
    elif isinstance(s, CompareSwap):
        out.append(f"{pad}let {s.var.name}: {s.var.dtype.value} = atomic_cas({s.buf.name}"
                   f"[{format_expr(s.index)}], {format_expr(s.expected)}, "
                   f"{format_expr(s.desired)})")
    elif isinstance(s, Alloc):
        size = s.size if isinstance(s.size, int) else format_expr(s.size)
        kind = "workspace" if s.is_workspace else "shared alloc" if s.shared else "alloc"
        tail = "" if s.contents is Contents.ZEROED else f" {s.contents.value}"
        out.append(f"{pad}{kind} {s.buf.name}: {s.buf.dtype.value}[{size}]{tail}")
    elif isinstance(s, For):
        kind = "" if s.kind is LoopKind.SERIAL else f" @{s.kind.value}"
        if s.jam is not None:
            kind += " " + format_jam(s.jam)
        if s.vector is not None:
            kind += " " + format_vector(s.vector)
        if s.moves is not None:
            kind += f" moves({s.moves.width}, cols={s.moves.cols})"
        if s.groups is not None:
            kind += " " + format_groups(s.groups)
        if s.flat is not None:
            kind += f" flat({s.flat.lanes}, steps={launch_symbol(s.flat.steps)})"
        out.append(f"{pad}for {s.var.name} in [{format_expr(s.lo)}, {format_expr(s.hi)}){kind}:")
        _stmt_lines(s.body, depth + 1, out)
    elif isinstance(s, While):
        out.append(f"{pad}while {format_expr(s.cond)}:")
        _stmt_lines(s.body, depth + 1, out)
    elif isinstance(s, If):
        out.append(f"{pad}if {format_expr(s.cond)}:")
        _stmt_lines(s.then, depth + 1, out)
        if s.otherwise is not None:
            out.append(f"{pad}else:")
            _stmt_lines(s.otherwise, depth + 1, out)
    else:
        raise TypeError(f"not a statement: {s!r}")


def format_stmt(s: Stmt, depth: int = 0) -> str:
    lines: list[str] = []
    _stmt_lines(s, depth, lines)
    return "\n".join(lines)


def format_kernel(k: Kernel) -> str:
    """The whole kernel: signature line, attributes, then the body."""
    params = []
    for p in k.params:
        v = p.value
        kind = f"{v.dtype.value}*" if isinstance(v, Buffer) else v.dtype.value
        derived = f" = {_call(p.inspector, p.tensor)}" if p.inspector else ""
        params.append(f"{p.role.value} {v.name}: {kind}{derived}")
    lines = [f"kernel {k.name}({', '.join(params)}):"]
    for key, value in k.attrs:
        lines.append(f"  # {key}: {value}")
    if k.outer_independent is not None:
        lines.append(f"  # outer_independent: {k.outer_independent}")
    if k.rows_independent is not None:
        lines.append(f"  # rows_independent: {k.rows_independent}")
    if k.gpu is not None:
        lines.append(f"  # gpu: {k.gpu.grid.value}")
        lines.append(f"  # gpu_unroll: {k.gpu.unroll}")
        if k.gpu.group is not None:
            lines.append(f"  # gpu_group: {k.gpu.group}")
        if k.gpu.flat is not None:
            lines.append(f"  # gpu_flat: {k.gpu.flat}")
    if k.adds_to_output:
        lines.append("  # adds to the output's prior contents")
    if k.overwrites:
        lines.append(f"  # overwrites (no zero fill): {', '.join(k.overwrites)}")
    if k.accepts_noncanonical:
        lines.append(f"  # accepts unsorted/duplicate entries of: {', '.join(k.accepts_noncanonical)}")
    _stmt_lines(k.body, 1, lines)
    return "\n".join(lines) + "\n"


def _call(inspector: str, tensor: str) -> str:
    """An inspector's result as a call: ``rows_by_length(A)``, ``segment_rows(A, 64)``."""
    name, _, arg = inspector.partition(":")
    return f"{name}({tensor}, {arg})" if arg else f"{name}({tensor})"
