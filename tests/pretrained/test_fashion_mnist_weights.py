"""The zoo's own Fashion-MNIST weights: one model per family and its XNOR twin, shipped in
weights/, loaded offline, and as accurate on the real test images as their manifests say.

The accuracy is measured here with a plain torchvision transform built from the manifest's
preprocessing and an argmax loop, independently of zoo's transforms and evaluation code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader

import zoo
from zoo.data import FashionMNIST

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
FLOAT = ["squeezenet1_1", "mobilenet_v1_x0_5", "shufflenet_g3", "shufflenet_v2_x1_0"]
SHIPPED = FLOAT + [f"xnor_{n}" for n in FLOAT]
FM_ROOT = Path("/usr/share/datasets/fashion-mnist")


def _manifest(arch: str, tag: str = "fashion_mnist") -> dict:
    return json.loads((WEIGHTS / f"{arch}.{tag}.json").read_text())


@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_file_matches_its_manifest(arch, shipped_manifests):
    m = _manifest(arch)
    f = m["files"][0]
    data = (WEIGHTS / f["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
    assert f"{arch}.fashion_mnist" in zoo.list_models(pretrained=True)
    assert m["num_classes"] == 10 and m["in_chans"] == 1
    assert m["recipe"].startswith(f"zoo train {arch} --dataset fashion-mnist")
    assert m["training"]["seconds"] > 0 and m["categories"][0] == "T-shirt/top"
    if arch.startswith("xnor_"):
        assert zoo.binary.read_metadata(WEIGHTS / f["file"])["format"] == "zoo-binary-v1"
        twin = _manifest(arch.removeprefix("xnor_"))["files"][0]["size"]
        assert f["size"] < twin / 2  # packed signs, not float latent weights


def _accuracy(model: torch.nn.Module, prep: dict) -> float:
    size = prep["input_size"][-1]
    tf = T.Compose(
        [
            T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR),
            T.ToTensor(),
            T.Normalize(prep["mean"], prep["std"]),
        ]
    )
    loader = DataLoader(FashionMNIST(FM_ROOT, train=False, transform=tf), batch_size=500)
    correct = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / len(loader.dataset)


@pytest.mark.data
@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_model_scores_what_its_manifest_says(arch, shipped_manifests):
    if not (FM_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist (make data)")
    m = _manifest(arch)
    model = zoo.create(arch, pretrained="fashion_mnist").eval()  # offline: ZOO_OFFLINE=1
    assert (model.num_classes, model.in_chans) == (10, 1)
    top1 = _accuracy(model, m["preprocessing"])
    assert top1 == pytest.approx(m["metrics"]["top1"], abs=0.011)
    if not arch.startswith("xnor_"):
        assert top1 >= 92.0  # the bar for the float models
