"""Which layers the compression tools act on, and per-layer settings given as one value or a map.

Deep Compression prunes and quantizes the weights of convolutions and fully connected layers;
biases, BatchNorm and buffers stay float. A per-layer setting (sparsity, bits, index bits) is
either a number for every layer or a mapping whose keys are exact layer names, fnmatch
patterns (``"features.fire*.expand3x3"``) or the kinds ``"conv"`` and ``"linear"`` (alias ``"fc"``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import TypeVar

import torch
from torch import nn

__all__ = [
    "compressible_layers",
    "layer_kind",
    "resolve_per_layer",
    "PerLayer",
    "Traceable",
    "traceable",
]

T = TypeVar("T", int, float)
PerLayer = float | int | Mapping[str, float | int]

_KIND_KEYS = {"conv": "conv", "linear": "linear", "fc": "linear"}


def layer_kind(module: nn.Module) -> str:
    """``"conv"`` for ``nn.Conv2d``, ``"linear"`` for ``nn.Linear``."""
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    raise TypeError(f"{type(module).__name__} is not a Conv2d or Linear layer")


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def resolve_per_layer(
    spec: PerLayer | None,
    layers: Mapping[str, nn.Module],
    what: str,
    default: float | int | None = None,
) -> dict[str, float | int]:
    """Turn ``spec`` into ``{layer name: value}`` for ``layers``.

    Precedence for a mapping: exact name, then the first matching fnmatch pattern, then the
    layer kind, then ``default``. Layers left without a value are omitted. Keys that match no
    layer raise, so a typo in a layer name is never silently ignored.
    """
    if spec is None:
        return {} if default is None else {name: default for name in layers}
    if isinstance(spec, bool):
        raise TypeError(f"{what} must be a number or a mapping, got {spec!r}")
    if isinstance(spec, (int, float)):
        return {name: spec for name in layers}
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"{what} must be a number or a mapping of layer names/patterns to numbers, "
            f"got {type(spec).__name__}"
        )
    _check_keys(spec, layers, what)
    patterns = [k for k in spec if k not in layers and k not in _KIND_KEYS]
    resolved: dict[str, float | int] = {}
    for name, module in layers.items():
        value = spec.get(name)
        if value is None:
            value = next((spec[p] for p in patterns if fnmatch.fnmatchcase(name, p)), None)
        if value is None:
            kind = layer_kind(module)
            value = next((v for k, v in spec.items() if _KIND_KEYS.get(k) == kind), None)
        if value is None:
            value = default
        if value is not None:
            resolved[name] = value
    return resolved


def _check_keys(spec: Mapping[str, object], layers: Mapping[str, nn.Module], what: str) -> None:
    for key in spec:
        if key in layers or key in _KIND_KEYS:
            continue
        if not any(fnmatch.fnmatchcase(name, key) for name in layers):
            sample = ", ".join(list(layers)[:6])
            raise KeyError(
                f"{what}: {key!r} matches no Conv2d/Linear layer of this model; layer names "
                f"look like {sample}, ... (or use the keys 'conv' / 'linear')"
            )


class Traceable(nn.Module):
    """A zoo model's ``forward`` without the Python input checks, so ``torch.fx`` can trace it.

    Submodule names gain a ``model.`` prefix.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.features(x))


def traceable(model: nn.Module) -> tuple[nn.Module, str]:
    """``(module to trace, name prefix of the original modules in it)``."""
    if hasattr(model, "forward_head") and hasattr(model, "features"):
        return Traceable(model), "model."
    return model, ""
