"""Time zoo models against the torchvision / timm / pytorchcv implementation of the same net.

Every model and its peers run on the same input in the same process: each is warmed up, then
the runs alternate (zoo, peer, zoo, peer, ... with the order rotated every repeat) and the
median of the repeats is reported, so a load change on the machine hits all of them alike.
Ratios are paired: for each repeat, peer time / zoo time, and the median of those.

    python scripts/benchmark.py --models 'shufflenet_g*' --batch-sizes 1 32 --fuse
    zoo benchmark --models mobilenet_v2 --repeats 5 --channels-last --compile

Numbers are measurements of one machine at one moment; tests never assert them.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import fnmatch
import gc
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from zoo.utils import atomic_path, atomic_write_text

__all__ = [
    "PEERS",
    "PeerSpec",
    "Runner",
    "Measurement",
    "build_peer",
    "time_runners",
    "benchmark_model",
    "render_markdown",
    "plot_latency",
    "main",
]


@dataclass(frozen=True)
class PeerSpec:
    """A peer implementation: library, its model name, and whether parameter counts match."""

    library: str  # "torchvision", "timm" or "pytorchcv"
    name: str
    exact: bool = True  # same parameter count as the zoo model (False: channel rounding differs)

    @property
    def label(self) -> str:
        short = {"torchvision": "tv", "timm": "timm", "pytorchcv": "cv"}[self.library]
        return f"{short}:{self.name}"


def _tv(name: str) -> PeerSpec:
    return PeerSpec("torchvision", name)


def _timm(name: str) -> PeerSpec:
    return PeerSpec("timm", name)


def _cv(name: str, exact: bool = True) -> PeerSpec:
    return PeerSpec("pytorchcv", name, exact)


# Zoo model -> the peers that implement the same architecture. Checked by
# tests/deploy/test_benchmark.py: parameter counts are equal where ``exact``.
PEERS: dict[str, list[PeerSpec]] = {
    "alexnet": [_tv("alexnet"), _cv("alexnetb")],
    "resnet18": [_tv("resnet18"), _timm("resnet18"), _cv("resnet18")],
    "squeezenet1_0": [_tv("squeezenet1_0"), _cv("squeezenet_v1_0")],
    "squeezenet1_1": [_tv("squeezenet1_1"), _cv("squeezenet_v1_1")],
    "squeezenet1_0_bypass_simple": [_cv("squeezeresnet_v1_0")],
    "mobilenet_v1": [_timm("mobilenetv1_100"), _cv("mobilenet_w1")],
    "mobilenet_v1_x0_75": [_cv("mobilenet_w3d4")],
    "mobilenet_v1_x0_5": [_cv("mobilenet_wd2")],
    "mobilenet_v1_x0_25": [_cv("mobilenet_wd4")],
    "mobilenet_v2": [_tv("mobilenet_v2"), _timm("mobilenetv2_100")],
    **{f"shufflenet_g{g}": [_cv(f"shufflenet_g{g}_w1")] for g in (1, 2, 3, 4, 8)},
    "shufflenet_g1_x0_5": [_cv("shufflenet_g1_wd2")],
    "shufflenet_g3_x0_5": [_cv("shufflenet_g3_wd2")],
    "shufflenet_g1_x0_25": [_cv("shufflenet_g1_wd4", exact=False)],
    "shufflenet_g3_x0_25": [_cv("shufflenet_g3_wd4", exact=False)],
    "shufflenet_v2_x0_5": [_tv("shufflenet_v2_x0_5"), _cv("shufflenetv2_wd2")],
    "shufflenet_v2_x1_0": [_tv("shufflenet_v2_x1_0"), _cv("shufflenetv2_w1")],
    "shufflenet_v2_x1_5": [_tv("shufflenet_v2_x1_5")],
    "shufflenet_v2_x2_0": [_tv("shufflenet_v2_x2_0")],
}


class PeerUnavailable(RuntimeError):
    """The peer's library is not installed or does not know the model."""


