"""spc.torch.prune_calibrated (calibrated one-shot pruning, spc/torch/calibrated.py and
reconstruct.py): the patterns are exact, the refit lowers the output error below
magnitude pruning's, and the pruned weights run through SparseLinear unchanged."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="spc.torch needs torch")

from torch import nn  # noqa: E402

import spc  # noqa: E402
import spc.torch  # noqa: E402
from spc.torch.reconstruct import choose_pruned, prune_layer  # noqa: E402

PATTERNS = {"50%": {"sparsity": 0.5}, "70%": {"sparsity": 0.7}, "2:4": {"n_m": (2, 4)},
            "1:8": {"n_m": (1, 8)}, "4x4 blocks 50%": {"block": (4, 4), "sparsity": 0.5},
            "2x8 blocks 75%": {"block": (2, 8), "sparsity": 0.75}}
METHODS = ("sparsegpt", "wanda")


class MLP(nn.Module):
    def __init__(self, sizes=(32, 64, 16), bias=True):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1], bias=bias)
        self.fc2 = nn.Linear(sizes[1], sizes[2], bias=bias)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def correlated_inputs(n: int, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Inputs whose features differ in scale and correlate (as activations do), so that
    the inputs' statistics matter to which weights to keep."""
    g = torch.Generator().manual_seed(width)                  # one distribution per width
    mix = torch.randn(width, width, generator=g) * torch.logspace(-1, 1, width)[:, None]
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) @ mix


def make_model(seed: int = 0, **kw) -> MLP:
    torch.manual_seed(seed)
    return MLP(**kw).eval()


def calibrator(x: torch.Tensor, batch: int = 64):
    def calibrate(model):
        for i in range(0, len(x), batch):
            model(x[i: i + batch])
    return calibrate


def apply(model: nn.Module, pruned: dict) -> nn.Module:
    """A copy of ``model`` with the pruned weights and biases written in."""
    import copy
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, p in pruned.items():
            modules[name].weight.copy_(p.weight)
            if p.bias is not None:
                modules[name].bias.copy_(p.bias)
    return model


def magnitude(model: nn.Module, pattern: dict) -> nn.Module:
    import copy
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(spc.torch.prune(m.weight, **pattern))
    return model


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", list(PATTERNS), ids=str)
def test_calibrated_output_error_is_below_magnitude_pruning_s(pattern, method):
    model = make_model()
    calib, held_out = correlated_inputs(1024, seed=0), correlated_inputs(256, seed=5)
    pruned = spc.torch.prune_calibrated(model, calibrator(calib), method=method,
                                        **PATTERNS[pattern])
    with torch.no_grad():
        dense = model(held_out)
        ours = (apply(model, pruned)(held_out) - dense).norm()
        theirs = (magnitude(model, PATTERNS[pattern])(held_out) - dense).norm()
    assert ours < 0.6 * theirs, (ours.item(), theirs.item())


@pytest.mark.parametrize("method", METHODS)
def test_nothing_pruned_gives_back_the_dense_layer(method):
    model = make_model()
    pruned = spc.torch.prune_calibrated(model, calibrator(correlated_inputs(512)),
                                        method=method, sparsity=0.0, damp=1e-6)
    for name in ("fc1", "fc2"):
        lin = getattr(model, name)
        assert pruned[name].mask.all()
        torch.testing.assert_close(pruned[name].weight, lin.weight.detach(), rtol=1e-3,
                                   atol=1e-4)
        torch.testing.assert_close(pruned[name].bias, lin.bias.detach(), rtol=1e-3,
                                   atol=1e-4)


def test_wanda_refit_solves_the_masked_least_squares_exactly():
    """On its mask, the refitted row minimizes ``sum (w·x - t)² + λ||w - w0||²``: the
    gradient on the kept entries is zero, and no other kept values do better."""
    g = torch.Generator().manual_seed(3)
    X = torch.cat([correlated_inputs(300, 24, seed=3).double(),
                   torch.ones(300, 1, dtype=torch.float64)], 1)
    W0 = torch.randn(6, 25, generator=g, dtype=torch.float64)
    T = X @ W0.T + 0.1 * torch.randn(300, 6, generator=g, dtype=torch.float64)
    H, C, damp = X.T @ X, X.T @ T, 0.01
    W, keep = prune_layer(W0, H, C, method="wanda", damp=damp, sparsity=0.5)
    lam = damp * H.diagonal().mean()
    grad = (W @ H - C.T) + lam * (W - W0)            # d/dw of the loss, per row
    kept = torch.cat([keep, torch.ones(6, 1, dtype=torch.bool)], 1)
    assert grad[kept].abs().max() < 1e-8 * grad.abs().max().clamp(min=1) + 1e-6
    assert (W[:, :-1][~keep] == 0).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", list(PATTERNS), ids=str)
