"""The timing harness behind ``zoo benchmark``: warm-up, alternating runs, medians, ratios.

Every runner (a zoo model variant, a peer, a binary twin) is warmed up, then the runs
alternate with the starting runner rotated every repeat, so a load change on the machine hits
all of them alike. Ratios are paired: for each repeat, peer time / zoo time, and the median of
those. Knows nothing of the zoo: it times callables.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "Measurement",
    "Runner",
    "load_average",
    "machine_info",
    "paired_ratio",
    "short_error",
    "time_runners",
]


@dataclass
class Runner:
    """One thing to time: a model variant called on a prepared input."""

    label: str  # e.g. "zoo", "zoo fused", "tv:resnet18"
    kind: str  # "zoo" or "peer" or "twin"
    variant: str  # "eager", "fused", "fused+cl", "fused+compile", ...
    fn: Callable[[torch.Tensor], object]
    channels_last: bool = False
    macs: int = 0  # per image
    params: int = 0
    error: str = ""
    times: list[float] = field(default_factory=list)  # seconds per forward, one per repeat


def short_error(err: BaseException) -> str:
    """``Type: first line`` of an exception, short enough for a table cell."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first[:160]}"


def _warm_up(
    runners: Sequence[Runner],
    inputs: dict[bool, torch.Tensor],
    warmup: int,
    min_run_s: float,
    timer: Callable[[], float],
) -> dict[int, int]:
    """Run each runner ``warmup`` times; calls per timed run for those that did not fail."""
    iters: dict[int, int] = {}
    for i, r in enumerate(runners):
        if r.error:
            continue
        try:
            for _ in range(max(1, warmup)):
                t0 = timer()
                r.fn(inputs[r.channels_last])
                dt = timer() - t0
        except Exception as err:  # reported in the table instead of stopping the run
            r.error = short_error(err)
            continue
        iters[i] = max(1, int(min_run_s / max(dt, 1e-9)))
    return iters


def time_runners(
    runners: Sequence[Runner],
    x: torch.Tensor,
    repeats: int,
    warmup: int = 2,
    min_run_s: float = 0.05,
    timer: Callable[[], float] = time.perf_counter,
) -> None:
    """Warm every runner up, then alternate runs; fills ``runner.times`` (s per forward).

    A run calls the model enough times to last about ``min_run_s`` (measured at warm-up).
    Repeat ``r`` starts at runner ``r % len(runners)`` so no one always goes first. A runner
    that raises (e.g. ``torch.compile`` without a compiler) gets ``error`` set and is skipped.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    inputs = {False: x}
    if any(r.channels_last for r in runners):
        inputs[True] = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        iters = _warm_up(runners, inputs, warmup, min_run_s, timer)
        live = [i for i in range(len(runners)) if i in iters]
        for rep in range(repeats):
            order = live[rep % len(live) :] + live[: rep % len(live)] if live else []
            for i in order:
                r = runners[i]
                xi = inputs[r.channels_last]
                t0 = timer()
                for _ in range(iters[i]):
                    r.fn(xi)
                r.times.append((timer() - t0) / iters[i])


@dataclass
class Measurement:
    """The result of one runner at one batch size."""

    model: str  # zoo model name the row belongs to
    label: str
    kind: str
    variant: str
    batch: int
    macs: int
    params: int
    times: list[float]
    error: str = ""
    ratios: dict[str, float] = field(default_factory=dict)  # peer label -> paired ratio
    threads: int = 0  # torch threads it ran with (0: not recorded)

    @property
    def ms(self) -> float:
        return statistics.median(self.times) * 1e3 if self.times else float("nan")

    @property
    def spread(self) -> float:
        """Interquartile range over the median, a noise indicator."""
        if len(self.times) < 4:
            return float("nan")
        q = statistics.quantiles(self.times, n=4)
        return (q[2] - q[0]) / statistics.median(self.times)

    @property
    def images_s(self) -> float:
        return self.batch / (self.ms / 1e3) if self.times else float("nan")

    @property
    def gmacs(self) -> float:
        return self.macs * self.images_s / 1e9 if self.times else float("nan")


def paired_ratio(zoo_times: Sequence[float], peer_times: Sequence[float]) -> float:
    """Median over repeats of peer time / zoo time (> 1: the zoo model is faster)."""
    pairs = [p / z for z, p in zip(zoo_times, peer_times, strict=False) if z > 0]
    return statistics.median(pairs) if pairs else float("nan")


def machine_info() -> dict[str, str]:
    """CPU model, core count, torch version and threads, Python version: the report header."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
    }


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none): how busy the machine was."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
