"""Binary building options (Bi-Real shortcut, RSign threshold, RPReLU, learned scale, ApproxSign):
each forward against a direct computation written here, each estimator's gradient against its
formula, pack() against the simulated model for every combination, and 1-bit files."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.binary import binarize, is_binary, pack, save_binary, summary
from zoo.binary.layers import BinaryConv2d, BinaryLinear
from zoo.binary.packed import PackedBinaryConv2d, PackedBinaryLinear

ALL_ON = dict(shortcut="bireal", threshold="learned", activation="rprelu", scale="learned")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pm1(x):
    """sign with sign(0) = +1, written here independently of zoo."""
    return (x >= 0).to(x.dtype) * 2 - 1


def _alpha_w(w):
    return w.abs().mean(dim=(1, 2, 3), keepdim=True) * _pm1(w)


def _randomize(model, seed=0):
    """Random BN statistics and random option parameters, so nothing is an identity."""
    g = torch.Generator().manual_seed(seed)

    def fill(t, lo, hi):
        t.data.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            fill(m.running_mean, -0.5, 0.5)
            fill(m.running_var, 0.5, 2.0)
            fill(m.weight, 0.5, 1.5)
            fill(m.bias, -0.2, 0.2)
        if is_binary(m):
            if m.threshold is not None:
                fill(m.threshold, -0.5, 0.5)
            if m.output_scale is not None:
                fill(m.output_scale, 0.01, 0.2)
            if m.rprelu is not None:
                for p in m.rprelu.parameters():
                    fill(p, -0.5, 0.5)
    return model


def _conv(cin=6, cout=6, stride=1, groups=1, **opts):
    conv = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True).double()
    layer = BinaryConv2d.from_float(conv, mode="xnor", options=opts)
    return _randomize(layer).eval()


X = torch.randn(2, 6, 7, 5, dtype=torch.float64)


# ---- each option's forward against a direct computation -----------------------------------


def test_threshold_is_subtracted_before_padding_and_sign():
    layer = _conv(threshold=True)
    t = layer.threshold.detach()
    xs = F.pad(X - t.view(1, -1, 1, 1), (1, 1, 1, 1))  # padded zeros read +1 after the shift
    ref = F.conv2d(_pm1(xs), _alpha_w(layer.weight.detach()), layer.bias)
    assert torch.allclose(layer(X), ref, atol=1e-12)
    unshifted = F.conv2d(_pm1(F.pad(X, (1, 1, 1, 1))), _alpha_w(layer.weight.detach()), layer.bias)
    assert not torch.allclose(layer(X), unshifted)  # the random threshold flips some signs


def test_learned_scale_replaces_alpha_with_plain_signs():
    layer = _conv(learned_scale=True)
    s = layer.output_scale.detach()
    dots = F.conv2d(_pm1(F.pad(X, (1, 1, 1, 1))), _pm1(layer.weight.detach()))
    ref = dots * s.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    assert torch.allclose(layer(X), ref, atol=1e-12)


def test_learned_scale_starts_at_the_analytic_alpha():
    conv = nn.Conv2d(4, 3, 3)
    layer = BinaryConv2d.from_float(conv, mode="xnor", options={"learned_scale": True})
    expected = conv.weight.detach().abs().double().mean(dim=(1, 2, 3)).float()
    assert torch.equal(layer.output_scale.detach(), expected)


def test_rprelu_is_shift_prelu_shift_per_channel():
    layer = _conv(rprelu=True)
    r = layer.rprelu
    y = F.conv2d(_pm1(F.pad(X, (1, 1, 1, 1))), _alpha_w(layer.weight.detach()), layer.bias)
    g, a, z = (p.detach().view(1, -1, 1, 1) for p in (r.gamma, r.slope, r.zeta))
    ref = torch.where(y - g > 0, y - g, a * (y - g)) + z
    assert torch.allclose(layer(X), ref, atol=1e-12)


def test_identity_shortcut_adds_the_real_input():
    layer = _conv(shortcut=True)
    assert isinstance(layer.shortcut, nn.Identity)
    y = F.conv2d(_pm1(F.pad(X, (1, 1, 1, 1))), _alpha_w(layer.weight.detach()), layer.bias)
    assert torch.allclose(layer(X), y + X, atol=1e-12)


def _bn_eval(x, bn):
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(
        bn.running_var.view(shape) + bn.eps
    ) * bn.weight.view(shape) + bn.bias.view(shape)


@pytest.mark.parametrize("downsample", ["pooled", "real"])
def test_downsampling_shortcut(downsample):
    layer = _conv(6, 8, stride=2, shortcut=True, downsample=downsample)
    sc = layer.shortcut
    w1 = sc.conv.weight.detach()
    if downsample == "pooled":  # 2x2 average, the last odd row/column averaged alone
        xp = F.pad(X, (0, 1, 0, 1))
        cnt = F.pad(torch.ones_like(X[:1, :1]), (0, 1, 0, 1))
        pooled = F.avg_pool2d(xp, 2) / F.avg_pool2d(cnt, 2)
        path = F.conv2d(pooled, w1)
    else:
        path = F.conv2d(X, w1, stride=2)
    y = F.conv2d(
        _pm1(F.pad(X, (1, 1, 1, 1))), _alpha_w(layer.weight.detach()), layer.bias, stride=2
    )
    assert torch.allclose(layer(X), y + _bn_eval(path, sc.bn), atol=1e-12)


def test_no_shortcut_where_the_shape_changes_and_downsample_is_none():
    assert _conv(6, 8, stride=2, shortcut=True, downsample="none").shortcut is None
    assert _conv(6, 6, stride=2, shortcut=True, downsample="none").shortcut is None


def test_linear_layer_options():
    fc = nn.Linear(5, 5).double()
    opts = dict(threshold=True, learned_scale=True, rprelu=True, shortcut=True)
    layer = _randomize(BinaryLinear.from_float(fc, mode="xnor", options=opts)).eval()
    x = torch.randn(3, 5, dtype=torch.float64)
    r = layer.rprelu
    y = _pm1(x - layer.threshold) @ _pm1(layer.weight).T * layer.output_scale + layer.bias + x
    y = y - r.gamma
    ref = torch.where(y > 0, y, r.slope * y) + r.zeta
    assert torch.allclose(layer(x), ref.detach(), atol=1e-12)


def test_options_in_order_on_one_layer():
    """threshold -> sign -> conv -> scale -> bias -> + shortcut -> RPReLU."""
    layer = _conv(threshold=True, learned_scale=True, rprelu=True, shortcut=True)
    t, s, r = layer.threshold.detach(), layer.output_scale.detach(), layer.rprelu
    xs = F.pad(X - t.view(1, -1, 1, 1), (1, 1, 1, 1))
    y = F.conv2d(_pm1(xs), _pm1(layer.weight.detach())) * s.view(1, -1, 1, 1)
    y = y + layer.bias.view(1, -1, 1, 1) + X - r.gamma.view(1, -1, 1, 1)
    ref = torch.where(y > 0, y, r.slope.view(1, -1, 1, 1) * y) + r.zeta.view(1, -1, 1, 1)
    assert torch.allclose(layer(X), ref.detach(), atol=1e-12)


# ---- straight-through estimators -----------------------------------------------------------


def _approx_sign_grad(x):
    """Bi-Real Net: 2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 elsewhere."""
    return torch.where(
        (x >= -1) & (x < 0), 2 + 2 * x, torch.where((x >= 0) & (x < 1), 2 - 2 * x, 0 * x)
    )


def _identity_clip_grad(x):
    return ((x >= -1) & (x <= 1)).to(x.dtype)


@pytest.mark.parametrize(
    "ste, formula",
    [("identity_clip", _identity_clip_grad), ("approx_sign", _approx_sign_grad)],
)
def test_estimator_gradient_through_a_binarized_layer(ste, formula):
    """A 1x1 conv with one output: d out / d x_c = alpha * sign(W_c) * g(x_c - t_c)."""
    net = nn.Sequential(nn.Conv2d(1, 9, 1), nn.BatchNorm2d(9), nn.Conv2d(9, 1, 1), nn.Flatten())
    net = binarize(net.double(), "xnor", keep_last=False, ste=ste, threshold="learned")
    layer = net[2]
    with torch.no_grad():
        layer.threshold.uniform_(-0.3, 0.3)
    x = torch.linspace(-1.6, 1.6, 9, dtype=torch.float64).view(1, 9, 1, 1).requires_grad_(True)
    layer(x).sum().backward()
    w = layer.weight.detach().view(-1)
    alpha = w.abs().mean()
    expected = alpha * _pm1(w) * formula(x.detach().view(-1) - layer.threshold.detach())
    assert torch.allclose(x.grad.view(-1), expected, atol=1e-12)
    assert torch.allclose(layer.threshold.grad, -expected, atol=1e-12)


def test_approx_sign_gradient_on_hand_values():
    x = torch.tensor([-1.5, -1.0, -0.75, -0.25, 0.0, 0.25, 0.75, 1.0, 1.5], requires_grad=True)
    zoo.binary.get_quantizer("approx_sign")(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0, 0, 0.5, 1.5, 2, 1.5, 0.5, 0, 0]))


def test_learned_scale_and_rprelu_get_gradients():
    layer = _conv(learned_scale=True, rprelu=True, threshold=True).train()
    layer(X).sum().backward()
    for p in (layer.output_scale, layer.threshold, *layer.rprelu.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0


# ---- pack() equals the simulated model -----------------------------------------------------


class Tiny(nn.Module):
    """Stem, a same-shape conv, a strided channel-changing conv, a grouped conv, two linears."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.c1 = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.BatchNorm2d(12), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(12, 12, 1, groups=3), nn.BatchNorm2d(12), nn.ReLU())
        self.fc1 = nn.Sequential(nn.Linear(12, 12), nn.BatchNorm1d(12))
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x):
        x = self.c3(self.c2(self.c1(self.stem(x))))
        return self.fc2(self.fc1(x.mean((2, 3))))


