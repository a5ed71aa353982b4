"""The targets section of the benchmark report: each of issue 16's speed targets, met or
missed, with the measured figure that decides it.

Targets (ratios are paired medians, above 1.0 the first-named runs faster):

- eager zoo model >= 1.0x each peer's eager model, every model and batch;
- ``zoo.fuse(model)`` with its defaults >= 1.8x the peer's eager model at batch 1, every family;
- packed XNOR twins against their float model: xnor_resnet18 >= 6x at every batch timed
  (1 and 32), every other packed twin >= 2.5x at batch 1;
- each ONNX runtime faster than the peer's eager model.

A miss within the rows' noise (interquartile range / median) of its target says so, since a
rerun may land on either side. Rendering only: nothing is timed here.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.deploy.runtimes import RUNTIMES
from zoo.deploy.timing import Measurement, paired_ratio
from zoo.registry import get_cfg

__all__ = ["EAGER_TARGET", "FUSE_TARGET", "PACKED_TARGETS", "target_lines"]

EAGER_TARGET = 1.0
FUSE_TARGET = 1.8
PACKED_TARGETS = {"xnor_resnet18": (6.0, None)}  # twin -> (ratio, batch: None = every batch)
PACKED_DEFAULT = (2.5, 1)


def _verdict(value: float, target: float, noise: float = float("nan")) -> str:
    if value >= target:
        return "met"
    if noise == noise and value * (1 + noise) >= target:
        return f"missed, within the noise ({noise:.0%})"
    return "missed"


def _noise(*rows: Measurement | None) -> float:
    spreads = [m.spread for m in rows if m is not None and m.spread == m.spread]
    return max(spreads, default=float("nan"))


def _family(model: str) -> str:
    try:
        return get_cfg(model).family
    except (KeyError, ValueError):  # a row of a model not in the registry (tests, old data)
        return model


def _eager_lines(results: Sequence[Measurement]) -> list[str]:
    eager = [
        (m, peer, r)
        for m in results
        if m.kind == "zoo" and m.variant == "eager" and not m.error
        for peer, r in m.ratios.items()
    ]
    if not eager:
        return []
    misses = [t for t in eager if not t[2] >= EAGER_TARGET]
    lowest = min(eager, key=lambda t: t[2])
    out = [
        f"- eager zoo >= {EAGER_TARGET:.1f}x its peers' eager models, every model: "
        f"{'met' if not misses else 'missed'}, {len(eager) - len(misses)}/{len(eager)} pairs "
        f"(lowest {lowest[2]:.2f}x: {lowest[0].model} vs {lowest[1]} @ batch {lowest[0].batch})"
    ]
    out += [
        f"  - below: {m.model} vs {peer} @ batch {m.batch}: {r:.2f}x "
        f"({_verdict(r, EAGER_TARGET, m.spread).replace(', within', ': a tie within')}, "
        f"noise {_pct(m.spread)})"
        for m, peer, r in misses
    ]
    return out


def _fuse_lines(results: Sequence[Measurement]) -> list[str]:
    """Per family: the best and lowest peer ratio of ``fuse(model)`` at batch 1, and the best
    fused option's (channels_last, compile) for comparison."""
    by_family: dict[str, dict[str, list[tuple[float, str, str]]]] = {}
    for m in results:
        if m.kind != "zoo" or not m.variant.startswith("fused") or m.batch != 1 or m.error:
            continue
        if not m.ratios:  # no peer timed beside it
            continue
        fam = by_family.setdefault(_family(m.model), {"fused": [], "any": []})
        for peer, r in m.ratios.items():
            item = (r, f"{m.model} vs {peer}", m.variant)
            fam["any"].append(item)
            if m.variant == "fused":
                fam["fused"].append(item)
    if not by_family:
        return []
    lines, met = [], 0
    for family, got in by_family.items():
        if not got["fused"]:
            lines.append(f"  - {family}: missed: `fuse(model)` not timed (only other options)")
            continue
        best, low = max(got["fused"]), min(got["fused"])
        top = max(got["any"])
        verdict = _verdict(best[0], FUSE_TARGET)
        met += verdict == "met"
        lines.append(
            f"  - {family}: {verdict}: best {best[0]:.2f}x ({best[1]}), lowest {low[0]:.2f}x "
            f"({low[1]}); best fused option {top[0]:.2f}x ({top[2]}, {top[1]})"
        )
    head = (
        f"- `zoo.fuse(model)` (default arguments) >= {FUSE_TARGET:.1f}x the peer's eager model "
        f"at batch 1, every family (decided on each family's best peer ratio): "
        f"{'met' if met == len(by_family) else 'missed'}, {met}/{len(by_family)} families"
    )
    return [head, *lines]


