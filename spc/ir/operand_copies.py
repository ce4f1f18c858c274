"""Operand copies: reading an operand through a copy stored in another order.

When the operands' storage orders conflict (``C[i,j] = A[i,j]*B[j,i]`` with A
and B in csr: A needs ``i`` before ``j``, B ``j`` before ``i``), no loop order
visits every sparse level after its parents.  TACO asks the user to store one
operand transposed; spc inserts that copy itself: the access ``B[j,i]`` is
rewritten to read a new tensor ``B__T10[j,i]`` whose format stores the same
coordinates in an order that agrees with the others (csc here), and the
runtime (``runtime/operand_copies.py``) builds the copy from B at call time.

This module decides, from the expression and the formats only, which accesses
to copy and in which format; it is a pure rewrite of the assignment and the
format map.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable

from ..errors import FormatError, ModeOrderConflict, SpcError, UnsupportedError
from ..formats.format import Format, format_names, resolve_format
from ..formats.levels import Compressed, Dense, Singleton
from ..frontend import ast
from .sum_parts import part_name, read_inside_function, read_parts

COPY_MARK = "__T"        # a copy of tensor A read as A[j,i] is named A__T10 (modes 1, 0)
MAX_COPIED = 3           # accesses copied at most (subsets tried: sum of C(n, k), k <= 3)


@dataclass(frozen=True)
class OperandCopy:
    """The access ``source[indices]`` reads tensor ``copy``: the same entries as
    ``source`` (format ``source_format``) stored in ``format``."""
    source: str
    copy: str
    indices: tuple[str, ...]
    source_format: object
    format: Format

    def describe(self, display: dict[str, str] | None = None) -> str:
        """One line for logs and ``k.ir``, in the user's names (``display``:
        internal -> user)."""
        show = (display or {}).get
        name = show(self.source, self.source)
        idx = ",".join(show(ix, ix) for ix in self.indices)
        return f"{name}[{idx}] is read through a copy of {name} in {self.format} ({name} is " \
               f"{self.source_format})"


@dataclass(frozen=True)
class OutputCopy:
    """The output ``tensor`` is computed in ``computed`` and converted to the
    format asked for, ``wanted``, after the kernels run."""
    tensor: str
    computed: Format
    wanted: object

    def describe(self, display: dict[str, str] | None = None) -> str:
        name = (display or {}).get(self.tensor, self.tensor)
        return f"{name} is computed in {self.computed} and converted to {self.wanted}"


@dataclass(frozen=True)
class CopyPlan:
    """``assign`` and ``formats`` rewritten to read the ``copies`` (and, with
    ``output``, to compute the output in another format)."""
    assign: ast.Assignment
    formats: dict
    copies: tuple[OperandCopy, ...]
    output: OutputCopy | None = None
    reason: str = ""        # the refusal of the program as written, which the copies answer


def copy_name(tensor: str, order: tuple[int, ...]) -> str:
    """The name of the copy of ``tensor`` stored in mode ``order`` (spc's
    internal names never contain ``__T`` followed by digits)."""
    return f"{tensor}{COPY_MARK}{''.join(map(str, order))}"


def _plain(fmt) -> bool:
    return isinstance(fmt, Format) and not fmt.is_blocked and all(
        type(lv) in (Dense, Compressed, Singleton) for lv in fmt.levels)


@functools.lru_cache(maxsize=None)
def _named(rank: int) -> tuple[tuple[str, Format], ...]:
    out = []
    for name in format_names():
        if "(" in name:
            continue
        try:
            out.append((name, resolve_format(name, rank)))
        except (FormatError, SpcError):
            pass
    return tuple(out)


def copy_format(fmt, order: tuple[int, ...]) -> Format:
    """A format storing modes in ``order``: ``fmt``'s levels when they are plain
    (dense, compressed, singleton: csr becomes csc, dcsr dcsc, coo coo in the
    other order) and do not fill in that order, else a dense level over
    compressed ones (blocked, padded or sum formats, sd: the copy holds their
    entries, not their slots).  Ensures: the copy stores no entry the source
    does not."""
    levels = None
    if _plain(fmt):
        try:
            # in another mode order a dense level below a compressed one fills the
            # copy with zeros the source does not store (sd's rows become columns):
            # a max, min or stored() over the copy would count them
            Format(fmt.levels, order)
            if not fmt.may_fill or tuple(order) == tuple(fmt.order):
                levels = fmt.levels
        except FormatError:
            levels = None
    if levels is None:
        levels = (Dense(),) + tuple(Compressed() for _ in order[1:])
    probe = Format(levels, order)
    for name, named in _named(len(order)):
        if named == probe:
            return Format(levels, order, name)
    letters = "".join("d" if isinstance(lv, Dense) else "q" if isinstance(lv, Singleton)
                      else "s" for lv in levels)
    base = fmt.name if levels is getattr(fmt, "levels", None) and fmt.name else letters
    return Format(levels, order, f"{base} in mode order {order}")


def _rewrite(e: ast.Expr, names: dict[tuple[str, tuple[str, ...]], str]):
    """``e`` with each access (tensor, indices) in ``names`` reading ``names[...]``."""
    def access(a: ast.Access):
        new = names.get((a.tensor, a.indices))
        return a if new is None else ast.Access(new, a.indices, a.span, a.index_spans)
    return ast.map_accesses(e, access)


def _with(assign: ast.Assignment, names) -> ast.Assignment:
    return ast.Assignment(assign.lhs, _rewrite(assign.rhs, names), assign.source)


def _storage_order(indices: tuple[str, ...], loop_order: tuple[str, ...],
                   origin: Callable[[str], str]) -> tuple[int, ...]:
    """The modes of an access with ``indices`` in the order ``loop_order``
    binds them (a blocked loop variable counts for its index)."""
    rank = {}
    for k, var in enumerate(loop_order):
        rank.setdefault(origin(var), k)
    return tuple(sorted(range(len(indices)), key=lambda m: (rank.get(indices[m], 1 << 30), m)))


def plan_copies(assign: ast.Assignment, formats: dict,
                fits: Callable[[ast.Assignment, dict], bool],
                loop_order: Callable | None = None) -> CopyPlan | None:
    """The fewest accesses to read through copies so that ``fits(assign',
    formats')`` (the lowerer finds a loop order), or None when no choice of up
    to ``MAX_COPIED`` accesses does.

    Requires: ``assign`` is checked, ``formats`` maps each of its tensors to a
    Format or SumFormat.  Ensures: every copy reads the same logical tensor as
    the access it replaces (same indices, same shape); accesses of one tensor
    with the same indices share one copy; the output is never copied.  Tries
    later accesses first (in ``A*B`` it copies B where either would do).
    ``loop_order(assign, formats)`` gives the order the copies are stored for
    (default: ``default_loop_order``).
    """
    from .lower import IndexPlan, default_loop_order
    candidates = list(dict.fromkeys(
        (a.tensor, a.indices) for a in assign.accesses()
        if not formats[a.tensor].is_dense and len(a.indices) > 1))[::-1]
    for size in range(1, min(MAX_COPIED, len(candidates)) + 1):
        for chosen in itertools.combinations(candidates, size):
            # the loop order the others allow, the chosen accesses read densely
            free = {key: f"{key[0]}{COPY_MARK}{n}" for n, key in enumerate(chosen)}
            trial_fmts = dict(formats)
            for (tensor, idx), name in free.items():
                trial_fmts[name] = resolve_format("dense", len(idx))
            trial = _with(assign, free)
            try:
                order = (loop_order or default_loop_order)(trial, _planning_formats(trial_fmts))
                plan = IndexPlan.of(trial, _planning_formats(trial_fmts))
            except UnsupportedError:
                continue
            # the order the others allow, then the same with the output's indices first
            # (a max/min reduction or an epilogue needs them outside the reduced ones)
            outer = tuple(v for v in order if plan.origin(v) in assign.lhs.indices)
            orders = list(dict.fromkeys(
                [order, outer + tuple(v for v in order if v not in outer)]))
            for order, plain in itertools.product(orders, (False, True)):
                names, copies, new_fmts = {}, [], dict(formats)
                for tensor, idx in chosen:
                    modes = _storage_order(idx, order, plan.origin)
                    fmt = copy_format(_CSR_LIKE[len(idx)] if plain else formats[tensor], modes)
                    name = copy_name(tensor, modes) + ("p" if plain else "")
                    names[(tensor, idx)] = name
                    new_fmts[name] = fmt
                    copies.append(OperandCopy(tensor, name, idx, formats[tensor], fmt))
                new_assign = _with(assign, names)
                kept = {a.tensor for a in (new_assign.lhs,) + new_assign.accesses()}
                new_fmts = {t: f for t, f in new_fmts.items() if t in kept}
                if all(c.format == formats[c.source] and c.indices == _only_access(assign, c)
                       for c in copies):
                    continue            # copies identical to their sources change nothing
                if fits(new_assign, new_fmts):
                    return CopyPlan(new_assign, new_fmts, tuple(copies))
    return None


class _CsrLike(dict):
    """rank -> a dense level over compressed ones, in mode order (a stand-in
    copy_format reorders): the format a copy takes when the source's own levels
    do not serve (blocked, iterated rows)."""

    def __missing__(self, rank: int) -> Format:
        fmt = Format((Dense(),) + tuple(Compressed() for _ in range(rank - 1)),
                     tuple(range(rank)))
        self[rank] = fmt
        return fmt


_CSR_LIKE = _CsrLike()


def _only_access(assign: ast.Assignment, copy: OperandCopy):
    """``copy.indices`` when it replaces every access of its source (so an
    identical copy would change nothing), else None."""
    keys = {a.indices for a in assign.accesses() if a.tensor == copy.source}
    return copy.indices if keys == {copy.indices} else None


def plan_copies_for_order(assign: ast.Assignment, formats: dict, order: tuple[str, ...],
                          fits: Callable[[ast.Assignment, dict], bool]) -> CopyPlan | None:
    """Copies of exactly the accesses that the explicit loop ``order`` visits
    out of their storage order, each stored in the order ``order`` binds its
    indices (in its own levels, else in csr-like ones, with every operand in
    exotic levels copied too); None when there are none, or ``fits(assign',
    formats')`` refuses the result (``order`` then cannot be honoured by
    copies: the output's order, a blocked index, an unknown variable)."""
    from .lower import IndexPlan
    try:
        plan = IndexPlan.of(assign, _planning_formats(formats))
    except UnsupportedError:
        return None
    rank = {}
    for k, var in enumerate(order):
        rank.setdefault(plan.origin(var), k)
    for plain in (False, True):
        names, copies, new_fmts = {}, [], dict(formats)
        for a in assign.accesses():
            fmt = formats[a.tensor]
            key = (a.tensor, a.indices)
            if fmt.is_dense or len(a.indices) < 2 or key in names \
                    or any(ix not in rank for ix in a.indices):
                continue
            modes = _storage_order(a.indices, order, plan.origin)
            stored = _planning_formats({a.tensor: fmt})[a.tensor].order
            if _keeps_order(stored, modes) and not (plain and not _plain(fmt)):
                continue
            cfmt = copy_format(_CSR_LIKE[len(modes)] if plain else fmt, modes)
            name = copy_name(a.tensor, modes) + ("p" if plain else "")
            names[key] = name
            new_fmts[name] = cfmt
            copies.append(OperandCopy(a.tensor, name, a.indices, fmt, cfmt))
        if not copies:
            continue
        new_assign = _with(assign, names)
        kept = {a.tensor for a in (new_assign.lhs,) + new_assign.accesses()}
        new_fmts = {t: f for t, f in new_fmts.items() if t in kept}
        if fits(new_assign, new_fmts):
            return CopyPlan(new_assign, new_fmts, tuple(copies))
    return None


def assembled_formats(rank: int, preferred: tuple[int, ...]) -> list[Format]:
    """The output formats the kernels build directly, to try in turn: dense
    levels over one compressed level (csr-like) in mode order ``preferred``,
    then in the other orders, then dense."""
    levels = tuple(Dense() for _ in range(rank - 1)) + (Compressed(),)
    orders = [preferred] + [o for o in itertools.permutations(range(rank)) if o != preferred]
    out = [copy_format(Format(levels, orders[0]), o) for o in orders]
    return out + [resolve_format("dense", rank)]


def plan_output(assign: ast.Assignment, formats: dict,
                fits: Callable[[ast.Assignment, dict], bool],
                exclude=frozenset()) -> CopyPlan | None:
    """A plan computing the sparse output in a format the kernels build
    (``assembled_formats``, except those in ``exclude``: a target refused
    them), reading operands through copies where that needs them; None when
    none fits.  Requires: the output's format is not dense."""
    out = assign.lhs.tensor
    wanted = formats[out]
    rank = len(assign.lhs.indices)
    if rank == 0:
        return None
    order = tuple(getattr(_planning_formats({out: wanted})[out], "order", range(rank)))
    preferred = tuple(dict.fromkeys(order))
    for computed in assembled_formats(rank, preferred):
        if computed == wanted or computed in exclude:
            continue
        trial = dict(formats)
        trial[out] = computed
        plan = CopyPlan(assign, trial, ()) if fits(assign, trial) else \
            plan_copies(assign, trial, fits)
        if plan is not None:
            return CopyPlan(plan.assign, plan.formats, plan.copies,
                            OutputCopy(out, computed, wanted))
    return None


def _keeps_order(stored: tuple[int, ...], modes: tuple[int, ...]) -> bool:
    """True when storage mode order ``stored`` (a blocked format may list a mode
    twice) visits modes in the order ``modes`` does."""
    first = list(dict.fromkeys(stored))
    return tuple(first) == tuple(modes)


def _planning_formats(formats: dict) -> dict:
    """``formats`` with sum formats (hyb) stood in for by their last part (their
    parts share one storage order)."""
    return {t: (f.parts[-1] if not isinstance(f, Format) and hasattr(f, "parts") else f)
            for t, f in formats.items()}


def dense_inner_products(assign: ast.Assignment, formats: dict) -> bool:
    """True when spc's default loop order builds the assembled sparse output by
    inner products over a dense loop nested in another: the output's last stored
    index is bound by no sparse level of any operand (every coordinate of it is
    visited under each outer iteration, a merge over the reduction below each),
    as csr x csc SpGEMM into csr does.  Such a
    kernel costs rows x columns merges; Gustavson's order with a copy does not."""
    from .lower import IndexPlan, OutputKind, classify_output, default_loop_order
    fmts = _planning_formats(formats)
    out = assign.lhs
    try:
        if classify_output(assign, fmts)[0] != OutputKind.ASSEMBLED:
            return False
        order = default_loop_order(assign, fmts)
        plan = IndexPlan.of(assign, fmts)
    except UnsupportedError:
        return False
    reductions = {ix for a in assign.accesses() for ix in a.indices} - set(out.indices)
    last = plan.level_vars(fmts[out.tensor], out.indices)[-1]
    if not reductions or order.index(last) == 0 or order.index(last) > min(
            order.index(v) for v in order if plan.origin(v) in reductions):
        return False        # outermost (SpMV's rows), or under the reductions: not quadratic
    for a in assign.accesses():
        fmt = fmts[a.tensor]
        stored = plan.level_vars(fmt, a.indices)
        if any(v == last and not lv.locatable for v, lv in zip(stored, fmt.levels)):
            return False                # a sparse operand drives the output's index
    return True


def _expand_sums(assign: ast.Assignment, formats: dict):
    """(assign, formats, parts) with every sum-format operand read as the sum of
    its parts (``A[i,j] -> A__0[i,j] + A__1[i,j]``), as runtime/composite.py
    lowers it; ``parts`` the part tensors' names."""
    sums = {t: f for t, f in formats.items()
            if not isinstance(f, Format) and hasattr(f, "parts")}
    if not sums:
        return assign, formats, frozenset()

    fmts = {t: f for t, f in formats.items() if t not in sums}
    for t, f in sums.items():
        for k, part in enumerate(f.parts):
            fmts[part_name(t, k)] = part
    return (ast.Assignment(assign.lhs, read_parts(assign.rhs, sums), assign.source), fmts,
            frozenset(n for n in fmts if n not in formats))


def lowers(assign: ast.Assignment, formats: dict, order: tuple[str, ...] | None = None) -> bool:
    """True unless lowering ``assign``, in loop ``order`` when given, finds no
    loop order or refuses it as unsupported.  Sum-format operands are lowered
    as the sums of their parts (as runtime/composite.py does); a sum-format
    output is not judged here (False: the composite kernel builds it only with
    an operand's pattern)."""
    from .lower import lower
    if not isinstance(formats[assign.lhs.tensor], Format):
        return False
    if read_inside_function(assign, {t for t, f in formats.items()
                                     if not isinstance(f, Format) and hasattr(f, "parts")}):
        return False            # runtime/composite.py refuses it: a copy must serve
    expanded, fmts, parts = _expand_sums(assign, formats)
    try:
        lower(expanded, fmts, order=order, separate=parts)
    except UnsupportedError:
        return False
    return True


__all__ = ["COPY_MARK", "CopyPlan", "dense_inner_products", "OutputCopy", "assembled_formats", "plan_output", "ModeOrderConflict", "OperandCopy", "copy_format",
           "copy_name", "lowers", "plan_copies", "plan_copies_for_order"]
