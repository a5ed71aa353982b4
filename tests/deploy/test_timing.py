"""The timing harness (zoo.deploy.timing): runs alternate and are timed as described, ratios
are paired, failures are reported. No timing figure of a real model is asserted."""

from __future__ import annotations

import statistics

import pytest
import torch

from zoo.deploy import timing


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
        timing.Runner("a", "zoo", "eager", clock.work(2**-6, log, "a")),
        timing.Runner("b", "peer", "eager", clock.work(2**-5, log, "b")),
        timing.Runner("c", "peer", "eager", clock.work(2**-4, log, "c")),
    ]  # powers of two: the fake clock's sums are exact
    timing.time_runners(runners, torch.zeros(1), repeats=3, warmup=1, min_run_s=2**-4, timer=clock)
    warm, timed = log[:3], log[3:]
    assert warm == ["a", "b", "c"]
    # Iterations per run from the warm-up: min_run_s / cost -> 4, 2, 1 calls.
    blocks = ["a"] * 4, ["b"] * 2, ["c"]
    rep0 = blocks[0] + blocks[1] + blocks[2]
    rep1 = blocks[1] + blocks[2] + blocks[0]
    rep2 = blocks[2] + blocks[0] + blocks[1]
    assert timed == rep0 + rep1 + rep2
    assert [statistics.median(r.times) for r in runners] == [2**-6, 2**-5, 2**-4]
    assert timing.paired_ratio(runners[0].times, runners[1].times) == pytest.approx(2.0)


def test_paired_ratio_uses_the_same_repeat():
    # Load doubles both runs in repeat 2; pairing keeps the ratio at 2.
    zoo_t, peer_t = [1.0, 2.0, 1.0], [2.0, 4.0, 2.0]
    assert timing.paired_ratio(zoo_t, peer_t) == 2.0


def test_a_failing_runner_is_reported_not_raised():
    def boom(_x):
        raise RuntimeError("Compiler: cc not found\nlong trace")

    ok = timing.Runner("ok", "zoo", "eager", lambda x: x)
    bad = timing.Runner("bad", "zoo", "fused+compile", boom)
    timing.time_runners([ok, bad], torch.zeros(1), repeats=2, min_run_s=0.0)
    assert bad.error == "RuntimeError: Compiler: cc not found" and not bad.times
    assert len(ok.times) == 2


def test_channels_last_runners_get_a_channels_last_input():
    seen = {}
    plain = timing.Runner("p", "zoo", "eager", lambda x: seen.setdefault("p", x))
    cl = timing.Runner("c", "zoo", "eager+cl", lambda x: seen.setdefault("c", x), True)
    timing.time_runners([plain, cl], torch.randn(2, 3, 4, 5), repeats=1, min_run_s=0.0)
    assert seen["p"].is_contiguous()
    assert seen["c"].is_contiguous(memory_format=torch.channels_last)
    assert not seen["c"].is_contiguous()


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timing.time_runners([], torch.zeros(1), repeats=0)


def test_measurement_statistics_by_hand():
    # median of 1..4 ms is 2.5 ms; batch 4 -> 1600 img/s; 1e6 MACs per image -> 1.6 GMAC/s.
    m = timing.Measurement("m", "zoo", "zoo", "eager", 4, 10**6, 0, [0.001, 0.002, 0.003, 0.004])
    assert m.ms == pytest.approx(2.5)
    assert m.images_s == pytest.approx(1600.0)
    assert m.gmacs == pytest.approx(1.6)
    # statistics.quantiles (exclusive method) on 1..4 ms: q1 = 1.25, q3 = 3.75 -> IQR 2.5 ms.
    assert m.spread == pytest.approx(2.5 / 2.5)
    empty = timing.Measurement("m", "zoo", "zoo", "eager", 1, 0, 0, [])
    assert empty.ms != empty.ms and empty.spread != empty.spread  # NaN


def test_short_error_keeps_type_and_first_line():
    assert timing.short_error(ValueError("first\nsecond")) == "ValueError: first"
    assert timing.short_error(KeyError()) == "KeyError: "
    assert len(timing.short_error(RuntimeError("x" * 500))) == len("RuntimeError: ") + 160


def test_machine_info_names_torch_and_threads():
    info = timing.machine_info()
    assert info["torch"] == torch.__version__
    assert info["threads"] == str(torch.get_num_threads())
