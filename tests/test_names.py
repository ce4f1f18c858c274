"""Names are an ABI: any tensor or index name the grammar accepts computes the
right result on both targets, never colliding with names spc generates, C/CUDA
keywords, macros or builtins (issue 10's naming failures, each a regression)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.formats.format import Format
from spc.formats.levels import Compressed, Dense
from spc.frontend.names import RESERVED, internal_name, is_plain, symbol_part
from spc.ir.nodes import Block, Buffer, DType, For, Kernel, Let, Param, ParamRole, Var, i64
from spc.ir.verify import verify

from cuda_env import NVCC, nvcc


# -- the mapping ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["A", "x", "B2", "out", "Weight"])
def test_plain_names_are_kept(name):
    assert internal_name(name) == name


@pytest.mark.parametrize("name", ["size_j", "A1_p2", "i_blk", "acc", "A_vals", "NAN", "int",
                                  "warpSize", "SPC_FULL_MASK", "_", "__x", "x_"])
def test_other_names_are_mangled_into_non_plain_identifiers(name):
    mangled = internal_name(name)
    assert mangled != name
    assert mangled.isidentifier() and mangled.isascii()
    assert not is_plain(mangled) and mangled.endswith("_")


def test_mangled_names_are_distinct():
    names = ["size_j", "size_i", "sizej", "A1_p2", "A_1p2", "acc", "i_blk", "i_in"]
    assert len({internal_name(n) for n in names}) == len(names)


def test_generated_bare_words_are_reserved():
    assert "acc" in RESERVED and "NAN" in RESERVED and "warpSize" in RESERVED


@pytest.mark.parametrize("text", ["csr", "bsr22", "my-csr", "csr.v2", "csr\u00fc"])
def test_symbol_parts_are_c_identifiers(text):
    part = symbol_part(text)
    assert (part == text) == text.isidentifier() and text.isascii() or part != text
    assert ("k_" + part).isidentifier() and part.isascii()


# -- expressions that used to go wrong ----------------------------------------------------

def _reference(expr, operands):
    lhs, rhs = (s.strip() for s in expr.split("="))
    terms = rhs.split("+")
    out_ix = lhs[lhs.index("[") + 1:-1].split(",") if "[" in lhs else []
    letters = {}

    def sub(ixs):
        return "".join(letters.setdefault(ix.strip(), "abcdefgh"[len(letters)]) for ix in ixs)

    total = 0
    for term in terms:
        specs, arrays = [], []
        for factor in term.split("*"):
            name, ixs = factor.strip()[:-1].split("[")
            specs.append(sub(ixs.split(",")))
            arrays.append(operands[name.strip()])
        total = total + np.einsum(",".join(specs) + "->" + sub(out_ix), *arrays)
    return total


CASES = [
    # (expression, formats), each once a wrong answer, a hang, a crash or an error
    ("s = g[size_j,j] + t[size_j,j]", {"g": "nm(3,4)", "t": "csf"}),
    ("y[i] = A[i,A1_p2]*x[A1_p2]", {"A": "csr"}),
    ("y[A0_p0] = A[A0_p0,j]*x[j]", {"A": "coo"}),
    ("y[A0_p0] = A[A0_p0,j]*x[j]", {"A": "bsr(2,2)"}),
    ("y[i_blk] = A[i_blk,i_in]*x[i_in]", {"A": "bsr(2,2)"}),
    ("C[i,j_in] = A[i,k]*B[k,j_in]", {"A": "bsr(2,2)"}),
    ("y[acc] = A[acc,j]*x[j]", {"A": "csr"}),
    ("y[i] = A[i,A_vals]*x[A_vals]", {"A": "csr"}),
    ("NAN[i] = INFINITY[i,warpSize]*NULL[warpSize]", {"INFINITY": "csr"}),
    ("y[int] = A[int,for]*x[for]", {"A": "csr"}),
    ("y[i] = SPC_FULL_MASK[i,j]*x[j]", {"SPC_FULL_MASK": "csr"}),
]


def _operands(expr, formats, rng):
    lhs, rhs = (s.strip() for s in expr.split("="))
    ops, size = {}, {}
    for factor in rhs.replace("+", "*").split("*"):
        name, ixs = factor.strip()[:-1].split("[")
        shape = tuple(size.setdefault(ix.strip(), (6, 8, 4)[len(size) % 3])
                      for ix in ixs.split(","))
        if name in formats:
            m = sp.random(*shape, density=0.5, format="csr", random_state=int(rng.integers(99)))
            dense = m.toarray()
            if formats[name].startswith("nm"):
                dense = spc.prune.nm(dense, 3, 4)
                dense = dense.to_numpy() if hasattr(dense, "to_numpy") else np.asarray(dense)
            ops[name] = dense
        else:
            ops[name] = rng.standard_normal(shape)
    return ops


@pytest.mark.parametrize("expr,formats", CASES, ids=[c[0] for c in CASES])
def test_any_name_computes_the_right_result_on_the_cpu(expr, formats):
    rng = np.random.default_rng(5)
    ops = _operands(expr, formats, rng)
    k = spc.compile(expr, formats=formats, dtype="float64")
    got = k(**ops)
    np.testing.assert_allclose(got, _reference(expr, ops), rtol=1e-10, atol=1e-10)
    got_positional = k(*[ops[n] for n in k.input_names])
    np.testing.assert_allclose(got_positional, _reference(expr, ops), rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("expr,formats", CASES, ids=[c[0] for c in CASES])
def test_any_name_renders_cuda_that_nvcc_compiles(expr, formats):
    k = spc.compile(expr, formats=formats, target="cuda", arch="sm_90")
    rc, log = nvcc(k.source)
    assert rc == 0, log[-2000:]


@pytest.mark.parametrize("fmt_name", ["my-csr", "csr.v2", "csr\u00fc"])
def test_user_format_names_do_not_leak_into_symbols(fmt_name):
    spc.register_format(fmt_name, lambda rank: Format((Dense(), Compressed()), (0, 1), fmt_name))
    k = spc.compile("y[i] = A[i,j]*x[j]", formats={"A": fmt_name}, dtype="float64")
    A = sp.random(5, 4, density=0.5, format="csr", random_state=3)
    np.testing.assert_allclose(k(A, np.ones(4)), A @ np.ones(4))
    kc = spc.compile("y[i] = A[i,j]*x[j]", formats={"A": fmt_name}, target="cuda", arch="sm_90")
    assert kc.source.isascii()
    if NVCC is not None:
        rc, log = nvcc(kc.source)
        assert rc == 0, log[-2000:]


# -- the verifier -------------------------------------------------------------------------

def _kernel(body, params=()):
    return Kernel("k", tuple(params) or (Param(Buffer("y", DType.F64), ParamRole.OUTPUT),
                                         Param(Var("n", DType.I64), ParamRole.SIZE)), body)


def test_verifier_rejects_duplicate_parameters():
    params = (Param(Buffer("y", DType.F64), ParamRole.OUTPUT),
              Param(Buffer("y", DType.F64), ParamRole.INPUT))
    with pytest.raises(spc.SpcError, match="share a name"):
        verify(_kernel(Block(()), params))


def test_verifier_rejects_a_redeclared_variable():
    v = Var("t", DType.I64)
    with pytest.raises(spc.SpcError, match="declared again"):
        verify(_kernel(Block((Let(v, i64(0)), Block((Let(v, i64(1)),))))))


def test_verifier_rejects_a_loop_variable_shadowing_a_size():
    with pytest.raises(spc.SpcError, match="shadows"):
        verify(_kernel(For(Var("n", DType.I64), i64(0), i64(3), Block(()))))


def test_messages_name_what_the_user_wrote():
    k = spc.compile("y[i] = SPC_FULL_MASK[i,size_j]*x[size_j]", formats={"SPC_FULL_MASK": "csr"})
    A = sp.random(5, 4, density=0.5, format="csr", random_state=3, dtype=np.float32)
    with pytest.raises(spc.ShapeError, match="index 'size_j' is 3 in x but 4 in SPC_FULL_MASK"):
        k(A, np.ones(3, np.float32))
    with pytest.raises(spc.SpcError, match="SPC_FULL_MASK"):
        k(SPC_FULL_MASK=np.ones((5, 4, 2)), x=np.ones(4))
