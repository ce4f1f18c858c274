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
    ("spmm_csr_as", lambda crow, col, vals: (crow, col, vals, 5, _rand(5, 3), "ell")),
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_forward_and_backward(backend, device):
    dense, *_ = _matrix(dtype=torch.float32)
    layer = _SparseLayer(dense).to(device)
    x = torch.randn(5, 3, device=device, requires_grad=True)
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


# ---------------------------------------------------------------------- SparseLinear


def _linear(in_f=64, out_f=32, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Linear(in_f, out_f).to(dtype)


@pytest.mark.parametrize("kw, kept", [
    (dict(sparsity=0.0), 1.0), (dict(sparsity=0.5), 0.5), (dict(sparsity=0.9), 0.1),
    (dict(n_m=(2, 4)), 0.5), (dict(n_m=(1, 4)), 0.25),
    (dict(block=(16, 16), sparsity=0.5), 0.5), (dict(block=(8, 16), sparsity=0.75), 0.25)])
def test_pruning_keeps_the_largest_entries_in_the_asked_pattern(kw, kept):
    lin = _linear()
    w = lin.weight.detach()
    mask = st.prune(w, **kw)
    assert mask.float().mean().item() == pytest.approx(kept, abs=1 / w.numel())
    if "n_m" in kw:
        n, m = kw["n_m"]
        assert (mask.reshape(32, -1, m).sum(-1) == n).all()
        groups = w.abs().reshape(32, -1, m)
        kept_min = groups.masked_fill(~mask.reshape(groups.shape), float("inf")).min(-1).values
        dropped_max = groups.masked_fill(mask.reshape(groups.shape), -1).max(-1).values
        assert (kept_min >= dropped_max).all()
    elif "block" in kw:
        r, c = kw["block"]
        blocks = mask.reshape(32 // r, r, 64 // c, c)
        assert (blocks.all(dim=(1, 3)) | ~blocks.any(dim=(1, 3))).all()   # whole blocks
    elif kw["sparsity"] > 0:
        assert w.abs()[mask].min() >= w.abs()[~mask].max()


@pytest.mark.parametrize("kw", [dict(sparsity=1.0), dict(sparsity=-0.1), dict(n_m=(3, 5)),
                                dict(n_m=(2, 4), sparsity=0.5), dict(block=(5, 16), sparsity=0.5)])
def test_pruning_refuses_what_it_cannot_do(kw):
    with pytest.raises(ValueError, match="prune"):
        st.prune(_linear().weight, **kw)


@pytest.mark.parametrize("kw", [dict(sparsity=0.7), dict(n_m=(2, 4)),
                                dict(block=(16, 16), sparsity=0.5)])
def test_sparse_linear_is_the_pruned_linear_forward_and_backward(kw):
    lin = _linear(dtype=torch.float64)
    layer = st.SparseLinear.from_dense(lin, **kw)
    mask = st.prune(lin.weight, **kw)
    x = torch.randn(2, 3, 64, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 3, 32)
    w = (lin.weight.detach() * mask).requires_grad_()
    b = lin.bias.detach().clone().requires_grad_()
    want = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(y, want)
    g = torch.randn_like(y)
    y.backward(g)
    dx = x.grad.clone()
    x.grad = None
    want.backward(g)
    torch.testing.assert_close(dx, x.grad)
    torch.testing.assert_close(layer.bias.grad, b.grad)
    rows = torch.repeat_interleave(torch.arange(32), layer.crow.diff())
    torch.testing.assert_close(layer.vals.grad, w.grad[rows, layer.col])


@pytest.mark.parametrize("batch", [1, 9, 15, 16, 17, 40])       # across the CPU's padding
def test_sparse_linear_any_batch_forward_backward_and_compiled(batch):
    lin = _linear(dtype=torch.float64)
    layer = st.SparseLinear.from_dense(lin, sparsity=0.7)
    w = (lin.weight.detach() * st.prune(lin.weight, sparsity=0.7)).requires_grad_()
    x = torch.randn(batch, 64, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w, lin.bias.detach()))
    torch.testing.assert_close(torch.compile(layer, fullgraph=True, backend="aot_eager")(x), y)
    (dx,) = torch.autograd.grad(y.square().sum(), x)
    x2 = x.detach().requires_grad_()
    torch.nn.functional.linear(x2, w, lin.bias.detach()).square().sum().backward()
    torch.testing.assert_close(dx, x2.grad)


@pytest.mark.parametrize("fmt, kw", [("bsr(16,16)", dict(block=(16, 16), sparsity=0.5)),
                                     ("bsr(16,16)", dict(sparsity=0.7)),   # scattered
                                     ("nm(2,4)", dict(n_m=(2, 4))),
                                     ("ell", dict(sparsity=0.7)),
                                     ("csc", dict(sparsity=0.7))])
def test_sparse_linear_in_other_formats(fmt, kw):
    """The forward through spc's SpMM for the weight in ``fmt``, gradients as CSR's."""
    lin = _linear(dtype=torch.float64)
    layer = st.SparseLinear.from_dense(lin, fmt=fmt, **kw)
    reference = st.SparseLinear.from_dense(lin, **kw)
    x = torch.randn(5, 64, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, reference(x))
    torch.testing.assert_close(torch.compile(layer, fullgraph=True, backend="aot_eager")(x), y)
    y.square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(layer.vals.grad, reference.vals.grad)
    with torch.no_grad():                       # a converted copy must see the new values
        layer.vals.mul_(2)
    torch.testing.assert_close(layer(x), 2 * (y - layer.bias) + layer.bias)
    assert f"fmt={fmt!r}" in repr(layer)


def test_sparse_linear_refuses_an_unknown_format():
    with pytest.raises(spc.FormatError, match="SparseLinear's weight: unknown format 'bsx'"):
        st.SparseLinear.from_dense(_linear(), sparsity=0.5, fmt="bsx")


def test_sparse_linear_state_dict_and_save_round_trip(tmp_path):
    lin = _linear()
    layer = st.SparseLinear.from_dense(lin, sparsity=0.5)
    assert set(layer.state_dict()) == {"crow", "col", "vals", "bias"}
    other = st.SparseLinear.from_dense(_linear(seed=1), sparsity=0.5)   # same nnz
    other.load_state_dict(layer.state_dict())
    x = torch.randn(4, 64)
    torch.testing.assert_close(other(x), layer(x))
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), layer(x))
    no_bias = torch.nn.Linear(64, 32, bias=False)
    assert st.SparseLinear.from_dense(no_bias, sparsity=0.5).bias is None


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_linear_trains_and_compiles_fullgraph(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        st.SparseLinear.from_dense(torch.nn.Linear(64, 48), sparsity=0.8), torch.nn.ReLU(),
        st.SparseLinear.from_dense(torch.nn.Linear(48, 8), n_m=(2, 4))).to(device)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x, target = torch.randn(16, 64, device=device), torch.randn(16, 8, device=device)
    torch.testing.assert_close(compiled(x), model(x))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(compiled(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model[0].vals.numel() == round(0.2 * 64 * 48)      # the pattern stays


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_sparse_linear_moves_and_casts(device, dtype):
    layer = st.SparseLinear.from_dense(_linear(), sparsity=0.5).to(device=device, dtype=dtype)
    assert layer.vals.dtype == dtype and layer.crow.dtype == torch.int64
    x = torch.randn(3, 64).to(device=device, dtype=dtype)
    want = torch.nn.functional.linear(x.float(), layer.weight().to_dense().float(),
                                      layer.bias.float())
    torch.testing.assert_close(layer(x).float(), want, rtol=2e-3, atol=2e-3)


def test_inference_calls_skip_the_operator_machinery(monkeypatch):
    """Under no_grad (nothing to differentiate, nothing compiling) SparseLinear calls
    spc's product directly; the numbers are the operator's."""
    from spc.torch import linear as linear_mod
    torch.manual_seed(0)
    layer = spc.torch.SparseLinear.from_dense(torch.nn.Linear(24, 40), sparsity=0.7)
    x = torch.randn(3, 5, 24)
    with_grad = layer(x)
    calls = []
    direct = linear_mod.spmm_direct
    monkeypatch.setattr(linear_mod, "spmm_direct", lambda *a: calls.append(1) or direct(*a))
    with torch.no_grad():
        without = layer(x)
    assert calls and with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach())
    calls.clear()
    layer(x).sum().backward()                # gradients: the operator, not the direct call
    assert not calls and layer.vals.grad is not None
