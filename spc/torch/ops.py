"""The torch operators behind ``spc.torch``, on a CSR matrix's arrays.

``torch.ops.spc.spmm_csr(crow, col, vals, n_cols, B)``: ``A @ B``;
``torch.ops.spc.spmm_csr_as(crow, col, vals, n_cols, B, fmt)``: ``A @ B`` by spc's
SpMM for A in format ``fmt`` (converted once per live arrays; spmm_csr's gradients);
``torch.ops.spc.spmm_t_csr(crow, col, vals, n_cols, G)``: ``A.T @ G``;
``torch.ops.spc.sddmm_csr(crow, col, vals, n_cols, X, Y)``: the values of
``A * (X @ Y.T)`` on A's pattern; where A is the ``(len(crow) - 1) x n_cols`` CSR
matrix of ``crow``, ``col``, ``vals``.  Each runs an spc kernel compiled once per
device type (CPU, CUDA) and value type, and has a fake implementation (shapes
only) for ``torch.compile``, and autograd formulas made of the same three
operators:

    C = A @ B:          dvals = sddmm(ones, dC, B);       dB = A.T @ dC
    C = A.T @ G:        dvals = sddmm(ones, G, dC);       dG = A @ dC
    S = A * (X Y^T):    dvals = sddmm(dS, X, Y);          dX = (dS * A) @ Y;  dY = (dS * A).T @ X
"""
from __future__ import annotations

import torch
from torch import Tensor

import spc

from .prepared import host_dense, prepared_matrix

_KERNELS: dict = {}
_SPECIALIZED: dict = {}      # (name, torch dtype, fmt) -> the CPU kernel for that value type
# what spc.compile gets: the named kernels (sddmm's result keeps A's pattern), and
# the transposed product as an expression
_COMPILE = {"spmm": ("spmm", {"fmt": "csr"}), "sddmm": ("sddmm", {"fmt": "csr"}),
            "spmm_t": ("C[k,j] = A[i,k] * G[i,j]", {"formats": {"A": "csr"}})}


def _kernel(name: str, device: torch.device, fmt: str = "csr"):
    """The spc kernel of ``name`` for ``device``'s type (SpMM: with A in ``fmt``),
    compiled once (dtype=None: each value type gets its specialization at first use)."""
    key = (name, device.type, fmt)
    k = _KERNELS.get(key)
    if k is None:
        target = "cuda" if device.type == "cuda" else "cpu"
        kernel, formats = _COMPILE[name] if fmt == "csr" else ("spmm", {"fmt": fmt})
        k = _KERNELS[key] = spc.compile(kernel, target=target, **formats)
    return k


def _matrix(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, vals, (crow.shape[0] - 1, n_cols))


def _check(what: str, vals: Tensor, *dense: Tensor) -> None:
    for t in (vals, *dense):
        if not t.is_floating_point():
            raise spc.DTypeError(f"spc.torch.{what}: values must be floating point, "
                                 f"not {t.dtype}")


def _result_type(*ts: Tensor) -> torch.dtype:
    out = ts[0].dtype
    for t in ts[1:]:
        out = torch.promote_types(out, t.dtype)
    return out


def _product(name: str, crow: Tensor, col: Tensor, vals: Tensor, n_cols: int,
             D: Tensor, fmt: str = "csr") -> Tensor:
    """``name``'s kernel (A in ``fmt``) on the CSR matrix and D, the matrix prepared
    once per live arrays (``prepared.py``); on the CPU, with D as a numpy view when it
    has vals' type (spc's fast call), else as torch tensors (converted per call)."""
    k = _kernel(name, D.device, fmt)
    matrix = prepared_matrix(crow, col, vals, n_cols, fmt)
    if D.device.type != "cpu":
        return k(_matrix(crow, col, vals, n_cols) if matrix is None else matrix, D)
    if matrix is None or D.dtype != vals.dtype:
        return k(_matrix(crow, col, vals, n_cols), D)
    # the specialization for the one value type (no per-call type promotion); validated:
    # prepared_matrix checked the arrays it was built from, and rebuilds when they change
    typed = _SPECIALIZED.get((name, D.dtype, fmt))
    if typed is None:
        typed = _SPECIALIZED[name, D.dtype, fmt] = k.specialize(
            str(D.dtype).rpartition(".")[2])
    return torch.from_numpy(typed(matrix, host_dense(D), validate=False))


def spmm_direct(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int, B: Tensor,
                fmt: str = "csr", what: str | None = None) -> Tensor:
    """What ``spmm_csr`` (``fmt`` "csr") or ``spmm_csr_as`` compute, called without
    the operator machinery (dispatch, autograd, schema checks: about 100 us of
    host time a call on the H200's host, 2026-11-29): for calls that need no
    gradient and are not being traced by ``torch.compile``; also those operators'
    own implementation (``what``: the operator's name in errors)."""
    _check(what or ("spmm_csr" if fmt == "csr" else "spmm_csr_as"), vals, B)
    return _product("spmm", crow, col, vals, n_cols, B, fmt)


