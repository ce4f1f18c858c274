"""Parse index notation (``C[i,j] = A[i,k]*B[k,j]``) into the AST of ``ast.py``.

The grammar lives in ``grammar.lark`` next to this file.  Every lark error is
turned into a ``ParseError`` whose span points at the offending character, so
no lark exception ever reaches the caller.
"""
from __future__ import annotations

from pathlib import Path

import lark

from spc.errors import ParseError
from spc.frontend.ast import (REDUCTIONS, Access, Assignment, BinOp, Call, Const, Expr, Neg,
                              Reduce, index_names)

_GRAMMAR = Path(__file__).with_name("grammar.lark")
_parser: lark.Lark | None = None

_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _get_parser() -> lark.Lark:
    """Ensures: the LALR parser, built on first use and then reused."""
    global _parser
    if _parser is None:
        _parser = lark.Lark(_GRAMMAR.read_text(encoding="utf-8"),
                            parser="lalr", propagate_positions=True,
                            maybe_placeholders=True)
    return _parser


def parse(text: str) -> Assignment:
    """Parse one assignment ``Out[idx...] = expr``.

    Requires: ``text`` is a str.
    Ensures: an ``Assignment`` whose nodes carry spans into ``text``; or a
    ``ParseError`` (with ``source=text`` and a span) on any syntax error.
    """
    if not isinstance(text, str):
        raise ParseError(f"expected the expression as a str, got {type(text).__name__}")
    if not text.strip():
        raise ParseError("empty expression; expected something like 'C[i] = A[i]'",
                         source=text, span=(0, 1))
    try:
        tree = _get_parser().parse(text)
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    try:
        lhs_tree, rhs_tree = tree.children
        return Assignment(lhs=_access(lhs_tree), rhs=_expr(rhs_tree), source=text)
    except RecursionError:
        raise ParseError("expression is nested too deeply", source=text,
                         span=(0, len(text))) from None


def _span(tree: lark.Tree) -> tuple[int, int]:
    return (tree.meta.start_pos, tree.meta.end_pos)


def _access(tree: lark.Tree) -> Access:
    """Requires: an ``indexed`` or ``scalar`` tree.  Ensures: its ``Access``."""
    name = tree.children[0]
    idx_tokens = []
    if tree.data == "indexed" and tree.children[1] is not None:
        idx_tokens = tree.children[1].children          # the index_list
    return Access(tensor=str(name),
                  indices=tuple(str(t) for t in idx_tokens),
                  span=_span(tree),
                  index_spans=tuple((t.start_pos, t.end_pos) for t in idx_tokens))


def _expr(tree: lark.Tree) -> Expr:
    """Requires: an expression tree from the grammar.  Ensures: its AST node."""
    kind = tree.data
    if kind in ("indexed", "scalar"):
        return _access(tree)
    if kind == "const":
        return Const(value=float(tree.children[0]), span=_span(tree))
    if kind == "neg":
        return Neg(operand=_expr(tree.children[0]), span=_span(tree))
    if kind == "paren":
        return _expr(tree.children[0])
    if kind == "call":
        name, *args = tree.children
        args = tuple(_expr(a) for a in args)
        first = args[0]
        if str(name) in REDUCTIONS and len(args) == 2 and isinstance(first, Access) \
                and not first.indices and first.tensor in index_names(args[1]):
            return Reduce(op=str(name), index=first.tensor, body=args[1], span=_span(tree))
        return Call(fn=str(name), args=args, span=_span(tree))
    if kind in _OPS:
        lhs, rhs = tree.children
        return BinOp(op=_OPS[kind], lhs=_expr(lhs), rhs=_expr(rhs), span=_span(tree))
    raise AssertionError(f"unknown parse tree node {kind!r}")  # grammar bug


def _syntax_error(text: str, e: lark.exceptions.UnexpectedInput) -> ParseError:
    """Ensures: a ParseError with a readable message for lark's error ``e``."""
    expected = set(getattr(e, "expected", None) or getattr(e, "allowed", None) or ())
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        pos = e.pos_in_stream
        found = repr(text[pos])
        at_end = False
    elif isinstance(e, lark.exceptions.UnexpectedToken) and e.token.type != "$END":
        pos = e.token.start_pos
        found = repr(str(e.token))
        at_end = False
    else:                                   # UnexpectedToken($END), UnexpectedEOF
        pos = len(text.rstrip())
        found = "end of expression"
        at_end = True
    before = text[:pos].rstrip()
    prev = before[-1:] if before else ""

    if expected and expected <= {"NAME", "RSQB"} and prev in ("[", ","):
        msg = f"expected an index name, found {found}"
    elif not before and "NAME" in expected:
        msg = f"expected the output tensor name, found {found}"
    elif "EQUAL" in expected and "=" not in text:
        msg = f"expected '=' after the output tensor, found {found}"
    elif at_end:
        msg = "unexpected end of expression"
    elif isinstance(e, lark.exceptions.UnexpectedCharacters):
        msg = f"unexpected character {found}"
    else:
        msg = f"unexpected {found}"
    return ParseError(msg, source=text, span=(pos, pos + 1))
