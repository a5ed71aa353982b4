"""CPU runtimes for exported files: onnxruntime (and OpenVINO when installed) reproduce eager
PyTorch within 1e-4 for one model per family, as benchmark rows and as ``zoo export``'s
recommendation. No timing is asserted: which runtime wins is the benchmark's to measure."""

from __future__ import annotations

import re

import pytest
import torch

import zoo
from zoo.deploy import bench_plan, runtimes
from zoo.deploy import benchmark as bm
from zoo.deploy import export as export_module
from zoo.deploy.export import export_onnx
from zoo.deploy.report import render_markdown
from zoo.deploy.runtimes import OnnxRunner, Recommendation, missing_runtime
from zoo.deploy.timing import paired_ratio

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ATOL = 1e-4
FAMILIES = [
    "squeezenet1_1",
    "mobilenet_v1_x0_25",
    "mobilenet_v2",
    "shufflenet_g3_x0_25",
    "shufflenet_v2_x0_5",
    "resnet18",
]
RUNTIMES = [
    "onnxruntime",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(
            bool(missing_runtime("openvino")), reason="openvino is not installed"
        ),
    ),
]
NAMES = "PyTorch eager|zoo.fuse|onnxruntime|openvino"


def _model(name: str, randomize_norms) -> torch.nn.Module:
    return randomize_norms(zoo.create(name, num_classes=10)).eval()


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", FAMILIES)
def test_runtime_matches_eager(name, runtime, tmp_path, randomize_norms):
    model = _model(name, randomize_norms)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, input_size=64, check=False)  # dynamic batch
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    got = OnnxRunner(path, runtime)(x)
    assert got.shape == expected.shape == (3, 10)
    assert expected.abs().max() > 0.1  # a comparison of non-trivial outputs
    assert (got - expected).abs().max() < ATOL


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_g3_x0_25"])
def test_benchmark_runtime_runners_match_eager(name, randomize_norms):
    model = _model(name, randomize_norms)
    rts = [r for r in runtimes.RUNTIMES if not missing_runtime(r)]
    runners = bm.runtime_runners(model, rts, (2, 3, 64, 64))
    assert sorted(runners) == sorted(rts)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    for rt, run in runners.items():
        assert (run(x) - expected).abs().max() < ATOL, rt
        assert run.runtime == rt


def test_benchmark_rows_and_report_columns():
    rows = bm.benchmark_model(
        "squeezenet1_1",
        [1],
        fuse=False,
        runtimes=["onnxruntime"],
        input_size=(3, 64, 64),
        repeats=3,
        warmup=1,
        min_run_s=0.0,
    )
    ort_row = next(m for m in rows if m.variant == "onnxruntime")
    assert ort_row.label == "zoo onnxruntime" and not ort_row.error and len(ort_row.times) == 3
    peers = [m for m in rows if m.kind == "peer" and not m.error]
    assert peers, "squeezenet1_1 has a torchvision peer"
    assert ort_row.ratios[peers[0].label] == paired_ratio(ort_row.times, peers[0].times)
    text = render_markdown(rows, {"threads": "1"})
    assert "ratio onnxruntime" in text and "onnxruntime ms (x)" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| squeezenet1_1 | 1 |"))
    assert row.count("x)") == 2  # eager and onnxruntime, each with its speed-up
    wins = sum(r > 1.0 for r in ort_row.ratios.values())
    assert f"- onnxruntime faster than the peer's eager model: {wins}/{len(peers)}" in text


def test_benchmark_runner_in_the_timed_list_matches_eager():
    notes: list[str] = []
    runners = bm.runners_for(
        "mobilenet_v1_x0_25", ["eager", "onnxruntime"], [], [], (3, 64, 64), notes, batch=2
    )
    eager, ort_runner = runners
    assert ort_runner.variant == "onnxruntime" and not ort_runner.error and not notes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ort_runner.fn(x) - eager.fn(x)).abs().max() < ATOL


