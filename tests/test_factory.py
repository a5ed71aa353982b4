"""The one resolver: every spec (name, name.tag, weights file, checkpoint, 1-bit, .zdc) gives
the same, correct model and the same family of errors, from the API and from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.data.classes import class_dirname
from zoo.data.fashion_mnist import CLASSES
from zoo.pretrained.files import CHECKPOINT_FORMAT
from zoo.train import save_checkpoint
from zoo.train.distill import load_teacher

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
FLOAT = "shufflenet_g3.fashion_mnist"


@pytest.fixture(scope="module")
def float_model():
    return zoo.create(FLOAT).eval()


def _manifest(name: str) -> dict:
    return json.loads((WEIGHTS / f"{name}.json").read_text())


def test_a_tag_in_the_name_and_another_in_pretrained_conflict():
    with pytest.raises(zoo.ConflictingArgumentsError, match="drop pretrained="):
        zoo.create(FLOAT, pretrained="ptcv_in1k")
    # The same weights asked for twice, or pretrained=True, are no conflict.
    for same in ("fashion_mnist", FLOAT, True):
        assert zoo.create(FLOAT, pretrained=same).pretrained_cfg["tag"] == "fashion_mnist"


def test_a_model_file_with_pretrained_conflicts(tmp_path):
    path = tmp_path / "m.bin"
    zoo.save_binary(zoo.create("xnor_shufflenet_g3", num_classes=3), path)
    with pytest.raises(zoo.ConflictingArgumentsError, match="carries its weights"):
        zoo.create(path, pretrained=True)


@pytest.mark.parametrize(
    "how", [{"from_float": "fashion_mnist"}, {"pretrained": "shufflenet_g3.fashion_mnist"}]
)
def test_binary_twin_from_float_weights_keeps_their_head_and_input(float_model, how):
    manifest = _manifest(FLOAT)
    twin = zoo.create("bwn_shufflenet_g3", **how)
    assert (twin.in_chans, twin.num_classes) == (manifest["in_chans"], manifest["num_classes"])
    # The trained classifier (kept float) is the float model's, not a fresh one.
    assert torch.equal(twin.classifier.weight, float_model.classifier.weight)
    assert twin.default_cfg["architecture"] == "bwn_shufflenet_g3"
    assert twin.pretrained_cfg["tag"] == "fashion_mnist"


def test_binary_options_of_a_twin_from_float_weights_survive_a_checkpoint(tmp_path):
    """Options given with from_float= are recorded, so a training checkpoint (what `zoo
    train --model-kwargs` saves) rebuilds the same variant with the same outputs."""
    opts = {"shortcut": "bireal", "threshold": "learned", "activation": "rprelu"}
    twin = zoo.create("xnor_shufflenet_g3", from_float="fashion_mnist", **opts).eval()
    assert opts.items() <= twin.default_cfg["model_kwargs"].items()
    path = tmp_path / "last.pt"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,  # the fields zoo.train's checkpoints carry
            "arch": "xnor_shufflenet_g3",
            "state_dict": twin.state_dict(),
            "num_classes": twin.num_classes,
            "in_chans": twin.in_chans,
            "model_kwargs": twin.default_cfg["model_kwargs"],
        },
        path,
    )
    again = zoo.create(path).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), twin(x))


def test_binary_twin_prefers_its_own_weights():
    own = zoo.create("xnor_shufflenet_g3", pretrained="fashion_mnist")
    assert own.pretrained_cfg["weights"] == "xnor_shufflenet_g3.fashion_mnist"
    with pytest.raises(zoo.WeightsError, match="float model shufflenet_g3's are"):
        zoo.create("xnor_shufflenet_g3", pretrained="no_such_tag")


def test_load_binary_into_a_model_of_another_head(tmp_path):
    path = zoo.save_binary(zoo.create("xnor_shufflenet_g3", num_classes=10), tmp_path / "x.bin")
    with pytest.raises(zoo.StateDictMismatchError, match=r"classifier\.weight"):
        zoo.load_binary(path, zoo.create("shufflenet_g3"))


def test_truncated_files_are_corrupt_whatever_their_kind(tmp_path):
    one_bit = WEIGHTS / _manifest("xnor_shufflenet_g3.fashion_mnist")["files"][0]["file"]
    data = one_bit.read_bytes()
    for cut in (5, 9, 200, len(data) // 2):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(zoo.CorruptCheckpointError):
            zoo.create(bad)
        with pytest.raises(zoo.CorruptCheckpointError):
            zoo.create("xnor_shufflenet_g3", pretrained=bad)


def test_directories_are_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        zoo.create(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        zoo.create("shufflenet_g3", pretrained=str(tmp_path) + "/")
    run = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "predict", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0 and "is a directory" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_a_plain_state_dict_needs_its_architecture(tmp_path, float_model):
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in float_model.state_dict().items()}, str(path))
    with pytest.raises(zoo.WeightsError, match="names no architecture"):
        zoo.create(path)
    loaded = zoo.create("shufflenet_g3", pretrained=path, num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(loaded(x), float_model(x))


def _checkpoint(tmp_path, model, classes, **extra) -> Path:
    payload = {
        "arch": model.default_cfg["architecture"],
        "num_classes": model.num_classes,
        "in_chans": model.in_chans,
        "class_names": list(classes),
        "state_dict": model.state_dict(),
        **extra,
    }
    return save_checkpoint(tmp_path / "c.pt", payload)


def test_checkpoint_spec_takes_its_head_unless_told(tmp_path, float_model):
    path = _checkpoint(tmp_path, float_model, CLASSES)
    same = zoo.create(path).eval()
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(same(x), float_model(x))
    assert same.pretrained_cfg["categories"] == list(CLASSES)
    five = zoo.create(path, num_classes=5)  # fine-tuning: a fresh head, the rest loaded
    assert five.num_classes == 5
    body = [k for k in float_model.state_dict() if not k.startswith("classifier")]
    assert all(torch.equal(five.state_dict()[k], float_model.state_dict()[k]) for k in body)


def test_teacher_matches_sanitised_folder_names(float_model):
    # The folder `zoo dataset fashion-mnist` writes: class_dirname names, sorted.
    folders = sorted(class_dirname(c) for c in CLASSES)
    assert "T-shirt_top" in folders
    teacher = load_teacher(FLOAT, num_classes=10, in_chans=1, class_names=folders)
    # Independent mapping: each folder back to the class it was written from.
    order = [next(i for i, c in enumerate(CLASSES) if c.replace("/", "_") == f) for f in folders]
    x = torch.randn(3, 1, 64, 64)
    assert torch.equal(teacher(x), float_model(x)[:, order])
    assert not any(p.requires_grad for p in teacher.parameters())


def test_teacher_with_other_classes_is_refused():
    with pytest.raises(ValueError, match="not among the model's classes"):
        load_teacher(FLOAT, num_classes=2, in_chans=1, class_names=["cat", "dog"])
    with pytest.raises(ValueError, match="input channels"):
        load_teacher(FLOAT, num_classes=10, in_chans=3)


def test_features_only_for_a_binary_twin():
    model = zoo.create("xnor_shufflenet_g3", features_only=True, out_indices=(1, 2))
    feats = model(torch.randn(1, 3, 96, 96))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [96 // f.shape[-1] for f in feats] == model.feature_info.reduction()


def test_listing_api_at_top_level():
    assert zoo.is_model("xnor_shufflenet_g3") and not zoo.is_model("nope")
    names = zoo.list_models("shufflenet_g3*", exclude_filters=["*x0_*", "*x1_5"])
    assert names == ["shufflenet_g3", "shufflenet_g3_x2_0"]
    shipped = {p.name.removesuffix(".json") for p in WEIGHTS.glob("*.json")}
    assert set(zoo.list_pretrained()) == shipped
    assert zoo.list_pretrained("*fashion_mnist_kd") == ["xnor_shufflenet_v2_x1_0.fashion_mnist_kd"]
    cfg = zoo.get_pretrained_cfg(FLOAT)
    assert list(cfg["input_size"]) == _manifest(FLOAT)["preprocessing"]["input_size"]
    with pytest.raises(TypeError):
        zoo.list_models(None)


def test_count_of_a_tag_is_at_the_weights_input_size():
    c = zoo.count(FLOAT, fvcore=False)
    assert list(c.input_size) == _manifest(FLOAT)["preprocessing"]["input_size"]
    # At 64x64 a 224x224 model's MACs scale by (64/224)^2 except for the classifier.
    full = zoo.count("shufflenet_g3", fvcore=False)
    assert c.macs < full.macs * (64 / 224) ** 2 * 1.01
    with pytest.raises(ValueError, match="positive"):
        zoo.count("shufflenet_g3", input_size=0)
    with pytest.raises(TypeError, match="input_size"):
        zoo.count("shufflenet_g3", input_size="160")
    with pytest.raises(TypeError, match="nn.Module"):
        zoo.count(5)


def test_subpackages_load_lazily_and_import_zoo_is_light():
    code = (
        "import sys, zoo; "
        "assert 'zoo.compress' not in sys.modules and 'zoo.train' not in sys.modules; "
        "assert 'torchvision' not in sys.modules; "
        "assert callable(zoo.compress.save) and callable(zoo.train.fit); "
        "assert callable(zoo.binary.binarize) and callable(zoo.transforms)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_num_classes_zero_gives_pooled_features_of_the_weights():
    pooled = zoo.create(FLOAT, num_classes=0).eval()
    full = zoo.create(FLOAT).eval()
    x = torch.randn(2, 1, 64, 64)
    pooled_map = torch.nn.functional.adaptive_avg_pool2d(full.forward_features(x), 1)
    expected = torch.flatten(pooled_map, 1)
    assert torch.allclose(pooled(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match=">= 0"):
        zoo.create("shufflenet_g3", num_classes=-1)
