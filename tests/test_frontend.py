"""Tests of the index-notation front end: parser, static checks, index sizes."""
from __future__ import annotations

import pytest

from spc.errors import ParseError, ShapeError, SpcError
from spc.frontend.ast import Access, Assignment, BinOp, Const, Neg
from spc.frontend.check import check, index_sizes, output_shape
from spc.frontend.parser import parse


def text_of(src: str, span: tuple[int, int]) -> str:
    return src[span[0]:span[1]]


def caret_line(span: tuple[int, int]) -> str:
    return "    " + " " * span[0] + "^" * (span[1] - span[0])


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("src, out, ins, reduction", [
    ("y[i] = A[i,j]*x[j]", ("y", ("i",)), [("A", ("i", "j")), ("x", ("j",))], ("j",)),
    ("C[i,j] = A[i,k]*B[k,j]", ("C", ("i", "j")),
     [("A", ("i", "k")), ("B", ("k", "j"))], ("k",)),
    ("C[i,j] = S[i,j]*A[i,k]*B[k,j]", ("C", ("i", "j")),
     [("S", ("i", "j")), ("A", ("i", "k")), ("B", ("k", "j"))], ("k",)),
    ("s = A[i,j]*x[i]*y[j]", ("s", ()),
     [("A", ("i", "j")), ("x", ("i",)), ("y", ("j",))], ("i", "j")),
    ("y[i] = alpha*A[i,j]*x[j]", ("y", ("i",)),
     [("alpha", ()), ("A", ("i", "j")), ("x", ("j",))], ("j",)),
    ("s[] = A[]", ("s", ()), [("A", ())], ()),
    ("A[i,j] = B[i,j,k]*c[k]", ("A", ("i", "j")),
     [("B", ("i", "j", "k")), ("c", ("k",))], ("k",)),
    ("  Out_1 [ i1 , j_2 ]=In[i1,j_2]  ", ("Out_1", ("i1", "j_2")),
     [("In", ("i1", "j_2"))], ()),
])
def test_parse_accesses(src, out, ins, reduction):
    a = parse(src)
    assert isinstance(a, Assignment)
    assert a.source == src
    assert (a.lhs.tensor, a.lhs.indices) == out
    assert [(x.tensor, x.indices) for x in a.accesses()] == ins
    assert a.reduction_indices() == reduction


@pytest.mark.parametrize("src, value", [
    ("s = 3", 3.0), ("s = 2.5", 2.5), ("s = 1e-3", 1e-3),
    ("s = .5", 0.5), ("s = 4.", 4.0), ("s = 2E+2", 200.0),
])
def test_parse_constants(src, value):
    rhs = parse(src).rhs
    assert rhs == Const(value=value, span=(4, len(src)))


def shape_of(e):
    """The expression's structure without spans, for comparison."""
    if isinstance(e, Access):
        return e.tensor
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Neg):
        return ("neg", shape_of(e.operand))
    return (e.op, shape_of(e.lhs), shape_of(e.rhs))


@pytest.mark.parametrize("rhs, structure", [
    ("a*b+c", ("+", ("*", "a", "b"), "c")),
    ("a+b*c", ("+", "a", ("*", "b", "c"))),
    ("a*(b+c)", ("*", "a", ("+", "b", "c"))),
    ("a-b-c", ("-", ("-", "a", "b"), "c")),
    ("a-(b-c)", ("-", "a", ("-", "b", "c"))),
    ("a*b*c", ("*", ("*", "a", "b"), "c")),
    ("-a", ("neg", "a")),
    ("-a*b", ("*", ("neg", "a"), "b")),
    ("a*-b", ("*", "a", ("neg", "b"))),
    ("a - -b", ("-", "a", ("neg", "b"))),
    ("--a", ("neg", ("neg", "a"))),
    ("-(a+b)", ("neg", ("+", "a", "b"))),
    ("2*a - 0.5", ("-", ("*", 2.0, "a"), 0.5)),
    ("((a))", "a"),
])
def test_parse_structure(rhs, structure):
    assert shape_of(parse("s = " + rhs).rhs) == structure


