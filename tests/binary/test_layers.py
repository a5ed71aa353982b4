"""Binary layers against independent float64 NumPy computations with +-1 weights times alpha."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zoo.binary.layers import BinaryConv2d, BinaryLinear, conv_pads


def np_sign(a: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, 1.0, -1.0)


def np_binary_weight(w: np.ndarray) -> np.ndarray:
    alpha = np.abs(w).reshape(w.shape[0], -1).mean(1)
    return alpha.reshape(-1, *([1] * (w.ndim - 1))) * np_sign(w)


def np_conv(x, w, stride, pad, dilation, groups):
    """Direct (loop) grouped 2-D convolution in float64, zero padding."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, g * cg : (g + 1) * cg, i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                           j * sw : j * sw + dw * (kw - 1) + 1 : dw]  # fmt: skip
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out


def np_input_scale(x, kernel, stride, pad, dilation, groups, out_channels):
    """K of XNOR-Net: per-group channel mean of |x| (zero-padded), averaged over each window."""
    n, c, h, wd = x.shape
    a = np.abs(x).reshape(n, groups, c // groups, h, wd).mean(2)
    box = np.full((groups, 1, *kernel), 1.0 / (kernel[0] * kernel[1]))
    k = np_conv(a, box, stride, pad, dilation, groups)
    return np.repeat(k, out_channels // groups, axis=1)


def _t(a):
    return torch.tensor(a, dtype=torch.float32)


def test_bwn_conv_equals_float_conv_with_alpha_sign_weights():
    conv = BinaryConv2d(4, 6, 3, stride=2, padding=1, bias=True, mode="bwn")
    x = torch.randn(2, 4, 9, 7)
    w = conv.weight.detach().double().numpy()
    ref = np_conv(x.double().numpy(), np_binary_weight(w), (2, 2), (1, 1), (1, 1), 1)
    ref += conv.bias.detach().double().numpy()[None, :, None, None]
    assert np.allclose(conv(x).detach().numpy(), ref, atol=1e-5)


@pytest.mark.parametrize(
    "groups,stride,pad,dilation,input_scale",
    [(1, 1, 1, 1, False), (1, 2, 1, 1, True), (2, 1, 2, 2, True), (3, 2, 0, 1, False)],
)
def test_xnor_conv_equals_independent_computation(groups, stride, pad, dilation, input_scale):
    conv = BinaryConv2d(
        6, 6, 3, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=True,
        mode="xnor", input_scale=input_scale,
    )  # fmt: skip
    x = torch.randn(2, 6, 8, 9)
    xs, w = x.double().numpy(), conv.weight.detach().double().numpy()
    args = ((stride, stride), (pad, pad), (dilation, dilation), groups)
    # zero-pad first, then sign: padded positions read +1
    xp = np.pad(xs, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ref = np_conv(np_sign(xp), np_binary_weight(w), args[0], (0, 0), args[2], groups)
    if input_scale:
        ref = ref * np_input_scale(xp, (3, 3), args[0], (0, 0), args[2], groups, 6)
    ref += conv.bias.detach().double().numpy()[None, :, None, None]
    assert np.allclose(conv(x).detach().numpy(), ref, atol=1e-4)


def test_xnor_padded_positions_read_plus_one():
    # all-negative input, all-positive 3x3 weights (alpha = 1), padding 1: at a corner 5 of 9
    # taps are padding (+1) and 4 are inside (-1), so each input channel contributes +1.
    conv = BinaryConv2d(2, 1, 3, padding=1, bias=False, mode="xnor")
    with torch.no_grad():
        conv.weight.fill_(1.0)
    out = conv(-torch.ones(1, 2, 4, 4))[0, 0]
    assert out[0, 0].item() == 2.0  # corner: 2 channels x (5 - 4)
    assert out[0, 1].item() == 2 * (3 - 6)  # edge: 3 padded, 6 inside
    assert out[1, 1].item() == -18.0  # interior: 9 inside


def test_bwn_and_xnor_linear_equal_independent_computation():
    x = torch.randn(5, 12)
    xs = x.double().numpy()
    for mode, input_scale in (("bwn", False), ("xnor", False), ("xnor", True)):
        fc = BinaryLinear(12, 4, mode=mode, input_scale=input_scale)
        wb = np_binary_weight(fc.weight.detach().double().numpy())
        b = fc.bias.detach().double().numpy()
        if mode == "bwn":
            ref = xs @ wb.T + b
        else:
            ref = np_sign(xs) @ wb.T
            if input_scale:
                ref = ref * np.abs(xs).mean(1, keepdims=True)
            ref = ref + b
        assert np.allclose(fc(x).detach().numpy(), ref, atol=1e-5), (mode, input_scale)


def test_from_float_shares_weights_and_keeps_state_dict_keys():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    fc = nn.Linear(8, 2)
    bconv, bfc = BinaryConv2d.from_float(conv, "xnor"), BinaryLinear.from_float(fc, "bwn")
    assert bconv.weight is conv.weight and bfc.weight is fc.weight and bfc.bias is fc.bias
    assert list(bconv.state_dict()) == list(conv.state_dict()) == ["weight"]
    assert list(bfc.state_dict()) == list(fc.state_dict())
    assert isinstance(bconv, nn.Conv2d) and isinstance(bfc, nn.Linear)
    assert bconv.mode == "xnor" and bfc.mode == "bwn"


def test_gradients_reach_latent_weights_and_inputs():
    conv = BinaryConv2d(3, 4, 3, padding=1, mode="xnor")
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 5.0  # outside the STE window: only the 1/n term remains
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 2, 2] = 3.0  # |x| > 1: no gradient through sign
    conv(x).square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert x.grad[0, 0, 2, 2].item() == 0.0
    assert x.grad.abs().sum() > 0


def test_same_padding_and_reflect_mode_follow_conv_semantics():
    # 'same' padding with zeros pads like F.pad; xnor sees +1 there
    conv = BinaryConv2d(2, 3, 3, padding="same", bias=False, mode="xnor")
    x = torch.randn(1, 2, 6, 5)
    ref = np_conv(np_sign(np.pad(x.double().numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))),
                  np_binary_weight(conv.weight.detach().double().numpy()), (1, 1), (0, 0),
                  (1, 1), 1)  # fmt: skip
    assert conv(x).shape == (1, 3, 6, 5)
    assert np.allclose(conv(x).detach().numpy(), ref, atol=1e-4)
    reflect = BinaryConv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=False, mode="xnor")
    xp = np.pad(x.double().numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    ref = np_conv(np_sign(xp), np_binary_weight(reflect.weight.detach().double().numpy()),
                  (1, 1), (0, 0), (1, 1), 1)  # fmt: skip
    assert np.allclose(reflect(x).detach().numpy(), ref, atol=1e-4)


def test_input_bn_normalizes_before_sign():
    conv = BinaryConv2d(3, 4, 1, bias=False, mode="xnor")
    conv.add_input_bn()
    conv.train()
    x = torch.rand(4, 3, 5, 5) + 10.0  # all positive: without BN sign() would be constant
    xs = x.double().numpy()
    mean, var = xs.mean(axis=(0, 2, 3), keepdims=True), xs.var(axis=(0, 2, 3), keepdims=True)
    xn = (xs - mean) / np.sqrt(var + 1e-5)
    ref = np_conv(np_sign(xn), np_binary_weight(conv.weight.detach().double().numpy()),
                  (1, 1), (0, 0), (1, 1), 1)  # fmt: skip
    assert np.allclose(conv(x).detach().numpy(), ref, atol=1e-4)
    assert "input_bn.weight" in conv.state_dict()
    with pytest.raises(ValueError, match="xnor"):
        BinaryConv2d(3, 4, 1, mode="bwn").add_input_bn()


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="'bwn'.*'xnor'"):
        BinaryConv2d(3, 4, 3, mode="ternary")
    with pytest.raises(ValueError, match="only applies to mode='xnor'"):
        BinaryLinear(3, 4, mode="bwn", input_scale=True)
    with pytest.raises(ValueError, match="use mode='xnor'"):
        BinaryConv2d(3, 4, 3, mode="bwn", input_quantizer="ste_sign")
    with pytest.raises(ValueError, match="4 channels"):
        BinaryConv2d(4, 4, 3, mode="xnor")(torch.randn(1, 3, 5, 5))


