"""Post-training static int8 quantization with PyTorch's own tooling, and a latency probe.

``torch.ao.quantization``'s FX graph mode (``prepare_fx`` -> calibrate -> ``convert_fx``) still
works in torch 2.14 on CPU with the ``x86`` (fbgemm + onednn) backend; it warns that it is
deprecated in favour of torchao's pt2e flow, which is not installed here. It fuses
Conv-BN-ReLU, observes activation ranges on calibration batches, quantizes weights per output
channel (symmetric int8) and activations per tensor (affine uint8), and runs int8 kernels.
``ChannelShuffle`` cannot be traced (it checks shapes in Python), so it stays a leaf module that
runs in float between a dequantize and a quantize; it only permutes channels.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from zoo.blocks import ChannelShuffle
from zoo.compress.layers import traceable

__all__ = ["quantize_int8", "state_bytes", "measure_latency", "Latency"]


def _calibration_batches(calibration: torch.Tensor | Iterable) -> Iterable[torch.Tensor]:
    if isinstance(calibration, torch.Tensor):
        yield calibration
        return
    for batch in calibration:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def quantize_int8(
    model: nn.Module,
    calibration: torch.Tensor | Iterable,
    backend: str = "x86",
    example: torch.Tensor | None = None,
) -> nn.Module:
    """An int8 copy of ``model`` (eval mode, CPU) calibrated on ``calibration``.

    ``calibration`` is a batch tensor or an iterable of batches / ``(images, labels)`` pairs,
    e.g. a DataLoader over a few hundred training images.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"quantized engine {backend!r} is not available; choose one of "
            f"{torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = backend
    float_model = copy.deepcopy(model).cpu().eval()
    root, _ = traceable(float_model)
    batches = _calibration_batches(calibration)
    first = next(iter(batches), None)
    if first is None:
        raise ValueError("calibration is empty; pass at least one batch of inputs")
    check = getattr(float_model, "check_input", None)
    if check is not None:
        check(first)
    custom = PrepareCustomConfig().set_non_traceable_module_classes([ChannelShuffle])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the FX flow's deprecation notices
        prepared = prepare_fx(
            root,
            get_default_qconfig_mapping(backend),
            (example if example is not None else first[:1],),
            prepare_custom_config=custom,
        )
        with torch.no_grad():
            prepared(first)
            for batch in batches:
                prepared(batch)
        quantized = convert_fx(prepared)
    return quantized.eval()


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (packed int8 weights for quantized models)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


@dataclass(frozen=True)
class Latency:
    """Median and best time per batch in milliseconds."""

    batch: int
    threads: int
    median_ms: float
    best_ms: float

    @property
    def images_per_sec(self) -> float:
        return 1000.0 * self.batch / self.median_ms


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int, int],
    batch: int = 1,
    threads: int = 1,
    warmup: int = 5,
    iters: int = 30,
) -> Latency:
    """Wall time of ``model(x)`` on CPU with ``threads`` intra-op threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, *input_size)
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(iters):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    times.sort()
    return Latency(batch, threads, 1000 * times[len(times) // 2], 1000 * times[0])
