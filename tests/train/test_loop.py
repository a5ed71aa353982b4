"""Training engine: schedule, metrics, exact resume, frozen backbone, Fashion-MNIST runs."""

from __future__ import annotations

import csv
import importlib
import re
import shutil

import pytest
import torch
from train_helpers import FAST, MODEL, REPO

import zoo
from zoo.data import FashionMNIST
from zoo.train import load_checkpoint, resume, save_checkpoint
from zoo.train import run as run_mod
from zoo.train.engine import topk_correct
from zoo.train.finetune import finetune
from zoo.train.optim import create_optimizer, create_scheduler


def _lrs(sched, opt, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("total,warmup,factor,min_f", [(20, 4, 0.1, 0.0), (15, 0, 0.01, 0.05)])
def test_cosine_warmup_matches_torch_schedulers(total, warmup, factor, min_f):
    p = torch.nn.Parameter(torch.zeros(1))
    ours_opt = torch.optim.SGD([p], lr=0.5)
    ours = _lrs(create_scheduler(ours_opt, total, warmup, factor, min_f), ours_opt, total + 1)
    # torch's own schedulers chained: LinearLR warm-up, then CosineAnnealingLR to eta_min.
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(
        ref_opt, T_max=total - warmup, eta_min=0.5 * min_f
    )
    if warmup:
        lin = torch.optim.lr_scheduler.LinearLR(ref_opt, factor, 1.0, total_iters=warmup)
        sched = torch.optim.lr_scheduler.SequentialLR(ref_opt, [lin, cos], milestones=[warmup])
    else:
        sched = cos
    ref = _lrs(sched, ref_opt, total + 1)
    assert ours == pytest.approx(ref, abs=1e-9)
    assert ours[0] == pytest.approx(0.5 * (factor if warmup else 1.0))
    assert ours[-1] == pytest.approx(0.5 * min_f, abs=1e-12)


def test_topk_correct_against_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g)
    y = torch.randint(0, 7, (50,), generator=g)
    for k in (1, 3, 5):
        want = sum(
            int(y[i]) in sorted(range(7), key=lambda c: -logits[i, c])[:k] for i in range(50)
        )
        assert topk_correct(logits, y, (k,)) == [want]
    assert topk_correct(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), (5,)) == [4]  # k > classes


def test_weight_decay_skips_biases_and_norms():
    m = zoo.create(MODEL, num_classes=3, in_chans=1)
    opt = create_optimizer(m, "adamw", 1e-3, 0.05)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in m.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name
    assert opt.param_groups[1]["weight_decay"] == 0.0


def _state(path):
    return load_checkpoint(path)["state_dict"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _train_args(data, out, *extra):
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
            "128",
            "--lr",
            "0.05",
            "--seed",
            "7",
            *FAST,
            *extra,
        ]
    )


