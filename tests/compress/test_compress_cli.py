"""``zoo compress``: writes a file whose size the printed table accounts for; clear errors."""

from __future__ import annotations

import json
import os

import torch

import zoo
import zoo.compress as zc
from zoo.compress.cli import main
from zoo.train.checkpoint import save_checkpoint


def test_compress_and_inspect(tmp_path, capsys):
    out = tmp_path / "sq.zdc"
    rc = main(
        ["squeezenet1_1", "--sparsity", "0.6", "--bits", "5", "--num-classes", "10",
         "--in-chans", "1", "--out", str(out), "--json"]
    )  # fmt: skip
    assert rc == 0
    totals = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert totals["bytes"] == os.path.getsize(out)
    model = zc.load(out)
    w = model.features.fire2.expand3x3.weight
    assert torch.unique(w[w != 0]).numel() <= 32
    assert abs(float((w == 0).float().mean()) - 0.6) < 0.01
    assert main(["inspect", str(out), "--verify"]) == 0
    assert "decoded" in capsys.readouterr().out


def test_errors_name_the_fix(tmp_path, capsys):
    assert main(["mobilenet_v2", "--out", str(tmp_path / "x.zdc")]) == 2
    assert "--sparsity" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.zdc")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.zdc").exists()


def test_checkpoint_weights_are_what_gets_compressed(tmp_path, capsys):
    # the file's dense 6-bit weights must come from the checkpoint, not from a fresh init
    torch.manual_seed(1)
    trained = zoo.create("mobilenet_v1_x0_25", num_classes=4, in_chans=1)
    save_checkpoint(
        tmp_path / "c.pt",
        {"arch": "mobilenet_v1_x0_25", "num_classes": 4, "in_chans": 1,
         "class_names": list("abcd"), "state_dict": trained.state_dict(), "epoch": 1},
    )  # fmt: skip
    out = tmp_path / "c.zdc"
    argv = ["mobilenet_v1_x0_25", "--checkpoint", str(tmp_path / "c.pt"), "--sparsity", "0",
            "--bits", "8", "--out", str(out), "--seed", "5"]  # fmt: skip
    assert main(argv) == 0
    back = zc.load(out)
    assert (back.num_classes, back.in_chans) == (4, 1)
    for name in ("features.stem.conv.weight", "classifier.weight"):
        want, got = trained.state_dict()[name], back.state_dict()[name]
        # 8-bit weight sharing moves each weight far less than a different init would
        assert (got - want).abs().max() < (want.max() - want.min()) / 32, name
    bn = [k for k in trained.state_dict() if k.endswith("running_var")][0]
    assert torch.equal(back.state_dict()[bn], trained.state_dict()[bn])  # raw tensors exact
    assert main(["mobilenet_v1_x0_25", "--checkpoint", str(tmp_path / "no.pt"),
                 "--sparsity", "0.5", "--out", str(tmp_path / "n.zdc")]) == 2  # fmt: skip
    assert "no.pt" in capsys.readouterr().err