def _packed_lines(results: Sequence[Measurement]) -> list[str]:
    """Packed XNOR twins against the zoo's eager float model (the baseline) and its fused one."""
    packed = [m for m in results if m.kind == "twin" and m.variant == "packed"]
    lines, met, total = [], 0, 0
    for x in packed:
        twin = x.label.split()[0]
        target, batch = PACKED_TARGETS.get(twin, PACKED_DEFAULT)
        if batch is not None and x.batch != batch:
            continue
        floats = {
            m.variant: m
            for m in results
            if m.kind == "zoo" and m.model == x.model and m.batch == x.batch
            and m.threads == x.threads
        }  # fmt: skip
        f, ff = floats.get("eager"), floats.get("fused")
        total += 1
        if x.error or f is None or f.error or not x.times or not f.times:
            why = x.error or (f.error if f is not None else "") or "float model not timed"
            lines.append(f"  - {twin} @ batch {x.batch}: not measured ({why})")
            continue
        r = paired_ratio(x.times, f.times)
        verdict = _verdict(r, target, _noise(x, f))
        met += verdict == "met"
        vs_fused = (
            f"{paired_ratio(x.times, ff.times):.2f}x"
            if ff is not None and not ff.error and ff.times
            else "-"
        )
        lines.append(
            f"  - {twin} @ batch {x.batch}: {r:.2f}x {x.model} eager (target {target:g}x): "
            f"{verdict}; {vs_fused} against {x.model} fused (packed {_cell(x)}, float eager "
            f"{_cell(f)}, float fused {_cell(ff)})"
        )
    if not total:
        return []
    head = (
        f"- packed XNOR twins vs their float model (baseline: the zoo's eager float model, "
        f"`zoo.create(name)`; the ratio against `zoo.fuse` of it beside): xnor_resnet18 >= "
        f"{PACKED_TARGETS['xnor_resnet18'][0]:g}x at every batch, every other twin >= "
        f"{PACKED_DEFAULT[0]:g}x at batch {PACKED_DEFAULT[1]}: "
        f"{'met' if met == total else 'missed'}, {met}/{total}"
    )
    return [head, *lines]


def _runtime_lines(results: Sequence[Measurement]) -> list[str]:
    """How often each ONNX runtime beats the peer's eager model (a deploy path past PyTorch)."""
    out = []
    for rt in dict.fromkeys(m.variant for m in results if m.kind == "zoo"):
        pairs = [
            (m, peer, r)
            for m in results
            if m.kind == "zoo" and m.variant == rt and rt in RUNTIMES and not m.error
            for peer, r in m.ratios.items()
        ]
        if not pairs:
            continue
        ok = sum(r > 1.0 for _, _, r in pairs)
        worst = min(pairs, key=lambda t: t[2])
        out.append(
            f"- {rt} faster than the peer's eager model: {ok}/{len(pairs)} "
            f"({'met' if ok == len(pairs) else 'missed'}; lowest {worst[2]:.2f}x: "
            f"{worst[0].model} vs {worst[1]} @ batch {worst[0].batch})"
        )
        slow = [f"{m.model} vs {p} @ batch {m.batch} {r:.2f}x" for m, p, r in pairs if r <= 1.0]
        if slow:
            out.append("  - not faster: " + "; ".join(slow))
    return out


def _cell(m: Measurement | None) -> str:
    return "-" if m is None or m.error or not m.times else f"{m.ms:,.2f} ms"


def _pct(v: float) -> str:
    return "-" if v != v else f"{v:.0%}"


def target_lines(results: Sequence[Measurement]) -> list[str]:
    """The targets of one thread count's rows, one bullet per target, misses beneath."""
    return (
        _eager_lines(results)
        + _fuse_lines(results)
        + _packed_lines(results)
        + _runtime_lines(results)
    )
