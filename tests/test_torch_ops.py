"""spc.torch: spc kernels as torch operators (torch.library custom ops) with fake
implementations and autograd, checked by gradcheck (float64), torch's opcheck and
torch.compile(fullgraph=True), against dense torch on the CPU (and on CUDA where
there is a GPU)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import spc  # noqa: E402
import spc.torch as st  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _matrix(m=7, n=5, seed=0, dtype=torch.float64, device="cpu"):
    """A dense m x n matrix about half zeros, with an empty row 1, and its CSR arrays."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(m, n, generator=g, dtype=dtype)
    dense = dense.masked_fill(torch.rand(m, n, generator=g) < 0.5, 0)
    dense[1] = 0
    A = dense.to_sparse_csr().to(device)
    return (dense.to(device), A.crow_indices().clone(), A.col_indices().clone(),
            A.values().clone())          # plain tensors, not views into a sparse one


def _rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def _dense(x):
    return x.to_dense() if x.layout != torch.strided else x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["csr", "coo", "csc"])
def test_spmm_and_sddmm_match_dense_torch(layout, dtype, device):
    dense, *_ = _matrix(dtype=dtype, device=device)
    A = {"csr": dense.to_sparse_csr(), "coo": dense.to_sparse(),
         "csc": dense.to_sparse_csc()}[layout]
    g = torch.Generator().manual_seed(1)
    B = torch.randn(5, 3, generator=g, dtype=dtype).to(device)
    X = torch.randn(7, 4, generator=g, dtype=dtype).to(device)
    Y = torch.randn(5, 4, generator=g, dtype=dtype).to(device)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype is torch.float32 else {}
    torch.testing.assert_close(st.spmm(A, B), dense @ B, **tol)
    S = st.sddmm(A, X, Y)
    assert S.layout == torch.sparse_csr
    torch.testing.assert_close(_dense(S), dense * (X @ Y.T) * (dense != 0), **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_pass_gradcheck_in_float64(device):
    _, crow, col, vals = _matrix(device=device)
    g = torch.Generator().manual_seed(2)
    vals = vals.clone().requires_grad_()
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device) \
        .requires_grad_()                                                     # noqa: E731
    B, G, X, Y = rand(5, 3), rand(7, 3), rand(7, 4), rand(5, 4)
    assert torch.autograd.gradcheck(lambda v, b: st.spmm_csr(crow, col, v, 5, b), (vals, B))
    assert torch.autograd.gradcheck(lambda v, x: st.spmm_t_csr(crow, col, v, 5, x), (vals, G))
    assert torch.autograd.gradcheck(lambda v, x, y: st.sddmm_csr(crow, col, v, 5, x, y),
                                    (vals, X, Y))
    assert torch.autograd.gradgradcheck(lambda v, b: st.spmm_csr(crow, col, v, 5, b),
                                        (vals, B))


def test_gradients_reach_the_values_of_a_sparse_tensor():
    dense, crow, col, vals = _matrix()
    vals = vals.clone().requires_grad_()
    A = torch.sparse_csr_tensor(crow, col, vals, dense.shape)
    B = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    st.spmm(A, B).pow(2).sum().backward()
    d = dense.clone().requires_grad_()
    (d @ B.detach()).pow(2).sum().backward()
    rows = torch.repeat_interleave(torch.arange(7), crow.diff())
    torch.testing.assert_close(vals.grad, d.grad[rows, col])


@pytest.mark.parametrize("op, args", [
    ("spmm_csr", lambda crow, col, vals: (crow, col, vals, 5, _rand(5, 3))),
    ("spmm_t_csr", lambda crow, col, vals: (crow, col, vals, 5, _rand(7, 3))),
    ("sddmm_csr", lambda crow, col, vals: (crow, col, vals, 5, _rand(7, 2), _rand(5, 2))),
])
def test_torch_opcheck(op, args):
    """Schema, fake tensors, autograd registration and AOT dispatch (torch's own check)."""
    _, crow, col, vals = _matrix()
    result = torch.library.opcheck(getattr(torch.ops.spc, op).default, args(crow, col, vals))
    assert all(v == "SUCCESS" for v in result.values()), result


class _SparseLayer(torch.nn.Module):
    """A linear map by a sparse weight held as CSR arrays, then bias and ReLU."""

    def __init__(self, dense):
        super().__init__()
        W = dense.to_sparse_csr()
        self.register_buffer("crow", W.crow_indices())
        self.register_buffer("col", W.col_indices())
        self.vals = torch.nn.Parameter(W.values().clone())
        self.bias = torch.nn.Parameter(torch.ones(dense.shape[0], 1, dtype=dense.dtype))
        self.n = dense.shape[1]

    def forward(self, x):
        return torch.relu(torch.ops.spc.spmm_csr(self.crow, self.col, self.vals, self.n, x)
                          + self.bias)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_forward_and_backward(backend):
    dense, *_ = _matrix(dtype=torch.float32)
    layer = _SparseLayer(dense)
    x = torch.randn(5, 3, requires_grad=True)
    want = layer(x)
    want.sum().backward()
    grads = [p.grad.clone() for p in (layer.vals, layer.bias)] + [x.grad.clone()]
    for p in (layer.vals, layer.bias, x):
        p.grad = None
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    got = compiled(x)
    got.sum().backward()
    torch.testing.assert_close(got, want)
    for a, b in zip([layer.vals.grad, layer.bias.grad, x.grad], grads):
        torch.testing.assert_close(a, b)


def test_bad_operands_raise_spc_errors():
    _, crow, col, vals = _matrix()
    with pytest.raises(spc.DTypeError, match="floating point"):
        st.spmm_csr(crow, col, vals, 5, torch.ones(5, 3, dtype=torch.int64))
    with pytest.raises(spc.SpcError):
        st.spmm_csr(crow, col, vals, 5, torch.ones(4, 3, dtype=torch.float64))   # 5 rows
    with pytest.raises(TypeError, match="sparse"):
        st.spmm(torch.ones(3, 3), torch.ones(3, 3))
