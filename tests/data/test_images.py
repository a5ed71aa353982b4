"""The one image-loading path: 16-bit, 32-bit and float images scaled by their type's range,
EXIF orientation applied, transparency flattened, the same pixels in every reader.

References are computed with numpy from the arrays the files were written from, never with
zoo's loader.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

import zoo
from zoo.data import SafeImageFolder, build_transform
from zoo.data.images import load_image
from zoo.train.predict import predict

GRADIENT16 = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64 + 7).astype(np.uint16)


def _8bit(a: np.ndarray, full_scale: float) -> np.ndarray:
    """Independent reference: values mapped from [0, full_scale] to 0..255, rounded."""
    return np.clip(np.rint(a.astype(np.float64) * 255.0 / full_scale), 0, 255).astype(np.uint8)


def _sixteen_bit_images() -> dict[str, Image.Image]:
    a = GRADIENT16
    return {
        "I;16": Image.fromarray(a),
        "I;16B": Image.frombytes("I;16B", (32, 32), a.astype(">u2").tobytes()),
        "I": Image.fromarray(a.astype(np.int32)),
    }


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_scaled_not_clipped(mode):
    """convert("L") clips every pixel above 255 to white; the loader divides by 257."""
    img = _sixteen_bit_images()[mode]
    assert img.mode == mode
    out = np.asarray(load_image(img, "L"))
    np.testing.assert_array_equal(out, _8bit(GRADIENT16, 65535))
    assert len(np.unique(out)) > 200  # a gradient, not two levels


def test_sixteen_bit_png_file_in_every_mode(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(GRADIENT16).save(path)
    ref = _8bit(GRADIENT16, 65535)
    np.testing.assert_array_equal(np.asarray(load_image(path, "L")), ref)
    rgb = np.asarray(load_image(str(path), "RGB"))
    assert rgb.shape == (32, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], ref)


def test_int32_outside_sixteen_bits_uses_the_int32_range():
    a = np.array([[-(2**31), -1], [2**31 - 1, 2**30]], dtype=np.int32)
    out = np.asarray(load_image(Image.fromarray(a), "L"))
    ref = np.rint((a.astype(np.float64) + 2**31) * 255 / (2**32 - 1)).astype(np.uint8)
    np.testing.assert_array_equal(out, ref)


def test_float_image_is_zero_to_one():
    a = np.linspace(-0.5, 1.5, 64, dtype=np.float32).reshape(8, 8)
    out = np.asarray(load_image(Image.fromarray(a, "F"), "L"))
    np.testing.assert_array_equal(out, _8bit(np.clip(a, 0, 1), 1.0))


def _asymmetric_rgb() -> np.ndarray:
    a = np.zeros((4, 6, 3), np.uint8)  # 4 rows, 6 columns: a rotation changes the shape
    a[0, 0] = (255, 0, 0)
    a[3, 5] = (0, 0, 255)
    a[1:3, 2] = (0, 255, 0)
    return a


@pytest.mark.parametrize(
    "orientation, reference",
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # EXIF 6: shown turned 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
def test_exif_orientation_applied(tmp_path, orientation, reference):
    a = _asymmetric_rgb()
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    img.save(path, exif=exif.tobytes())
    out = np.asarray(load_image(path, "RGB"))
    np.testing.assert_array_equal(out, reference(a))
    again = np.asarray(load_image(load_image(path, "RGB"), "RGB"))
    np.testing.assert_array_equal(again, reference(a))  # turned once, not twice


def test_transparency_over_white():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, hidden where transparent
    rgba[..., 3] = [[0, 128, 255], [255, 64, 0]]
    out = np.asarray(load_image(Image.fromarray(rgba, "RGBA"), "RGB")).astype(int)
    alpha = rgba[..., 3:].astype(np.float64) / 255
    ref = rgba[..., :3] * alpha + 255 * (1 - alpha)
    assert np.abs(out - ref).max() <= 1  # alpha_composite rounds in 8 bits
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    gray = np.asarray(load_image(la, "L")).astype(int)
    assert np.abs(gray - ref[..., 0]).max() <= 1


def test_palette_with_transparent_colour_and_cmyk():
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    out = np.asarray(load_image(pal, "RGB"))
    np.testing.assert_array_equal(out, [[[255, 255, 255], [10, 20, 30]]])
    white = Image.new("CMYK", (1, 1), (0, 0, 0, 0))
    black = Image.new("CMYK", (1, 1), (0, 0, 0, 255))
    assert np.asarray(load_image(white, "RGB")).tolist() == [[[255, 255, 255]]]
    assert np.asarray(load_image(black, "L")).tolist() == [[0]]


def test_mode_must_be_what_a_model_reads():
    with pytest.raises(ValueError, match="L, RGB"):
        load_image(Image.new("L", (2, 2)), "RGBA")


def _reference_tensor(mean: float = 0.5, std: float = 0.25) -> torch.Tensor:
    x = torch.from_numpy(_8bit(GRADIENT16, 65535)).float().div(255)[None]
    return (x - mean) / std


def test_every_reader_sees_the_scaled_pixels(tmp_path):
    """SafeImageFolder (train/validate), the train transform and zoo.transforms' PIL path."""
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(GRADIENT16).save(tmp_path / cls / "0.png")
    cfg = {"input_size": (1, 32, 32), "crop_pct": 1.0, "mean": (0.5,), "std": (0.25,)}
    eval_tf = build_transform(cfg)
    ds = SafeImageFolder(tmp_path, transform=eval_tf, in_chans=1, progress=False)
    ref = _reference_tensor()
    torch.testing.assert_close(ds[0][0], ref, atol=1e-6, rtol=0)
    train_tf = build_transform(
        dict(cfg, interpolation="bilinear"), train=True, scale_min=1.0, hflip=0.0
    )
    torch.testing.assert_close(train_tf(Image.fromarray(GRADIENT16)), ref, atol=1e-6, rtol=0)
    model_cfg = {"input_size": [1, 32, 32], "crop_pct": 1.0, "mean": [0.5], "std": [0.25]}
    tf = zoo.data.create_eval_transform(model_cfg)
    torch.testing.assert_close(tf(Image.fromarray(GRADIENT16)), ref, atol=1e-6, rtol=0)


