"""``--model-ema`` and the float recipe options of ``zoo train``.

The EMA is checked against its closed form d^k w_0 + (1 - d) sum_i d^(k-i) w_i computed by
hand, a resumed EMA run against an uninterrupted one (equal tensors), and a tiny
Fashion-MNIST run with the whole recipe (EMA, padded crop, random erasing, a validation
split held out of the training images) end to end, through ``zoo publish``.
"""

from __future__ import annotations

import copy
import json
import shlex

import pytest
import torch
from torch import nn
from train_helpers import FAST, MODEL

import zoo
from zoo.data import FashionMNIST
from zoo.data.folder import stratified_split
from zoo.train import load_checkpoint, save_checkpoint
from zoo.train import run as run_mod
from zoo.train.data import load_datasets, train_transform
from zoo.train.distributed import DistInfo
from zoo.train.ema import ModelEma
from zoo.train.engine import train_one_epoch
from zoo.train.optim import create_scheduler
from zoo.train.publish import publish, recipe_command
from zoo.train.resume import plain_value


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def _closed_form(snapshots: list[dict[str, torch.Tensor]], d: float) -> dict[str, torch.Tensor]:
    """d^k w_0 + (1 - d) * sum_{i=1..k} d^(k-i) w_i per float entry, in float64; integer
    entries are the last snapshot's."""
    k = len(snapshots) - 1
    out = {}
    for name, w0 in snapshots[0].items():
        if not w0.is_floating_point():
            out[name] = snapshots[-1][name]
            continue
        acc = d**k * w0.double()
        for i in range(1, k + 1):
            acc = acc + (1 - d) * d ** (k - i) * snapshots[i][name].double()
        out[name] = acc
    return out


def _assert_close_to(ema_state, expected) -> None:
    for name, want in expected.items():
        got = ema_state[name]
        if want.is_floating_point():
            torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(got, want), name


def test_ema_after_k_steps_equals_the_closed_form():
    torch.manual_seed(0)
    model, d = _tiny(), 0.8
    ema = ModelEma(model, d)
    snaps = [copy.deepcopy(model.state_dict())]
    for step in range(6):  # arbitrary new weights and BN statistics at each step
        with torch.no_grad():
            for v in model.state_dict().values():
                v.copy_(torch.randn(v.shape) if v.is_floating_point() else v + step + 1)
        snaps.append(copy.deepcopy(model.state_dict()))
        ema.update(model)
    _assert_close_to(ema.state_dict(), _closed_form(snaps, d))
    assert not torch.allclose(ema.state_dict()["0.weight"], model.state_dict()["0.weight"])
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_train_one_epoch_updates_the_ema_once_per_optimizer_step():
    torch.manual_seed(1)
    model, d = _tiny(), 0.7
    ema = ModelEma(model, d)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = create_scheduler(opt, 5, 0, 0.01, 0.0)
    snaps = [copy.deepcopy(model.state_dict())]
    opt.register_step_post_hook(lambda *a: snaps.append(copy.deepcopy(model.state_dict())))
    loader = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(5)]
    train_one_epoch(
        model, loader, opt, sched, DistInfo(), nn.CrossEntropyLoss(), progress=False, ema=ema
    )
    assert len(snaps) == 6
    _assert_close_to(ema.state_dict(), _closed_form(snaps, d))


def _args(data, out, *extra):
    return run_mod.build_parser().parse_args(
        [
            MODEL,
            "--data",
            str(data),
            "--output",
            str(out),
            "--epochs",
            "2",
            "--train-subset",
            "96",
            "--lr",
            "0.05",
            "--seed",
            "5",
            "--model-ema",
            "--model-ema-decay",
            "0.9",
            "--crop-padding",
            "4",
            "--reprob",
            "0.25",
            *FAST,
            *extra,
        ]
    )


def _tensors(path, key):
    return load_checkpoint(path)[key]


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.data
def test_resume_continues_the_same_ema(fm_folder, tmp_path, monkeypatch):
    run_mod.train(_args(fm_folder, tmp_path / "ref"))
    ref = tmp_path / "ref" / "last.pt"
    assert not _same(_tensors(ref, "state_dict"), _tensors(ref, "state_dict_raw"))

    class Killed(Exception):
        pass

    def die_after_first(epoch, metrics):
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        run_mod.train(_args(fm_folder, tmp_path / "cut"), on_epoch_end=die_after_first)
    cut = tmp_path / "cut" / "last.pt"
    saved = load_checkpoint(cut)  # epoch 0, to replay with a broken restore below
    run_mod.train(_args(fm_folder, tmp_path / "cut", "--resume"))
    for key in ("state_dict", "state_dict_raw"):
        assert _same(_tensors(ref, key), _tensors(cut, key)), key

    # Teeth: a resume that does not restore the average (it restarts from the raw weights)
    # ends with other EMA tensors, while the raw weights still match.
    monkeypatch.setattr(ModelEma, "load_state_dict", lambda self, state, source: None)
    save_checkpoint(cut, saved)
    run_mod.train(_args(fm_folder, tmp_path / "cut", "--resume"))
    assert _same(_tensors(ref, "state_dict_raw"), _tensors(cut, "state_dict_raw"))
    assert not _same(_tensors(ref, "state_dict"), _tensors(cut, "state_dict"))


