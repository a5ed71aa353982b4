"""The benchmark report: Markdown tables from timing measurements, and the latency plot.

``render_markdown`` writes ``docs/benchmarks.md``: per thread count, zoo vs peers per batch
size, inference options, which option helps which family, float vs binary twins, packed
XNOR; then the targets (``zoo.deploy.bench_targets``) per thread count and the method.
``plot_latency`` draws latency against MACs. Rendering only: nothing is timed here (see
``zoo.deploy.timing``).
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Sequence

import torch

from zoo.deploy.bench_targets import target_lines
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
- Threads: with several counts (`--threads 1 2`) every measurement runs at each count in
  turn (`torch.set_num_threads`; the runtimes' intra-op threads and compiled code follow, so
  those are rebuilt per count), and each count has its own tables and targets. The plot shows
  the highest count.
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
    groups = _by_threads(results)
    for count, rows in groups.items():
        if len(groups) > 1:
            lines += ["", f"## {_threads_label(count)}", ""]
            lines.append(
                f"Every table below ran with torch (and the runtimes) at {_threads_label(count)}."
            )
        lines += _tables(rows, "###" if len(groups) > 1 else "##")
    lines += list(extra)
    targets = []
    for count, rows in groups.items():
        found = target_lines(rows)
        if found and len(groups) > 1:
            targets += ["", f"### {_threads_label(count)}", ""]
        targets += found
    if targets:
        lines += ["", "## Targets", ""] + targets
    if notes:
        lines += ["", "## Notes from this run", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    lines += ["", METHOD.format(min_run_ms=min_run_s * 1e3, repeats=repeats)]
    return "\n".join(lines).rstrip() + "\n"


def _by_threads(results: Sequence[Measurement]) -> dict[int, list[Measurement]]:
    """Rows grouped by the thread count they ran with, in the order of the run."""
    groups: dict[int, list[Measurement]] = {}
    for m in results:
        groups.setdefault(m.threads, []).append(m)
    return groups


def _threads_label(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


def _tables(results: Sequence[Measurement], h: str) -> list[str]:
    """The tables of one thread count, under headings of level ``h`` ("##" or "###")."""
    out: list[str] = []
    for batch in dict.fromkeys(m.batch for m in results):
        table = _peer_table(results, batch)
        if len(table) > 2:
            out += ["", f"{h} Zoo vs peers, batch {batch}", ""] + table
    options = _options_table(results)
    if options:
        out += ["", f"{h} Inference options (speed-up over the zoo eager model)", ""] + options
    families = _family_table(results)
    if families:
        out += [
            "",
            f"{h} Which option helps which family",
            "",
            "Median over the family's models of the paired speed-up over the eager zoo model "
            "(above 1.00x helps).",
            "",
        ] + families
    twins = _twin_table(results)
    if twins:
        out += [
            "",
            f"{h} Float vs BWN vs XNOR twins",
            "",
            "Binary layers are simulated in float (sign and scale on every call), so they are "
            "slower than float on CPU; the table measures that overhead.",
            "",
        ] + twins
    packed = _packed_table(results)
    if packed:
        out += [
            "",
            f"{h} XNOR on packed bits, end to end",
            "",
            "`zoo.deploy.fuse_and_pack(model)`: binary convs and linears run as XOR + popcount on "
            "bit-packed signs (the C++ kernel), BatchNorms after them folded into their scales; "
            "first conv, depthwise convs and classifier stay float. Ratios are paired (above "
            "1.00x the packed model is faster).",
            "",
        ] + packed
    return out


def plot_latency(
    results: Sequence[Measurement],
    path: str | os.PathLike,
    batch: int = 1,
    threads: int | None = None,
) -> None:
    """Latency at ``batch`` against MACs (log-log): zoo variants, each peer, the twins.

    ``threads``: the rows of that thread count (default: the highest count in ``results``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    if threads is None:
        threads = max((m.threads for m in results), default=0)
    groups: dict[str, list[Measurement]] = {}
    for m in results:
        if m.batch != batch or m.threads != threads or m.error or not m.times:
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
    ax.set_title(f"CPU latency vs MACs ({_threads_label(threads or torch.get_num_threads())})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
