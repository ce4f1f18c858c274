"""A short distillation of a pruned model's kept weights towards the dense model (the
masks fixed), on the calibration sentences only: ``run.py --finetune-steps N``.

The loss of a batch is the mean squared difference of every encoder layer's output
(hidden states, the dense model's the target) plus ``1 - cosine`` of the sentence
embeddings.  Only the linears' weights and biases train (Adam, no weight decay); a
pruned entry's gradient is zeroed and the entry set to zero again after every step, so
the pattern is exactly the one pruning chose.
"""
from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from spc.torch import PrunedLinear

from .sparsify import sparsify


def distill(dense: nn.Module, pruned: dict[str, PrunedLinear], batches: list[tuple], *,
            steps: int, lr: float = 1e-4, seed: int = 0, log=None) -> dict[str, PrunedLinear]:
    """``pruned`` (``prune_model``'s result for ``dense``) after ``steps`` Adam steps of
    distillation, one calibration batch a step (``batches`` in a fixed shuffled order).

    Requires: ``dense`` has ``layers`` (the encoder layers) and ``pruned`` names every
    ``nn.Linear`` of it.  Ensures: the same masks; weights zero outside them; ``dense``
    unchanged."""
    if steps <= 0:
        return pruned
    student = sparsify(dense, "masked", {}, pruned=pruned).train(False)
    masks = {name: p.mask for name, p in pruned.items()}
    modules = dict(student.named_modules())
    params = []
    for p in student.parameters():
        p.requires_grad_(False)
    for name in masks:
        lin = modules[name]
        lin.weight.requires_grad_(True)
        params.append(lin.weight)
        if lin.bias is not None:
            lin.bias.requires_grad_(True)
            params.append(lin.bias)
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
    order = list(range(len(batches)))
    rng = random.Random(seed)
    start = time.perf_counter()
    for step in range(steps):
        if step % len(order) == 0:
            rng.shuffle(order)
        ids, mask = batches[order[step % len(order)]]
        with torch.no_grad():
            target_states, target = _hidden_states(dense, ids, mask)
        states, out = _hidden_states(student, ids, mask)
        loss = sum(F.mse_loss(s, t) for s, t in zip(states, target_states)) / len(states)
        loss = loss + (1 - F.cosine_similarity(out, target)).mean()
        optimizer.zero_grad()
        loss.backward()
        with torch.no_grad():
            for name, keep in masks.items():
                modules[name].weight.grad.mul_(keep)
        optimizer.step()
        with torch.no_grad():
            for name, keep in masks.items():
                modules[name].weight.mul_(keep)
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"distill step {step + 1}/{steps}: loss {loss.item():.5f} "
                f"({time.perf_counter() - start:.1f} s)")
    return {name: PrunedLinear(modules[name].weight.detach().clone(),
                               None if modules[name].bias is None
                               else modules[name].bias.detach().clone(), keep)
            for name, keep in masks.items()}


def _hidden_states(model: nn.Module, ids, mask):
    """Every encoder layer's output and the embeddings, for one batch."""
    states = []
    handles = [layer.register_forward_hook(lambda _m, _a, out: states.append(out))
               for layer in model.layers]
    try:
        out = model(ids, mask)
    finally:
        for h in handles:
            h.remove()
    return states, out