def test_recipe_transform_pads_then_erases_after_normalising():
    args = run_mod.build_parser().parse_args(
        [MODEL, "--dataset", "fashion-mnist", "--crop-padding", "4", "--random-erasing", "0.3"]
    )
    cfg = {"input_size": (1, 32, 32), "interpolation": "bilinear", "mean": (0.5,), "std": (0.5,)}
    names = [type(t).__name__ for t in train_transform(cfg, args).transforms]
    assert names.index("ToTensor") + 1 == names.index("PadRandomCrop")
    assert names.index("Normalize") < names.index("RandomErasing") == len(names) - 1
    assert args.reprob == 0.3 and args.remode == "pixel"
    plain = run_mod.build_parser().parse_args([MODEL, "--dataset", "fashion-mnist"])
    plain_names = [type(t).__name__ for t in train_transform(cfg, plain).transforms]
    assert "PadRandomCrop" not in plain_names and "RandomErasing" not in plain_names


@pytest.mark.data
def test_fashion_mnist_recipe_end_to_end(fm_root, tmp_path, weights_env):
    """The tiny Fashion-MNIST run with the recipe's flags: validation held out of the
    training images, the EMA evaluated beside the raw model, and the EMA weights shipped."""
    run = tmp_path / "run"
    args = run_mod.build_parser().parse_args(
        [
            MODEL,
            "--dataset",
            "fashion-mnist",
            "--dataset-root",
            str(fm_root),
            "--epochs",
            "1",
            "--train-subset",
            "256",
            "--val-subset",
            "64",
            "--val-split",
            "0.1",
            "--split-seed",
            "3",
            "--model-ema",
            "--crop-padding",
            "4",
            "--reprob",
            "0.25",
            "--output",
            str(run),
            *FAST,
        ]
    )
    result = run_mod.train(args)
    h = result["history"][0]
    assert h["train"]["count"] == 256 and h["val"]["count"] == 64 and h["val_ema"]["count"] == 64
    assert result["best_top1"] == h["val_ema"]["top1"]  # the EMA picks best.pt
    with open(run / "summary.csv") as f:
        header, row = f.read().splitlines()[:2]
    assert header.endswith("ema_val_loss,ema_val_top1")
    assert float(row.split(",")[-1]) == pytest.approx(h["val_ema"]["top1"], abs=1e-3)

    # The held-out images are training images: 600 per class, none in the training subset.
    train_base = FashionMNIST(fm_root, train=True)
    keep, held = stratified_split(train_base.targets.tolist(), 0.1, 3)
    assert len(held) == 6000 and not set(keep) & set(held)
    tr, va, _, desc = load_datasets(args, 1, DistInfo(), False)
    assert va.dataset.train and tr.dataset.train and "training images" in desc["val"]
    assert set(va.indices) <= set(held) and set(tr.indices) <= set(keep)

    ckpt = load_checkpoint(run / "last.pt")
    recipe = recipe_command(ckpt["args"])
    for flag in ("--model-ema", "--crop-padding 4", "--random-erasing 0.25", "--val-split 0.1"):
        assert flag in recipe, (flag, recipe)
    assert "--split-seed 3" in recipe
    again = vars(run_mod.build_parser().parse_args(shlex.split(recipe)[2:]))
    run_local = {"output", "resume", "no_progress", "rank_digest", "device", "dataset_root"}
    for key, value in ckpt["args"].items():
        if key not in run_local:
            assert plain_value(again[key]) == value, key

    path = publish(run / "last.pt", "fm", weights_env, progress=False)
    m = json.loads(path.read_text())
    assert "EMA weights, last epoch" in m["metrics"]["source"]
    shipped = zoo.create(MODEL, pretrained="fm").state_dict()
    assert _same(shipped, ckpt["state_dict"]) and not _same(shipped, ckpt["state_dict_raw"])


@pytest.mark.data
def test_publish_refuses_an_epoch_chosen_on_the_test_set(fm_root, tmp_path, weights_env):
    run = tmp_path / "run"
    common = ["--dataset", "fashion-mnist", "--dataset-root", str(fm_root), "--epochs", "1"]
    args = run_mod.build_parser().parse_args(
        [MODEL, *common, "--train-subset", "64", "--val-subset", "32", "-o", str(run), *FAST]
    )
    run_mod.train(args)
    ckpt = load_checkpoint(run / "best.pt")
    early = {**ckpt, "args": {**ckpt["args"], "epochs": 3}}  # as if epoch 1 of 3 was best
    save_checkpoint(tmp_path / "early.pt", early)
    with pytest.raises(ValueError, match="chosen on the Fashion-MNIST test set"):
        publish(tmp_path / "early.pt", "fm", weights_env, progress=False)
    assert not list(weights_env.iterdir())  # refused before anything was written
    held_out = {**early, "args": {**early["args"], "val_split": 0.1}}
    save_checkpoint(tmp_path / "held.pt", held_out)
    m = json.loads(publish(tmp_path / "held.pt", "fm", weights_env, progress=False).read_text())
    assert "epoch 1 of 3, chosen on --val-split 0.1" in m["metrics"]["source"]
