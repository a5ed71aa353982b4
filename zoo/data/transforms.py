"""Evaluation preprocessing built from a data config (torchvision/timm style).

A data config is the ``preprocessing`` block of a weight manifest (or a model's
``pretrained_cfg``): ``input_size``, ``resize_size``, ``crop_pct``, ``interpolation``,
``mean``, ``std``, ``channel_order`` (RGB/BGR/L) and ``value_range`` ([0, 1] or [0, 255]).
The eval transform is: resize the shorter side to ``resize_size`` -> centre crop to
``input_size`` -> tensor in ``value_range`` (channels reordered if BGR) -> normalise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["resolve_data_config", "EvalTransform", "create_eval_transform"]

_DEFAULTS: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "channel_order": "RGB",
    "value_range": (0.0, 1.0),
}


def resolve_data_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Complete a (possibly partial) data config with ImageNet defaults.

    ``resize_size`` defaults to ``floor(crop / crop_pct)`` like timm; ``channel_order``
    defaults to ``L`` for one input channel.
    """
    cfg = {**_DEFAULTS, **{k: v for k, v in (config or {}).items() if v is not None}}
    cfg["input_size"] = tuple(int(v) for v in cfg["input_size"])
    chans, height, width = cfg["input_size"]
    if "channel_order" not in (config or {}) and chans == 1:
        cfg["channel_order"] = "L"
    cfg["crop_size"] = (height, width) if height != width else height
    if not cfg.get("resize_size"):
        cfg["resize_size"] = math.floor(min(height, width) / float(cfg["crop_pct"]))
    cfg["mean"] = tuple(float(v) for v in cfg["mean"])
    cfg["std"] = tuple(float(v) for v in cfg["std"])
    if len(cfg["mean"]) != chans or len(cfg["std"]) != chans:
        raise ValueError(
            f"mean {cfg['mean']} / std {cfg['std']} need {chans} values for input_size "
            f"{cfg['input_size']}"
        )
    cfg["value_range"] = tuple(float(v) for v in cfg["value_range"])
    return cfg


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError as e:
        raise ValueError(f"interpolation must be nearest, bilinear or bicubic, got {name!r}") from e


class EvalTransform(nn.Module):
    """Image (PIL, or uint8/float CHW tensor) -> normalised float tensor for a model.

    Same steps and order as torchvision's ``ImageClassification`` and timm's eval transform,
    plus the channel order and value range some checkpoints expect (e.g. BGR in 0..255).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        cfg = resolve_data_config(config)
        self.config = cfg
        self.resize_size = cfg["resize_size"]
        self.crop_size = cfg["crop_size"]
        self.interpolation = _interpolation(cfg["interpolation"])
        self.mean = list(cfg["mean"])
        self.std = list(cfg["std"])
        self.channel_order = cfg["channel_order"]
        self.value_range = cfg["value_range"]
        self.in_chans = cfg["input_size"][0]

    def _to_tensor(self, img: Any) -> torch.Tensor:
        from torchvision.transforms import functional as F

        if isinstance(img, torch.Tensor):
            if img.dim() != 3:
                raise ValueError(f"expected a CHW image tensor, got shape {tuple(img.shape)}")
            return F.convert_image_dtype(img, torch.float) if not img.is_floating_point() else img
        return F.to_tensor(img)

    def _convert_mode(self, img: Any) -> Any:
        """PIL images become RGB (or L for one channel) before anything else."""
        from PIL import Image

        want = "L" if self.in_chans == 1 else "RGB"
        return img.convert(want) if isinstance(img, Image.Image) and img.mode != want else img

    def forward(self, img: Any) -> torch.Tensor:
        from torchvision.transforms import functional as F

        img = self._convert_mode(img)
        img = F.resize(img, self.resize_size, interpolation=self.interpolation, antialias=True)
        img = F.center_crop(img, self.crop_size)
        x = self._to_tensor(img)
        if self.in_chans == 3 and x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        if self.channel_order == "BGR":
            x = x.flip(0)
        low, high = self.value_range
        if (low, high) != (0.0, 1.0):
            x = x * (high - low) + low
        return F.normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resize_size={self.resize_size}, crop_size={self.crop_size}, "
            f"interpolation={self.interpolation.value}, mean={self.mean}, std={self.std}, "
            f"channel_order={self.channel_order}, value_range={list(self.value_range)})"
        )


def create_eval_transform(config: Mapping[str, Any] | Sequence | None = None) -> EvalTransform:
    """The eval transform for a data config (see :func:`resolve_data_config`)."""
    return EvalTransform(dict(config or {}))
