"""The 1-bit kernel section of ``zoo benchmark``: one binary conv layer against PyTorch's float
conv and the CPU's register-only peaks, other binary engines on the same layer, and where a
packed model's time goes.

The figures are measured side by side in one run (alternating blocks of calls, medians); the
peaks come from ``zoo.binary.kernels.bench.peak_rates``, the engines from
``zoo.deploy.binary_engines`` (optional rows, skipped with an install hint when absent).
"""

from __future__ import annotations

import torch

from zoo.binary import packed_weight_bytes
from zoo.binary.kernels import backend
from zoo.binary.kernels.bench import (
    RESNET18_LAYERS,
    bench_binary_conv,
    layer_table,
    module_time_split,
    peak_table,
)
from zoo.deploy.binary_engines import engine_rows
from zoo.deploy.fuse import fuse_and_pack
from zoo.factory import create

__all__ = ["binary_kernel_report", "engines_table"]

PAPER_LAYER = (256, 14, 3)  # XNOR-Net's example: c = 256, 3x3, 14x14


def binary_kernel_report(
    repeats: int = 200, model: str = "xnor_resnet18", engines: bool = True
) -> list[str]:
    """Markdown section on the 1-bit kernel: the paper's layer at 1 and all threads with the
    peaks, ResNet-18's other layer shapes, other binary engines, a packed model's time split."""
    threads = torch.get_num_threads()
    c, hw, k = PAPER_LAYER
    thread_counts = list(dict.fromkeys([1, threads]))
    paper = [bench_binary_conv(c, hw, k, 1, repeats, threads=t) for t in thread_counts]
    rows = paper + [
        bench_binary_conv(ch, size, 3, 1, repeats, threads=threads)
        for ch, size in RESNET18_LAYERS
        if (ch, size) != (c, hw)
    ]
    lines = [
        "",
        "## 1-bit kernel: one binary conv layer",
        "",
        f"`zoo.binary.kernels.xnor_conv2d` ({backend()} backend) against `F.conv2d` in float32 "
        "on the same input, batch 1, stride 1, padding 1, alternating blocks of calls, "
        "medians. *theory* is XNOR-Net's S = 64 c N_W / (c N_W + 64); the time split comes "
        "from the kernel's own timers (pack: sign + bit-packing of the activations; im2col: "
        "gathering packed receptive fields; popcount: the XOR-popcount GEMM with its output "
        "epilogue; other: output allocation and the call itself).",
        "",
        *layer_table(rows),
        "",
        "### Against the machine's peak",
        "",
        "Register-only loops on every thread the layer uses (no memory traffic): vector XOR + "
        "popcount + add for binary products, float32 FMA for the float conv. *ceiling* is the "
        "speed-up a popcount kernel at 100 % of its peak would have over this float conv, i.e. "
        "the most any XOR+popcount kernel can reach here.",
        "",
        *peak_table(rows),
    ]
    if engines:
        lines += ["", *engines_table(paper, repeats=max(20, repeats // 2))]
    lines += ["", *_model_split(model, threads, repeats)]
    return lines


def engines_table(zoo_rows: list[dict], repeats: int = 100) -> list[str]:
    """Other binary engines on the zoo rows' layer and thread counts, with the zoo's ratio."""
    c, hw, k = PAPER_LAYER
    out = [
        "### Other binary engines on the same layer",
        "",
        "| engine | threads | ms | zoo XNOR ms | zoo speed-up | note |",
        "|---|--:|--:|--:|--:|---|",
    ]
    skipped: dict[str, str] = {}
    for zr in zoo_rows:
        for row in engine_rows(c, hw, k, 1, zr["threads"], repeats):
            if "skipped" in row:
                skipped[row["engine"]] = row["skipped"]
                continue
            out.append(
                f"| {row['engine']} | {zr['threads']} | {row['ms']:.3f} | {zr['xnor_ms']:.3f} | "
                f"{row['ms'] / zr['xnor_ms']:.1f}x | {row.get('note', '')} |"
            )
    out += ["", *(f"- {name}: skipped ({why})" for name, why in skipped.items())]
    return out


def _model_split(model: str, threads: int, repeats: int) -> list[str]:
    """Where the time of a packed model goes, by kind of leaf module."""
    packed = fuse_and_pack(create(model).eval())
    split = module_time_split(packed, torch.randn(1, 3, 224, 224), repeats=max(5, repeats // 20))
    bits, floats = packed_weight_bytes(packed)
    total = split.pop("total")
    parts = ", ".join(
        f"{k} {v:.2f} ms ({v / total:.0%})" for k, v in sorted(split.items(), key=lambda kv: -kv[1])
        if v / total >= 0.005
    )  # fmt: skip
    return [
        f"Where the time of `fuse_and_pack({model})` goes at batch 1, 224x224, "
        f"{threads} thread(s) "
        f"({total:.2f} ms per image, timing hooks on every leaf module): {parts}.",
        f"Its binary weights take {bits / 2**20:.2f} MiB packed against {floats / 2**20:.1f} "
        f"MiB in float32 ({floats / bits:.1f}x smaller).",
    ]
