"""SafeImageFolder, splits and transforms: clear errors, skipped images, channel conversion."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from zoo.data import (
    ImageFolderError,
    SafeImageFolder,
    UnreadableImageWarning,
    build_transform,
    collate_skip_none,
    load_splits,
    resolve_data_cfg,
    stratified_split,
)


def _png(path, color=(10, 200, 30), mode="RGB", size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _folder(root, counts, mode="RGB"):
    for cls, n in counts.items():
        for i in range(n):
            _png(
                root / cls / f"{i}.png",
                mode=mode,
                color=(i * 20, 100, 50) if mode == "RGB" else i * 20,
            )
    return root


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass --data.*CLASS_NAME"):
        SafeImageFolder(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        SafeImageFolder(tmp_path / "file.png")


def test_empty_folder_and_loose_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="no class folders.*It is empty"):
        SafeImageFolder(tmp_path / "empty")
    _png(tmp_path / "loose" / "a.png")
    with pytest.raises(ImageFolderError, match="1 loose file.*one sub-folder per class"):
        SafeImageFolder(tmp_path / "loose")


def test_one_class_only(tmp_path):
    _folder(tmp_path, {"cat": 3})
    with pytest.raises(ImageFolderError, match=r"only 1 class folder \(cat\).*at least 2"):
        SafeImageFolder(tmp_path)
    assert len(SafeImageFolder(tmp_path, min_classes=1, progress=False)) == 3


def test_class_without_images(tmp_path):
    _folder(tmp_path, {"cat": 2, "dog": 0})
    (tmp_path / "dog").mkdir(exist_ok=True)
    (tmp_path / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(ImageFolderError, match="dog.*hold no readable image"):
        SafeImageFolder(tmp_path, progress=False)


def test_hidden_folders_ignored(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2, ".ipynb_checkpoints": 1})
    ds = SafeImageFolder(tmp_path, progress=False)
    assert ds.classes == ["a", "b"] and len(ds) == 4


def test_corrupt_and_truncated_images_skipped_and_counted(tmp_path):
    _folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "garbage.png").write_bytes(b"this is not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    (tmp_path / "b" / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.warns(UnreadableImageWarning, match="skipped 2 unreadable image"):
        ds = SafeImageFolder(tmp_path, progress=False)
    assert len(ds) == 6
    assert sorted(p.split("/")[-1] for p, _ in ds.skipped) == ["garbage.png", "truncated.png"]
    assert all(ds[i] is not None for i in range(len(ds)))


def test_unreadable_at_load_time_dropped_by_collate(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "z_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = SafeImageFolder(
        tmp_path, verify=False, progress=False, transform=lambda im: torch.zeros(1)
    )
    assert len(ds) == 5 and ds.skipped == []
    with pytest.warns(UnreadableImageWarning, match="z_bad.png"):
        batch = [ds[i] for i in range(len(ds))]
    assert batch[-1] is None
    x, y, dropped = collate_skip_none(batch)
    assert dropped == 1 and x.shape == (4, 1) and y.tolist() == [0, 0, 1, 1]


def test_channel_conversion(tmp_path):
    _folder(tmp_path / "gray", {"a": 1, "b": 1}, mode="L")
    rgb = SafeImageFolder(tmp_path / "gray", in_chans=3, progress=False)
    img, _ = rgb[1]
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (8, 8, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()

    _png(tmp_path / "color" / "a" / "0.png", color=(200, 100, 50))
    _png(tmp_path / "color" / "b" / "0.png", color=(0, 0, 255))
    gray = SafeImageFolder(tmp_path / "color", in_chans=1, progress=False)
    # ITU-R 601-2 luma, L = R*299/1000 + G*587/1000 + B*114/1000, as documented by Pillow.
    for i, (r, g, b) in enumerate([(200, 100, 50), (0, 0, 255)]):
        img, _ = gray[i]
        want = (r * 299 + g * 587 + b * 114) / 1000
        assert img.mode == "L" and abs(int(np.asarray(img)[0, 0]) - want) <= 1
    with pytest.raises(ValueError, match="in_chans must be 1"):
        SafeImageFolder(tmp_path / "color", in_chans=4, progress=False)


def test_stratified_split():
    targets = [0] * 10 + [1] * 5 + [2] * 1
    tr, va = stratified_split(targets, 0.2, seed=3)
    assert sorted(tr + va) == list(range(16)) and not set(tr) & set(va)
    per_class = [sum(targets[i] == c for i in va) for c in range(3)]
    assert per_class == [2, 1, 0]  # round(10*0.2), round(5*0.2), a single image stays in train
    assert stratified_split(targets, 0.2, seed=3) == (tr, va)
    assert any(stratified_split(targets, 0.2, seed=s)[1] != va for s in range(4, 10))
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(targets, 1.5, 0)


def test_load_splits_from_folders(tmp_path):
    _folder(tmp_path / "train", {"a": 3, "b": 3, "c": 3})
    _folder(tmp_path / "val", {"b": 2, "c": 1})  # val may miss a class; labels follow train's
    train, val, classes, info = load_splits(tmp_path, None, None, progress=False)
    assert classes == ["a", "b", "c"] and info["split"] == "folders"
    assert len(train) == 9 and sorted(val.targets) == [1, 1, 2]
    _folder(tmp_path / "val", {"zebra": 1})
    with pytest.raises(ImageFolderError, match="zebra.*same class folder names"):
        load_splits(tmp_path, None, None, progress=False)


def test_load_splits_seeded(tmp_path):
    _folder(tmp_path, {"a": 5, "b": 5})
    tf = build_transform(resolve_data_cfg({}, img_size=8, in_chans=3))
    train, val, classes, info = load_splits(
        tmp_path, None, tf, val_fraction=0.4, seed=1, progress=False
    )
    assert (len(train), len(val)) == (6, 4) and "seed=1" in info["split"]
    again = load_splits(tmp_path, None, tf, val_fraction=0.4, seed=1, progress=False)[1]
    assert again.indices == val.indices
    x, y = val[0]
    assert x.shape == (3, 8, 8) and isinstance(y, int)


def test_load_splits_val_without_train(tmp_path):
    _folder(tmp_path / "val", {"a": 1, "b": 1})
    with pytest.raises(ImageFolderError, match="no train/ folder"):
        load_splits(tmp_path, None, None, progress=False)


@pytest.mark.parametrize("size,crop_pct,interp", [(32, 0.875, "bilinear"), (40, 0.9, "bicubic")])
def test_eval_transform_matches_timm(size, crop_pct, interp):
    cfg = {
        "input_size": (3, 224, 224),
        "mean": (0.5, 0.4, 0.3),
        "std": (0.2, 0.25, 0.3),
        "crop_pct": crop_pct,
        "interpolation": interp,
    }
    ours = build_transform(resolve_data_cfg(cfg, img_size=size))
    ref = create_transform(
        (3, size, size),
        is_training=False,
        interpolation=interp,
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=crop_pct,
    )
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (57, 75, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(ours(img), ref(img), atol=1e-6)


def test_grayscale_cfg_averages_stats():
    cfg = resolve_data_cfg(
        {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}, img_size=16, in_chans=1
    )
    assert cfg["input_size"] == (1, 16, 16)
    assert cfg["mean"] == pytest.approx(((0.485 + 0.456 + 0.406) / 3,))
    x = build_transform(cfg)(Image.new("RGB", (20, 20), (255, 0, 0)))
    assert x.shape == (1, 16, 16)
    train_x = build_transform(cfg, train=True)(Image.new("L", (20, 20), 3))
    assert train_x.shape == (1, 16, 16)


def test_bgr_0_255_weights_config():
    # Some published weights (Megvii's ShuffleNet) take BGR pixels in 0..255 with no scaling.
    cfg = resolve_data_cfg(
        {
            "input_size": (3, 16, 16),
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "channel_order": "BGR",
            "value_range": (0.0, 255.0),
        }
    )
    img = Image.new("RGB", (20, 20), (200, 30, 7))
    want = torch.tensor([7.0, 30.0, 200.0])
    for x in (build_transform(cfg)(img), build_transform(cfg, train=True, scale_min=1.0)(img)):
        assert x.shape == (3, 16, 16)
        assert torch.allclose(x[:, 8, 8], want, atol=1e-3)
