"""zoo.deploy.fuse: same outputs as the unfused model (max abs diff < 1e-4) on every family,
BatchNorms actually folded, binary convs left alone, and the grouped-matmul conv exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.binary.packed import PackedBinaryConv2d
from zoo.deploy import GroupedPointwiseConv2d, fold_conv_bn, fuse
from zoo.deploy.fuse import FastAvgPool2d, FastMaxPool2d, fuse_and_pack

ATOL = 1e-4

# One model per family, plus the variants whose graphs differ (bypass, grouped shuffle units).
FAMILY_MODELS = [
    "squeezenet1_0",
    "squeezenet1_1",
    "squeezenet1_0_bypass_simple",
    "squeezenet1_0_bypass_complex",
    "mobilenet_v1_x0_25",
    "mobilenet_v2",
    "shufflenet_g3_x0_5",
    "shufflenet_g8_x0_25",
    "shufflenet_v2_x0_5",
    "alexnet",
    "resnet18",
]


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_fused_model_matches_on_every_family(name, randomize_norms):
    model = randomize_norms(zoo.create(name, num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    fused = fuse(model, example_input=x[:1], grouped_matmul="always")
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert (got - expected).abs().max().item() < ATOL
    # Something was really folded: no BatchNorm and no dropout is left in the fused copy.
    n_bn = _count(model, nn.BatchNorm2d)
    assert len(fused.fuse_report.folded) == n_bn
    assert _count(fused, nn.BatchNorm2d) == 0
    assert _count(fused, nn.modules.dropout._DropoutNd) == 0
    assert not fused.training
    if name.startswith("shufflenet_g"):
        assert fused.fuse_report.grouped_pointwise, "grouped 1x1 convs should be swapped"


def test_fuse_leaves_the_original_untouched(randomize_norms):
    model = randomize_norms(zoo.create("shufflenet_v2_x0_5", num_classes=10)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fuse(model, example_input=torch.randn(1, 3, 64, 64))
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _count(model, nn.BatchNorm2d) > 0


def test_fold_math_against_batch_norm_functional():
    """The folded conv equals F.batch_norm(conv(x)) computed by torch itself."""
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 8, 3, padding=1, groups=2, bias=True)
    bn = nn.BatchNorm2d(8, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 2)
        bn.weight.uniform_(-2, 2)  # negative scales too
        bn.bias.uniform_(-1, 1)
    x = torch.randn(3, 6, 9, 9)
    with torch.no_grad():
        y = F.conv2d(x, conv.weight, conv.bias, padding=1, groups=2)
        expected = F.batch_norm(
            y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
        )
        fold_conv_bn(conv, bn.eval())
        got = conv(x)
    assert (got - expected).abs().max().item() < 1e-5


def test_torchvision_models_fuse_too(randomize_norms):
    """Pairs are found from the autograd graph, not zoo block names."""
    import torchvision

    model = randomize_norms(torchvision.models.mobilenet_v2(num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    fused = fuse(model, example_input=x[:1])
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() < ATOL
    assert len(fused.fuse_report.folded) == _count(model, nn.BatchNorm2d)


class _SharedOutput(nn.Module):
    """conv output read by the BN *and* a skip connection: the BN must not be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 1)
        self.bn2 = nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x):
        y = self.conv(x)
        return self.bn2(self.conv2(self.bn(y) + y))


def test_unsafe_pairs_are_skipped_with_a_reason(randomize_norms):
    model = randomize_norms(_SharedOutput()).eval()
    x = torch.randn(2, 3, 8, 8)
    fused = fuse(model, example_input=x)
    report = fused.fuse_report
    assert report.folded == []
    assert "also read elsewhere" in report.skipped["bn"]
    assert "running statistics" in report.skipped["bn2"]
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() < ATOL


