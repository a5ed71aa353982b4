"""Sign and straight-through gradients on hand-made tensors (values worked out by hand)."""

from __future__ import annotations

import pytest
import torch

from zoo.binary.quantizers import (
    ApproxSign,
    ScaledSign,
    SteSign,
    channel_scale,
    get_quantizer,
    scaled_sign,
    sign,
    ste_sign,
)

X = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]


def test_sign_never_zero_and_zero_is_plus_one():
    x = torch.tensor([*X, -0.0, 1e-30, -1e-30])
    expected = torch.tensor([-1.0, -1, -1, 1, 1, 1, 1, 1, 1, -1])
    out = sign(x)
    assert torch.equal(out, expected)
    assert not (out == 0).any()


def test_ste_sign_forward_and_gradient():
    x = torch.tensor(X, requires_grad=True)
    upstream = torch.tensor([1.0, 2, 3, 4, 5, 6, 7])
    y = ste_sign(x)
    y.backward(upstream)
    assert torch.equal(y.detach(), torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))
    # straight through inside |x| <= 1 (the edges +-1 included), zero where |x| > 1
    assert torch.equal(x.grad, torch.tensor([0.0, 2, 3, 4, 5, 6, 0]))


def test_ste_sign_custom_clip():
    x = torch.tensor(X, requires_grad=True)
    SteSign(clip=0.5)(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 0, 1, 1, 1, 0, 0]))


def test_approx_sign_gradient_is_bireal_polynomial():
    x = torch.tensor(X, requires_grad=True)
    y = ApproxSign()(x)
    y.sum().backward()
    assert torch.equal(y.detach(), torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))
    # 2 - 2|x| inside [-1, 1], 0 outside
    assert torch.equal(x.grad, torch.tensor([0.0, 0, 1, 2, 1, 0, 0]))


def test_scaled_sign_forward_alpha_per_output_channel():
    w = torch.tensor([[0.5, -0.25, 2.0, -0.1], [-1.0, -3.0, 0.0, 0.2]])
    # alpha_0 = (0.5 + 0.25 + 2 + 0.1) / 4 = 0.7125, alpha_1 = (1 + 3 + 0 + 0.2) / 4 = 1.05
    expected = torch.tensor([[0.7125, -0.7125, 0.7125, -0.7125], [-1.05, -1.05, 1.05, 1.05]])
    assert torch.allclose(scaled_sign(w), expected, rtol=0, atol=1e-7)
    assert torch.allclose(channel_scale(w), torch.tensor([0.7125, 1.05]), rtol=0, atol=1e-7)


def test_scaled_sign_gradient_follows_xnor_paper():
    w = torch.tensor([[0.5, -0.25, 2.0, -0.1], [-1.0, -3.0, 0.0, 0.2]], requires_grad=True)
    upstream = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 2.0]])
    scaled_sign(w).backward(upstream)
    # dC/dW = g * (1/n + alpha * 1{|W| <= 1}), n = 4
    row0 = [1 * (0.25 + 0.7125), 2 * (0.25 + 0.7125), 3 * 0.25, 4 * (0.25 + 0.7125)]
    row1 = [1 * (0.25 + 1.05), 1 * 0.25, 1 * (0.25 + 1.05), 2 * (0.25 + 1.05)]
    assert torch.allclose(w.grad, torch.tensor([row0, row1]), rtol=0, atol=1e-6)


def test_conv_weight_scale_is_over_all_but_first_dim():
    w = torch.arange(-12.0, 12.0).reshape(2, 3, 2, 2)
    expected = torch.tensor([sum(abs(v) for v in range(-12, 0)) / 12, sum(range(0, 12)) / 12])
    assert torch.allclose(channel_scale(w), expected)


@pytest.mark.parametrize("n", [9, 27, 37, 576, 4608])
def test_channel_scale_of_constant_magnitudes_is_exact(n):
    # alpha * (+-1) repeated n times must average back to alpha exactly: this is what makes
    # a 1-bit checkpoint (signs + alpha) reload bit-exact.
    alpha = torch.rand(64) * 0.1 + 1e-3
    signs = torch.where(torch.rand(64, n) < 0.5, -1.0, 1.0)
    assert torch.equal(channel_scale(alpha[:, None] * signs), alpha)


def test_get_quantizer_by_name_and_errors():
    assert isinstance(get_quantizer("ste_sign"), SteSign)
    assert isinstance(get_quantizer("magnitude_aware_sign"), ScaledSign)
    q = SteSign(0.5)
    assert get_quantizer(q) is q and get_quantizer(None) is None
    with pytest.raises(ValueError, match="unknown quantizer 'nope'.*ste_sign"):
        get_quantizer("nope")
    with pytest.raises(ValueError, match="clip must be > 0"):
        SteSign(clip=0)
    assert ScaledSign().scaled and not SteSign().scaled
    assert SteSign() == SteSign() and SteSign() != SteSign(0.5)