def test_masks_are_exactly_the_pattern(pattern, method):
    model = make_model(sizes=(32, 64, 16))
    pruned = spc.torch.prune_calibrated(model, calibrator(correlated_inputs(256)),
                                        method=method, **PATTERNS[pattern])
    for name, p in pruned.items():
        out_f, in_f = p.mask.shape
        assert p.mask.dtype == torch.bool and (p.weight[~p.mask] == 0).all()
        kw = PATTERNS[pattern]
        if "n_m" in kw:
            n, m = kw["n_m"]
            assert (p.mask.reshape(out_f, in_f // m, m).sum(-1) == n).all()
        elif "block" in kw:
            r, c = kw["block"]
            tiles = p.mask.reshape(out_f // r, r, in_f // c, c).permute(0, 2, 1, 3)
            full, empty = tiles.all(-1).all(-1), ~tiles.any(-1).any(-1)
            assert (full | empty).all()                        # whole blocks only
            assert (full.sum(1) == in_f // c - round(kw["sparsity"] * in_f // c)).all()
        else:
            assert (p.mask.sum(1) == in_f - round(kw["sparsity"] * in_f)).all()


@pytest.mark.parametrize("first, width", [(0, 12), (12, 12), (24, 8)])
def test_unstructured_counts_add_up_over_chunks(first, width):
    """SparseGPT chooses a chunk at a time; the counts telescope to round(s·in)."""
    score = torch.arange(3 * width, dtype=torch.float64).reshape(3, width)
    pruned = choose_pruned(score, first, 32, sparsity=0.7)
    expect = round(0.7 * (first + width)) - round(0.7 * first)
    assert (pruned.sum(1) == expect).all()
    assert pruned[:, :expect].all()                          # the lowest scores


@pytest.mark.parametrize("first, width", [(0, 12), (12, 12), (24, 8)])
def test_layer_balanced_counts_add_up_over_chunks_and_rows_differ(first, width):
    """balance="layer": each chunk prunes its share of round(s·out·in), lowest scores of
    the whole chunk first, so rows may keep different counts."""
    score = torch.arange(3 * width, dtype=torch.float64).reshape(3, width)
    pruned = choose_pruned(score, first, 32, sparsity=0.5, balance="layer")
    expect = round(0.5 * 3 * (first + width)) - round(0.5 * 3 * first)
    assert pruned.sum() == expect
    assert pruned.flatten()[:expect].all() and not pruned.flatten()[expect:].any()
    assert pruned.sum(1).unique().numel() > 1


@pytest.mark.parametrize("method", METHODS)
def test_layer_balanced_masks_keep_the_layer_count_and_beat_magnitude(method):
    model = make_model(sizes=(32, 64, 16))
    calib, held_out = correlated_inputs(1024, seed=0), correlated_inputs(256, seed=5)
    pruned = spc.torch.prune_calibrated(model, calibrator(calib), method=method,
                                        sparsity=0.7, balance="layer")
    for name, p in pruned.items():
        assert (p.weight[~p.mask] == 0).all()
        assert (~p.mask).sum() == round(0.7 * p.mask.numel()), name
    assert any(p.mask.sum(1).unique().numel() > 1 for p in pruned.values())
    with torch.no_grad():
        dense = model(held_out)
        ours = (apply(model, pruned)(held_out) - dense).norm()
        theirs = (magnitude(model, {"sparsity": 0.7})(held_out) - dense).norm()
    assert ours < 0.6 * theirs, (ours.item(), theirs.item())


def test_a_sparsity_per_linear():
    model = make_model(sizes=(32, 64, 16))
    pruned = spc.torch.prune_calibrated(model, calibrator(correlated_inputs(256)),
                                        sparsity={"fc1": 0.25, "fc2": 0.75})
    assert (pruned["fc1"].mask.sum(1) == 32 - 8).all()
    assert (pruned["fc2"].mask.sum(1) == 64 - 48).all()


def test_ties_prune_the_lower_column():
    pruned = choose_pruned(torch.ones(2, 4), 0, 4, n_m=(2, 4))
    assert pruned.tolist() == [[True, True, False, False]] * 2


def test_model_is_unchanged_and_linears_without_bias_stay_so():
    model = make_model(bias=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = spc.torch.prune_calibrated(model, calibrator(correlated_inputs(256)),
                                        sparsity=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.bias is None for p in pruned.values())


def test_linears_sharing_an_input_are_pruned_in_one_step():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            return self.c(self.a(x) * self.b(x))

    torch.manual_seed(0)
    steps = []
    spc.torch.prune_calibrated(Shared(), calibrator(torch.randn(64, 8)), sparsity=0.5,
                               log=steps.append)
    assert [s.split(" (")[0] for s in steps] == ["pruned a, b", "pruned c"]


def test_residual_target_cancels_the_residual_error():
    """``x + fc(x)`` after a pruned first layer: with ``residual_into`` the second linear
    also fits away the first one's error in the residual, so the sum is closer."""
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Linear(32, 32), nn.Linear(32, 32)
            self.norm = nn.Identity()

        def forward(self, x):
            h = self.first(x)
            return self.norm(h + self.second(torch.relu(h)))

    torch.manual_seed(0)
    model = Residual().eval()
    calib = correlated_inputs(2048, seed=2)
    errors = {}
    for residual in (None, {"second": "norm"}):
        pruned = spc.torch.prune_calibrated(model, calibrator(calib), sparsity=0.5,
                                            residual_into=residual)
        with torch.no_grad():
            errors[residual is None] = (apply(model, pruned)(calib) - model(calib)).norm()
    assert errors[False] < 0.9 * errors[True]


def test_sparse_linear_from_pruned_keeps_exactly_the_mask():
    model = make_model()
    pruned = spc.torch.prune_calibrated(model, calibrator(correlated_inputs(256)),
                                        block=(4, 4), sparsity=0.5)["fc1"]
    mask = pruned.mask.clone()
    weight = pruned.weight.clone()
    weight[mask.nonzero()[0].tolist()] = 0.0            # a kept entry that is zero
    layer = spc.torch.SparseLinear.from_mask(weight, mask, pruned.bias)
    assert layer.nnz == int(mask.sum())
    dense = layer.weight().to_dense()
    assert torch.equal(dense, weight)
    x = correlated_inputs(5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ weight.T + pruned.bias, rtol=1e-4,
                                   atol=1e-5)
        from_pruned = spc.torch.SparseLinear.from_pruned(pruned)
        torch.testing.assert_close(from_pruned(x), x @ pruned.weight.T + pruned.bias,
                                   rtol=1e-4, atol=1e-5)


def test_from_mask_rejects_a_mask_of_another_shape():
    with pytest.raises(ValueError, match="boolean tensor of the weight's shape"):
        spc.torch.SparseLinear.from_mask(torch.ones(4, 4), torch.ones(4, 3, dtype=torch.bool))


@pytest.mark.parametrize("kw, match", [
    ({"n_m": (2, 5)}, "multiple of m.*'fc1'"),
    ({"block": (5, 4), "sparsity": 0.5}, "not a multiple of the block.*'fc1'"),
    ({"sparsity": 1.0}, r"in \[0, 1\)"),
    ({"sparsity": 0.5, "method": "obs"}, "method must be one of"),
    ({"sparsity": 0.5, "names": ["fc3"]}, "named \\['fc3'\\]"),
    ({"sparsity": 0.5, "residual_into": {"fc2": "norm"}}, "named \\['norm'\\]"),
    ({"sparsity": 0.5, "balance": "band"}, "balance must be one of"),
    ({"n_m": (2, 4), "balance": "layer"}, "balance='layer' is for unstructured"),
    ({"sparsity": {"fc1": 0.5}}, "must name every chosen linear.*missing \\['fc2'\\]"),
    ({"sparsity": {"fc1": 0.5, "fc2": 1.5}}, r"in \[0, 1\).*'fc2'"),
])
def test_bad_arguments_raise_input_errors(kw, match):
    with pytest.raises(spc.InputError, match=match):
        spc.torch.prune_calibrated(make_model(), calibrator(correlated_inputs(64)), **kw)


def test_a_linear_calibrate_never_calls_is_named():
    with pytest.raises(spc.InputError, match="never called \\['fc2'\\]"):
        spc.torch.prune_calibrated(make_model(), lambda m: m.fc1(correlated_inputs(8)),
                                   sparsity=0.5)
