"""Training augmentations of ``zoo.data.transforms``: padded random crop and random erasing.

Checked against direct computations (a numpy pad + slice) and against the bounds the
augmentation promises (area 2-33 % of the image, aspect 0.3-3.3, p=0 the identity).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.data.transforms import PadRandomCrop, RandomErasing, pad_crop


def _numpy_pad_crop(img: np.ndarray, pad: int, top: int, left: int) -> np.ndarray:
    c, h, w = img.shape
    big = np.zeros((c, h + 2 * pad, w + 2 * pad), dtype=img.dtype)
    big[:, pad : pad + h, pad : pad + w] = img
    return big[:, top : top + h, left : left + w]


@pytest.mark.parametrize("pad,top,left", [(4, 0, 0), (4, 8, 8), (4, 1, 6), (2, 3, 0), (0, 0, 0)])
def test_pad_crop_equals_numpy_pad_then_slice(pad, top, left):
    img = torch.rand(3, 10, 12)
    out = pad_crop(img, pad, top, left)
    assert out.shape == img.shape
    np.testing.assert_array_equal(out.numpy(), _numpy_pad_crop(img.numpy(), pad, top, left))


def test_pad_random_crop_draws_its_offset_and_crops_there():
    img = torch.rand(1, 16, 16) + 0.5  # no zeros inside: the padding shows where the crop went
    torch.manual_seed(3)
    out = PadRandomCrop(4)(img)
    torch.manual_seed(3)
    top, left = torch.randint(0, 9, (2,)).tolist()
    np.testing.assert_array_equal(out.numpy(), _numpy_pad_crop(img.numpy(), 4, top, left))
    # Over many draws every crop is one of the 9 x 9 windows, and every offset occurs.
    windows = {
        (t, le): _numpy_pad_crop(img.numpy(), 4, t, le) for t in range(9) for le in range(9)
    }
    seen = set()
    for _ in range(600):
        o = PadRandomCrop(4)(img).numpy()
        seen |= {k for k, v in windows.items() if np.array_equal(v, o)}
    assert {t for t, _ in seen} == set(range(9)) and {le for _, le in seen} == set(range(9))


def test_pad_crop_refuses_an_offset_outside_the_padding():
    with pytest.raises(ValueError, match="offset"):
        pad_crop(torch.zeros(1, 4, 4), 2, 5, 0)


def _erased_box(before: torch.Tensor, after: torch.Tensor) -> tuple[int, int] | None:
    """(h, w) of the changed region after checking it is one full rectangle, or None."""
    changed = (before != after).any(dim=0)
    if not changed.any():
        return None
    rows, cols = changed.any(dim=1).nonzero()[:, 0], changed.any(dim=0).nonzero()[:, 0]
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    assert changed[r0 : r1 + 1, c0 : c1 + 1].all(), "the erased region is not a rectangle"
    assert int(changed.sum()) == (r1 - r0 + 1) * (c1 - c0 + 1)
    return r1 - r0 + 1, c1 - c0 + 1


def _within_bounds(h: int, w: int, size: int, area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3)) -> bool:
    """Is (h, w) round(sqrt(t * r)), round(sqrt(t / r)) for some area t and aspect r allowed?

    Rounding allows t*r in [(h-.5)^2, (h+.5)^2] and t/r in [(w-.5)^2, (w+.5)^2], so
    t in [(h-.5)(w-.5), (h+.5)(w+.5)] and r in [(h-.5)/(w+.5), (h+.5)/(w-.5)].
    """
    t_lo, t_hi = (h - 0.5) * (w - 0.5), (h + 0.5) * (w + 0.5)
    r_lo, r_hi = (h - 0.5) / (w + 0.5), (h + 0.5) / (w - 0.5)
    a_lo, a_hi = area[0] * size * size, area[1] * size * size
    return t_lo <= a_hi and t_hi >= a_lo and r_lo <= aspect[1] and r_hi >= aspect[0]


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
def test_random_erasing_p1_erases_one_rectangle_within_bounds(mode):
    size = 64
    img = torch.full((3, size, size), 7.0)  # no fill value (zeros, normal noise) can be 7
    erase = RandomErasing(1.0, mode)
    areas, aspects = [], []
    torch.manual_seed(0)
    for _ in range(200):
        out = erase(img)
        box = _erased_box(img, out)
        assert box is not None, "p=1 must erase (a fitting rectangle is drawn within 10 tries)"
        h, w = box
        assert _within_bounds(h, w, size), (h, w)
        areas.append(h * w / size**2)
        aspects.append(math.log(h / w))
        region = (out != img).any(dim=0)
        filled = out[:, region]
        if mode == "const":
            assert torch.equal(filled, torch.zeros_like(filled))
        elif mode == "rand":  # one value per channel
            assert torch.equal(filled, filled[:, :1].expand_as(filled))
    assert img.eq(7.0).all()  # the input is not modified in place
    # The draws span the range: small and large areas, tall and wide boxes.
    assert min(areas) < 0.06 and max(areas) > 0.25
    assert min(aspects) < math.log(0.5) and max(aspects) > math.log(2.0)


def test_random_erasing_p0_is_the_identity():
    img = torch.randn(1, 28, 28)
    erase = RandomErasing(0.0, "pixel")
    for _ in range(50):
        assert torch.equal(erase(img), img)


def test_random_erasing_rate_follows_p():
    img = torch.full((1, 32, 32), 7.0)
    erase = RandomErasing(0.25, "const")
    torch.manual_seed(1)
    hits = sum(_erased_box(img, erase(img)) is not None for _ in range(2000))
    assert abs(hits / 2000 - 0.25) < 0.04  # binomial sd ~0.01


def test_random_erasing_refuses_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        RandomErasing(0.5, "noise")
    with pytest.raises(ValueError, match="probability"):
        RandomErasing(1.5)
