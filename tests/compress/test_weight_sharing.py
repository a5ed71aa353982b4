"""k-means weight sharing: agrees with a plain Lloyd loop, meets the k-means fixed point, keeps
zeros, and codebook fine-tuning accumulates the gradients of each cluster."""

from __future__ import annotations

import torch
from torch import nn

from zoo.compress import finalize, kmeans_1d, share_weights
from zoo.compress.quantize import finetune_codebooks


def _lloyd_reference(x: torch.Tensor, k: int, iters: int = 200) -> torch.Tensor:
    """Textbook Lloyd with linear init, distances computed densely (O(n k))."""
    x = x.double()
    c = torch.linspace(float(x.min()), float(x.max()), k, dtype=torch.float64)
    for _ in range(iters):
        labels = torch.argmin((x[:, None] - c[None, :]).abs(), dim=1)
        new = c.clone()
        for j in range(k):
            members = x[labels == j]
            if members.numel():
                new[j] = members.mean()
        if torch.equal(new, c):
            break
        c = new
    return torch.unique(c[torch.unique(labels)].float())


def test_matches_dense_lloyd():
    x = torch.randn(3000, generator=torch.Generator().manual_seed(1))
    centroids, labels = kmeans_1d(x, 16)
    torch.testing.assert_close(centroids, _lloyd_reference(x, 16), atol=1e-5, rtol=0)
    assert labels.shape == x.shape


def test_fixed_point_conditions():
    x = torch.cat([torch.randn(2000) * 0.1 - 0.5, torch.randn(1000) * 0.05 + 0.7])
    c, labels = kmeans_1d(x, 8)
    assert torch.all(c[1:] > c[:-1])
    nearest = torch.argmin((x[:, None].double() - c[None, :].double()).abs(), dim=1)
    assert torch.equal(nearest, labels)  # every value sits in its nearest cluster
    for j in range(len(c)):  # every centroid is the mean of its members
        torch.testing.assert_close(x[labels == j].double().mean().float(), c[j], atol=1e-5, rtol=0)


def test_few_distinct_values_are_kept_exactly():
    x = torch.tensor([0.5, -1.25, 0.5, 3.0, -1.25])
    c, labels = kmeans_1d(x, 4)
    assert c.tolist() == [-1.25, 0.5, 3.0]
    assert torch.equal(c[labels], x)


def test_share_weights_keeps_zeros_and_limits_values():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    with torch.no_grad():
        model[0].weight[:, 0] = 0.0
    zeros_before = model[0].weight == 0
    shared = share_weights(model, {"conv": 4, "linear": 3})
    w = model[0].weight
    assert torch.equal(w == 0, zeros_before)
    assert torch.unique(w[w != 0]).numel() <= 16
    assert torch.unique(model[3].weight).numel() <= 8
    assert torch.equal(shared["0"].weight(), w.detach())


def test_codebook_gradient_is_the_sum_over_each_cluster():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4, bias=False))
    x = torch.randn(10, 6)
    seen = {}

    def train(m, codebooks):
        (cb,) = codebooks
        # reference gradient w.r.t. a plain weight copy, summed per cluster by hand
        w = m[0].weight.detach().clone().requires_grad_(True)
        (x @ w.t()).pow(2).sum().backward()
        p = next(iter(m[0].parametrizations.weight))
        k = cb.numel()
        expected = torch.zeros(k)
        for j in range(k):
            expected[j] = w.grad[(p.index == j)].sum()
        m(x).pow(2).sum().backward()
        seen["grad"], seen["expected"] = cb.grad.clone(), expected
        with torch.no_grad():
            cb -= 0.01 * cb.grad

    result = finetune_codebooks(model, 2, train)
    torch.testing.assert_close(seen["grad"], seen["expected"])
    assert not hasattr(model[0], "parametrizations")
    assert torch.unique(model[0].weight).numel() <= 4
    assert torch.equal(result["0"].weight(), model[0].weight.detach())
    finalize(model)  # idempotent on a plain model