def test_predict_reads_a_sixteen_bit_png_as_its_8_bit_twin(tmp_path, monkeypatch):
    """`zoo predict` with shipped weights: the 16-bit file and its 8-bit version (written
    from the numpy reference) get the same probabilities."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_WEIGHTS_DIR", raising=False)
    a16 = (np.outer(np.hanning(28), np.hanning(28)) * 60000).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "a16.png")
    Image.fromarray(_8bit(a16, 65535)).save(tmp_path / "a8.png")
    rows = predict(
        "squeezenet1_1.fashion_mnist", [tmp_path / "a16.png", tmp_path / "a8.png"], device="cpu"
    )
    assert rows[0]["top"] == rows[1]["top"]
    # convert("L") would make the 16-bit file a white square; the 8-bit one is a soft blob
    white = tmp_path / "white.png"
    Image.new("L", (28, 28), 255).save(white)
    assert predict("squeezenet1_1.fashion_mnist", [white], device="cpu")[0]["top"] != rows[0]["top"]


def test_hwc_tensor_refused_with_the_layout_expected():
    tf = zoo.data.create_eval_transform({"input_size": [3, 8, 8], "crop_pct": 1.0})
    hwc = torch.randint(0, 256, (10, 12, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"CHW.*\(10, 12, 3\).*HWC.*permute\(2, 0, 1\)"):
        tf(hwc)
    chw = hwc.permute(2, 0, 1)
    ref = TF.normalize(
        TF.center_crop(TF.resize(chw, 8, antialias=True), 8).float() / 255,
        list(tf.mean),
        list(tf.std),
    )
    torch.testing.assert_close(tf(chw), ref, atol=1e-5, rtol=0)
