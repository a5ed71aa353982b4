"""Magnitude pruning: exact per-layer counts, the published per-layer rates, masks held
through retraining."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.compress import (
    finalize,
    magnitude_mask,
    paper_sparsity,
    prune_and_retrain,
    prune_magnitude,
)
from zoo.compress.prune import PAPER_DENSITY


def test_mask_keeps_the_largest_exactly():
    w = torch.randn(50, 40)
    mask = magnitude_mask(w, 0.7)
    assert int(mask.sum()) == round(0.3 * w.numel())
    kept, dropped = w[mask].abs(), w[~mask].abs()
    assert kept.min() >= dropped.max()


def test_squeezenet_paper_rates_give_the_published_count():
    # SqueezeNet paper Table 1: 421,098 of 1,248,424 parameters remain after pruning
    model = zoo.create("squeezenet1_0")
    prune_magnitude(model, paper_sparsity("squeezenet1_0"))
    weights = sum(
        int(torch.count_nonzero(m.weight)) for m in model.modules() if isinstance(m, nn.Conv2d)
    )
    biases = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(p.numel() for p in model.parameters()) == 1_248_424
    assert abs(weights + biases - 421_098) <= 10


def test_alexnet_paper_rates_cover_every_layer():
    # Deep Compression Table 4: 11 % of AlexNet's weights survive pruning (9x)
    with torch.device("meta"):  # shapes only: no 61M-weight init
        model = zoo.create("alexnet")
    rates = paper_sparsity("alexnet")
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(rates) == sorted(layers)
    kept = sum((1 - rates[n]) * model.get_submodule(n).weight.numel() for n in layers)
    total = sum(model.get_submodule(n).weight.numel() for n in layers)
    assert kept / total == pytest.approx(0.11, abs=0.006)
    assert set(PAPER_DENSITY) == {"alexnet", "squeezenet1_0"}


def test_unknown_layer_pattern_is_rejected():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(KeyError, match="matches no Conv2d/Linear"):
        prune_magnitude(model, {"features.*": 0.5})


def test_pruned_weights_stay_zero_while_retraining():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 3))
    x, y = torch.randn(16, 2, 8, 8), torch.randint(0, 3, (16,))
    calls = []

    def retrain(m, step):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        calls.append((step, float((m[0].weight == 0).float().mean())))

    masks = prune_and_retrain(model, {"conv": 0.5, "linear": 0.8}, retrain, steps=2)
    assert [c[0] for c in calls] == [1, 2]
    assert calls[0][1] == pytest.approx(0.25, abs=0.01) and calls[1][1] == pytest.approx(
        0.5, abs=0.01
    )
    assert not hasattr(model[0], "parametrizations")
    assert torch.equal(model[0].weight != 0, masks["0"])
    assert int(masks["3"].sum()) == round(0.2 * model[3].weight.numel())
    finalize(model)
