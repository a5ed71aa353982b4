"""``zoo compress``: writes a file whose size the printed table accounts for; clear errors."""

from __future__ import annotations

import json
import os

import torch

import zoo.compress as zc
from zoo.compress.cli import main


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
