"""Exact complexity of any model: parameters, multiply-adds (paper convention and fvcore), size.

The compact-net papers' "FLOPs" are multiply-adds of convolutions and fully connected layers
only; fvcore counts one multiply-add as one flop too but adds BN, pooling and other ops, so both
are reported. Sizes are fp32 bytes of the parameters in MiB (2**20 bytes).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Complexity", "count", "layer_macs", "conv_macs", "linear_macs", "fvcore_analysis"]

MIB = 2**20


@dataclass
class Complexity:
    """What :func:`count` measures for one model at one input size."""

    name: str
    input_size: tuple[int, int, int]
    params: int
    macs: int  # paper convention: Conv2d + Linear multiply-adds, per image
    fvcore_macs: int | None
    fvcore_skipped: dict[str, int] = field(default_factory=dict)
    fvcore_by_operator: dict[str, int] = field(default_factory=dict)
    size_mb: float = 0.0  # fp32 parameters, MiB

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    """Multiply-adds of one conv per image: outputs x (in/groups) x kernel area."""
    kh, kw = module.kernel_size
    per_output = (module.in_channels // module.groups) * kh * kw
    return output[0].numel() * per_output


def linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    """Multiply-adds of one linear layer per sample."""
    return output[0].numel() * module.in_features


def layer_macs(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)
) -> dict[str, int]:
    """Per-layer multiply-adds (one image) of every Conv2d and Linear, keyed by module name."""
    found: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            fn = conv_macs
        elif isinstance(module, nn.Linear):
            fn = linear_macs
        else:
            continue
        hooks.append(
            module.register_forward_hook(
                lambda m, _i, out, _n=name, _f=fn: found.__setitem__(
                    _n, found.get(_n, 0) + _f(m, out)
                )
            )
        )
    try:
        _run(model, input_size)
    finally:
        for h in hooks:
            h.remove()
    return found


def _run(model: nn.Module, input_size: tuple[int, int, int]) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)


def fvcore_analysis(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, dict, dict]:
    """fvcore's total (one flop = one multiply-add), the ops it skipped, and its per-op split."""
    was_training = model.training
    model.eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's tracer uses deprecated torch.jit APIs
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, torch.zeros(1, *input_size))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = int(analysis.total())
            by_op = {k: int(v) for k, v in analysis.by_operator().items()}
            return total, dict(analysis.unsupported_ops()), by_op
    finally:
        model.train(was_training)


def count(
    model: nn.Module,
    input_size: tuple[int, int, int] | int | None = None,
    fvcore: bool = True,
) -> Complexity:
    """Params, paper-convention MACs, fvcore MACs (with the ops it skipped) and fp32 size.

    ``input_size`` is (C, H, W), (H, W) or a single side length; it defaults to the model's
    ``default_cfg["input_size"]``. (``zoo.count`` also takes names and files.)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count needs an nn.Module, got {type(model).__name__} {model!r}")
    name = (getattr(model, "default_cfg", None) or {}).get("architecture", type(model).__name__)
    size = _resolve_input_size(model, input_size)
    params = sum(p.numel() for p in model.parameters())
    macs = sum(layer_macs(model, size).values())
    fv_total, skipped, by_op = fvcore_analysis(model, size) if fvcore else (None, {}, {})
    return Complexity(name, size, params, macs, fv_total, skipped, by_op, params * 4 / MIB)


def _resolve_input_size(model: nn.Module, input_size: Any) -> tuple[int, int, int]:
    """(C, H, W) from ``input_size`` (None, an int side, (H, W) or (C, H, W)), checked."""
    default = tuple((getattr(model, "default_cfg", None) or {}).get("input_size", (3, 224, 224)))
    if input_size is None:
        return default
    sides = [input_size] if isinstance(input_size, int) else input_size
    if isinstance(sides, (str, bytes)) or not hasattr(sides, "__len__"):
        raise TypeError(
            f"input_size must be an int side or a (C, H, W) / (H, W) tuple, got {input_size!r}"
        )
    if not 1 <= len(sides) <= 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sides
    ):
        raise ValueError(
            f"input_size must be positive ints: a side, (H, W) or (C, H, W), got {input_size!r}"
        )
    if len(sides) == 1:
        return (default[0], sides[0], sides[0])
    if len(sides) == 2:
        return (default[0], *sides)
    return tuple(sides)
