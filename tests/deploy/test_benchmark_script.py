"""The benchmark harness: peers are the same architectures, runs alternate and are timed
as described, failures are reported, and the script writes its report and plot.
No timing figure is asserted: the script is the measurement."""

from __future__ import annotations

import re
import statistics

import pytest
import torch

import zoo
from zoo.deploy import benchmark as bm


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(bm.PEERS))
def test_peers_implement_the_same_architecture(name):
    """Equal parameter counts (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        ours = _params(zoo.create(name))
        for spec in bm.PEERS[name]:
            try:
                theirs = _params(bm.build_peer(spec))
            except bm.PeerUnavailable as err:
                pytest.skip(str(err))
            if spec.exact:
                assert theirs == ours, f"{spec.label}: {theirs} params vs zoo {ours}"
            else:  # channel rounding differs slightly
                assert abs(theirs - ours) / ours < 0.01, spec.label


def test_every_peer_maps_a_registered_model():
    assert set(bm.PEERS) <= set(zoo.list_models())
    libraries = {s.library for specs in bm.PEERS.values() for s in specs}
    assert libraries == {"torchvision", "timm", "pytorchcv"}


class _FakeClock:
    """A timer that advances by the cost of each call made through ``work``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float, log: list, label: str):
        def fn(_x):
            log.append(label)
            self.now += seconds

        return fn


def test_runs_alternate_rotate_and_take_medians():
    clock, log = _FakeClock(), []
    runners = [
        bm.Runner("a", "zoo", "eager", clock.work(2**-6, log, "a")),
        bm.Runner("b", "peer", "eager", clock.work(2**-5, log, "b")),
        bm.Runner("c", "peer", "eager", clock.work(2**-4, log, "c")),
    ]  # powers of two: the fake clock's sums are exact
    bm.time_runners(runners, torch.zeros(1), repeats=3, warmup=1, min_run_s=2**-4, timer=clock)
    warm, timed = log[:3], log[3:]
    assert warm == ["a", "b", "c"]
    # Iterations per run from the warm-up: min_run_s / cost -> 4, 2, 1 calls.
    blocks = ["a"] * 4, ["b"] * 2, ["c"]
    rep0 = blocks[0] + blocks[1] + blocks[2]
    rep1 = blocks[1] + blocks[2] + blocks[0]
    rep2 = blocks[2] + blocks[0] + blocks[1]
    assert timed == rep0 + rep1 + rep2
    assert [statistics.median(r.times) for r in runners] == [2**-6, 2**-5, 2**-4]
    assert bm.paired_ratio(runners[0].times, runners[1].times) == pytest.approx(2.0)


def test_paired_ratio_uses_the_same_repeat():
    # Load doubles both runs in repeat 2; pairing keeps the ratio at 2.
    zoo_t, peer_t = [1.0, 2.0, 1.0], [2.0, 4.0, 2.0]
    assert bm.paired_ratio(zoo_t, peer_t) == 2.0


def test_a_failing_runner_is_reported_not_raised():
    def boom(_x):
        raise RuntimeError("Compiler: cc not found\nlong trace")

    ok = bm.Runner("ok", "zoo", "eager", lambda x: x)
    bad = bm.Runner("bad", "zoo", "fused+compile", boom)
    bm.time_runners([ok, bad], torch.zeros(1), repeats=2, min_run_s=0.0)
    assert bad.error == "RuntimeError: Compiler: cc not found" and not bad.times
    assert len(ok.times) == 2


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
    text = bm.render_markdown(rows, {"threads": "1"})
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
    text = bm.render_markdown(rows, {"threads": "1"})
    row = next(ln for ln in text.splitlines() if ln.startswith("| xnor_shufflenet_v2_x0_5 | 1 |"))
    assert "tv:shufflenet_v2_x0_5" in row and row.count("x |") >= 2


def test_binary_kernel_section_reports_the_paper_layer_and_a_profile():
    lines = bm.binary_kernel_report(repeats=4)
    text = "\n".join(lines)
    assert "| N=1 C=256 14x14 k=3 |" in text and "62.3x" in text  # S = 64cN_W/(cN_W+64)
    for c, hw in ((64, 56), (128, 28), (512, 7)):
        assert f"| N=1 C={c} {hw}x{hw} k=3 |" in text
    assert "PackedBinaryConv2d" in text
    # 1 bit per weight against 32, less the padding of each filter to whole 64-bit words.
    ratio = float(re.search(r"\(([\d.]+)x smaller\)", text).group(1))
    assert 25 <= ratio <= 32
