"""Evaluation preprocessing built from a data config (torchvision/timm style).

A data config is the ``preprocessing`` block of a weight manifest (or a model's
``pretrained_cfg``): ``input_size``, ``resize_size``, ``crop_pct``, ``interpolation``,
``mean``, ``std``, ``channel_order`` (RGB/BGR/L) and ``value_range`` ([0, 1] or [0, 255]).
The eval transform is: resize the shorter side to ``resize_size`` -> centre crop to
``input_size`` -> tensor in ``value_range`` (channels reordered if BGR) -> normalise.

Two training augmentations on ``(C, H, W)`` tensors live here too: ``PadRandomCrop``
(the CIFAR-style random crop with padding) and ``RandomErasing`` (Zhong et al. 2017, with
timm's parameters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from zoo.data.config import resolve_data_config
from zoo.data.images import load_image

__all__ = [
    "resolve_data_config",
    "EvalTransform",
    "create_eval_transform",
    "opencv_resize",
    "pad_crop",
    "PadRandomCrop",
    "RandomErasing",
]


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


def pad_crop(img: torch.Tensor, padding: int, top: int, left: int) -> torch.Tensor:
    """``img`` (``(C, H, W)``) padded by ``padding`` zeros on each side, then the ``H x W``
    window at (``top``, ``left``) of the padded image; offsets run from 0 to ``2 * padding``."""
    h, w = img.shape[-2:]
    if not (0 <= top <= 2 * padding and 0 <= left <= 2 * padding):
        raise ValueError(f"offset ({top}, {left}) outside 0..{2 * padding} for padding {padding}")
    padded = nnf.pad(img, (padding, padding, padding, padding))
    return padded[..., top : top + h, left : left + w]


class PadRandomCrop:
    """CIFAR-style random crop: pad a ``(C, H, W)`` tensor by ``padding`` zeros (black,
    before normalisation) on each side and crop ``H x W`` back at a uniform random offset."""

    def __init__(self, padding: int) -> None:
        if padding < 0:
            raise ValueError(f"--crop-padding must be >= 0, got {padding}")
        self.padding = int(padding)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            return img
        top, left = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
        return pad_crop(img, self.padding, top, left)

    def __repr__(self) -> str:
        return f"PadRandomCrop(padding={self.padding})"


class RandomErasing:
    """Random erasing (Zhong et al. 2017) of a normalised ``(C, H, W)`` tensor, as timm sets it.

    With probability ``p`` one rectangle of ``area`` (a fraction of the image, uniform in
    ``area``) and aspect ratio h/w (log-uniform in ``aspect``) is filled, at a uniform
    position; up to 10 draws are tried for a rectangle that fits, else the image is kept.
    ``mode``: ``pixel`` fills standard-normal noise per pixel, ``rand`` one normal value per
    channel, ``const`` zeros (the mean, after normalisation).
    """

    MODES = ("pixel", "rand", "const")

    def __init__(
        self,
        p: float = 0.25,
        mode: str = "pixel",
        area: tuple[float, float] = (0.02, 1 / 3),
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        attempts: int = 10,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"random erasing probability must be in [0, 1], got {p}")
        if mode not in self.MODES:
            raise ValueError(f"random erasing mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 < area[0] <= area[1] <= 1.0 or not 0.0 < aspect[0] <= aspect[1]:
            raise ValueError(f"bad random erasing bounds: area {area}, aspect {aspect}")
        self.p, self.mode, self.attempts = float(p), mode, int(attempts)
        self.area = (float(area[0]), float(area[1]))
        self.log_aspect = (math.log(aspect[0]), math.log(aspect[1]))

    def params(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) of a rectangle drawn as the class describes, or None."""
        for _ in range(self.attempts):
            u = torch.rand(2).tolist()
            target = (self.area[0] + (self.area[1] - self.area[0]) * u[0]) * height * width
            ratio = math.exp(self.log_aspect[0] + (self.log_aspect[1] - self.log_aspect[0]) * u[1])
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                return top, left, h, w
        return None

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.p <= 0.0 or float(torch.rand(())) >= self.p:
            return img
        box = self.params(img.shape[-2], img.shape[-1])
        if box is None:
            return img
        top, left, h, w = box
        c = img.shape[0]
        if self.mode == "pixel":
            fill = torch.randn(c, h, w, dtype=img.dtype)
        elif self.mode == "rand":
            fill = torch.randn(c, 1, 1, dtype=img.dtype).expand(c, h, w)
        else:
            fill = torch.zeros(c, h, w, dtype=img.dtype)
        out = img.clone()
        out[:, top : top + h, left : left + w] = fill
        return out

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, mode={self.mode!r}, area={self.area})"