SHORTCUTS = [("none", "pooled"), ("bireal", "pooled"), ("bireal", "real"), ("bireal", "none")]
COMBOS = list(
    itertools.product(SHORTCUTS, ["none", "learned"], ["none", "rprelu"], ["analytic", "learned"])
)


def _assert_packed_equal(model, x):
    packed = pack(model)
    n = sum(isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear)) for m in packed.modules())
    assert n == sum(is_binary(m) and m.mode == "xnor" for m in model.modules()) > 0
    with torch.no_grad():
        ref = model(x)
        assert (packed(x) - ref).abs().max().item() < 1e-4
    return packed, ref


@pytest.mark.parametrize("shortcut, threshold, activation, scale", COMBOS)
def test_pack_equals_simulated_for_every_combination(shortcut, threshold, activation, scale):
    torch.manual_seed(0)
    opts = dict(shortcut=shortcut[0], downsample=shortcut[1], threshold=threshold,
                activation=activation, scale=scale, ste="approx_sign")  # fmt: skip
    example = torch.randn(2, 3, 9, 9).double()
    model = binarize(Tiny().double(), "xnor", example_input=example, **opts)
    model = _randomize(model).eval()
    x = torch.randn(3, 3, 9, 7, dtype=torch.float64)
    packed, ref = _assert_packed_equal(model, x)
    # the options act: zeroing a packed layer's threshold/shortcut/RPReLU changes the output
    if (threshold, activation, shortcut[0]) != ("none", "none", "none"):
        for m in packed.modules():
            if isinstance(m, PackedBinaryConv2d):
                m.threshold, m.shortcut, m.rprelu = None, None, None
        with torch.no_grad():
            assert (packed(x) - ref).abs().max().item() > 1e-3


