"""Post-training int8 quantization with torch.ao FX: int8 kernels in the graph, outputs close
to float, smaller state."""

from __future__ import annotations

import torch

import zoo
from zoo.compress import measure_latency, quantize_int8, state_bytes


def test_squeezenet_int8_is_close_to_float_and_smaller():
    torch.manual_seed(0)
    model = zoo.create("squeezenet1_1", num_classes=10, in_chans=1).eval()
    calib = torch.rand(16, 1, 64, 64)
    q = quantize_int8(model, [calib[:8], (calib[8:], torch.zeros(8))])
    kinds = {type(m).__module__ for m in q.modules()}
    assert any(
        k.startswith("torch.ao.nn.quantized") or k.startswith("torch.ao.nn.intrinsic.quantized")
        for k in kinds
    )
    x = torch.rand(8, 1, 64, 64)
    ref, out = model(x), q(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert state_bytes(q) < 0.4 * state_bytes(model)
    lat = measure_latency(q, (1, 64, 64), batch=2, warmup=1, iters=3)
    assert lat.median_ms > 0 and lat.images_per_sec > 0


def test_shufflenet_v1_with_channel_shuffle_quantizes():
    model = zoo.create("shufflenet_g3_x0_5", num_classes=10, in_chans=1).eval()
    q = quantize_int8(model, torch.rand(4, 1, 64, 64))
    assert q(torch.rand(2, 1, 64, 64)).shape == (2, 10)
