"""Eval transforms agree with torchvision's and timm's for the same weights.

References: torchvision's ``ImageClassification`` (what ``Weights.transforms()`` returns),
timm's ``create_transform`` on the timm pretrained cfg, and a NumPy computation on a PIL
resize for the BGR / 0-255 convention.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.data.transforms import EvalTransform, resolve_data_config
from zoo.pretrained import data_config, transforms


def _image(width: int = 301, height: int = 257, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]  # some structure
    noise = rng.integers(0, 32, size=big.shape, dtype=np.uint8)
    return Image.fromarray(big // 2 + noise)


def test_matches_torchvision_weights_transforms(shipped_manifests):
    import torchvision

    checked = 0
    for m in shipped_manifests.values():
        if m.source != "torchvision":
            continue
        fn = m.source_arch.split(":")[1]
        weights = {w.url: w for w in torchvision.models.get_model_weights(fn)}[m.files[0].url]
        ref = weights.transforms()
        ours = transforms(m.name)
        for img in (_image(), _image(180, 400, seed=1)):
            assert torch.allclose(ours(img), ref(img), atol=1e-6), m.name
        checked += 1
    assert checked == 10


def test_matches_timm_create_transform(shipped_manifests):
    import timm
    from timm.data import create_transform

    checked = 0
    for m in shipped_manifests.values():
        if m.source != "timm":
            continue
        cfg = timm.models.get_pretrained_cfg(f"{m.source_arch.split(':')[1]}.{m.tag}")
        use_test = m.metrics["img_size"] != cfg.input_size[-1]
        ref = create_transform(
            input_size=cfg.test_input_size if use_test else cfg.input_size,
            interpolation=cfg.interpolation,
            mean=cfg.mean,
            std=cfg.std,
            crop_pct=(cfg.test_crop_pct or cfg.crop_pct) if use_test else cfg.crop_pct,
            is_training=False,
        )
        img = _image()
        assert torch.allclose(transforms(m.name)(img), ref(img), atol=1e-6), m.name
        checked += 1
    assert checked == 8


def test_bgr_0_255_against_numpy():
    cfg = {
        "input_size": (3, 32, 32),
        "resize_size": 40,
        "interpolation": "bilinear",
        "mean": (104.0, 117.0, 123.0),
        "std": (1.0, 1.0, 1.0),
        "channel_order": "BGR",
        "value_range": (0, 255),
    }
    img = _image(60, 50)
    out = EvalTransform(cfg)(img)
    resized = img.resize((48, 40), Image.BILINEAR)  # shorter side 50 -> 40, 60 -> 48
    left, top = (48 - 32) // 2, (40 - 32) // 2
    arr = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32)
    want = (arr[..., ::-1] - np.array([104.0, 117.0, 123.0], dtype=np.float32)).transpose(2, 0, 1)
    assert out.shape == (3, 32, 32)
    assert np.allclose(out.numpy(), want, atol=1e-3)


def test_grayscale_config_and_tensor_input():
    cfg = {"input_size": (1, 28, 28), "resize_size": 28, "mean": (0.2860,), "std": (0.3530,)}
    t = EvalTransform(cfg)
    out = t(_image(28, 28))
    want = (np.asarray(_image(28, 28).convert("L"), dtype=np.float32) / 255 - 0.2860) / 0.3530
    assert out.shape == (1, 28, 28) and np.allclose(out[0].numpy(), want, atol=1e-5)
    u8 = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    rgb = EvalTransform({"input_size": (3, 32, 32), "resize_size": 32})(u8)
    assert rgb.shape == (3, 32, 32) and rgb.dtype == torch.float32


def test_data_config_from_names_and_models(shipped_manifests):
    cfg = data_config("resnet18.a1_in1k")
    assert cfg["input_size"] == (3, 288, 288) and cfg["resize_size"] == 288
    assert cfg["interpolation"] == "bicubic"
    default = data_config("mobilenet_v2")  # default tag tv2_in1k: resize 232
    assert default["resize_size"] == 232 and default["crop_size"] == 224
    no_weights = data_config("squeezenet1_0_bypass_complex")
    assert no_weights["resize_size"] == 256 and no_weights["interpolation"] == "bilinear"
    model = zoo.create("squeezenet1_1")
    assert data_config(model)["input_size"] == (3, 224, 224)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.5,) * 3, "resize_size": 250}
    assert data_config(model)["mean"] == (0.5, 0.5, 0.5)
    assert transforms(model).resize_size == 250
    with pytest.raises(TypeError):
        data_config(42)


def test_resolve_data_config_errors():
    with pytest.raises(ValueError, match="need 3 values"):
        resolve_data_config({"mean": (0.5,)})
    with pytest.raises(ValueError, match="interpolation"):
        EvalTransform({"interpolation": "lanczos9"})
