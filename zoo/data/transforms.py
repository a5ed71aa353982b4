"""Evaluation preprocessing built from a data config (torchvision/timm style).

A data config is the ``preprocessing`` block of a weight manifest (or a model's
``pretrained_cfg``): ``input_size``, ``resize_size``, ``crop_pct``, ``interpolation``,
``mean``, ``std``, ``channel_order`` (RGB/BGR/L) and ``value_range`` ([0, 1] or [0, 255]).
The eval transform is: resize the shorter side to ``resize_size`` -> centre crop to
``input_size`` -> tensor in ``value_range`` (channels reordered if BGR) -> normalise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from zoo.data.config import resolve_data_config
from zoo.data.images import load_image

__all__ = ["resolve_data_config", "EvalTransform", "create_eval_transform", "opencv_resize"]


def opencv_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Shorter side to ``size``, the longer one ``int(size * long / short + 0.5)`` (the
    rounding of the Megvii ShuffleNet-Series ``OpencvResize``; torchvision truncates)."""
    if height < width:
        return size, int(size / height * width + 0.5)
    return int(size / width * height + 0.5), size


def opencv_resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """OpenCV ``INTER_LINEAR`` resize of a ``(C, H, W)`` image in 0..255: bilinear at pixel
    centres without antialiasing, rounded back to 8-bit levels as ``cv2.resize`` returns."""
    out_size = opencv_size(img.shape[-2], img.shape[-1], size)
    x = nnf.interpolate(
        img.float()[None], size=out_size, mode="bilinear", align_corners=False, antialias=False
    )[0]
    return x.round().clamp(0, 255)


def _interpolation(name: str):
    try:
        return InterpolationMode(name)
    except ValueError as e:
        raise ValueError(f"interpolation must be nearest, bilinear or bicubic, got {name!r}") from e


class EvalTransform(nn.Module):
    """Image (PIL, or uint8/float CHW tensor) -> normalised float tensor for a model.

    Same steps and order as torchvision's ``ImageClassification`` and timm's eval transform,
    plus the channel order and value range some checkpoints expect (e.g. BGR in 0..255).
    PIL images go through ``zoo.data.images.load_image`` (EXIF orientation, 16-bit/float
    scaled to 8 bits, L or RGB). Tensors must be channels-first, ``(C, H, W)`` with C = 1
    or 3 (torchvision's layout; uint8 in 0..255 or float in [0, 1]); an ``(H, W, C)`` tensor,
    as numpy/PIL arrays come, is refused: convert it with ``t.permute(2, 0, 1)``.
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
        self.resize_mode = cfg.get("resize_mode", "torchvision")
        if self.resize_mode not in ("torchvision", "opencv"):
            raise ValueError(f"resize_mode must be torchvision or opencv, got {self.resize_mode!r}")

    @staticmethod
    def check_layout(img: torch.Tensor) -> None:
        """Refuse a tensor that is not one ``(C, H, W)`` image, naming the layout expected."""
        shape = tuple(img.shape)
        if img.dim() != 3:
            raise ValueError(f"expected a CHW image tensor (C, H, W), got shape {shape}")
        if shape[0] not in (1, 3, 4) and shape[-1] in (1, 3, 4):
            raise ValueError(
                f"expected a CHW image tensor (channels first), got shape {shape}, which looks "
                f"HWC (channels last, as numpy/PIL arrays are): pass t.permute(2, 0, 1)"
            )

    def _to_tensor(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            return F.convert_image_dtype(img, torch.float) if not img.is_floating_point() else img
        return F.to_tensor(img)

    def _convert_mode(self, img: Any) -> Any:
        """PIL images become 8-bit RGB (or L for one channel) first; tensors are checked."""
        if isinstance(img, torch.Tensor):
            self.check_layout(img)
            return img
        return load_image(img, "L" if self.in_chans == 1 else "RGB")

    def _resize(self, img: Any) -> Any:
        """torchvision's antialiased resize, or OpenCV's (``resize_mode="opencv"``: bilinear,
        no antialiasing, long side rounded, 8-bit result; returned as a float in [0, 1])."""
        if self.resize_mode != "opencv":
            return F.resize(img, self.resize_size, interpolation=self.interpolation, antialias=True)
        if self.interpolation != InterpolationMode.BILINEAR:
            raise ValueError("resize_mode='opencv' implements OpenCV's bilinear resize only")
        if not isinstance(img, torch.Tensor):
            levels = F.pil_to_tensor(img)
        elif img.is_floating_point():
            levels = img * 255
        else:
            levels = img
        return opencv_resize(levels, self.resize_size) / 255

    def forward(self, img: Any) -> torch.Tensor:
        img = self._convert_mode(img)
        img = self._resize(img)
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
            f"channel_order={self.channel_order}, value_range={list(self.value_range)}, "
            f"resize_mode={self.resize_mode})"
        )


def create_eval_transform(config: Mapping[str, Any] | Sequence | None = None) -> EvalTransform:
    """The eval transform for a data config (see :func:`resolve_data_config`)."""
    return EvalTransform(dict(config or {}))