def test_grouped_pointwise_conv_matches_conv2d():
    torch.manual_seed(0)
    for groups, cin, cout, batch in [(3, 12, 24, 1), (8, 64, 16, 3), (2, 6, 4, 2)]:
        conv = nn.Conv2d(cin, cout, 1, groups=groups, bias=batch != 1)
        fast = GroupedPointwiseConv2d.from_conv(conv, policy="always")
        x = torch.randn(batch, cin, 5, 7)
        with torch.no_grad():
            expected = F.conv2d(x, conv.weight, conv.bias, groups=groups)
            assert (fast(x) - expected).abs().max().item() < 1e-5
            xc = x.contiguous(memory_format=torch.channels_last)
            assert (fast(xc) - expected).abs().max().item() < 1e-5
        assert fast.weight is conv.weight  # shares parameters, same state_dict keys
        assert fast.state_dict().keys() == conv.state_dict().keys()
    with pytest.raises(ValueError, match="grouped 1x1"):
        GroupedPointwiseConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))


@pytest.mark.parametrize(
    "pool,fn",
    [
        (nn.MaxPool2d(3, 2, 1), lambda x: F.max_pool2d(x, 3, 2, 1)),
        (nn.MaxPool2d(3, 2, ceil_mode=True), lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True)),
        (nn.AvgPool2d(3, 2, 1), lambda x: F.avg_pool2d(x, 3, 2, 1)),
        (
            nn.AvgPool2d(3, 2, 1, count_include_pad=False),
            lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        ),
    ],
)
def test_channels_last_pools_match_functional_nchw(pool, fn):
    fast = FastMaxPool2d.from_pool(pool) if isinstance(pool, nn.MaxPool2d) else None
    fast = fast or FastAvgPool2d.from_pool(pool)
    assert isinstance(fast, type(pool))  # still an nn.MaxPool2d / nn.AvgPool2d
    x = torch.randn(2, 5, 13, 11)
    out = fast(x)
    assert out.is_contiguous()  # NCHW in, NCHW out
    assert torch.equal(out, fn(x))


def test_pools_are_swapped_in_fused_models():
    fused = fuse(zoo.create("squeezenet1_0"), example_input=torch.randn(1, 3, 64, 64))
    pools = [m for m in fused.modules() if isinstance(m, nn.MaxPool2d)]
    assert pools and all(isinstance(m, FastMaxPool2d) for m in pools)
    assert len(fused.fuse_report.pools) == len(pools)
    plain = fuse(zoo.create("squeezenet1_0"), fast_pool=False, grouped_matmul=False)
    assert not any(isinstance(m, FastMaxPool2d) for m in plain.modules())


