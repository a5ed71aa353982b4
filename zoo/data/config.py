"""Data configs: the preprocessing a model or weight set expects, as plain values.

A data config is the ``preprocessing`` block of a weight manifest (or a model's
``pretrained_cfg``): ``input_size``, ``resize_size``, ``crop_pct``, ``interpolation``,
``mean``, ``std``, ``channel_order`` (RGB/BGR/L) and ``value_range`` ([0, 1] or [0, 255]).
Pure Python, so resolving one never imports torchvision (``zoo.data.transforms`` builds
the transform).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["resolve_data_config"]

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
