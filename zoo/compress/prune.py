"""Fine-grained magnitude pruning (Han et al., 2015/2016), one-shot or iterative with retraining.

Each layer keeps exactly its ``round((1 - sparsity) * numel)`` largest-magnitude weights. During
retraining the pruned weights are held at zero by a parametrization ``weight = original * mask``
so any training loop (``zoo.train.train_one_epoch``) can be used unchanged; :func:`finalize`
bakes the zeros into plain weights again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from zoo.compress.layers import PerLayer, compressible_layers, resolve_per_layer

__all__ = [
    "PAPER_DENSITY",
    "paper_sparsity",
    "magnitude_mask",
    "layer_sparsity",
    "prune_magnitude",
    "attach_masks",
    "prune_and_retrain",
    "finalize",
    "sparsity_table",
    "WeightMask",
]

# Fraction of weights KEPT per layer in the papers (biases are never pruned).
# AlexNet: Deep Compression (Han et al., ICLR 2016) Table 4 "Weights% (P)"; fc6/fc7/fc8 are
# the zoo AlexNet's pre_logits.1 / pre_logits.4 / classifier.
# SqueezeNet 1.0: SqueezeNet paper (Iandola et al., 2016) Table 1 "sparsity" columns
# (s1x1, e1x1, e3x3 per fire module); with these rates 421,094 of 1,248,424 parameters
# remain (paper: 421,098; the difference is rounding per layer).
_SQUEEZENET_FIRE_DENSITY = {
    2: (1.0, 1.0, 0.33),
    3: (1.0, 1.0, 0.33),
    4: (1.0, 1.0, 0.33),
    5: (1.0, 1.0, 0.33),
    6: (1.0, 0.5, 0.33),
    7: (0.5, 1.0, 0.33),
    8: (1.0, 0.5, 0.30),
    9: (0.5, 1.0, 0.30),
}
PAPER_DENSITY: dict[str, dict[str, float]] = {
    "alexnet": {
        "features.conv1": 0.84,
        "features.conv2": 0.38,
        "features.conv3": 0.35,
        "features.conv4": 0.37,
        "features.conv5": 0.37,
        "pre_logits.1": 0.09,
        "pre_logits.4": 0.09,
        "classifier": 0.25,
    },
    "squeezenet1_0": {
        "features.stem": 1.0,
        **{
            f"features.fire{i}.{part}": d
            for i, dens in _SQUEEZENET_FIRE_DENSITY.items()
            for part, d in zip(("squeeze", "expand1x1", "expand3x3"), dens, strict=True)
        },
        "classifier": 0.20,
    },
}


def paper_sparsity(arch: str) -> dict[str, float]:
    """Per-layer sparsity (fraction pruned) the papers used for ``arch``."""
    if arch not in PAPER_DENSITY:
        raise KeyError(
            f"no published per-layer sparsity for {arch!r}; known: {sorted(PAPER_DENSITY)}. "
            "Pass a number (e.g. sparsity=0.66) or a {layer pattern: sparsity} mapping instead"
        )
    return {name: round(1.0 - d, 6) for name, d in PAPER_DENSITY[arch].items()}


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask keeping the ``round((1 - sparsity) * numel)`` largest ``|weight|`` entries.

    Ties are broken by ``torch.topk`` so the kept count is exact, whatever the values.
    """
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    n = weight.numel()
    keep = int(round((1.0 - float(sparsity)) * n))
    flat = weight.detach().abs().flatten()
    mask = torch.zeros(n, dtype=torch.bool, device=weight.device)
    if keep >= n:
        mask[:] = True
    elif keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(weight)