def build_peer(spec: PeerSpec) -> nn.Module:
    """The peer model with random weights (never downloads anything)."""
    try:
        if spec.library == "torchvision":
            import torchvision

            return torchvision.models.get_model(spec.name, weights=None)
        if spec.library == "timm":
            import timm

            return timm.create_model(spec.name, pretrained=False)
        if spec.library == "pytorchcv":
            from pytorchcv.model_provider import get_model

            return get_model(spec.name, pretrained=False)
    except ImportError as err:
        raise PeerUnavailable(
            f"{spec.library} is not installed (pip install {spec.library})"
        ) from err
    except (ValueError, KeyError, RuntimeError) as err:
        raise PeerUnavailable(f"{spec.library} cannot build {spec.name!r}: {err}") from err
    raise PeerUnavailable(f"unknown peer library {spec.library!r}")


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


def _short_error(err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first[:160]}"


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
    iters: dict[int, int] = {}
    with torch.inference_mode():
        for i, r in enumerate(runners):
            if r.error:
                continue
            try:
                for _ in range(max(1, warmup)):
                    t0 = timer()
                    r.fn(inputs[r.channels_last])
                    dt = timer() - t0
            except Exception as err:  # reported in the table instead of stopping the run
                r.error = _short_error(err)
                continue
            iters[i] = max(1, int(min_run_s / max(dt, 1e-9)))
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


def _macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    from zoo.counting import layer_macs

    return int(sum(layer_macs(model, input_size).values()))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _zoo_variants(fuse: bool, channels_last: bool, compile: bool) -> list[str]:
    bases = ["eager"] + (["fused"] if fuse else [])
    out = list(bases)
    if channels_last:
        out += [f"{b}+cl" for b in bases]
    if compile:
        out.append(f"{bases[-1]}+compile")
    return out


def _make_variant(model: nn.Module, variant: str, example: torch.Tensor) -> nn.Module:
    """The model prepared as ``variant`` says (eager / fused, +cl, +compile)."""
    from zoo.deploy.fuse import fuse

    if variant == "packed":  # XNOR layers on packed bits (zoo.binary.pack; fuses first)
        from zoo.binary import pack

        return pack(model)
    cl = "+cl" in variant
    if variant.startswith("fused"):
        return fuse(
            model,
            channels_last=cl,
            compile="+compile" in variant,
            compile_options={"dynamic": False},
            example_input=example,
        )
    m = model.eval() if variant == "eager" else copy.deepcopy(model).eval()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    if "+compile" in variant:
        m = torch.compile(m, dynamic=False)
    return m


def _runners_for(
    name: str,
    variants: list[str],
    peers: Sequence[PeerSpec],
    twins: Sequence[str],
    input_size: tuple[int, int, int],
    notes: list[str],
) -> list[Runner]:
    import zoo

    example = torch.randn(1, *input_size)
    base = zoo.create(name).eval()
    macs, params = _macs(base, input_size), _params(base)
    runners = []
    for v in variants:
        label = "zoo" if v == "eager" else f"zoo {v}"
        r = Runner(label, "zoo", v, fn=lambda x: None, channels_last="+cl" in v)
        r.macs, r.params = macs, params
        try:
            r.fn = _make_variant(base, v, example)
        except Exception as err:
            r.error = _short_error(err)
        runners.append(r)
    for spec in peers:
        try:
            peer = build_peer(spec).eval()
        except PeerUnavailable as err:
            notes.append(f"{name}: peer {spec.label} skipped ({err})")
            continue
        r = Runner(spec.label, "peer", "eager", fn=peer, params=_params(peer))
        try:
            r.macs = _macs(peer, input_size)
        except Exception as err:  # e.g. a fixed-size final pooling layer
            r.error = f"fails at input {input_size}: {_short_error(err)}"
        runners.append(r)
    for twin in twins:
        twin_variants = [v for v in variants if v in ("eager", "fused")]
        if twin.startswith("xnor_"):
            twin_variants.append("packed")
        for v in twin_variants:
            label = twin if v == "eager" else f"{twin} {v}"
            r = Runner(label, "twin", v, fn=lambda x: None, macs=macs)
            try:
                tm = zoo.create(twin).eval()
                r.params = _params(tm)
                r.fn = _make_variant(tm, v, example)
            except Exception as err:
                r.error = _short_error(err)
            runners.append(r)
    return runners


