"""The papers' tables as data, and their reproduction: which zoo model stands for which row.

Each row names a registered model (or none, for networks the zoo does not build), the input
side, and any figure that the table itself prints differently from the model's ``ModelCfg``
(e.g. the MobileNet paper quotes SqueezeNet at 1700 MMACs). Complexity is always measured;
accuracy is measured only when results are passed in, otherwise shown as published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from zoo.catalog import count, summary
from zoo.published import quoted
from zoo.registry import get_cfg, is_model
from zoo.utils import atomic_path

__all__ = [
    "PaperRow",
    "PaperTable",
    "PAPER_TABLES",
    "measure_table",
    "render_paper_tables",
    "plot_accuracy_vs_macs",
]


@dataclass(frozen=True)
class PaperRow:
    label: str
    model: str | None
    resolution: int = 224
    figures: dict[str, float] = field(default_factory=dict)  # overrides of cfg.published


@dataclass(frozen=True)
class PaperTable:
    title: str
    rows: tuple[PaperRow, ...]
    note: str = ""


def _r(label, model, res=224, **figures) -> PaperRow:
    return PaperRow(label, model, res, figures)


def _q(label: str, model: str | None, where: str, res: int = 224, key: str = "") -> PaperRow:
    """A row whose figures are those ``where`` quotes for the network (``zoo.published``)."""
    return PaperRow(label, model, res, quoted(key or model, where))


_T9 = "MobileNet v1 paper Table 9"
_T6 = "ShuffleNet v1 paper Table 6"
_CLASSIC = "classic-network table"


_V1_WIDTH = {"1x": "", "0.5x": "_x0_5", "0.25x": "_x0_25"}

PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable(
        "SqueezeNet, Tables 2-3 (size and bypass)",
        (
            _q("AlexNet", "alexnet", "SqueezeNet paper Table 2"),
            _r("SqueezeNet 1.0", "squeezenet1_0"),
            _r("SqueezeNet 1.0 + simple bypass", "squeezenet1_0_bypass_simple"),
            _r("SqueezeNet 1.0 + complex bypass", "squeezenet1_0_bypass_complex"),
            _r("SqueezeNet 1.1 (torchvision)", "squeezenet1_1"),
        ),
    ),
    PaperTable(
        "MobileNet v1, Table 6 (width multiplier)",
        tuple(
            _r(f"{w} MobileNet-224", f"mobilenet_v1{s}")
            for w, s in (("1.0", ""), ("0.75", "_x0_75"), ("0.5", "_x0_5"), ("0.25", "_x0_25"))
        ),
    ),
    PaperTable(
        "MobileNet v1, Table 7 (resolution)",
        tuple(
            _r(
                f"1.0 MobileNet-{res}",
                "mobilenet_v1",
                res,
                macs=get_cfg("mobilenet_v1").published[f"macs@{res}"],
                top1=get_cfg("mobilenet_v1").published[f"top1@{res}"],
            )
            for res in (224, 192, 160, 128)
        ),
    ),
    PaperTable(
        "MobileNet v1, Table 9 (vs. popular models)",
        (
            _q("0.50 MobileNet-160", "mobilenet_v1_x0_5", _T9, 160),
            _q("SqueezeNet", "squeezenet1_0", _T9),
            _q("AlexNet", "alexnet", _T9),
        ),
        note="The MobileNet paper quotes SqueezeNet at 1700 MMACs; conv+linear multiply-adds of "
        "the model are 819M (torchvision agrees), so that figure counts something else.",
    ),
    PaperTable(
        "ShuffleNet v1, Tables 1-2 (groups x width)",
        tuple(
            _r(f"ShuffleNet {w} (g={g})", f"shufflenet_g{g}{s}")
            for w, s in (("1x", ""), ("0.5x", "_x0_5"), ("0.25x", "_x0_25"))
            for g in (1, 2, 3, 4, 8)
        ),
    ),
    PaperTable(
        "ShuffleNet v1, Tables 5-6 (vs. MobileNet and others)",
        (
            _r("ShuffleNet 2x (g=3)", "shufflenet_g3_x2_0"),
            _r("ShuffleNet 1.5x (g=3)", "shufflenet_g3_x1_5"),
            _q("ShuffleNet 1x (g=8)", "shufflenet_g8", _T6),
            _q("ShuffleNet 0.5x (g=4)", "shufflenet_g4_x0_5", _T6),
            _q("VGG-16", None, _T6, key="vgg16"),
            _q("AlexNet", "alexnet", _T6),
            _q("SqueezeNet", "squeezenet1_0", _T6),
        ),
    ),
    PaperTable(
        "ShuffleNet v2 (paper; torchvision counts)",
        tuple(
            _r(f"ShuffleNet v2 {w}", f"shufflenet_v2_x{w.replace('.', '_')[:-1]}")
            for w in ("0.5x", "1.0x", "1.5x", "2.0x")
        ),
    ),
    PaperTable(
        "ShuffleNet v2, the authors' released layout (Megvii ShuffleNet-Series)",
        tuple(
            _r(f"ShuffleNet v2 {w} (Megvii)", f"shufflenet_v2_x{w.replace('.', '_')[:-1]}_megvii")
            for w in ("0.5x", "1.0x", "1.5x", "2.0x")
        ),
        note="The authors' checkpoints split the first strided unit of stage 2 differently from "
        "torchvision's layout (e.g. 24 + 92 channels at 1.0x against 58 + 58); this is the "
        "architecture whose complexity the paper reports.",
    ),
    PaperTable("MobileNet v2", (_r("MobileNet v2 1.0", "mobilenet_v2"),)),
    PaperTable(
        "XNOR-Net, Tables 1-2 (AlexNet and ResNet-18: float, BWN, XNOR)",
        (
            _q("AlexNet, full precision", "alexnet", "XNOR-Net paper Table 1"),
            _r("AlexNet, BWN", "bwn_alexnet"),
            _r("AlexNet, XNOR-Net", "xnor_alexnet"),
            _r("ResNet-18, full precision", "resnet18"),
            _r("ResNet-18, BWN", "bwn_resnet18"),
            _r("ResNet-18, XNOR-Net", "xnor_resnet18"),
        ),
        note="Size is the binary-aware memory of `zoo.summary` (1-bit weights, float32 scales, "
        "first conv and classifier in float32, as in the paper); larq-zoo quotes 22.81 MB for "
        "its XNOR-Net AlexNet with 62.4M params.",
    ),
    PaperTable(
        "Classic networks (224x224)",
        (
            _q("AlexNet", "alexnet", _CLASSIC),
            _q("VGG-16", None, _CLASSIC, key="vgg16"),
            _q("GoogLeNet", None, _CLASSIC, key="googlenet"),
            _q("ResNet-18", "resnet18", _CLASSIC),
            _q("ResNet-18 (survey table)", "resnet18", "survey table"),
        ),
        note="The widely copied survey table lists ResNet-18 at 5.6M parameters; the model "
        "itself has 11.7M, so that row is flagged rather than matched.",
    ),
)


@cache
def _complexity(model: str, resolution: int) -> dict[str, float]:
    c = count(model, input_size=resolution, fvcore=False)
    out = {"params": c.params, "macs": c.macs, "size_mb": c.size_mb}
    if get_cfg(model).binary:  # memory as deployed: 1-bit weights, float scales and layers
        out["size_mb"] = summary(model, input_size=resolution).memory_bytes / 2**20
    return out


@dataclass
class MeasuredRow:
    row: PaperRow
    published: dict[str, float]
    measured: dict[str, float]
    family: str = ""
    binary: str = ""


def _published(row: PaperRow) -> dict[str, float]:
    pub: dict[str, float] = {}
    if row.model and is_model(row.model):
        cfg_pub = get_cfg(row.model).published
        for key in ("params", "macs", "top1", "top5", "size_mb"):
            if key in cfg_pub:
                pub[key] = cfg_pub[key]
    pub.update(row.figures)
    return pub


def measure_table(table: PaperTable, accuracy: dict[str, dict] | None = None) -> list[MeasuredRow]:
    """Measure params/MACs/size for each row; take top-1/top-5 from ``accuracy[model]`` if given."""
    out = []
    for row in table.rows:
        measured: dict[str, float] = {}
        family = binary = ""
        if row.model and is_model(row.model):
            measured = dict(_complexity(row.model, row.resolution))
            measured.update((accuracy or {}).get(row.model, {}))
            cfg = get_cfg(row.model)
            family, binary = cfg.family, cfg.binary
        out.append(MeasuredRow(row, _published(row), measured, family, binary))
    return out


def _cell(key: str, pub: dict, meas: dict) -> str:
    p, m = pub.get(key), meas.get(key)
    fmt = {
        "params": lambda v: f"{v / 1e6:.3f}M",
        "macs": lambda v: f"{v / 1e6:,.1f}M",
        "size_mb": lambda v: f"{v:.2f}",
    }.get(key, lambda v: f"{v:.1f}")
    if p is None and m is None:
        return "-"
    if m is None:
        return f"{fmt(p)} (published only)" if key.startswith("top") else f"{fmt(p)} / -"
    if p is None:
        return f"- / {fmt(m)}"
    return f"{fmt(p)} / {fmt(m)} ({(m - p) / p:+.1%})"


def render_paper_tables(accuracy: dict[str, dict] | None = None) -> str:
    """Markdown: one table per paper table, cells 'paper / measured (diff)'."""
    lines = [
        "# The papers' tables, reproduced",
        "",
        "Cells read *paper / measured (difference)*. Params and MACs (conv + linear "
        "multiply-adds) are always measured; accuracy is shown as published unless "
        "`zoo reproduce --imagenet DIR` measured it with weights.",
        "",
    ]
    for table in PAPER_TABLES:
        lines += [
            f"## {table.title}",
            "",
            "| row | zoo model | input | params | MACs | top-1 | top-5 | size (MiB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for mr in measure_table(table, accuracy):
            r = mr.row
            lines.append(
                f"| {r.label} | {r.model or 'not in the zoo'} | {r.resolution} | "
                + " | ".join(
                    _cell(k, mr.published, mr.measured)
                    for k in ("params", "macs", "top1", "top5", "size_mb")
                )
                + " |"
            )
        if table.note:
            lines += ["", table.note]
        lines.append("")
    return "\n".join(lines)


def plot_accuracy_vs_macs(path: str | Path, accuracy: dict[str, dict] | None = None) -> Path:
    """Top-1 vs MACs (log x) for every model with a published or measured top-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, tuple] = {}
    for table in PAPER_TABLES:
        for mr in measure_table(table, accuracy):
            top1 = mr.measured.get("top1", mr.published.get("top1"))
            if mr.row.model and top1 is not None and "macs" in mr.measured:
                points.setdefault(mr.row.model, (mr.measured["macs"], top1, mr.family, mr.binary))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    families = sorted({p[2] for p in points.values()})
    colours = dict(zip(families, plt.cm.tab10.colors, strict=False))
    for name, (macs, top1, family, binary) in points.items():
        ax.scatter(macs / 1e6, top1, color=colours[family], marker="x" if binary else "o", s=36)
        ax.annotate(name, (macs / 1e6, top1), fontsize=6, xytext=(3, 2), textcoords="offset points")
    for family in families:
        ax.scatter([], [], color=colours[family], label=family)
    ax.scatter([], [], color="grey", marker="x", label="binary (BWN/XNOR)")
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds (M, log scale, measured)")
    ax.set_ylabel("ImageNet top-1 (%)")
    ax.set_title("Accuracy vs. compute (accuracy as published unless measured)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
