"""The one way zoo turns an image file (or PIL image) into the 8-bit L/RGB image a model reads.

Used by every reader (``zoo predict``, ``zoo validate``, ``zoo train``/``finetune`` through
``SafeImageFolder`` and the train transform, and ``zoo.transforms``' PIL path), so a file
gives the same pixels everywhere:

- EXIF orientation is applied (``ImageOps.exif_transpose``), as a photo viewer shows it;
- 16-bit images (``I;16``, ``I;16B``, ``I;16L``, and ``I`` holding 0..65535, which is how
  Pillow reads 16-bit PNG/TIFF) are scaled by 255/65535, not clipped to 0/255 as
  ``convert("L")`` does; other ``I`` (32-bit signed) images are scaled from the int32 range;
  float (``F``) images are taken as [0, 1] (torchvision's float convention), clipped to it;
- transparency (``RGBA``, ``LA``, ``PA``, palette with a transparent colour) is composited
  over white, so hidden colours under transparent pixels do not leak in; ``CMYK``,
  ``YCbCr``, palette and 1-bit images are converted by Pillow.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

__all__ = ["load_image", "to_8bit", "MODES", "BACKGROUND"]

MODES = ("L", "RGB")  # what a model reads: one channel (grayscale) or three
BACKGROUND = 255  # transparent pixels are shown over white

_ORIENTATION = 0x0112  # EXIF tag
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_INT32_MIN, _INT32_SPAN = -(2**31), 2**32 - 1


def _scaled(values: np.ndarray, low: float, span: float) -> Image.Image:
    """``values`` mapped from [low, low + span] to 0..255 (rounded, clipped) as an L image."""
    out = np.clip(np.rint((values.astype(np.float64) - low) * (255.0 / span)), 0, 255)
    return Image.fromarray(out.astype(np.uint8), "L")


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16/32-bit integer or float image as 8-bit ``L``, scaled by its type's range; else as is."""
    if img.mode in _SIXTEEN_BIT:
        return _scaled(np.asarray(img), 0.0, 65535.0)
    if img.mode == "I":
        a = np.asarray(img)
        if a.size == 0 or (a.min() >= 0 and a.max() <= 65535):  # a 16-bit file, as Pillow reads it
            return _scaled(a, 0.0, 65535.0)
        return _scaled(a, float(_INT32_MIN), float(_INT32_SPAN))
    if img.mode == "F":
        return _scaled(np.nan_to_num(np.asarray(img), nan=0.0), 0.0, 1.0)
    return img


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite a transparent image over the white ``BACKGROUND`` (result RGB)."""
    rgba = img.convert("RGBA")
    ground = Image.new("RGBA", rgba.size, (BACKGROUND,) * 3 + (255,))
    return Image.alpha_composite(ground, rgba).convert("RGB")


def _orient(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (a no-op, without copying, when upright)."""
    if img.getexif().get(_ORIENTATION, 1) in (0, 1):
        return img
    return ImageOps.exif_transpose(img)


def _convert(img: Image.Image, mode: str) -> Image.Image:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    img = to_8bit(_orient(img))
    if _has_alpha(img):
        img = _flatten_alpha(img)
    return img if img.mode == mode else img.convert(mode)


def load_image(source: str | os.PathLike | Image.Image, mode: str = "RGB") -> Image.Image:
    """An image file (or an open PIL image) as an upright 8-bit image in ``mode`` (L or RGB).

    Raises what Pillow raises for unreadable files (``OSError``, ``UnidentifiedImageError``,
    ``SyntaxError``, ``ValueError``), which ``SafeImageFolder`` counts and skips.
    """
    if isinstance(source, Image.Image):
        return _convert(source, mode)
    with open(source, "rb") as f:  # closed here; the pixels are loaded before it is
        img = Image.open(f)
        img.load()
        return _convert(img, mode)