def test_channels_last_option_gives_same_outputs(randomize_norms):
    model = randomize_norms(zoo.create("mobilenet_v1_x0_25", num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    fused = fuse(model, channels_last=True, example_input=x[:1])
    assert fused.fuse_report.channels_last
    assert fused.features.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        got = fused(x.contiguous(memory_format=torch.channels_last))
        assert (got - expected).abs().max().item() < ATOL
        assert (fused(x) - expected).abs().max().item() < ATOL  # NCHW input works too


def test_compile_option_wraps_the_fused_model():
    model = zoo.create("shufflenet_v2_x0_5", num_classes=10)
    compiled = fuse(model, compile=True, example_input=torch.randn(1, 3, 64, 64))
    assert hasattr(compiled, "_orig_mod")  # torch.compile's wrapper; compiles on first call
    assert compiled.fuse_report.compiled
    with pytest.raises(TypeError, match="before torch.compile"):
        fuse(compiled)


@pytest.mark.slow
def test_compiled_fused_model_matches(randomize_norms):
    model = randomize_norms(zoo.create("shufflenet_v2_x0_5", num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = fuse(model, compile=True, example_input=x[:1])
    with torch.no_grad():
        assert (compiled(x) - model(x)).abs().max().item() < ATOL


def test_fuse_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        fuse("resnet18")


@pytest.mark.parametrize("mode", ["bwn", "xnor"])
@pytest.mark.parametrize(
    "name,size", [("shufflenet_v2_x0_5", 32), ("resnet18", 32), ("squeezenet1_1", 64)]
)
def test_binary_models_freeze_and_fold(name, size, mode, randomize_norms, sign_safe_input):
    from zoo.binary import binarize, is_binary

    model = randomize_norms(binarize(zoo.create(name, num_classes=10), mode)).eval()
    fused = fuse(model, example_input=torch.randn(1, 3, size, size))
    report = fused.fuse_report
    binary = {n: m for n, m in model.named_modules() if is_binary(m)}
    assert sorted(report.frozen_binary) == sorted(binary)
    # The stored weights are alpha * sign(W), alpha = mean |W| per output channel, before
    # any BN is folded: check one layer that has no BN after it (or the raw value).
    for n, m in fused.named_modules():
        if n in binary and not any(conv == n for conv, _ in report.folded):
            w = binary[n].weight.detach()
            alpha = w.abs().flatten(1).mean(1).view(-1, *[1] * (w.dim() - 1))
            expected = alpha * torch.where(w >= 0, 1.0, -1.0)
            assert torch.allclose(m.kernel_quantizer.value, expected, atol=1e-7)
    # Every BN of the model is folded, binary convs included, now that weights are fixed.
    n_bn = sum(
        type(m) is nn.BatchNorm2d and not n.endswith("input_bn") for n, m in model.named_modules()
    )
    assert len(report.folded) == n_bn
    x = sign_safe_input(model, (2, 3, size, size))
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() < ATOL


@pytest.mark.parametrize("mode", ["bwn", "xnor"])
def test_binary_convs_keep_their_bn_without_freezing(mode, randomize_norms, sign_safe_input):
    from zoo.binary import binarize, is_binary

    model = randomize_norms(binarize(zoo.create("resnet18", num_classes=10), mode)).eval()
    fused = fuse(model, freeze_binary=False, example_input=torch.randn(1, 3, 32, 32))
    report = fused.fuse_report
    binary_names = {n for n, m in model.named_modules() if is_binary(m)}
    assert report.frozen_binary == []
    assert not any(conv in binary_names for conv, _ in report.folded)
    for conv_name in binary_names:  # e.g. features.layer1.0.conv1.conv -> ...conv1.bn
        bn = conv_name.rsplit(".", 1)[0] + ".bn"
        assert "binary" in report.skipped[bn], bn
    x = sign_safe_input(model, (2, 3, 32, 32))
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() < ATOL


def test_registered_binary_twins_fuse(randomize_norms, sign_safe_input):
    names = zoo.list_models("xnor_*")
    if not names:
        pytest.skip("no xnor_* models registered yet (zoo.binary.variants)")
    name = "xnor_shufflenet_v2_x0_5" if "xnor_shufflenet_v2_x0_5" in names else names[0]
    model = randomize_norms(zoo.create(name, num_classes=10)).eval()
    size = max(64, getattr(model, "min_input_size", 32))
    fused = fuse(model, example_input=torch.randn(1, 3, size, size))
    x = sign_safe_input(model, (2, 3, size, size))
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() < ATOL


def test_fuse_and_pack_equals_the_simulated_binary_model(randomize_norms):
    model = zoo.create("xnor_resnet18", num_classes=10)
    randomize_norms(model)
    model = model.eval().double()
    fast = fuse_and_pack(model)
    assert any(isinstance(m, PackedBinaryConv2d) for m in fast.modules())
    assert fast.fuse_report.folded  # BNs after binary convs folded into their packed scales
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert (fast(x) - model(x)).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    "options",
    [
        {"shortcut": "bireal"},
        {"activation": "rprelu"},
        {"threshold": "learned", "scale": "learned"},
    ],
)
def test_fuse_and_pack_keeps_binary_options_exact(randomize_norms, options):
    # A BN after a Bi-Real shortcut or RPReLU acts on more than the conv's output: folding it
    # into the packed scale gave errors of 20 and 0.21 on this model before it was refused.
    model = zoo.create("xnor_shufflenet_g3_x0_5", num_classes=10, **options)
    randomize_norms(model)
    model = model.eval().double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert (fuse_and_pack(model)(x) - model(x)).abs().max().item() < 1e-4
