"""User names to internal names: the one place that decides how a tensor or
index name the user wrote is spelled inside spc (IR, kernel parameters, C).

Generated names are built from user names (``size_j``, ``A_vals``, ``A1_p2``,
``j_blk``, ``j64_tiles``) or are fixed words (``acc``).  A user name can
collide with them, or with a C/CUDA keyword, macro or builtin, only if it
contains an underscore or is such a word; so those names are *mangled* into a
form no generated name has (``u<letters>_<hash>_``: it ends in an underscore,
which no generated suffix does), and every other name is kept as written, so
the IR stays readable.
"""
from __future__ import annotations

import hashlib
import re

from ..ir.reserved import C_WORDS
from . import ast

_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")

# spc's own bare generated words, and the C/C++/CUDA words kernels may not use
RESERVED = C_WORDS | {"acc"}


def is_plain(name: str) -> bool:
    """True when ``name`` is kept as written: letters and digits (no underscore),
    starting with a letter, and not a reserved word."""
    return bool(_PLAIN.match(name)) and name not in RESERVED


def internal_name(name: str) -> str:
    """The name spc uses inside for the user name ``name``.

    Ensures: plain names map to themselves; any other name maps to
    ``u<its letters and digits>_<8 hex digits of its hash>_``, an identifier
    that is neither plain nor any name spc generates from plain names, and
    distinct for distinct ``name``s (up to a 32-bit hash collision, which
    ``internal_names`` detects).
    """
    if is_plain(name):
        return name
    letters = re.sub(r"[^A-Za-z0-9]", "", name)[:24]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"u{letters}_{digest}_"


def internal_names(names) -> dict[str, str]:
    """``{user name: internal name}`` for ``names``; the values are distinct."""
    out = {n: internal_name(n) for n in dict.fromkeys(names)}
    if len(set(out.values())) != len(out):      # pragma: no cover - a 32-bit hash collision
        raise AssertionError(f"internal names collide: {out}")
    return out


def rename(assign: ast.Assignment, mapping: dict[str, str]) -> ast.Assignment:
    """``assign`` with every tensor and index name replaced through ``mapping``
    (names it lacks are kept); spans and the source text are unchanged."""
    def access(a: ast.Access) -> ast.Access:
        return ast.Access(mapping.get(a.tensor, a.tensor),
                          tuple(mapping.get(ix, ix) for ix in a.indices), a.span, a.index_spans)

    rhs = ast.map_accesses(assign.rhs, access, lambda ix: mapping.get(ix, ix))
    return ast.Assignment(access(assign.lhs), rhs, assign.source)


def names_of(assign: ast.Assignment) -> list[str]:
    """Every tensor and index name of ``assign``, output first."""
    out = []
    for a in (assign.lhs,) + assign.accesses():
        out.append(a.tensor)
        out.extend(a.indices)
    return out


_SYMBOL = re.compile(r"[A-Za-z0-9_]*\Z")


def symbol_part(text: str) -> str:
    """``text`` as part of a C symbol: itself when it has only letters, digits and
    underscores, else those characters followed by a hash of ``text``."""
    if _SYMBOL.match(text):
        return text
    kept = re.sub(r"[^A-Za-z0-9_]", "", text)
    return f"{kept}x{hashlib.sha256(text.encode('utf-8')).hexdigest()[:6]}"
