"""Model building of the train command: classifier replacement, default settings and
what ``--pretrained auto`` starts from."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from train_helpers import FAST, MODEL, REPO

import zoo
from zoo.binary import is_binary
from zoo.pretrained import OfflineError, manifests
from zoo.train import load_checkpoint
from zoo.train.args import build_train_parser, model_kwarg
from zoo.train.distributed import DistInfo
from zoo.train.model_setup import (
    PretrainedUnavailableError,
    build_model,
    default_in_chans,
    replace_classifier,
)
from zoo.train.optim import default_lr, default_weight_decay
from zoo.train.publish import recipe_command


def _nested_net() -> nn.Module:
    """No ``reset_classifier``: the classifier is a Linear two levels down."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Sequential(nn.Dropout(0.0), nn.Linear(4, 10)),
    )


def test_replace_classifier_by_dotted_name():
    torch.manual_seed(0)
    model = _nested_net()
    conv, old = model[0], model[3][1]
    replace_classifier(model, 3)
    new = model.get_submodule("3.1")
    assert isinstance(new, nn.Linear) and new is not old
    assert (new.in_features, new.out_features) == (4, 3)
    assert model[0] is conv  # the rest of the model is untouched
    x = torch.randn(2, 1, 8, 8)
    feats = model[2](model[1](model[0](x)))
    torch.testing.assert_close(model(x), feats @ new.weight.T + new.bias)


def test_replace_classifier_top_level_linear():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    replace_classifier(model, 7)
    assert model[1].out_features == 7 and model(torch.zeros(1, 1, 4, 4)).shape == (1, 7)


def test_replace_classifier_uses_reset_classifier():
    model = zoo.create(MODEL, num_classes=10, in_chans=1)
    replace_classifier(model, 4)
    assert model.get_classifier().out_features == 4
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_replace_classifier_without_linear_fails():
    with pytest.raises(ValueError, match="cannot find a classifier"):
        replace_classifier(nn.Sequential(nn.Conv2d(1, 2, 1)), 3)


def test_default_in_chans():
    assert default_in_chans(MODEL) == 3  # ImageNet models take RGB
    assert default_in_chans("tiny_models:tiny_net") == 3
    with pytest.raises(Exception, match="(?i)unknown model"):
        default_in_chans("no_such_net")


def test_documented_optimizer_defaults():
    # The values --lr and --weight-decay's help texts promise.
    assert default_lr("sgd", finetune=False) == 0.1
    assert default_lr("sgd", finetune=True) == 0.01
    assert default_lr("adamw", finetune=False) == default_lr("adamw", finetune=True) == 1e-3
    assert default_weight_decay("sgd") == 1e-4 and default_weight_decay("adamw") == 0.05


# ----------------------------------------------------------------------------- --pretrained auto


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """No network and an empty cache: URL weights cannot be had."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    manifests.clear_cache()
    yield
    manifests.clear_cache()


def test_auto_with_unavailable_weights_is_an_error(offline_env, capsys):
    # shufflenet_g3's default weights (ptcv_in1k) are a download: offline and uncached, a
    # fine-tune must not silently start from random weights.
    assert "ptcv_in1k" in manifests.list_tags("shufflenet_g3")
    with pytest.raises(PretrainedUnavailableError, match="--no-pretrained") as info:
        build_model("shufflenet_g3", 5, 1, "auto", DistInfo())
    assert "shufflenet_g3" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(OfflineError):  # an explicit request fails the same way
        build_model("shufflenet_g3", 5, 1, "true", DistInfo())
    # --no-pretrained (None) starts from scratch without asking for weights
    assert build_model("shufflenet_g3", 5, 1, None, DistInfo()).get_classifier().out_features == 5


def test_auto_without_registered_weights_starts_from_scratch(offline_env, capsys):
    model = build_model("tiny_models:linear_net", 5, 1, "auto", DistInfo())
    assert model[1].out_features == 5
    assert "random initialisation: no pretrained weights are registered" in capsys.readouterr().out


@pytest.mark.data
def test_finetune_cli_refuses_unavailable_auto_weights(offline_env, fm_split_folder, tmp_path):
    from zoo.train.finetune import main

    argv = ["shufflenet_g3", "--data", str(fm_split_folder), "--epochs", "1", *FAST]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 2
    assert not (tmp_path / "a").exists()  # nothing started, nothing left behind


@pytest.mark.data
def test_auto_loads_the_real_shipped_weights(fm_split_folder, tmp_path, monkeypatch):
    """``--pretrained auto`` (the fine-tuning default) starts from the shipped file itself:
    after a frozen-backbone epoch every backbone tensor still equals the file's, read with
    safetensors; only the classifier is new (3 classes, not 10)."""
    from zoo.train.finetune import finetune

    shipped = REPO / "weights" / "fashion_mnist" / "shufflenet_g3.safetensors"
    wdir = tmp_path / "weights"
    (wdir / "fashion_mnist").mkdir(parents=True)
    shutil.copy(shipped, wdir / "fashion_mnist" / shipped.name)
    manifest = json.loads((REPO / "weights" / "shufflenet_g3.fashion_mnist.json").read_text())
    manifest["default"] = True  # the only tag here, and the one ``auto`` picks
    (wdir / "shufflenet_g3.fashion_mnist.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    manifests.clear_cache()
    data = tmp_path / "three"
    for split in ("train", "val"):
        for c in ("Bag", "Coat", "Dress"):
            shutil.copytree(fm_split_folder / split / c, data / split / c)
    out = tmp_path / "run"
    try:
        finetune(
            ["shufflenet_g3", "--data", str(data), "--epochs", "1", "--freeze-epochs", "1",
             "--train-subset", "16", "--output", str(out), *FAST]  # fmt: skip
        )
    finally:
        manifests.clear_cache()
    want = load_file(shipped)
    got = load_checkpoint(out / "last.pt")["state_dict"]
    assert got.keys() == want.keys()
    head = {"classifier.weight", "classifier.bias"}
    for k in want.keys() - head:
        assert torch.equal(got[k], want[k]), k
    assert got["classifier.weight"].shape == (3, want["classifier.weight"].shape[1])
    assert want["classifier.weight"].shape[0] == 10


# --model-kwargs: builder options of the model (the binary building options among them).


def test_model_kwargs_parse_numbers_flags_and_option_names():
    assert model_kwarg("shortcut=bireal") == ("shortcut", "bireal")
    assert model_kwarg("downsample=none") == ("downsample", "none")  # an option, not None
    assert model_kwarg("width=2") == ("width", 2) and model_kwarg("p=0.5") == ("p", 0.5)
    assert model_kwarg("input_scale=true") == ("input_scale", True)
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        model_kwarg("bireal")


def test_model_kwargs_reach_the_model_and_the_recipe():
    opts = ["shortcut=bireal", "downsample=none", "threshold=learned", "activation=rprelu"]
    cmd = ["xnor_mobilenet_v1_x0_25", "--dataset", "fashion-mnist", "--model-kwargs", *opts]
    args = build_train_parser().parse_args(cmd)
    model = build_model(args.model, 10, 1, None, DistInfo(), dict(args.model_kwargs))
    keys = model.state_dict().keys()
    # Every binary layer gained the options' parameters (names of zoo.binary.options).
    binary = [n for n, m in model.named_modules() if is_binary(m)]
    assert binary and all(f"{n}.threshold" in keys and f"{n}.rprelu.slope" in keys for n in binary)
    recipe = recipe_command(vars(args))
    again = build_train_parser().parse_args(shlex.split(recipe)[2:])
    assert again.model_kwargs == args.model_kwargs and again.model == args.model