@pytest.mark.data
def test_resume_reproduces_uninterrupted_run(fm_folder, tmp_path, monkeypatch):
    ref = run_mod.train(_train_args(fm_folder, tmp_path / "ref"))
    assert [h["epoch"] for h in ref["history"]] == [0, 1]

    class Killed(Exception):
        pass

    def die_after_first(epoch, metrics):
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        run_mod.train(_train_args(fm_folder, tmp_path / "cut"), on_epoch_end=die_after_first)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["next_epoch"] == 1
    resumed = run_mod.train(_train_args(fm_folder, tmp_path / "cut", "--resume"))
    assert [h["epoch"] for h in resumed["history"]] == [1]
    _assert_same(_state(tmp_path / "ref" / "last.pt"), _state(tmp_path / "cut" / "last.pt"))
    timeless = [
        {k: v for k, v in h["val"].items() if k not in ("seconds", "images_per_sec")}
        for h in (resumed["history"][-1], ref["history"][-1])
    ]
    assert timeless[0] == timeless[1]
    with open(tmp_path / "cut" / "summary.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]

    # The check has teeth: resuming without the saved RNG state draws other augmentations.
    monkeypatch.setattr(resume, "set_rng_state", lambda state: torch.manual_seed(123))
    save_checkpoint(
        tmp_path / "cut" / "last.pt",
        {**load_checkpoint(tmp_path / "cut" / "last.pt"), "next_epoch": 1},
    )
    with pytest.raises(Killed):  # rewind to the end of epoch 0 by re-running it
        run_mod.train(_train_args(fm_folder, tmp_path / "cut2"), on_epoch_end=die_after_first)
    run_mod.train(_train_args(fm_folder, tmp_path / "cut2", "--resume"))
    a, b = _state(tmp_path / "ref" / "last.pt"), _state(tmp_path / "cut2" / "last.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.data
def test_resume_refuses_other_model(fm_folder, tmp_path, trained_run):
    args = run_mod.build_parser().parse_args(
        [
            "mobilenet_v1_x0_5",
            "--data",
            str(fm_folder),
            "--output",
            str(tmp_path),
            "--resume",
            str(trained_run / "last.pt"),
            *FAST,
        ]
    )
    assert run_mod.run_cli(args, "train") == 2


@pytest.mark.data
def test_frozen_backbone_then_unfreeze(fm_split_folder, tmp_path):
    # Start from a checkpoint with another head (4 classes): the head is replaced for 10.
    init = zoo.create(MODEL, num_classes=4, in_chans=1)
    save_checkpoint(
        tmp_path / "init.pt",
        {"arch": MODEL, "num_classes": 4, "in_chans": 1, "state_dict": init.state_dict()},
    )
    common = [
        MODEL,
        "--data",
        str(fm_split_folder),
        "--pretrained",
        str(tmp_path / "init.pt"),
        "--freeze-epochs",
        "1",
        "--train-subset",
        "96",
        "--lr",
        "0.01",
        *FAST,
    ]
    finetune([*common, "--epochs", "1", "--output", str(tmp_path / "frozen")])
    after = _state(tmp_path / "frozen" / "last.pt")
    before = init.state_dict()
    assert after["classifier.weight"].shape == (10, before["classifier.weight"].shape[1])
    for k, v in before.items():
        if not k.startswith("classifier."):
            assert torch.equal(after[k], v), f"{k} changed while the backbone was frozen"

    finetune([*common, "--epochs", "2", "--output", str(tmp_path / "thawed")])
    with open(tmp_path / "thawed" / "summary.csv") as f:
        assert [r["frozen"] for r in csv.DictReader(f)] == ["1", "0"]
    thawed = _state(tmp_path / "thawed" / "last.pt")
    key = "features.stem.conv.weight"
    assert key in thawed and not torch.equal(thawed[key], before[key])


@pytest.mark.data
def test_best_and_last_checkpoints(trained_run):
    with open(trained_run / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    tops = [float(r["val_top1"]) for r in rows]
    best, last = load_checkpoint(trained_run / "best.pt"), load_checkpoint(trained_run / "last.pt")
    assert last["epoch"] == 1 and best["epoch"] == tops.index(max(tops))
    assert best["best_top1"] == pytest.approx(max(tops), abs=1e-3)
    assert best["class_names"] == sorted(best["class_names"]) and len(best["class_names"]) == 10
    assert best["data_cfg"]["input_size"] == [1, 32, 32]


@pytest.mark.data
def test_pipeline_learns_fashion_mnist(fm_split_folder, tmp_path):
    # Logistic regression on the pixels reaches well above chance (10%) in 3 short epochs
    # only if images, labels and class folders line up through the whole pipeline.
    result = finetune(
        [
            "tiny_models:linear_net",
            "--data",
            str(fm_split_folder),
            "--epochs",
            "3",
            "--lr",
            "1e-3",
            "--no-aug",
            "--output",
            str(tmp_path),
            *FAST,
        ]
    )
    assert result["best_top1"] > 40.0
    assert load_checkpoint(tmp_path / "best.pt")["arch"] == "tiny_models:linear_net"


@pytest.mark.data
def test_train_on_fashion_mnist_dataset(fm_root, tmp_path, capsys):
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
            "128",
            "--val-subset",
            "64",
            "--output",
            str(tmp_path),
            *FAST,
        ]
    )
    result = run_mod.train(args)
    h = result["history"][0]
    assert h["train"]["count"] == 128 and h["val"]["count"] == 64  # drop_last: 4 full batches
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["class_names"][0] == "T-shirt/top" and ckpt["args"]["dataset"] == "fashion-mnist"
    # From scratch, the images are normalised with the training set's own statistics (not
    # ImageNet's) and evaluated uncropped: the objects fill the 28x28 frame.
    pixels = FashionMNIST(fm_root, train=True).data.double() / 255
    cfg = ckpt["data_cfg"]
    assert cfg["mean"][0] == pytest.approx(pixels.mean().item(), abs=5e-4)
    assert cfg["std"][0] == pytest.approx(pixels.std().item(), abs=5e-4)
    assert cfg["crop_pct"] == 1.0
    out = capsys.readouterr().out
    assert "epoch 1/1: train loss" in out and "best val top1" in out


def test_bad_inputs_give_exit_code_2(tmp_path, capsys):
    (tmp_path / "one" / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "one" / "cat" / "a.png")
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path / "one")], "only 1 class folder"),
    ]
    for data, msg in cases:
        code = finetune_main([MODEL, "--data", *data, "--output", str(tmp_path / "o"), *FAST])
        assert code == 2
        assert msg in capsys.readouterr().err
    assert finetune_main(["no_such_net", "--data", str(tmp_path / "one"), *FAST]) == 2
    assert "unknown model" in capsys.readouterr().err