def benchmark_model(
    name: str,
    batch_sizes: Sequence[int] = (1, 32),
    *,
    fuse: bool = True,
    channels_last: bool = False,
    compile: bool = False,
    peers: Sequence[PeerSpec] | None = None,
    twins: Sequence[str] = (),
    input_size: tuple[int, int, int] = (3, 224, 224),
    repeats: int = 10,
    warmup: int = 2,
    min_run_s: float = 0.05,
    notes: list[str] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> list[Measurement]:
    """Time zoo model ``name`` (eager and the requested variants), its peers and twins."""
    notes = notes if notes is not None else []
    peers = PEERS.get(name, []) if peers is None else peers
    variants = _zoo_variants(fuse, channels_last, compile)
    results: list[Measurement] = []
    for batch in batch_sizes:
        runners = _runners_for(name, variants, peers, twins, input_size, notes)
        x = torch.randn(batch, *input_size)
        time_runners(runners, x, repeats, warmup, min_run_s, timer)
        zoo_rows = [r for r in runners if r.kind == "zoo"]
        for r in runners:
            m = Measurement(
                name, r.label, r.kind, r.variant, batch, r.macs, r.params, r.times, r.error
            )
            if r.kind == "zoo" and not r.error:
                for p in runners:
                    if p.kind == "peer" and not p.error:
                        m.ratios[p.label] = paired_ratio(r.times, p.times)
            results.append(m)
        del runners, zoo_rows
        gc.collect()
    return results


# ---------------------------------------------------------------- report


def _fmt(v: float, digits: int = 2) -> str:
    return "-" if v != v else f"{v:,.{digits}f}"  # NaN -> "-"


def _machine() -> dict[str, str]:
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


def _rows(results: Sequence[Measurement], **match) -> list[Measurement]:
    return [m for m in results if all(getattr(m, k) == v for k, v in match.items())]


def _peer_table(results: Sequence[Measurement], batch: int) -> list[str]:
    """One row per (model, peer): times and the ratio of every zoo variant to the peer."""
    variants = list(dict.fromkeys(m.variant for m in results if m.kind == "zoo"))
    out = [
        "| model | MMACs | peer | peer ms | zoo ms | "
        + " | ".join(f"ratio {v}" for v in variants)
        + " | best zoo img/s | best GMAC/s | noise |",
        "|---|--:|---|--:|--:|" + "--:|" * len(variants) + "--:|--:|--:|",
    ]
    for name in dict.fromkeys(m.model for m in results):
        zoo_rows = {m.variant: m for m in _rows(results, model=name, batch=batch, kind="zoo")}
        z = zoo_rows.get("eager")
        if z is None:
            continue
        timed = [m for m in zoo_rows.values() if not m.error and m.times]
        best = min(timed, key=lambda m: m.ms) if timed else z
        for p in _rows(results, model=name, batch=batch, kind="peer") or [None]:
            label = "-" if p is None else p.label + ("" if p.params == z.params else " (≈)")
            ratios = [
                _fmt(zoo_rows[v].ratios.get(p.label, float("nan")))
                if p is not None and v in zoo_rows
                else "-"
                for v in variants
            ]
            spreads = [m.spread for m in (z, p) if m is not None and m.spread == m.spread]
            noise = max(spreads, default=float("nan"))
            out.append(
                f"| {name} | {_fmt(z.macs / 1e6, 1)} | {label} | {_cell_ms(p)} | {_cell_ms(z)} | "
                + " | ".join(ratios)
                + f" | {_fmt(best.images_s, 1)} | {_fmt(best.gmacs)} | {_pct(noise)} |"
            )
    return out


def _family_table(results: Sequence[Measurement]) -> list[str]:
    """Median speed-up of each option over eager, per family and batch: what helps whom."""
    from zoo.registry import get_cfg

    variants = [v for v in dict.fromkeys(m.variant for m in results if m.kind == "zoo")]
    variants = [v for v in variants if v != "eager"]
    if not variants:
        return []
    gains: dict[tuple[str, int], dict[str, list[float]]] = {}
    for m in results:
        if m.kind != "zoo" or m.variant == "eager" or m.error or not m.times:
            continue
        base = _rows(results, model=m.model, batch=m.batch, kind="zoo", variant="eager")
        if not base or not base[0].times:
            continue
        key = (get_cfg(m.model).family, m.batch)
        gains.setdefault(key, {}).setdefault(m.variant, []).append(
            paired_ratio(m.times, base[0].times)
        )
    out = [
        "| family | batch | " + " | ".join(variants) + " |",
        "|---|--:|" + "--:|" * len(variants),
    ]
    for (family, batch), by_variant in sorted(gains.items()):
        cells = []
        for v in variants:
            vals = by_variant.get(v)
            cells.append(f"{statistics.median(vals):.2f}x" if vals else "-")
        out.append(f"| {family} | {batch} | " + " | ".join(cells) + " |")
    return out


def _cell_ms(m: Measurement | None) -> str:
    if m is None:
        return "-"
    return f"failed: {m.error}" if m.error else _fmt(m.ms)


def _options_table(results: Sequence[Measurement]) -> list[str]:
    variants = list(dict.fromkeys(m.variant for m in results if m.kind == "zoo"))
    if len(variants) < 2:
        return []
    head = " | ".join(f"{v} ms (x)" for v in variants)
    out = [f"| model | batch | {head} |", "|---|--:|" + "--:|" * len(variants)]
    for name in dict.fromkeys(m.model for m in results):
        for batch in dict.fromkeys(m.batch for m in results):
            rows = {m.variant: m for m in _rows(results, model=name, batch=batch, kind="zoo")}
            if "eager" not in rows:
                continue
            base = rows["eager"].ms
            cells = []
            for v in variants:
                m = rows.get(v)
                if m is None:
                    cells.append("-")
                elif m.error:
                    cells.append(f"failed: {m.error}")
                else:
                    cells.append(f"{_fmt(m.ms)} ({_fmt(base / m.ms)}x)")
            out.append(f"| {name} | {batch} | " + " | ".join(cells) + " |")
    return out


def _twin_table(results: Sequence[Measurement]) -> list[str]:
    twins = [m for m in results if m.kind == "twin"]
    if not twins:
        return []
    out = [
        "| model | batch | variant | float ms | BWN ms | XNOR ms | BWN/float | XNOR/float |",
        "|---|--:|---|--:|--:|--:|--:|--:|",
    ]
    for name in dict.fromkeys(m.model for m in twins):
        for batch in dict.fromkeys(m.batch for m in twins):
            for v in ("eager", "fused"):
                fl = _rows(results, model=name, batch=batch, kind="zoo", variant=v)
                bwn = _rows(results, model=name, batch=batch, kind="twin", variant=v)
                b = next((m for m in bwn if m.label.startswith("bwn_")), None)
                x = next((m for m in bwn if m.label.startswith("xnor_")), None)
                if not fl or (b is None and x is None):
                    continue
                f = fl[0]
                out.append(
                    f"| {name} | {batch} | {v} | {_cell_ms(f)} | {_cell_ms(b)} | {_cell_ms(x)} "
                    f"| {_fmt(b.ms / f.ms) if b else '-'}x | {_fmt(x.ms / f.ms) if x else '-'}x |"
                )
    return out


def _speedup_cell(fast: Measurement, base: Measurement | None) -> str:
    if base is None or fast.error or base.error or not fast.times or not base.times:
        return "-"
    return f"{paired_ratio(fast.times, base.times):.2f}x"


def _packed_table(results: Sequence[Measurement]) -> list[str]:
    """XNOR twins on packed bits against their float twin (eager and fused) and the peers."""
    packed = [m for m in results if m.kind == "twin" and m.variant == "packed"]
    if not packed:
        return []
    out = [
        "| model | batch | float ms | float fused ms | XNOR simulated ms | XNOR packed ms | "
        "packed vs float | packed vs float fused | packed vs peers |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for x in packed:
        rows = {m.variant: m for m in _rows(results, model=x.model, batch=x.batch, kind="zoo")}
        sim = next(
            (m for m in _rows(results, model=x.model, batch=x.batch, kind="twin", variant="eager")
             if m.label.startswith("xnor_")),
            None,
        )  # fmt: skip
        f, ff = rows.get("eager"), rows.get("fused")
        vs = [
            f"{p.label} {_speedup_cell(x, p)}"
            for p in _rows(results, model=x.model, batch=x.batch, kind="peer")
        ]

        out.append(
            f"| {x.label.split()[0]} | {x.batch} | {_cell_ms(f)} | {_cell_ms(ff)} | "
            f"{_cell_ms(sim)} | {_cell_ms(x)} | {_speedup_cell(x, f)} | {_speedup_cell(x, ff)} | "
            f"{', '.join(vs) or '-'} |"
        )
    return out


def _targets(results: Sequence[Measurement]) -> list[str]:
    """The issue's targets: unfused ratio >= 1.0; fused ratio >= 1.3 at batch 1."""
    out = []
    eager = [
        (m, peer, r)
        for m in results
        if m.kind == "zoo" and m.variant == "eager" and not m.error
        for peer, r in m.ratios.items()
    ]
    if eager:
        ok = [t for t in eager if t[2] >= 1.0]
        out.append(f"- unfused zoo at least as fast as the peer: {len(ok)}/{len(eager)}")
        out += [
            f"  - below: {m.model} vs {peer} @ batch {m.batch}: {r:.2f} (noise {_pct(m.spread)})"
            for m, peer, r in eager
            if r < 1.0
        ]
    best: dict[tuple[str, str], tuple[float, str, float]] = {}  # -> (best, variant, plain fused)
    for m in results:
        if m.kind != "zoo" or not m.variant.startswith("fused") or m.batch != 1 or m.error:
            continue
        for peer, r in m.ratios.items():
            cur = best.get((m.model, peer), (float("-inf"), "", float("nan")))
            plain = r if m.variant == "fused" else cur[2]
            top = (r, m.variant) if r > cur[0] else cur[:2]
            best[(m.model, peer)] = (*top, plain)
    if best:
        plain_ok = sum(v[2] >= 1.3 for v in best.values())
        best_ok = sum(v[0] >= 1.3 for v in best.values())
        out.append(
            f"- fused zoo >= 1.3x the peer's eager model at batch 1: {plain_ok}/{len(best)} "
            f"with `fuse(model)`, {best_ok}/{len(best)} with the best fused option"
        )
        out += [
            f"  - below: {model} vs {peer}: fused {plain:.2f}, best {r:.2f} ({variant})"
            for (model, peer), (r, variant, plain) in best.items()
            if not plain >= 1.3
        ]
    return out


def _pct(v: float) -> str:
    return "-" if v != v else f"{v:.0%}"


METHOD = """\
## Method

- Same process, same random input, `torch.inference_mode()`, models in eval mode with random
  weights (peers built without downloads), denormal floats flushed to zero. Each model is
  warmed up, then runs alternate between the zoo model, its variants and its peers, the
  starting runner rotating every repeat. A run repeats the forward pass for about
  {min_run_ms:.0f} ms; the tables give the median of {repeats} runs.
- **ratio** = median over repeats of (peer time / zoo time) from the same repeat: above 1.0 the
  zoo model is faster. *ratio eager* compares the unfused zoo model, *ratio fused* the output
  of `zoo.deploy.fuse` (BN folded into convs, no-op layers removed, pooling run in
  channels_last, grouped 1x1 convs as one matmul when single-threaded), all against the peer's
  eager model. **noise** is the largest interquartile range / median of the rows compared;
  ratios within that margin of 1.0 are ties.
- **GMAC/s** = conv+linear multiply-adds per image (the papers' convention) x images/s.
- *(≈)* marks a peer whose channel rounding differs slightly (parameter counts not equal).
- Variants: `fused` = `zoo.deploy.fuse(model)`; `+cl` = channels_last weights and input
  (`fuse(model, channels_last=True)`); `+compile` = `torch.compile(dynamic=False)` (inductor,
  needs a C++ compiler on CPU).
- timer `cpu` = this process's CPU time instead of wall time: it ignores time spent waiting
  for a core on a busy machine and equals latency only when single-threaded.
"""


def binary_kernel_report(repeats: int = 200, model: str = "xnor_resnet18") -> list[str]:
    """Markdown section on the 1-bit kernel: one binary conv layer against PyTorch's float
    conv (the paper's c=256, 3x3, 14x14 and ResNet-18's other layer shapes), the
    theoretical speed-up, where the kernel's time goes, and where a packed model's goes."""
    import zoo
    from zoo.binary.kernels import backend
    from zoo.binary.kernels.bench import (
        RESNET18_LAYERS,
        bench_binary_conv,
        layer_table,
        module_time_split,
    )
    from zoo.binary.packed import pack, packed_weight_bytes

    threads = torch.get_num_threads()
    rows = [
        bench_binary_conv(256, 14, 3, 1, repeats, threads=t) for t in dict.fromkeys([1, threads])
    ]
    rows += [
        bench_binary_conv(c, hw, 3, 1, repeats, threads=threads)
        for c, hw in RESNET18_LAYERS
        if (c, hw) != (256, 14)
    ]
    packed = pack(zoo.create(model).eval())
    split = module_time_split(packed, torch.randn(1, 3, 224, 224), repeats=max(5, repeats // 20))
    bits, floats = packed_weight_bytes(packed)
    total = split.pop("total")
    parts = ", ".join(
        f"{k} {v:.2f} ms ({v / total:.0%})" for k, v in sorted(split.items(), key=lambda kv: -kv[1])
        if v / total >= 0.005
    )  # fmt: skip
    return [
        "",
        "## 1-bit kernel: one binary conv layer",
        "",
        f"`zoo.binary.kernels.xnor_conv2d` ({backend()} backend) against `F.conv2d` in float32 "
        "on the same input, batch 1, stride 1, padding 1, alternating blocks of calls, "
        "medians. *theory* is XNOR-Net's S = 64 c N_W / (c N_W + 64); the time split comes "
        "from the kernel's own timers (pack: sign + bit-packing of the activations; im2col: "
        "gathering packed receptive fields; popcount: the XOR-popcount GEMM; other: output "
        "allocation and the call itself).",
        "",
        *layer_table(rows),
        "",
        f"Where the time of `pack({model})` goes at batch 1, 224x224, {threads} thread(s) "
        f"({total:.2f} ms per image, timing hooks on every leaf module): {parts}.",
        f"Its binary weights take {bits / 2**20:.2f} MiB packed against {floats / 2**20:.1f} "
        f"MiB in float32 ({floats / bits:.1f}x smaller).",
    ]


def render_markdown(
    results: Sequence[Measurement],
    meta: dict[str, str],
    notes: Sequence[str] = (),
    repeats: int = 10,
    min_run_s: float = 0.05,
    extra: Sequence[str] = (),
) -> str:
    """The benchmark report as Markdown: peers, options, binary twins, targets, method."""
    lines = ["# Benchmarks", "", "Generated by `scripts/benchmark.py`; do not edit by hand.", ""]
    lines.append("| " + " | ".join(meta) + " |")
    lines.append("|" + "---|" * len(meta))
    lines.append("| " + " | ".join(meta.values()) + " |")
    for batch in dict.fromkeys(m.batch for m in results):
        table = _peer_table(results, batch)
        if len(table) > 2:
            lines += ["", f"## Zoo vs peers, batch {batch}", ""] + table
    options = _options_table(results)
    if options:
        lines += ["", "## Inference options (speed-up over the zoo eager model)", ""] + options
    families = _family_table(results)
    if families:
        lines += [
            "",
            "## Which option helps which family",
            "",
            "Median over the family's models of the paired speed-up over the eager zoo model "
            "(above 1.00x helps).",
            "",
        ] + families
    twins = _twin_table(results)
    if twins:
        lines += [
            "",
            "## Float vs BWN vs XNOR twins",
            "",
            "Binary layers are simulated in float (sign and scale on every call), so they are "
            "slower than float on CPU; the table measures that overhead.",
            "",
        ] + twins
    packed = _packed_table(results)
    if packed:
        lines += [
            "",
            "## XNOR on packed bits, end to end",
            "",
            "`zoo.binary.pack(model)`: binary convs and linears run as XOR + popcount on "
            "bit-packed signs (the C++ kernel), BatchNorms after them folded into their scales; "
            "first conv, depthwise convs and classifier stay float. Ratios are paired (above "
            "1.00x the packed model is faster).",
            "",
        ] + packed
    lines += list(extra)
    targets = _targets(results)
    if targets:
        lines += ["", "## Targets", ""] + targets
    if notes:
        lines += ["", "## Notes from this run", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    lines += ["", METHOD.format(min_run_ms=min_run_s * 1e3, repeats=repeats)]
    return "\n".join(lines).rstrip() + "\n"


def plot_latency(results: Sequence[Measurement], path: str | os.PathLike, batch: int = 1) -> None:
    """Latency at ``batch`` against MACs (log-log): zoo eager, zoo fused and each peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    groups: dict[str, list[Measurement]] = {}
    for m in results:
        if m.batch != batch or m.error or not m.times:
            continue
        if m.kind == "zoo":
            key = "zoo " + m.variant
        elif m.kind == "peer":
            key = m.label.split(":", 1)[0]
        else:  # bwn / xnor twins; packed XNOR apart, it is a different computation
            key = m.label.split("_", 1)[0] + (" packed" if m.variant == "packed" else "")
        groups.setdefault(key, []).append(m)
    markers = itertools.cycle("osD^v<>xP*hX")
    for key, ms in groups.items():
        ax.scatter([m.macs / 1e6 for m in ms], [m.ms for m in ms], label=key, marker=next(markers))
        if key == "zoo eager":
            for m in ms:
                ax.annotate(m.model, (m.macs / 1e6, m.ms), fontsize=6, alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs per image (millions, conv + linear)")
    ax.set_ylabel(f"latency at batch {batch} (ms, median)")
    ax.set_title(f"CPU latency vs MACs ({torch.get_num_threads()} threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- command line


def select_models(patterns: Sequence[str] | None) -> list[str]:
    """Zoo models matching any fnmatch pattern (default: every model that has a peer)."""
    import zoo

    if not patterns:
        return [n for n in zoo.list_models() if n in PEERS]
    names = [n for n in zoo.list_models() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not names:
        raise ValueError(
            f"no zoo model matches {list(patterns)}; see `zoo list` for names "
            f"(models with peers: {', '.join(PEERS)})"
        )
    return names


def _selected(name: str, patterns: Sequence[str] | None) -> bool:
    """True when no patterns are given or ``name`` matches one of them."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def twins_of(name: str) -> list[str]:
    """Registered ``bwn_``/``xnor_`` twins of a float model (none until zoo.binary registers)."""
    import zoo

    return [t for t in (f"bwn_{name}", f"xnor_{name}") if t in set(zoo.list_models("*_" + name))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoo benchmark",
        description="Time zoo models against torchvision/timm/pytorchcv on this CPU.",
    )
    p.add_argument("--models", nargs="+", help="fnmatch patterns (default: all with a peer)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--repeats", type=int, default=15, help="timed runs per model (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-run-ms", type=float, default=50.0, help="length of one timed run")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--timer",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: latency (default); cpu: this process's CPU time, which ignores time spent "
        "descheduled on a busy machine (equals latency only with --threads 1)",
    )
    p.add_argument("--fuse", action="store_true", help="also time zoo.deploy.fuse(model)")
    p.add_argument("--channels-last", action="store_true", help="also time channels_last")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument(
        "--compile-models",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="with --compile, only these models get the compiled variant (compiling takes "
        "about a minute per model and batch size on CPU)",
    )
    p.add_argument(
        "--binary",
        choices=["auto", "yes", "no"],
        default="auto",
        help="time the bwn_/xnor_ twins (auto: when registered)",
    )
    p.add_argument(
        "--binary-models",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="only these float models get their twins timed (default: all selected)",
    )
    p.add_argument("--no-peers", action="store_true", help="time zoo models only")
    p.add_argument(
        "--binary-kernel",
        action="store_true",
        help="also time one binary conv layer (XNOR kernel vs float conv) and profile "
        "packed xnor_resnet18",
    )
    p.add_argument("--out", default="docs/benchmarks.md", help="Markdown report ('' = none)")
    p.add_argument("--plot", default="docs/benchmark_latency.png", help="PNG plot ('' = none)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``zoo benchmark``: time, print a summary, write the Markdown report and the plot."""
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    if args.threads is not None:
        if args.threads < 1:
            print("error: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or any(b < 1 for b in args.batch_sizes):
        print("error: --repeats and --batch-sizes must be >= 1", file=sys.stderr)
        return 2
    try:
        names = select_models(args.models)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Random weights can drift into denormal floats, which are slow on x86 and would favour
    # whichever implementation's init avoids them; flush them for every model alike.
    torch.set_flush_denormal(True)
    meta = _machine()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {meta['torch']}, {torch.get_num_threads()} threads, {meta['cpu']}, "
        f"{len(names)} models, batches {args.batch_sizes}, {args.repeats} repeats"
    )
    notes: list[str] = []
    results: list[Measurement] = []
    size = (3, args.input_size, args.input_size)
    for name in tqdm(names, desc="benchmark", unit="model"):
        binary = args.binary == "yes" or (args.binary == "auto" and twins_of(name))
        binary = binary and _selected(name, args.binary_models)
        try:
            rows = benchmark_model(
                name,
                args.batch_sizes,
                fuse=args.fuse,
                channels_last=args.channels_last,
                compile=args.compile and _selected(name, args.compile_models),
                peers=[] if args.no_peers else None,
                twins=twins_of(name) if binary else (),
                input_size=size,
                repeats=args.repeats,
                warmup=args.warmup,
                min_run_s=args.min_run_ms / 1e3,
                notes=notes,
                timer=time.perf_counter if args.timer == "wall" else time.process_time,
            )
        except (ValueError, RuntimeError) as err:
            notes.append(f"{name}: not timed ({_short_error(err)})")
            continue
        results += rows
        _print_rows(rows)
    extra = binary_kernel_report() if args.binary_kernel else []
    for line in extra:
        if line.startswith("|") or line.startswith("Where") or line.startswith("Its"):
            print(line)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta["timer"] = args.timer
    meta["load avg (start/end)"] = f"{load_before:.1f} / {load_after:.1f}"
    meta["date"] = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    meta["command"] = "`" + " ".join(["zoo benchmark", *(argv or sys.argv[1:])]) + "`"
    if args.out:
        text = render_markdown(
            results, meta, notes, args.repeats, args.min_run_ms / 1e3, extra=extra
        )
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    if args.plot and results:
        plot_latency(results, args.plot, batch=min(args.batch_sizes))
        print(f"wrote {args.plot}")
    for n in dict.fromkeys(notes):
        print(f"note: {n}")
    return 0


def _print_rows(rows: Sequence[Measurement]) -> None:
    from tqdm import tqdm

    for m in rows:
        ratios = " ".join(f"{k}={v:.2f}" for k, v in m.ratios.items())
        status = f"FAILED {m.error}" if m.error else f"{m.ms:8.2f} ms {m.images_s:8.1f} img/s"
        tqdm.write(f"  {m.model:28s} b{m.batch:<3d} {m.label:34s} {status} {ratios}")
