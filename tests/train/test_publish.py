"""``zoo publish``: a training run becomes a shipped weight set that ``zoo.create`` loads.

Checked against what the run itself holds: the published model gives the checkpoint's
logits, the manifest's hash is the file's, and its recipe parses back to the run's options.
"""

from __future__ import annotations

import hashlib
import json
import shlex

import pytest
import torch
from train_helpers import FAST, MODEL

import zoo
from zoo.pretrained import manifests
from zoo.train import load_checkpoint, model_from_checkpoint
from zoo.train import run as run_mod
from zoo.train.publish import main as publish_main
from zoo.train.publish import publish, recipe_command
from zoo.train.resume import plain_value


def _same_logits(a, b, size=32):
    x = torch.randn(4, 1, size, size)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


def test_published_run_loads_by_tag_with_its_head(trained_run, weights_env):
    path = publish(trained_run / "last.pt", "toyset", weights_env, progress=False)
    m = json.loads(path.read_text())
    f = m["files"][0]
    data = (weights_env / f["file"]).read_bytes()
    assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["size"] == len(data)
    ckpt_model, ckpt = model_from_checkpoint(trained_run / "last.pt")
    model = zoo.create(MODEL, pretrained="toyset")  # head and channels from the manifest
    assert (model.num_classes, model.in_chans) == (10, 1)
    assert _same_logits(model, ckpt_model)
    assert m["categories"] == ckpt["class_names"]
    assert m["metrics"]["top1"] == round(ckpt["metrics"]["val"]["top1"], 2)
    assert m["training"]["epochs"] == 2 and m["training"]["seconds"] > 0
    assert f"{MODEL}.toyset" in zoo.list_models(pretrained=True)


def test_first_weights_of_an_arch_become_its_default(trained_run, weights_env):
    first = json.loads(
        publish(trained_run / "last.pt", "first", weights_env, progress=False).read_text()
    )
    second = json.loads(
        publish(trained_run / "last.pt", "second", weights_env, progress=False).read_text()
    )
    again = json.loads(
        publish(trained_run / "last.pt", "first", weights_env, progress=False, force=True)
        .read_text()
    )
    assert first.get("default") is True and "default" not in second
    assert again.get("default") is True  # re-publishing a tag keeps its place
    manifests.clear_cache()
    assert manifests.list_tags(MODEL) == ["first", "second"]


def test_publishing_a_tag_twice_is_refused_without_force(trained_run, weights_env, capsys):
    manifest = publish(trained_run / "best.pt", "toyset", weights_env, progress=False)
    shipped = weights_env / "toyset" / f"{MODEL}.safetensors"
    before = (manifest.read_bytes(), shipped.read_bytes())
    assert publish_main([str(trained_run / "last.pt"), "--tag", "toyset", "--weights-dir",
                         str(weights_env), "--no-progress"]) == 2  # fmt: skip
    captured = capsys.readouterr()
    assert f"{MODEL}.toyset is already published" in captured.out + captured.err
    assert (manifest.read_bytes(), shipped.read_bytes()) == before  # nothing replaced
    with pytest.raises(ValueError, match="pass --force"):
        publish(trained_run / "last.pt", "toyset", weights_env, progress=False)
    publish(trained_run / "last.pt", "toyset", weights_env, progress=False, force=True)
    ckpt_model, _ = model_from_checkpoint(trained_run / "last.pt")
    manifests.clear_cache()
    assert _same_logits(zoo.create(MODEL, pretrained="toyset"), ckpt_model)


def test_recipe_parses_back_to_the_run_options(trained_run):
    ckpt = load_checkpoint(trained_run / "last.pt")
    cmd = recipe_command(ckpt["args"], "finetune")
    assert cmd.startswith(f"zoo finetune {MODEL} ")
    from zoo.train.finetune import build_parser

    again = vars(build_parser().parse_args(shlex.split(cmd)[2:]))
    run_local = {"output", "resume", "no_progress", "rank_digest", "device", "dataset_root"}
    for key, value in ckpt["args"].items():
        if key not in run_local:
            assert plain_value(again[key]) == value, key


@pytest.mark.data
def test_binary_fashion_mnist_run_ships_one_bit_and_its_test_accuracy(
    fm_root, tmp_path, weights_env
):
    run = tmp_path / "run"
    args = run_mod.build_parser().parse_args(
        [
            "xnor_" + MODEL,
            "--dataset",
            "fashion-mnist",
            "--dataset-root",
            str(fm_root),
            "--epochs",
            "1",
            "--train-subset",
            "256",
            "--val-subset",
            "10000",
            "--output",
            str(run),
            *FAST,
        ]  # fmt: skip
    )
    run_mod.train(args)
    path = publish(run / "last.pt", "fm", weights_env, progress=False)
    m = json.loads(path.read_text())
    shipped = weights_env / m["files"][0]["file"]
    assert zoo.binary.read_metadata(shipped)["format"] == "zoo-binary-v1"
    float_bytes = sum(
        t.numel() * 4 for t in load_checkpoint(run / "last.pt")["state_dict"].values()
    )
    assert shipped.stat().st_size * 4 < float_bytes
    ckpt_model, ckpt = model_from_checkpoint(run / "last.pt")
    model = zoo.create("xnor_" + MODEL, pretrained="fm")
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ckpt_model(x))  # bit-exact through the 1-bit file
    # The test accuracy is measured anew on all 10,000 test images through the shipped file;
    # the run validated on the same images with the same transform.
    assert m["metrics"]["dataset"] == "fashion-mnist-test"
    assert m["metrics"]["top1"] == pytest.approx(ckpt["metrics"]["val"]["top1"], abs=0.011)


def test_bad_tag_and_missing_checkpoint_are_clear(tmp_path, capsys):
    assert publish_main([str(tmp_path / "none.pt"), "--tag", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="plain name"):
        publish(tmp_path / "none.pt", "a.b")


def test_published_weights_serve_as_a_distillation_teacher(trained_run, weights_env):
    """``--teacher arch.tag`` finds the head of the zoo's own weights (10 classes, not 1000)
    and checks the class names it recorded."""
    from zoo.train.distill import load_teacher

    publish(trained_run / "last.pt", "toyset", weights_env, progress=False)
    classes = load_checkpoint(trained_run / "last.pt")["class_names"]
    teacher = load_teacher(f"{MODEL}.toyset", 10, 1, classes)
    ckpt_model, _ = model_from_checkpoint(trained_run / "last.pt")
    assert _same_logits(teacher, ckpt_model)
    assert teacher.pretrained_cfg["categories"] == classes
    # Classes matched by name: the data's order may differ, the teacher's logits follow it.
    flipped = load_teacher(f"{MODEL}.toyset", 10, 1, list(reversed(classes)))
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(flipped(x), ckpt_model.eval()(x).flip(1), atol=1e-5)
    with pytest.raises(ValueError, match="same classes"):
        load_teacher(f"{MODEL}.toyset", 10, 1, [*classes[:-1], "zebra"])
