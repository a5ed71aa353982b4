"""``scripts/compress_experiments.py --quick``: the smoke run behind docs/compression.md
writes its results, docs and plots, and its figures agree with independent counts (torch's
FlopCounterMode, torchvision's SqueezeNet) and with the shipped weights' accuracy."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import zoo

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compress_experiments.py"
FM_ROOT = Path("/usr/share/datasets/fashion-mnist")


def _script():
    spec = importlib.util.spec_from_file_location("compress_experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~35 s on one core
@pytest.mark.data
def test_quick_mode_writes_results_docs_and_plots(tmp_path, monkeypatch):
    if not (FM_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist (make data)")
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # the fashion_mnist weights are shipped
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_WEIGHTS_DIR", raising=False)
    work, docs = tmp_path / "work", tmp_path / "docs"
    threads = torch.get_num_threads()
    try:
        rc = _script().main(["--quick", "--work-dir", str(work), "--docs", str(docs)])
    finally:
        torch.set_num_threads(threads)  # the script sets its own
    assert rc == 0
    results = json.loads((work / "results.json").read_text())
    for png in ("compression_lowrank_error", "compression_lowrank_accuracy", "compression_stages"):
        assert (docs / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (docs / "compression.md").read_text()
    assert "mobilenet_v1_x0_5" in text and "squeezenet1_0" in text

    # Deep Compression of SqueezeNet 1.0 (8 bits): every conv weight is counted, the file
    # decodes to the same weights, and the ratio is fp32 parameters over the file's bytes.
    sq = results["paper_sizes"]["squeezenet1_0_8"]
    tv = torchvision.models.squeezenet1_0()
    n_weights = sum(m.weight.numel() for m in tv.modules() if isinstance(m, torch.nn.Conv2d))
    assert sq["weights"] == n_weights == 1_244_448 and sq["round_trip_exact"]
    n_params = sum(p.numel() for p in tv.parameters())
    assert sq["ratio"] == pytest.approx(4 * n_params / sq["bytes"], rel=1e-9)

    fm = results["fashion_mnist"]["mobilenet_v1_x0_5"]
    model = zoo.create("mobilenet_v1_x0_5", num_classes=10, in_chans=1).eval()
    with FlopCounterMode(display=False) as flops:
        model(torch.zeros(1, 1, 64, 64))
    base = fm["lowrank"]["base"]
    assert base["params"] == sum(p.numel() for p in model.parameters())
    assert base["macs"] == flops.get_total_flops() // 2
    assert all(r["params"] < base["params"] for r in fm["lowrank"]["rows"])
    # the shipped weights score 92.1 % on all 10,000 test images; the quick run uses 1,000
    int8 = fm["int8"]
    assert int8["float_top1"] > 88.0
    assert abs(int8["int8_top1"] - int8["float_top1"]) < 2.0  # measured 0.6 points
    assert int8["int8_bytes"] < 0.35 * int8["float_bytes"]  # measured 0.29
