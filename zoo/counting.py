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
    model_or_name: nn.Module | str,
    input_size: tuple[int, int, int] | int | None = None,
    fvcore: bool = True,
) -> Complexity:
    """Params, paper-convention MACs, fvcore MACs (with the ops it skipped) and fp32 size.

    ``input_size`` is (C, H, W) or a single side length; it defaults to the model's
    ``default_cfg["input_size"]``.
    """
    if isinstance(model_or_name, str):
        name = model_or_name
        model, weights_size = _architecture_of(name)
        input_size = input_size or weights_size
    else:
        model = model_or_name
        name = (getattr(model, "default_cfg", None) or {}).get("architecture", type(model).__name__)
    size = _resolve_input_size(model, input_size)
    params = sum(p.numel() for p in model.parameters())
    macs = sum(layer_macs(model, size).values())
    fv_total, skipped, by_op = fvcore_analysis(model, size) if fvcore else (None, {}, {})
    return Complexity(name, size, params, macs, fv_total, skipped, by_op, params * 4 / MIB)


def _architecture_of(name: str) -> tuple[nn.Module, tuple[int, int, int] | None]:
    """The model ``name`` stands for, without loading weights (counting needs none): for
    ``arch.tag`` the variant and head of that weight set, and its input size."""
    import zoo

    arch, _, tag = name.partition(".")
    if not tag:
        return zoo.create(arch), None
    from zoo.pretrained import data_config, pretrained_head, pretrained_model_kwargs

    model = zoo.create(arch, **pretrained_head(arch, tag), **pretrained_model_kwargs(arch, tag))
    return model, tuple(data_config(name)["input_size"])


def _resolve_input_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    default = tuple((getattr(model, "default_cfg", None) or {}).get("input_size", (3, 224, 224)))
    if input_size is None:
        return default
    if isinstance(input_size, int):
        return (default[0], input_size, input_size)
    if len(input_size) == 2:
        return (default[0], *input_size)
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), (H, W) or an int, got {input_size!r}")
    return tuple(input_size)