def test_pack_with_input_scale_and_options():
    model = binarize(Tiny().double(), "xnor", example_input=torch.randn(2, 3, 9, 9).double(),
                     input_scale=True, shortcut="bireal", threshold="learned",
                     activation="rprelu")  # fmt: skip
    _assert_packed_equal(_randomize(model).eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64))


FAMILIES = [
    "xnor_resnet18",
    "xnor_squeezenet1_1",
    "xnor_mobilenet_v1_x0_25",
    "xnor_mobilenet_v2",
    "xnor_shufflenet_g3_x0_25",
    "xnor_shufflenet_v2_x0_5",
    pytest.param("xnor_alexnet", marks=pytest.mark.slow),  # 60M params: ~15 s to pack
]


@pytest.mark.parametrize("name", FAMILIES)
def test_pack_equals_simulated_on_every_family(name):
    model = zoo.create(name, num_classes=10, ste="approx_sign", **ALL_ON)
    model = _randomize(model).eval().double()
    side = max(model.default_cfg.get("min_input_size") or 32, 32)
    _assert_packed_equal(model, torch.randn(1, 3, side, side, dtype=torch.float64))


# ---- options through create, files and summary ---------------------------------------------


def test_create_kwargs_reach_every_binary_layer():
    model = zoo.create("xnor_resnet18", num_classes=10, ste="approx_sign", **ALL_ON)
    layers = [m for m in model.modules() if is_binary(m)]
    assert len(layers) == 19
    assert all(m.threshold is not None and m.output_scale is not None for m in layers)
    assert all(m.rprelu is not None and m.shortcut is not None for m in layers)
    assert all(type(m.input_quantizer).__name__ == "ApproxSign" for m in layers)
    assert model.binarize_info.options["shortcut"] == "bireal"
    # first conv and classifier stay float
    assert not is_binary(model.features.stem.conv) and not is_binary(model.classifier)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="mode='xnor'"):
        zoo.create("bwn_resnet18", threshold="learned")
    with pytest.raises(ValueError, match="one of"):
        zoo.create("xnor_resnet18", shortcut="real")
    with pytest.raises(ValueError, match="input_scale"):
        zoo.create("xnor_resnet18", scale="learned", input_scale=True)