def direct_call_ok(*tensors: Tensor) -> bool:
    """True when a call on ``tensors`` may skip the operators: nothing is being
    compiled and no gradient would flow back to any of them."""
    if torch.compiler.is_compiling():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


@torch.library.custom_op("spc::spmm_csr", mutates_args=())
def spmm_csr(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int, B: Tensor) -> Tensor:
    """``A @ B`` for the CSR matrix A of (crow, col, vals) with ``n_cols`` columns."""
    return spmm_direct(crow, col, vals, n_cols, B)


@torch.library.custom_op("spc::spmm_csr_as", mutates_args=())
def spmm_csr_as(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int, B: Tensor,
                fmt: str) -> Tensor:
    """``A @ B`` for the CSR matrix A of (crow, col, vals), computed by spc's SpMM for
    A in format ``fmt`` (``"bsr(16,16)"``, ``"nm(2,4)"``...; the conversion made once
    per live arrays); its gradients are spmm_csr's."""
    return spmm_direct(crow, col, vals, n_cols, B, fmt, "spmm_csr_as")


@torch.library.custom_op("spc::spmm_t_csr", mutates_args=())
def spmm_t_csr(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int, G: Tensor) -> Tensor:
    """``A.T @ G`` for the CSR matrix A of (crow, col, vals) with ``n_cols`` columns."""
    _check("spmm_t_csr", vals, G)
    return _product("spmm_t", crow, col, vals, n_cols, G)


@torch.library.custom_op("spc::sddmm_csr", mutates_args=())
def sddmm_csr(crow: Tensor, col: Tensor, vals: Tensor, n_cols: int, X: Tensor,
              Y: Tensor) -> Tensor:
    """The values of ``A * (X @ Y.T)`` on the pattern of the CSR matrix A of (crow,
    col, vals) with ``n_cols`` columns, in A's storage order."""
    _check("sddmm_csr", vals, X, Y)
    out = _kernel("sddmm", X.device)(_matrix(crow, col, vals, n_cols), X, Y)
    return out.values()


@spmm_csr.register_fake
def _(crow, col, vals, n_cols, B):
    return B.new_empty((crow.shape[0] - 1, B.shape[1]), dtype=_result_type(vals, B))


@spmm_csr_as.register_fake
def _(crow, col, vals, n_cols, B, fmt):
    return B.new_empty((crow.shape[0] - 1, B.shape[1]), dtype=_result_type(vals, B))


@spmm_t_csr.register_fake
def _(crow, col, vals, n_cols, G):
    return G.new_empty((n_cols, G.shape[1]), dtype=_result_type(vals, G))


@sddmm_csr.register_fake
def _(crow, col, vals, n_cols, X, Y):
    return vals.new_empty(vals.shape, dtype=_result_type(vals, X, Y))


# -- autograd ------------------------------------------------------------------------

def _save(ctx, inputs, output):
    crow, col, vals, n_cols, *dense = inputs
    ctx.save_for_backward(crow, col, vals, *dense)
    ctx.n_cols = n_cols


def _product_backward(transposed: bool):
    """The backward of ``C = A @ D`` (``A.T @ D`` when ``transposed``): the values'
    gradient is the sampled product of dC and D on A's pattern (rows of dC for
    ``A @ D``, of D for ``A.T @ D``), D's the other product of A with dC."""
    def backward(ctx, dC):
        crow, col, vals, D = ctx.saved_tensors
        dvals = dD = None
        if ctx.needs_input_grad[2]:
            rows, cols = (D, dC) if transposed else (dC, D)
            dvals = sddmm_csr(crow, col, torch.ones_like(vals), ctx.n_cols, rows, cols)
        if ctx.needs_input_grad[4]:
            dD = (spmm_csr if transposed else spmm_t_csr)(crow, col, vals, ctx.n_cols, dC)
        return None, None, dvals, None, dD
    return backward


def _sddmm_backward(ctx, dS):
    crow, col, vals, X, Y = ctx.saved_tensors
    dvals = dX = dY = None
    if ctx.needs_input_grad[2]:
        dvals = sddmm_csr(crow, col, dS, ctx.n_cols, X, Y)
    weighted = dS * vals
    if ctx.needs_input_grad[4]:
        dX = spmm_csr(crow, col, weighted, ctx.n_cols, Y)
    if ctx.needs_input_grad[5]:
        dY = spmm_t_csr(crow, col, weighted, ctx.n_cols, X)
    return None, None, dvals, None, dX, dY


def _save_as(ctx, inputs, output):
    _save(ctx, inputs[:5], output)


def _spmm_as_backward(ctx, dC):
    return (*_SPMM_BACKWARD(ctx, dC), None)


_SPMM_BACKWARD = _product_backward(transposed=False)
spmm_csr.register_autograd(_SPMM_BACKWARD, setup_context=_save)
spmm_csr_as.register_autograd(_spmm_as_backward, setup_context=_save_as)
spmm_t_csr.register_autograd(_product_backward(transposed=True), setup_context=_save)
sddmm_csr.register_autograd(_sddmm_backward, setup_context=_save)

__all__ = ["sddmm_csr", "spmm_csr", "spmm_csr_as", "spmm_t_csr"]
