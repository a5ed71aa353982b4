"""The benchmark report: Markdown tables from timing measurements, and the latency plot.

``render_markdown`` writes ``docs/benchmarks.md``: zoo vs peers per batch size, inference
options, which option helps which family, float vs binary twins, packed XNOR, the targets
and the method. ``plot_latency`` draws latency against MACs. Rendering only: nothing is timed
here (see ``zoo.deploy.timing``).
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Sequence

import torch

from zoo.deploy.runtimes import RUNTIMES
from zoo.deploy.timing import Measurement, paired_ratio
from zoo.registry import get_cfg
from zoo.utils import atomic_path

__all__ = ["METHOD", "plot_latency", "render_markdown"]


def _fmt(v: float, digits: int = 2) -> str:
    return "-" if v != v else f"{v:,.{digits}f}"  # NaN -> "-"


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
    return out + _runtime_targets(results)


def _runtime_targets(results: Sequence[Measurement]) -> list[str]:
    """How often each ONNX runtime beats the peer's eager model (a deploy path past PyTorch)."""
    out = []
    for rt in dict.fromkeys(m.variant for m in results if m.kind == "zoo"):
        pairs = [
            (m, peer, r)
            for m in results
            if m.kind == "zoo" and m.variant == rt and rt in RUNTIMES and not m.error
            for peer, r in m.ratios.items()
        ]
        if pairs:
            ok = sum(r > 1.0 for _, _, r in pairs)
            worst = min(pairs, key=lambda t: t[2])
            out.append(
                f"- {rt} faster than the peer's eager model: {ok}/{len(pairs)} (lowest "
                f"{worst[2]:.2f}x: {worst[0].model} vs {worst[1]} @ batch {worst[0].batch})"
            )
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
- Runtimes: `onnxruntime` / `openvino` = the model exported to ONNX (`zoo.deploy.export`, from
  the fused graph, batch fixed) and run in that runtime with torch's thread count: onnxruntime
  with every graph optimisation and sequential execution, OpenVINO with the latency hint, one
  stream and float32 arithmetic. *ratio onnxruntime* = peer eager ms / onnxruntime ms. Their
  outputs equal the eager model's (tests/deploy/test_runtimes.py).
- timer `cpu` = this process's CPU time instead of wall time: it ignores time spent waiting
  for a core on a busy machine and equals latency only when single-threaded.
"""


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
            "`zoo.deploy.fuse_and_pack(model)`: binary convs and linears run as XOR + popcount on "
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