class WeightMask(nn.Module):
    """Parametrization ``weight = original * mask``: pruned weights stay zero while training."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def layer_sparsity(model: nn.Module, sparsity: PerLayer) -> dict[str, float]:
    """``sparsity`` resolved to ``{layer name: fraction pruned}``; unmatched layers get 0."""
    layers = compressible_layers(model)
    resolved = resolve_per_layer(sparsity, layers, "sparsity", default=0.0)
    for name, s in resolved.items():
        if not 0.0 <= float(s) <= 1.0:
            raise ValueError(f"sparsity of {name} must be in [0, 1], got {s}")
    return {k: float(v) for k, v in resolved.items()}


def _mask_of(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    found = [p for p in module.parametrizations.weight if isinstance(p, WeightMask)]
    return found[0] if found else None


def attach_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Hold ``masks`` on the named layers during training (intersecting any mask already there)."""
    layers = compressible_layers(model)
    for name, mask in masks.items():
        if name not in layers:
            raise KeyError(f"{name!r} is not a Conv2d/Linear layer of this model")
        module = layers[name]
        if tuple(mask.shape) != tuple(module.weight.shape):
            shapes = f"{tuple(mask.shape)} vs weight {tuple(module.weight.shape)}"
            raise ValueError(f"mask for {name} has shape {shapes}")
        existing = _mask_of(module)
        if existing is not None:
            existing.mask &= mask.to(existing.mask.device)
        else:
            parametrize.register_parametrization(module, "weight", WeightMask(mask), unsafe=True)


def prune_magnitude(
    model: nn.Module, sparsity: PerLayer, hold: bool = False
) -> dict[str, torch.Tensor]:
    """Prune every layer to its target sparsity by magnitude; returns ``{layer: kept mask}``.

    With ``hold=False`` the pruned weights are simply set to zero; with ``hold=True`` a mask
    parametrization keeps them at zero during later training (call :func:`finalize` after).
    """
    layers = compressible_layers(model)
    masks = {}
    for name, s in layer_sparsity(model, sparsity).items():
        masks[name] = magnitude_mask(layers[name].weight, s)
    if hold:
        attach_masks(model, masks)
    else:
        with torch.no_grad():
            for name, mask in masks.items():
                _plain_weight(layers[name]).mul_(mask)
    return masks


def _plain_weight(module: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(module, "weight"):
        raise RuntimeError("this layer is parametrized; call zoo.compress.finalize(model) first")
    return module.weight.data


def prune_and_retrain(
    model: nn.Module,
    sparsity: PerLayer,
    retrain: Callable[[nn.Module, int], Any] | None = None,
    steps: int = 1,
) -> dict[str, torch.Tensor]:
    """Iterative pruning: ``steps`` rounds of pruning to ``sparsity * k / steps``, each followed
    by ``retrain(model, k)`` with the masks held; the masks are baked in at the end.

    ``retrain`` is any callable that trains ``model`` in place, e.g. a closure over
    ``zoo.train.train_one_epoch``. Returns the final ``{layer: kept mask}``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    targets = layer_sparsity(model, sparsity)
    layers = compressible_layers(model)
    for k in range(1, steps + 1):
        masks = {
            name: magnitude_mask(layers[name].weight, s * k / steps) for name, s in targets.items()
        }
        attach_masks(model, masks)
        if retrain is not None:
            retrain(model, k)
    final = {name: _mask_of(layers[name]).mask.clone() for name in targets}
    finalize(model)
    return final


def finalize(model: nn.Module) -> nn.Module:
    """Remove every weight parametrization left by pruning or codebook training, keeping the
    current (masked / shared) values as plain ``weight`` parameters."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            # put ``weight`` back in front of ``bias`` so state_dict order is unchanged
            params = module._parameters
            weight = params.pop("weight")
            rest = dict(params)
            params.clear()
            params["weight"] = weight
            params.update(rest)
    return model


def sparsity_table(model: nn.Module) -> list[dict[str, Any]]:
    """Per Conv2d/Linear layer: weights, non-zeros and density (fraction kept)."""
    rows = []
    for name, module in compressible_layers(model).items():
        w = module.weight.detach()
        nnz = int(torch.count_nonzero(w))
        rows.append(
            {"layer": name, "weights": w.numel(), "nonzero": nnz, "density": nnz / w.numel()}
        )
    return rows
