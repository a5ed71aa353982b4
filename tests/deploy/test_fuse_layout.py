"""zoo.deploy.rewrites: the layout ``fuse`` picks by default gives the same outputs as eager in
either layout, the choice follows the measured times (timer replaced: no timing asserted) and
is cached, and channels_last convs and packed twins stay exact in both layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.deploy import rewrites
from zoo.deploy.fuse import fuse, fuse_and_pack
from zoo.deploy.rewrites import ChannelsLastConv2d, choose_channels_last, set_conv_layout

ATOL = 1e-4


@pytest.fixture
def faster(monkeypatch):
    """Make the layout timer report ``layout`` ("cl" or "nchw") as the faster one."""
    rewrites.clear_layout_cache()

    def force(layout: str) -> None:
        def fake_time(model: nn.Module, x: torch.Tensor, calls: int) -> float:
            model(x)  # the candidate must still run
            cl = any(isinstance(m, ChannelsLastConv2d) for m in model.modules())
            return 1.0 if cl == (layout == "cl") else 2.0

        monkeypatch.setattr(rewrites, "_best_time", fake_time)

    yield force
    rewrites.clear_layout_cache()


@pytest.mark.parametrize("layout", ["cl", "nchw"])
@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_g3_x0_5", "resnet18"])
def test_default_fuse_matches_eager_in_the_layout_it_picks(name, layout, faster, randomize_norms):
    faster(layout)
    model = randomize_norms(zoo.create(name, num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    fused = fuse(model, example_input=x[:1])
    assert fused.fuse_report.channels_last == (layout == "cl")
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in convs if m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]
    assert dense
    for conv in dense:  # weights stored in the chosen layout
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (layout == "cl")
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() < ATOL


def test_layout_choice_is_cached_per_model_input_and_threads(monkeypatch):
    rewrites.clear_layout_cache()
    calls = []

    def fake_time(model, x, n):
        calls.append(tuple(x.shape))
        return 1.0

    monkeypatch.setattr(rewrites, "_best_time", fake_time)
    model = zoo.create("shufflenet_v2_x0_5", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    fuse(model, example_input=x)
    timed = len(calls)
    assert timed > 0
    fuse(model, example_input=x)
    assert len(calls) == timed  # same model, input and threads: no new timing
    fuse(model, example_input=torch.randn(1, 3, 96, 96))
    assert len(calls) > timed  # another input shape is timed again
    rewrites.clear_layout_cache()


def test_explicit_layout_skips_the_timing(monkeypatch):
    def fail(*args):
        raise AssertionError("timed although the layout was given")

    monkeypatch.setattr(rewrites, "_best_time", fail)
    model = zoo.create("mobilenet_v1_x0_25", num_classes=10).eval()
    assert not fuse(model, channels_last=False).fuse_report.channels_last
    assert fuse(model, channels_last=True).fuse_report.channels_last


def test_gpu_or_non_image_inputs_stay_nchw():
    model = nn.Sequential(nn.Linear(4, 2))
    assert not choose_channels_last(model, torch.randn(3, 4))


@pytest.mark.parametrize("groups", [1, 8])
def test_channels_last_conv_matches_conv2d_on_nchw_input(groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=groups)
    x = torch.randn(2, 8, 17, 17)
    expected = F.conv2d(x, conv.weight, conv.bias, 2, 1, 1, groups)
    model = nn.Sequential(conv)
    set_conv_layout(model, True)
    assert type(model[0]) is ChannelsLastConv2d
    with torch.no_grad():
        got = model(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max().item() < 1e-5
    set_conv_layout(model, False)  # and back
    assert type(model[0]) is nn.Conv2d and model[0].weight.is_contiguous()


@pytest.mark.parametrize("layout", ["cl", "nchw"])
@pytest.mark.parametrize("name", ["xnor_mobilenet_v1_x0_25", "xnor_resnet18"])
def test_packed_twin_is_exact_in_either_layout(name, layout, randomize_norms):
    # float64, so that no float rounding can flip a sign: the layout is set by hand (the timed
    # choice is made for float32 inputs only).
    model = randomize_norms(zoo.create(name, num_classes=10)).eval().double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    fast = fuse_and_pack(model, example_input=x[:1])
    assert not fast.fuse_report.channels_last  # float64: NCHW, not timed
    set_conv_layout(fast, layout == "cl")
    with torch.no_grad():
        assert (fast(x) - model(x)).abs().max().item() < 1e-4


def test_packed_twin_layout_follows_the_timing(faster):
    faster("cl")
    model = zoo.create("xnor_mobilenet_v1_x0_25", num_classes=10).eval()
    fast = fuse_and_pack(model, example_input=torch.randn(1, 3, 64, 64))
    assert fast.fuse_report.channels_last
    assert any(isinstance(m, ChannelsLastConv2d) for m in fast.modules())


def test_float64_models_stay_nchw_without_timing(monkeypatch):
    def fail(*args):
        raise AssertionError("float64 inputs should not be timed")

    monkeypatch.setattr(rewrites, "_best_time", fail)
    model = zoo.create("mobilenet_v1_x0_25", num_classes=10).eval().double()
    fused = fuse(model, example_input=torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert not fused.fuse_report.channels_last


@pytest.mark.parametrize("channels_last", [False, True])
def test_interleave_equals_concat_then_shuffle(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    a = torch.randn(2, 5, 7, 6).contiguous(memory_format=fmt)
    b = torch.randn(2, 5, 7, 6).contiguous(memory_format=fmt)
    cat = torch.cat([a, b], 1)
    order = [i * 5 + j for j in range(5) for i in range(2)]  # shuffle with 2 groups, by index
    got = rewrites._interleave(a, b)
    assert torch.equal(got, cat[:, order])
    assert got.is_contiguous(memory_format=fmt)


def test_shufflenet_v2_units_interleave_and_match(randomize_norms):
    model = randomize_norms(zoo.create("shufflenet_v2_x0_5", num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    for cl in (False, True):
        fused = fuse(model, channels_last=cl, example_input=x[:1])
        units = [m for m in fused.modules() if isinstance(m, rewrites.InterleavedShuffleV2Unit)]
        assert len(units) == len(fused.fuse_report.shuffles) == 16
        with torch.no_grad():
            assert (fused(x) - model(x)).abs().max().item() < ATOL


def test_fused_in_inference_mode_still_works_with_autograd(faster):
    # Layout conversions made while the caller is in inference mode must not leave inference
    # tensors in the model: those cannot be saved for backward.
    faster("cl")
    model = zoo.create("mobilenet_v1_x0_25", num_classes=10).eval()
    with torch.inference_mode():
        fused = fuse(model, example_input=torch.randn(1, 3, 64, 64))
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    fused(x).sum().backward()
    assert x.grad is not None