def test_spans_point_at_text():
    src = "C[i,j] = -A[i,k] * (B[k,j] + 2.0)"
    a = parse(src)
    assert text_of(src, a.lhs.span) == "C[i,j]"
    assert [text_of(src, s) for s in a.lhs.index_spans] == ["i", "j"]
    mul = a.rhs
    assert isinstance(mul, BinOp) and mul.op == "*"
    assert text_of(src, mul.span) == "-A[i,k] * (B[k,j] + 2.0)"
    assert isinstance(mul.lhs, Neg)
    assert text_of(src, mul.lhs.span) == "-A[i,k]"
    assert text_of(src, mul.lhs.operand.span) == "A[i,k]"
    assert [text_of(src, s) for s in mul.lhs.operand.index_spans] == ["i", "k"]
    add = mul.rhs
    assert isinstance(add, BinOp) and add.op == "+"
    assert text_of(src, add.span) == "B[k,j] + 2.0"
    assert text_of(src, add.lhs.span) == "B[k,j]"
    assert add.lhs.index_spans == ((22, 23), (24, 25))
    assert text_of(src, add.rhs.span) == "2.0"


def test_scalar_spans():
    src = "s = alpha * A[]"
    a = parse(src)
    assert (a.lhs.span, a.lhs.index_spans) == ((0, 1), ())
    alpha, A = a.accesses()
    assert (text_of(src, alpha.span), alpha.indices) == ("alpha", ())
    assert (text_of(src, A.span), A.indices) == ("A[]", ())


# ---------------------------------------------------------- syntax errors


@pytest.mark.parametrize("src, pos, words", [
    ("C[i,j] = A[i,k] *", 17, "unexpected end of expression"),
    ("C[i,j] A[i,j]", 7, "expected '='"),
    ("C[i,] = A[i]", 4, "expected an index name"),
    ("C[,i] = A[i]", 2, "expected an index name"),
    ("= A[i]", 0, "expected the output tensor name"),
    ("C[i] = A[i]]", 11, "unexpected ']'"),
    ("C[i] = 3x", 8, "unexpected 'x'"),
    ("", 0, "empty expression"),
    ("   ", 0, "empty expression"),
    ("C[i] = A[i] + )", 14, "unexpected ')'"),
    ("C[i] = (A[i]", 12, "unexpected end of expression"),
    ("C[i] = A[i] $ B[i]", 12, "unexpected character '$'"),
    ("C[i]", 4, "expected '='"),
    ("C[i] = = A[i]", 7, "unexpected '='"),
    ("C[i] = A[i] B[i]", 12, "unexpected 'B'"),
    ("C[1] = A[1]", 2, "expected an index name"),
    ("C[i] = A[i", 10, "unexpected end of expression"),
    ("C[i] = A[i] = B[i]", 12, "unexpected '='"),
])
def test_syntax_errors(src, pos, words):
    with pytest.raises(ParseError) as info:
        parse(src)
    err = info.value
    assert err.source == src
    assert err.span == (pos, pos + 1)
    assert words in err.message
    assert caret_line(err.span) in str(err)


@pytest.mark.parametrize("src", [
    "C[i,j] = A[i,k] *", "C[i,j] A[i,j]", "C[i,] = A[i]", "= A[i]",
    "C[i] = A[i]]", "C[i] = 3x", "", "[i] = A[i]", "C[i] = A[i]*(", "C[[i]] = A[i]",
    "C[i] = 1e", "C[i] = A[i] ** B[i]", "C(i) = A(i)", "C[i] = A[i];", "C[i] == A[i]",
])
def test_no_lark_error_escapes(src):
    try:
        parse(src)
    except ParseError as err:
        assert isinstance(err, SpcError)
        assert err.span is not None
    else:
        pytest.fail(f"{src!r} parsed")


# ------------------------------------------------------------ static checks


