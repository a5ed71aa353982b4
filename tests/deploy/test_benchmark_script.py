"""The benchmark: what it times for a model (variants, peers, twins), the report it renders
and the script that writes report and plot. The peer table is tested in test_peers.py, the
harness in test_timing.py. No timing figure is asserted: the script is the measurement."""

from __future__ import annotations

import re

import torch

from zoo.binary import kernels
from zoo.deploy import benchmark as bm
from zoo.deploy.kernel_report import engines_table
from zoo.deploy.report import render_markdown


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
