"""The benchmark: what it times for a model (variants, peers, twins), the report it renders
and the script that writes report and plot. The peer table is tested in test_peers.py, the
harness in test_timing.py. No timing figure is asserted: the script is the measurement."""

from __future__ import annotations

import re

import pytest
import torch

from zoo.binary import kernels
from zoo.deploy import benchmark as bm
from zoo.deploy.kernel_report import engines_table
from zoo.deploy.report import render_markdown
from zoo.deploy.timing import Measurement


def test_compile_failure_shows_in_the_report(monkeypatch):
    def no_compiler(*_a, **_k):
        raise RuntimeError("InductorError: no working C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compiler)
    rows = bm.benchmark_model(
        "shufflenet_g1_x0_25",
        [1],
        fuse=True,
        compile=True,
        peers=[],
        input_size=(3, 64, 64),
        repeats=2,
        min_run_s=0.0,
    )
    failed = [m for m in rows if m.variant == "fused+compile"]
    assert failed and "no working C++ compiler" in failed[0].error
    text = render_markdown(rows, {"threads": "1"})
    assert "failed: RuntimeError: InductorError: no working C++ compiler" in text


def test_script_writes_report_and_plot(tmp_path, capsys):
    out, plot = tmp_path / "b.md", tmp_path / "b.png"
    rc = bm.main(
        [
            "--models", "shufflenet_g1_x0_25", "--batch-sizes", "1", "2", "--repeats", "2",
            "--warmup", "1", "--min-run-ms", "1", "--input-size", "224", "--threads", "1",
            "--fuse", "--binary", "no", "--out", str(out), "--plot", str(plot),
        ]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1 threads" in printed
    text = out.read_text()
    for needle in (
        "## Zoo vs peers, batch 1",
        "## Zoo vs peers, batch 2",
        "| shufflenet_g1_x0_25 |",
        "cv:shufflenet_g1_wd4 (≈)",
        "ratio eager",
        "fused",
        "## Targets",
    ):
        assert needle in text, needle
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_bad_arguments_fail_with_a_message(capsys):
    assert bm.main(["--models", "no_such_net*", "--out", "", "--plot", ""]) == 2
    assert "no zoo model matches" in capsys.readouterr().err
    assert bm.main(["--repeats", "0", "--out", "", "--plot", ""]) == 2


def test_zoo_cli_delegates_benchmark(tmp_path):
    from zoo.cli import main as zoo_main

    out = tmp_path / "b.md"
    rc = zoo_main(
        [
            "benchmark", "--models", "mobilenet_v1_x0_25", "--batch-sizes", "1",
            "--repeats", "1", "--warmup", "1", "--min-run-ms", "1", "--input-size", "64",
            "--no-peers", "--binary", "no", "--out", str(out), "--plot", "",
        ]
    )  # fmt: skip
    assert rc == 0 and "mobilenet_v1_x0_25" in out.read_text()


def test_packed_xnor_twin_is_timed_and_reported(tmp_path):
    """The xnor twin also runs on packed bits, reported against its float twin and peers."""
    rows = bm.benchmark_model(
        "shufflenet_v2_x0_5",
        [1],
        fuse=True,
        twins=["xnor_shufflenet_v2_x0_5"],
        input_size=(3, 64, 64),
        repeats=2,
        min_run_s=0.0,
    )
    packed = [m for m in rows if m.variant == "packed"]
    assert len(packed) == 1 and not packed[0].error and packed[0].times
    text = render_markdown(rows, {"threads": "1"})
    row = next(ln for ln in text.splitlines() if ln.startswith("| xnor_shufflenet_v2_x0_5 | 1 |"))
    assert "tv:shufflenet_v2_x0_5" in row and row.count("x |") >= 2


def test_binary_kernel_section_reports_the_paper_layer_and_a_profile():
    lines = bm.binary_kernel_report(repeats=4, engines=False)
    text = "\n".join(lines)
    if kernels.is_compiled():  # the peaks come from the C++ extension
        peak_rows = [ln for ln in lines if ln.startswith("| N=1 C=256 14x14 k=3 | 1 | ")]
        assert len(peak_rows) == 1  # the peak table's row of the paper's layer at 1 thread
        cells = [c.strip() for c in peak_rows[0].strip("|").split("|")]
        ceiling = float(cells[-1].rstrip("x"))  # peak Gbinop/s / float GMAC/s, recomputed:
        peak, float_gmacs = float(cells[3].replace(",", "")), float(cells[5])
        assert abs(ceiling - peak / float_gmacs) <= 0.05 * ceiling + 0.1
        assert "Against the machine's peak" in text
    assert "| N=1 C=256 14x14 k=3 |" in text and "62.3x" in text  # S = 64cN_W/(cN_W+64)
    for c, hw in ((64, 56), (128, 28), (512, 7)):
        assert f"| N=1 C={c} {hw}x{hw} k=3 |" in text
    assert "PackedBinaryConv2d" in text
    # 1 bit per weight against 32, less the padding of each filter to whole 64-bit words.
    ratio = float(re.search(r"\(([\d.]+)x smaller\)", text).group(1))
    assert 25 <= ratio <= 32


def test_engines_table_skips_absent_engines_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_LCE_VENV", str(tmp_path / "no-such-venv"))
    zoo_row = {"threads": 1, "xnor_ms": 0.1}
    text = "\n".join(engines_table([zoo_row], repeats=2))
    assert "- lce: skipped" in text and "make lce" in text


def test_threads_take_several_counts():
    parse = bm.build_parser().parse_args
    assert parse(["--threads", "1", "2"]).threads == [1, 2]
    assert parse(["--threads", "2"]).threads == [2]  # one count, as before
    assert parse([]).threads is None
    assert bm.main(["--threads", "1", "0", "--out", "", "--plot", ""]) == 2


def test_rows_carry_their_thread_count_and_threads_are_restored():
    rows = bm.benchmark_model(
        "shufflenet_g1_x0_25",
        [1],
        fuse=True,
        peers=[],
        input_size=(3, 64, 64),
        repeats=1,
        warmup=1,
        min_run_s=0.0,
        threads=[2, 1],
    )
    assert torch.get_num_threads() == 1  # the fixture's count, restored
    by_count = {t: [m.label for m in rows if m.threads == t] for t in (1, 2)}
    assert by_count[2] == by_count[1] == ["zoo", "zoo fused"]
    assert [m.threads for m in rows] == [2, 2, 1, 1]  # in the order asked
    with pytest.raises(ValueError, match="thread counts must be >= 1"):
        bm.benchmark_model("shufflenet_g1_x0_25", [1], peers=[], threads=[0])


def test_cli_with_two_thread_counts_reports_each(tmp_path, capsys):
    out, plot = tmp_path / "b.md", tmp_path / "b.png"
    rc = bm.main(
        [
            "--models", "shufflenet_g1_x0_25", "--batch-sizes", "1", "--repeats", "1",
            "--warmup", "1", "--min-run-ms", "1", "--input-size", "224", "--threads", "1", "2",
            "--fuse", "--binary", "no", "--out", str(out), "--plot", str(plot),
        ]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1, 2 threads" in printed and " t1 " in printed and " t2 " in printed
    text = out.read_text()
    assert "| 1, 2 |" in text  # the header's threads cell
    one, two = text.index("\n## 1 thread\n"), text.index("\n## 2 threads\n")
    targets = text.index("\n## Targets\n")
    assert one < two < targets
    for section in (text[one:two], text[two:targets]):  # every table, once per count
        assert section.count("### Zoo vs peers, batch 1") == 1
        assert section.count("### Inference options") == 1
        assert "| shufflenet_g1_x0_25 |" in section
    t1, t2 = text.index("### 1 thread", targets), text.index("### 2 threads", targets)
    for block in (text[t1:t2], text[t2:]):
        assert "- eager zoo >= 1.0x its peers' eager models" in block
        assert "- `zoo.fuse(model)` (default arguments) >= 1.8x" in block
        assert "  - shufflenet_v1: " in block  # the family line with its best peer ratio
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(model, label, kind, variant, batch, ms, threads=1, ratios=None):
    """A measurement with four identical repeats of ``ms`` (no spread) and given ratios."""
    m = Measurement(model, label, kind, variant, batch, 10**6, 0, [ms / 1e3] * 4)
    m.threads, m.ratios = threads, dict(ratios or {})
    return m


def test_targets_state_each_target_with_its_figure():
    rows = []
    for batch, packed_ms in ((1, 10.0), (32, 6.0)):  # 40 ms float: 4.0x at 1, 40/6 at 32
        rows += [
            _row("resnet18", "zoo", "zoo", "eager", batch, 40.0, ratios={"tv:resnet18": 0.95}),
            _row("resnet18", "zoo fused", "zoo", "fused", batch, 20.0,
                 ratios={"tv:resnet18": 1.9}),
            _row("resnet18", "xnor_resnet18 packed", "twin", "packed", batch, packed_ms),
        ]  # fmt: skip
    rows += [  # a small twin: 2.4x at batch 1 (target 2.5x), batch 32 not a target
        _row("mobilenet_v1", "zoo", "zoo", "eager", 1, 12.0, ratios={"timm:m": 1.1, "cv:m": 1.2}),
        _row("mobilenet_v1", "zoo fused", "zoo", "fused", 1, 8.0,
             ratios={"timm:m": 1.5, "cv:m": 1.7}),
        _row("mobilenet_v1", "zoo fused+cl", "zoo", "fused+cl", 1, 6.0, ratios={"timm:m": 2.0}),
        _row("mobilenet_v1", "xnor_mobilenet_v1 packed", "twin", "packed", 1, 5.0),
        _row("mobilenet_v1", "zoo", "zoo", "eager", 32, 100.0),
        _row("mobilenet_v1", "xnor_mobilenet_v1 packed", "twin", "packed", 32, 90.0),
        _row("mobilenet_v1", "zoo onnxruntime", "zoo", "onnxruntime", 1, 9.0,
             ratios={"timm:m": 1.3, "cv:m": 0.9}),
    ]  # fmt: skip
    rows += [_row(m.model, m.label, m.kind, m.variant, m.batch, m.ms, 2, m.ratios) for m in rows]
    text = render_markdown(rows, {"threads": "1, 2"})
    targets = text[text.index("## Targets") :]
    assert targets.count("### 1 thread\n") == 1 and targets.count("### 2 threads\n") == 1
    block = targets[: targets.index("### 2 threads")]
    # eager: 2 of 4 pairs >= 1.0 (the two resnet18 rows at 0.95 are below)
    assert "- eager zoo >= 1.0x its peers' eager models, every model: missed, 2/4 pairs" in block
    assert "  - below: resnet18 vs tv:resnet18 @ batch 1: 0.95x" in block
    # fuse default: resnet 1.9 (met), mobilenet_v1 best peer ratio 1.7 (missed), fused+cl 2.0
    assert "missed, 1/2 families" in block
    assert "  - resnet: met: best 1.90x (resnet18 vs tv:resnet18)" in block
    assert "  - mobilenet_v1: missed: best 1.70x (mobilenet_v1 vs cv:m), lowest 1.50x" in block
    assert "best fused option 2.00x (fused+cl, mobilenet_v1 vs timm:m)" in block
    # packed: 40/10 = 4.00x at 1, 40/6 = 6.67x at 32 against eager; 2.00x, 3.33x against fused
    assert "  - xnor_resnet18 @ batch 1: 4.00x resnet18 eager (target 6x): missed; 2.00x" in block
    assert "  - xnor_resnet18 @ batch 32: 6.67x resnet18 eager (target 6x): met; 3.33x" in block
    assert (
        "  - xnor_mobilenet_v1 @ batch 1: 2.40x mobilenet_v1 eager (target 2.5x): missed" in block
    )
    assert "xnor_mobilenet_v1 @ batch 32" not in block and "missed, 1/3" in block
    assert "baseline: the zoo's eager float model" in block
    # onnxruntime: faster than one peer of two
    assert "- onnxruntime faster than the peer's eager model: 1/2 (missed; lowest 0.90x" in block
