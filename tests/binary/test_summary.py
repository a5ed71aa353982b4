"""Binary-aware summary: paper formula, hand counts on a small model, published figures."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import zoo
import zoo.binary.variants  # noqa: F401
from zoo import summary
from zoo.binary import BinaryConv2d, binarize, xnor_speedup


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared: one thread keeps these tests predictable (and deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_xnor_speedup_formula_reproduces_paper_62_27x():
    # XNOR-Net Sec. 3.2: c = 256 channels, 3x3 kernel (N_W = 9): S = 62.27x
    assert round(xnor_speedup(256, 9), 2) == 62.27
    assert xnor_speedup(1, 1) == pytest.approx(64 / 65)
    with pytest.raises(ValueError):
        xnor_speedup(0, 9)


def test_paper_layer_256x3x3_at_14x14():
    model = nn.Sequential(
        nn.Conv2d(3, 256, 1), BinaryConv2d(256, 256, 3, padding=1, bias=False, mode="xnor")
    )
    s = summary(model, input_size=(3, 14, 14))
    row = s.rows[1]
    assert row.mode == "xnor" and round(row.speedup, 2) == 62.27
    assert row.binary_macs == 256 * 256 * 9 * 14 * 14 and row.float_macs == 0
    assert row.params_1bit == 256 * 256 * 9 and row.scales == 256
    # ~32x smaller weights: 4 bytes per weight vs 1 bit plus a float32 alpha per filter
    assert s.binary_weight_float_bytes == 4 * 256 * 256 * 9
    assert s.binary_weight_bytes == 256 * 256 * 9 // 8 + 4 * 256
    assert 31.5 < s.weight_compression < 32


def _small_float():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def test_hand_count_small_xnor_model():
    model = binarize(_small_float(), "xnor", example_input=torch.randn(1, 3, 8, 8))
    s = summary(model, input_size=(3, 8, 8))
    rows = {r.name: r for r in s.rows}
    assert list(rows) == ["0", "1", "3", "4", "8"]
    # conv 0 (float, first): 3*8*9 = 216 weights; MACs = 8 ch * 8*8 positions * 3*9 = 13,824
    assert (rows["0"].params_32bit, rows["0"].float_macs, rows["0"].mode) == (
        216, 13824, "float (first layer)",
    )  # fmt: skip
    # BN(8): gamma, beta = 16 params; running mean/var = 16 floats
    assert (rows["1"].params_32bit, rows["1"].buffers_32bit) == (16, 16)
    # conv 3 (xnor): 8*16*9 = 1,152 one-bit weights, 16 bias, 16 alphas;
    # MACs = 16 ch * 64 positions * 8*9 = 73,728; S = 64*72 / (72 + 64)
    r = rows["3"]
    assert (r.params_1bit, r.params_32bit, r.scales) == (1152, 16, 16)
    assert (r.binary_macs, r.float_macs) == (73728, 0)
    assert r.speedup == pytest.approx(64 * 72 / 136)
    assert r.memory_bytes == 1152 // 8 + 4 * (16 + 16)
    # Linear(16, 10): 170 params, 160 MACs, last layer float
    assert (rows["8"].params_32bit, rows["8"].float_macs, rows["8"].mode) == (
        170, 160, "float (last layer)",
    )  # fmt: skip
    # totals: 1-bit 1,152; 32-bit 216+16+16+32+170 = 450; scales 16; BN stats 16+32 = 48
    assert (s.params_1bit, s.params_32bit, s.scales, s.buffers_32bit) == (1152, 450, 16, 48)
    assert s.memory_bytes == 144 + 4 * (450 + 16 + 48) == 2200
    assert s.float_memory_bytes == 4 * (1152 + 450 + 48) == 6600
    assert s.compression_ratio == pytest.approx(3.0)
    # model speed-up: (13,824 + 160 + 73,728) / (13,984 + 73,728 / S) = 87,712 / 16,160
    assert s.speedup == pytest.approx(87712 / 16160)
    assert s.removed_activations == ["2"]
    # parameters partition exactly into 1-bit and 32-bit
    assert s.params_1bit + s.params_32bit == sum(p.numel() for p in model.parameters())


def test_bwn_macs_count_as_float_and_float_model_has_no_binary():
    model = binarize(_small_float(), "bwn")
    s = summary(model, input_size=(3, 8, 8))
    assert s.binary_macs == 0 and s.float_macs == 13824 + 73728 + 160 and s.speedup == 1.0
    f = summary(_small_float(), input_size=(3, 8, 8))
    assert f.params_1bit == 0 and f.compression_ratio == 1.0


def test_resnet18_counts_against_torchvision():
    # 1-bit params = torchvision resnet18's conv weights except conv1 (counted independently)
    tv = torchvision.models.resnet18()
    expected = sum(m.weight.numel() for n, m in tv.named_modules()
                   if isinstance(m, nn.Conv2d) and n != "conv1")  # fmt: skip
    s = summary("xnor_resnet18")
    assert s.params_1bit == expected == 11_157_504
    assert s.params_1bit + s.params_32bit == sum(p.numel() for p in tv.parameters())
    assert s.binary_macs + s.float_macs == pytest.approx(1.82e9, rel=0.01)
    # a 3x3, 256-channel conv at 14x14 inside ResNet-18 gets the paper's 62.27x
    row = next(r for r in s.rows if r.name == "features.layer3.1.conv1.conv")
    assert row.output_shape == (256, 14, 14) and round(row.speedup, 2) == 62.27
    # the float 1000-way classifier (2.05 MB) bounds the whole-model compression at ~13x
    assert 12.5 < s.compression_ratio < 13.5 and 31 < s.weight_compression < 32


def test_depthwise_kept_float_is_shown():
    s = summary(zoo.create("xnor_mobilenet_v1_x0_25"), input_size=(3, 64, 64))
    dw = [r for r in s.rows if r.mode == "float (depthwise)"]
    assert len(dw) == 13
    text = str(s)
    assert "float (depthwise)" in text and "Kept in float: " in text and "13 depthwise" in text
    assert "compression" in text and "XNOR S" in text


def test_int_input_size_keeps_channels():
    s = summary(zoo.create("xnor_resnet18", num_classes=10, in_chans=1), input_size=32)
    assert s.input_size == (1, 32, 32)
    stem = s.rows[0]
    assert stem.output_shape == (64, 16, 16) and stem.float_macs == 64 * 16 * 16 * 49


def test_bad_input_errors():
    with pytest.raises(TypeError, match="nn.Module or a model name"):
        summary(3)
    with pytest.raises(TypeError, match="only apply when a model name"):
        summary(_small_float(), num_classes=3)