def test_repr_shows_mode_and_quantizers():
    text = repr(BinaryConv2d(3, 4, 3, mode="xnor", input_scale=True))
    assert "mode=xnor" in text and "SteSign" in text and "input_scale=True" in text


@pytest.mark.parametrize("kernel,dilation", [((2, 4), (1, 1)), ((3, 2), (2, 3)), ((1, 5), (1, 2))])
def test_conv_pads_match_torch_same_padding(kernel, dilation):
    # F.pad with conv_pads, then an unpadded conv, must equal torch's own padding="same"
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, kernel, padding="same", dilation=dilation, bias=False)
    x = torch.randn(1, 2, 7, 9)
    pads = conv_pads("same", conv.kernel_size, conv.dilation)
    manual = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, pads), conv.weight, None, 1, 0, dilation
    )
    assert torch.allclose(manual, conv(x), atol=1e-6)
    assert conv_pads((2, 1), (3, 3), (1, 1)) == [1, 1, 2, 2]  # (left, right, top, bottom)
    assert conv_pads("valid", (3, 3), (1, 1)) == [0, 0, 0, 0]


def test_freeze_weight_keeps_outputs_and_stops_rebinarizing():
    torch.manual_seed(0)
    conv = BinaryConv2d(4, 6, 3, padding=1, mode="xnor").eval()
    x = torch.randn(2, 4, 8, 8)
    before = conv(x)
    expected = np_binary_weight(conv.weight.detach().double().numpy())
    assert not conv.frozen
    conv.freeze_weight()
    assert conv.frozen
    assert np.allclose(conv.binary_weight().double().numpy(), expected, atol=1e-7)
    assert torch.equal(conv(x), before)
    with torch.no_grad():
        conv.weight.mul_(-3.0)  # latent weights no longer matter once frozen
    assert torch.equal(conv(x), before)
