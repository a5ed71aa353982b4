"""Low-rank factorization: Eckart-Young error for SVD, exact full-rank Tucker-2, energy
ranks, parameter and MAC counts, and factorized zoo models keep their output shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.compress import factorize, factorize_conv, factorize_linear
from zoo.compress.lowrank import rank_for_energy, relative_error, tucker2_factors
from zoo.counting import count


def test_svd_error_is_the_eckart_young_bound():
    torch.manual_seed(0)
    layer = nn.Linear(40, 30)
    s = torch.linalg.svdvals(layer.weight.detach().double())
    for r in (1, 5, 29):
        seq = factorize_linear(layer, r)
        approx = seq[1].weight @ seq[0].weight
        expected = (s[r:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt()).item()
        assert relative_error(layer.weight, approx) == pytest.approx(expected, rel=1e-5)
        assert seq[0].weight.shape == (r, 40) and seq[1].weight.shape == (30, r)
    x = torch.randn(4, 40)
    full = factorize_linear(layer, 30)
    torch.testing.assert_close(full(x), layer(x), atol=1e-5, rtol=1e-5)


def test_energy_rank_matches_a_manual_cumulative_sum():
    s = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1])
    energy = (s**2).cumsum(0) / (s**2).sum()
    for frac in (0.5, 0.8, 0.95, 0.99, 1.0):
        assert rank_for_energy(s, frac) == int((energy < frac - 1e-12).sum()) + 1


def test_pointwise_conv_svd_and_full_rank_tucker2_are_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 9, 9)
    pw = nn.Conv2d(12, 10, 1)
    torch.testing.assert_close(factorize_linear(pw, 10)(x), pw(x), atol=1e-5, rtol=1e-5)
    conv = nn.Conv2d(12, 16, 3, stride=2, padding=1)
    seq = factorize_conv(conv, (16, 12))
    torch.testing.assert_close(seq(x), conv(x), atol=1e-5, rtol=1e-5)
    assert [m.kernel_size for m in seq] == [(1, 1), (3, 3), (1, 1)]
    assert seq[1].stride == (2, 2)


def test_tucker2_hooi_not_worse_than_independent_hosvd():
    torch.manual_seed(1)
    w = torch.randn(24, 20, 3, 3, dtype=torch.float64)
    r_out, r_in = 8, 6
    # HOSVD computed here directly from the two unfoldings
    u0 = torch.linalg.svd(w.reshape(24, -1), full_matrices=False)[0][:, :r_out]
    u1 = torch.linalg.svd(w.transpose(0, 1).reshape(20, -1), full_matrices=False)[0][:, :r_in]
    hosvd = torch.einsum("oihw,or,is,pr,qs->pqhw", w, u0, u1, u0, u1)
    u_out, core, u_in = tucker2_factors(w, (r_out, r_in), iters=5)
    hooi = torch.einsum("rshw,or,is->oihw", core, u_out, u_in)
    assert relative_error(w, hooi) <= relative_error(w, hosvd) + 1e-9
    assert core.shape == (r_out, r_in, 3, 3)


def _svd_bound(mat: torch.Tensor, r: int) -> float:
    """Eckart-Young: the relative error of the best rank-r approximation, from torch's SVD."""
    s = torch.linalg.svd(mat, full_matrices=False)[1]
    return float(s[r:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())


def _hosvd_error(w: torch.Tensor, r_out: int, r_in: int) -> float:
    u0 = torch.linalg.svd(w.flatten(1), full_matrices=False)[0][:, :r_out]
    u1 = torch.linalg.svd(w.transpose(0, 1).flatten(1), full_matrices=False)[0][:, :r_in]
    core = torch.einsum("oihw,or,is->rshw", w, u0, u1)
    return relative_error(w, torch.einsum("rshw,or,is->oihw", core, u0, u1))


def _reconstructed(seq: nn.Sequential, kind: str) -> torch.Tensor:
    """The weight the factorized layers apply, multiplied back out."""
    ws = [m.weight.detach().double() for m in seq]
    if kind == "svd":
        return ws[1].flatten(1) @ ws[0].flatten(1)
    return torch.einsum("rshw,or,si->oihw", ws[1], ws[2].flatten(1), ws[0].flatten(1))


def test_factorized_zoo_models_keep_shapes_and_shrink():
    model = zoo.create("squeezenet1_1", num_classes=10, in_chans=1).eval()
    small, report = factorize(model, 0.5)
    x = torch.randn(2, 1, 64, 64)
    assert small(x).shape == (2, 10)
    kinds = {r.kind for r in report}
    assert kinds == {"svd", "tucker2"}
    before, after = count(model, (1, 64, 64), fvcore=False), count(small, (1, 64, 64), fvcore=False)
    assert after.params == before.params - sum(r.params_before - r.params_after for r in report)
    assert after.macs < before.macs
    for r in report:
        assert r.params_after < r.params_before
        w = model.get_submodule(r.name).weight.detach().double()
        approx = _reconstructed(small.get_submodule(r.name), r.kind).reshape(w.shape)
        assert relative_error(w, approx) == pytest.approx(r.relative_error, rel=1e-6)
        if r.kind == "svd":  # measured: within 2e-9 (relative) of Eckart-Young
            assert r.relative_error == pytest.approx(_svd_bound(w.flatten(1), r.ranks[0]), rel=1e-6)
        else:  # between the best single-mode truncation and an independent HOSVD
            r_out, r_in = r.ranks
            lower = max(
                _svd_bound(w.flatten(1), r_out), _svd_bound(w.transpose(0, 1).flatten(1), r_in)
            )
            assert lower - 1e-9 <= r.relative_error <= _hosvd_error(w, r_out, r_in) + 1e-6
    grouped = zoo.create("mobilenet_v1_x0_25", num_classes=10)
    _, rep = factorize(grouped, 2, only_if_smaller=False)
    assert not any("dw" in r.name for r in rep)  # depthwise convs are left alone


def test_rank_map_with_unknown_layer_is_rejected():
    with pytest.raises(KeyError, match="not Conv2d/Linear"):
        factorize(nn.Sequential(nn.Linear(4, 4)), {"fc9": 2})