@pytest.mark.parametrize("hand_binarized", [False, True])
def test_one_bit_file_round_trips_options(tmp_path, hand_binarized):
    opts = dict(ALL_ON, downsample="real", ste="approx_sign")
    if hand_binarized:
        model = binarize(zoo.create("squeezenet1_1", num_classes=10), "xnor", **opts)
    else:
        model = zoo.create("xnor_squeezenet1_1", num_classes=10, **opts)
    model = _randomize(model).eval()
    path = save_binary(model, tmp_path / "m.safetensors")
    loaded = zoo.create(str(path)).eval()
    assert {k: loaded.binarize_info.options[k] for k in opts} == opts
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_summary_counts_option_parameters():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                        nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))  # fmt: skip
    model = binarize(net, "xnor", example_input=torch.randn(1, 3, 8, 8), **ALL_ON)
    s = summary(model, (3, 8, 8))
    rows = {r.name: r for r in s.rows}
    assert rows["2"].params_1bit == 16 * 8 * 9
    assert rows["2"].scales == 16  # the learned output scale replaces alpha
    assert rows["2"].params_32bit == 16 + 8  # bias and the threshold per input channel
    assert rows["2.rprelu"].params_32bit == 3 * 16
    assert rows["2.shortcut.conv"].params_32bit == 16 * 8  # pooled 1x1 float conv
    assert rows["2.shortcut.conv"].float_macs == 16 * 8 * 4 * 4
