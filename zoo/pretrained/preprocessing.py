"""The eval transform of a model or weight set, built from its data config (torchvision)."""

from __future__ import annotations

from torch import nn

from zoo.data.transforms import EvalTransform, create_eval_transform
from zoo.pretrained import data_config

__all__ = ["transforms"]


def transforms(name_or_model: str | nn.Module) -> EvalTransform:
    """The eval transform (resize, centre crop, to tensor, normalise) of a model or weights,
    like torchvision's ``weights.transforms()``."""
    return create_eval_transform(data_config(name_or_model))
