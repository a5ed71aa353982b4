"""zoo validate: metrics checked against an evaluation written out by hand, CSV rows, errors."""

from __future__ import annotations

import csv
import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

import zoo
from zoo.train.validate import RESULT_FIELDS, main, validate

pytestmark = pytest.mark.data
CLASSES3 = ["Bag", "Coat", "T-shirt_top"]


@pytest.fixture(scope="module")
def three_classes(fm_split_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("val3")
    for c in CLASSES3:
        shutil.copytree(fm_split_folder / "val" / c, out / c)
    return out


def _by_hand(ckpt_path, folder):
    """Top-1/top-5/loss from torch.load, zoo.create and torchvision ops, file by file."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = zoo.create(ckpt["arch"], num_classes=ckpt["num_classes"], in_chans=ckpt["in_chans"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    cfg = ckpt["data_cfg"]
    size = cfg["input_size"][-1]
    tf = T.Compose(
        [
            T.Resize(math.floor(size / cfg["crop_pct"])),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    names = [n.replace("/", "_") for n in ckpt["class_names"]]
    top1 = top5 = loss = n = 0
    for cls_dir in sorted(folder.iterdir()):
        y = names.index(cls_dir.name)
        for f in sorted(cls_dir.glob("*.png")):
            with Image.open(f) as im:
                x = tf(im.convert("L"))[None]
            with torch.no_grad():
                logits = model(x)[0]
            order = logits.argsort(descending=True).tolist()
            top1 += order[0] == y
            top5 += y in order[:5]
            loss += F.cross_entropy(logits[None], torch.tensor([y])).item()
            n += 1
    return 100 * top1 / n, 100 * top5 / n, loss / n, n


def test_metrics_match_hand_evaluation(trained_run, three_classes):
    # Three of the ten classes: labels must be mapped by name to the checkpoint's indices.
    row = validate(str(trained_run / "best.pt"), three_classes, workers=0, progress=False)
    top1, top5, loss, n = _by_hand(trained_run / "best.pt", three_classes)
    assert row["count"] == n == 24
    assert row["top1"] == pytest.approx(top1, abs=1e-3)
    assert row["top5"] == pytest.approx(top5, abs=1e-3)
    assert row["loss"] == pytest.approx(loss, abs=1e-4)
    assert row["top1_err"] == pytest.approx(100 - row["top1"])
    assert row["img_size"] == 32 and row["images_per_sec"] > 0


def test_results_csv_rows(trained_run, fm_split_folder, tmp_path, capsys):
    csv_path = tmp_path / "results.csv"
    args = [
        str(trained_run / "best.pt"),
        "--data",
        str(fm_split_folder),
        "--workers",
        "0",
        "--no-progress",
        "--results-file",
        str(csv_path),
    ]
    assert main(args) == 0
    assert main([*args[:1], str(trained_run / "last.pt"), *args[1:]]) == 0
    with open(csv_path) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    # timm's results-imagenet.csv columns come first, in timm's order.
    assert reader.fieldnames[:9] == [
        "model",
        "top1",
        "top1_err",
        "top5",
        "top5_err",
        "param_count",
        "img_size",
        "crop_pct",
        "interpolation",
    ]
    assert reader.fieldnames == RESULT_FIELDS
    assert [r["model"] for r in rows] == ["mobilenet_v1_x0_25"] * 3
    assert [r["weights"].rsplit("/", 1)[-1] for r in rows] == ["best.pt", "best.pt", "last.pt"]
    assert all(r["count"] == "80" for r in rows)  # DIR/val picked automatically
    m = zoo.create("mobilenet_v1_x0_25", num_classes=10, in_chans=1)
    assert float(rows[0]["param_count"]) == pytest.approx(
        sum(p.numel() for p in m.parameters()) / 1e6, abs=1e-3
    )
    out = capsys.readouterr().out
    assert "mobilenet_v1_x0_25: top1" in out and "img/s" in out


def test_wrong_checkpoint_for_model(trained_run, fm_split_folder, capsys):
    code = main(
        [
            "mobilenet_v1_x0_5",
            "--checkpoint",
            str(trained_run / "best.pt"),
            "--data",
            str(fm_split_folder),
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit MobileNetV1" in err
    assert re.search(r"shape mismatches \(\d+\): features\.stem\.conv\.weight", err), err


def test_bad_folders(trained_run, tmp_path, capsys):
    ckpt = str(trained_run / "best.pt")
    assert main([ckpt, "--data", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "zebra").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "zebra" / "0.png")
    assert main([ckpt, "--data", str(tmp_path), "--no-progress", "--workers", "0"]) == 2
    assert "zebra are not among the model's classes" in capsys.readouterr().err


def test_corrupt_image_counted(trained_run, three_classes, tmp_path):
    shutil.copytree(three_classes, tmp_path / "v")
    (tmp_path / "v" / "Bag" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        row = validate(str(trained_run / "best.pt"), tmp_path / "v", workers=0, progress=False)
    assert row["skipped"] == 1 and row["count"] == 24


def test_named_model_without_weights(three_classes):
    row = validate(
        "mobilenet_v1_x0_25", three_classes, in_chans=1, img_size=32, workers=0, progress=False
    )
    assert row["weights"] == "random-init" and row["count"] == 24 and 0 <= row["top1"] <= 100


def test_validate_models_collects_and_skips(monkeypatch, tmp_path, capsys):
    from zoo.train import validate as val_mod

    def fake(arch, data, **kw):
        if arch == "alexnet":
            raise RuntimeError("weights not cached")
        return {"top1": 70.0, "top5": 90.0, "loss": 1.0, "count": 5, "images_per_sec": 1.0}

    monkeypatch.setattr(val_mod, "validate", fake)
    res = val_mod.validate_models(["alexnet", "mobilenet_v2"], tmp_path, device="cpu")
    assert res == {
        "mobilenet_v2": {"top1": 70.0, "top5": 90.0, "loss": 1.0, "count": 5, "images_per_sec": 1.0}
    }
    assert "skipped alexnet: RuntimeError: weights not cached" in capsys.readouterr().err


def test_train_folder_without_val_is_explained(trained_run, fm_split_folder, tmp_path, capsys):
    shutil.copytree(fm_split_folder / "train", tmp_path / "d" / "train")
    assert main([str(trained_run / "best.pt"), "--data", str(tmp_path / "d"), "--no-progress"]) == 2
    assert "no val/ folder; pass --split train" in capsys.readouterr().err


@pytest.mark.data
def test_shipped_weights_validate_by_class_name(fm_folder, monkeypatch, tmp_path):
    """`zoo validate NAME --pretrained fashion_mnist`: the weights' head (10 classes, 1
    channel) and class names; folders sort alphabetically ('Ankle boot' first), so only a
    mapping by name scores the model's real accuracy on these 320 test images."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # the weights are shipped in weights/
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    monkeypatch.delenv("ZOO_WEIGHTS_DIR", raising=False)
    row = validate("shufflenet_v2_x1_0", fm_folder, pretrained="fashion_mnist", progress=False)
    assert row["count"] == 320 and row["param_count"] == pytest.approx(1.263, abs=1e-3)
    assert row["top1"] > 85.0  # 92.1 on the whole test set; 10 % if classes were mismatched