def test_absent_runtime_is_skipped_with_a_note(monkeypatch):
    def only_ort(name):
        return "openvino is not installed (pip install openvino)" if name == "openvino" else ""

    monkeypatch.setattr(bench_plan, "missing_runtime", only_ort)
    notes: list[str] = []
    rows = bm.benchmark_model(
        "mobilenet_v1_x0_25",
        [1],
        fuse=False,
        runtimes=["onnxruntime", "openvino"],
        peers=[],
        input_size=(3, 64, 64),
        repeats=1,
        warmup=1,
        min_run_s=0.0,
        notes=notes,
    )
    assert [m.variant for m in rows] == ["eager", "onnxruntime"]
    assert any("openvino" in n and "pip install openvino" in n for n in notes)
    with pytest.raises(ValueError, match="unknown runtime"):
        bm.benchmark_model("mobilenet_v1_x0_25", [1], runtimes=["tensorrt"], peers=[])


def test_benchmark_cli_takes_runtimes(tmp_path, capsys):
    out = tmp_path / "b.md"
    rc = bm.main(
        [
            "--models", "mobilenet_v1_x0_25", "--batch-sizes", "1", "--repeats", "1",
            "--warmup", "1", "--min-run-ms", "1", "--input-size", "64", "--binary", "no",
            "--runtimes", "onnxruntime", "--out", str(out), "--plot", "",
        ]
    )  # fmt: skip
    assert rc == 0
    assert "zoo onnxruntime" in capsys.readouterr().out
    assert "ratio onnxruntime" in out.read_text()
    assert bm.main(["--runtimes", "tensorrt", "--out", "", "--plot", ""]) == 2


def test_export_cli_recommends_a_runtime(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = export_module.main(["shufflenet_v2_x0_5", "--onnx", str(out), "--input-size", "64"])
    printed = capsys.readouterr().out
    assert rc == 0 and out.exists()
    line = next(ln for ln in printed.splitlines() if ln.startswith("fastest here:"))
    assert re.match(rf"fastest here: ({NAMES}) ", line)
    assert "alternating runs, 1 thread(s), load" in line and "onnxruntime" in line
    ms = {k: float(v) for k, v in re.findall(rf"({NAMES}) ([0-9.]+) ms", line)}
    verdict = re.match(rf"fastest here: ({NAMES})", line).group(1)
    assert ms[verdict] == min(ms.values())  # the printed medians agree with the verdict


def test_export_cli_no_recommend_skips_the_timing(tmp_path, capsys, monkeypatch):
    def fail(*_a, **_k):
        raise AssertionError("recommend must not run with --no-recommend")

    monkeypatch.setattr(export_module, "recommend", fail)
    out = tmp_path / "m.onnx"
    rc = export_module.main(
        ["mobilenet_v1_x0_25", "--onnx", str(out), "--input-size", "64", "--no-recommend"]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and out.exists() and "max abs diff" in printed
    assert "fastest here" not in printed


def test_recommendation_without_openvino_notes_it(tmp_path, monkeypatch):
    real = runtimes.missing_runtime
    monkeypatch.setattr(
        runtimes, "missing_runtime", lambda n: "not installed" if n == "openvino" else real(n)
    )
    res = export_onnx(
        "squeezenet1_1", tmp_path / "s.onnx", input_size=64, num_classes=10, recommend=True
    )
    rec = res.recommendation
    assert rec is not None and set(rec.times) == {"PyTorch eager", "zoo.fuse", "onnxruntime"}
    assert rec.fastest == min(rec.times, key=rec.times.get)
    assert rec.speedup == pytest.approx(rec.times["PyTorch eager"] / rec.times[rec.fastest])
    assert any(n.startswith("openvino skipped") for n in rec.notes)


def test_recommendation_line_names_the_fastest_and_the_ratio():
    times = {"PyTorch eager": 3.8, "onnxruntime": 2.0}
    rec = Recommendation("onnxruntime", 1.9, times, 5, 0.8, threads=2)
    assert rec.line() == (
        "fastest here: onnxruntime 1.90x PyTorch eager (medians of 5 alternating runs, "
        "2 thread(s), load 0.8; PyTorch eager 3.80 ms, onnxruntime 2.00 ms)"
    )
    rec = Recommendation("PyTorch eager", 1.0, {"PyTorch eager": 3.8}, 5, 0.8)
    assert rec.line().startswith("fastest here: PyTorch eager (the others are slower)")