def finetune_main(argv):
    from zoo.train.finetune import main

    return main(argv)


@pytest.mark.data
def test_distillation_from_teacher_checkpoint(fm_split_folder, tmp_path, capsys):
    # A pixel-linear model (no BatchNorm, no dropout) distilled from itself with alpha=1: the
    # loss is 0 and the gradient vanishes, so plain SGD leaves the weights where they were.
    # With alpha=0.5 the label term is back and the weights move.
    base = [
        *FAST,
        "--data",
        str(fm_split_folder),
        "--no-aug",
        "--train-subset",
        "64",
        "--opt",
        "sgd",
        "--lr",
        "0.1",
        "--weight-decay",
        "0",
        "--epochs",
        "1",
    ]
    finetune(["tiny_models:linear_net", *base, "--output", str(tmp_path / "t")])
    teacher = str(tmp_path / "t" / "best.pt")
    t_w = _state(teacher)["1.weight"]
    kd = ["tiny_models:linear_net", *base, "--pretrained", teacher, "--teacher", teacher]
    res = finetune([*kd, "--kd-alpha", "1.0", "--output", str(tmp_path / "kd1")])
    assert res["history"][0]["train"]["loss"] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(_state(tmp_path / "kd1" / "last.pt")["1.weight"], t_w, atol=1e-6)
    res = finetune(
        [*kd, "--kd-alpha", "0.5", "--kd-temperature", "2", "--output", str(tmp_path / "kd2")]
    )
    assert res["history"][0]["train"]["loss"] > 0.1
    assert (_state(tmp_path / "kd2" / "last.pt")["1.weight"] - t_w).abs().max() > 1e-3
    # Classes are matched by name: data with three of the teacher's classes distils from
    # those three logits; a class the teacher never saw is refused with a clear message.
    three = tmp_path / "three"
    for c in ("Bag", "Coat", "Dress"):
        shutil.copytree(fm_split_folder / "train" / c, three / c)
    three_kd = [*base, "--teacher", teacher, "--data", str(three)]
    code = finetune_main(["tiny_models:linear_net", *three_kd, "--output", str(tmp_path / "x")])
    assert code == 0
    shutil.copytree(fm_split_folder / "train" / "Bag", three / "Zebra")
    code = finetune_main(["tiny_models:linear_net", *three_kd, "--output", str(tmp_path / "y")])
    assert code == 2
    assert "not among the model's classes" in capsys.readouterr().err


@pytest.mark.data
def test_unreadable_images_skipped_and_counted(fm_split_folder, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(fm_split_folder, data)
    (data / "train" / "Bag" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (data / "val" / "Coat" / "zz_empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable image"):
        res = finetune(
            [
                "tiny_models:linear_net",
                "--data",
                str(data),
                "--epochs",
                "1",
                "--train-subset",
                "32",
                "--output",
                str(tmp_path / "o"),
                *FAST,
            ]
        )
    assert sorted(p.split("/")[-1] for p, _ in res["skipped_images"]) == [
        "zz_corrupt.png",
        "zz_empty.png",
    ]
    assert "2 unreadable image(s) skipped" in capsys.readouterr().out


def test_parsers_and_scripts():
    from zoo.train import finetune as ft
    from zoo.train import predict, validate

    helps = {m.__name__: m.build_parser().format_help() for m in (run_mod, ft, validate, predict)}
    assert "--resume" in helps["zoo.train.run"] and "--label-smoothing" in helps["zoo.train.run"]
    assert "--freeze-epochs" not in helps["zoo.train.run"]
    assert (
        "--freeze-epochs" in helps["zoo.train.finetune"]
        and "--kd-alpha" in helps["zoo.train.finetune"]
    )
    assert (
        "--results-file" in helps["zoo.train.validate"] and "--topk" in helps["zoo.train.predict"]
    )
    # Each script runs the same ``main`` as its ``zoo`` subcommand, whichever path it imports.
    for name, command in [
        ("train", run_mod),
        ("finetune", ft),
        ("validate", validate),
        ("predict", predict),
    ]:
        text = (REPO / "scripts" / f"{name}.py").read_text()
        found = re.search(r"^from (zoo\.train\.\w+) import main\b", text, re.M)
        assert found, f"scripts/{name}.py does not import a zoo.train main"
        assert importlib.import_module(found.group(1)).main is command.main, name