@pytest.mark.parametrize("src", [
    "y[i] = A[i,j]*x[j]", "C[i,j] = S[i,j]*A[i,k]*B[k,j]", "s = A[i,j]*x[i]*y[j]",
    "s = 2", "y[i] = A[i,j]*x[j] + A[i,j]*z[j]", "C[j,i] = A[i,j]",
])
def test_check_accepts(src):
    assert check(parse(src)) is None


@pytest.mark.parametrize("src, marked, words", [
    ("C[i,l] = A[i,k]*B[k,j]", (4, 5),
     "output index 'l' does not appear on the right-hand side"),
    ("y[i] = A[i,j]*x[j] + A[i]", (21, 25), "tensor 'A' is used with 2 indices and with 1"),
    ("y[i] = A[i,j]*y[j]", (14, 18), "output tensor 'y' also appears on the right-hand side"),
    ("y[i] = A[i,i]", (11, 12), "index 'i' is repeated in 'A'"),
    ("C[i,i] = A[i,j]", (4, 5), "output index 'i' is repeated"),
])
def test_check_errors(src, marked, words):
    with pytest.raises(ParseError) as info:
        check(parse(src))
    err = info.value
    assert err.source == src
    assert err.span == marked
    assert words in err.message
    assert caret_line(marked) in str(err)


# --------------------------------------------------------------- index sizes


@pytest.mark.parametrize("src, shapes, sizes, out", [
    ("y[i] = A[i,j]*x[j]", {"A": (3, 4), "x": (4,)}, {"i": 3, "j": 4}, (3,)),
    ("C[i,j] = A[i,k]*B[k,j]", {"A": (2, 5), "B": (5, 7), "C": (2, 7)},
     {"i": 2, "k": 5, "j": 7}, (2, 7)),
    ("s = A[i,j]*x[i]*y[j]", {"A": (3, 4), "x": (3,), "y": (4,)}, {"i": 3, "j": 4}, ()),
    ("y[i] = alpha*x[i]", {"alpha": (), "x": (6,)}, {"i": 6}, (6,)),
    ("A[i,j] = B[i,j,k]*c[k]", {"B": (2, 3, 4), "c": (4,)}, {"i": 2, "j": 3, "k": 4}, (2, 3)),
    ("C[j,i] = A[i,j]", {"A": (2, 9)}, {"i": 2, "j": 9}, (9, 2)),
])
def test_index_sizes(src, shapes, sizes, out):
    a = parse(src)
    got = index_sizes(a, shapes)
    assert got == sizes
    assert output_shape(a, got) == out


@pytest.mark.parametrize("src, shapes, marked, words", [
    ("y[i] = A[i,j]*x[j]", {"A": (3, 4, 5), "x": (4,)}, (7, 13),
     "tensor 'A' has rank 3 but is indexed with 2 indices"),
    ("y[i] = A[i,j]*x[j]", {"A": (3, 4), "x": (4, 1)}, (14, 18),
     "tensor 'x' has rank 2 but is indexed with 1 index"),
    ("C[i,j] = A[i,k]*B[k,j]", {"A": (2, 32), "B": (64, 7)}, (18, 19),
     "index 'k' is 64 in B but 32 in A"),
    ("C[i,j] = A[i,k]*B[k,j]", {"C": (3, 7), "A": (2, 5), "B": (5, 7)}, (11, 12),
     "index 'i' is 2 in A but 3 in C"),
    ("y[i] = A[i,j]*x[j]", {"A": (3, 4)}, (14, 18), "no shape given for tensor 'x'"),
])
def test_index_size_errors(src, shapes, marked, words):
    with pytest.raises(ShapeError) as info:
        index_sizes(parse(src), shapes)
    err = info.value
    assert err.source == src
    assert err.span == marked
    assert words in err.message
    assert caret_line(marked) in str(err)


def test_output_shape_unknown_index():
    a = parse("C[i,l] = A[i,k]")
    with pytest.raises(ShapeError) as info:
        output_shape(a, index_sizes(a, {"A": (2, 3)}))
    assert info.value.span == (4, 5)
