"""zoo predict: top-k names and probabilities checked by hand, unreadable images, bad files."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import zoo
from zoo.train.predict import main, predict

pytestmark = pytest.mark.data


def _images(folder, n=3):
    return sorted((folder / "val" / "Sandal").glob("*.png"))[:n]


def test_topk_matches_hand_forward(trained_run, fm_split_folder):
    files = _images(fm_split_folder)
    res = predict(trained_run / "best.pt", files, topk=3, device="cpu")
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    model = zoo.create(ckpt["arch"], num_classes=10, in_chans=1)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    cfg = ckpt["data_cfg"]
    tf = T.Compose(
        [
            T.Resize(math.floor(32 / cfg["crop_pct"])),
            T.CenterCrop(32),
            T.ToTensor(),
            T.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    for f, r in zip(files, res, strict=True):
        with Image.open(f) as im, torch.no_grad():
            p = model(tf(im.convert("L"))[None])[0].softmax(0)
        top = p.argsort(descending=True)[:3].tolist()
        assert r["image"] == str(f)
        assert [n for n, _ in r["top"]] == [ckpt["class_names"][i] for i in top]
        assert [v for _, v in r["top"]] == pytest.approx(p[top].tolist(), abs=1e-6)


def test_cli_output_and_unreadable_image(trained_run, fm_split_folder, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    rgb = tmp_path / "color.jpg"  # an RGB image for a grayscale model is converted
    Image.new("RGB", (50, 40), (200, 30, 30)).save(rgb)
    good = _images(fm_split_folder, 1)[0]
    code = main(
        [str(trained_run / "best.pt"), str(good), str(bad), str(rgb), "-k", "2", "--device", "cpu"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert str(good) in out and str(rgb) in out and "  1. " in out and "  2. " in out
    assert "  3. " not in out and "%" in out
    assert "bad.png: unreadable image skipped" in err and "1 of 3 image(s)" in err


def test_folder_argument_and_bad_checkpoint(trained_run, fm_split_folder, tmp_path, capsys):
    res = predict(trained_run / "best.pt", [fm_split_folder / "val" / "Bag"], topk=1)
    assert len(res) == 8 and all(len(r["top"]) == 1 for r in res)
    (tmp_path / "x.pt").write_bytes(b"junk")
    assert main([str(tmp_path / "x.pt"), str(_images(fm_split_folder, 1)[0])]) == 2
    assert "is not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert main([str(trained_run / "best.pt"), str(tmp_path / "none.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
