"""Binary-aware model summary, like ``larq.models.summary`` for PyTorch.

Per layer: 1-bit and 32-bit parameters, memory, binary and float multiply-accumulates (MACs),
and for each XNOR layer the paper's theoretical speed-up ``S = 64 c N_W / (c N_W + 64)``
(Rastegari et al. 2016, Sec. 3.2; c input channels per group, N_W = kh * kw). For the model:
totals, the compression ratio against the float twin (same layers stored in float32), and the
theoretical speed-up of the whole network.

Conventions: a binary weight takes 1 bit (packed per layer, so ``ceil(n / 8)`` bytes); its
per-output-channel scale alpha (or learned ``output_scale``) takes 4 bytes and is reported as
``scales``; learned thresholds, RPReLU and shortcut convs count as float parameters; float
parameters and BatchNorm running statistics take 4 bytes each. MACs count conv and linear
layers only, for one image. Binary MACs are those of XNOR layers (binary weights *and*
inputs); BWN layers have float inputs, so their MACs count as float (additions only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.binary.convert import is_depthwise
from zoo.binary.layers import is_binary

__all__ = ["LayerRow", "BinarySummary", "summary", "xnor_speedup", "FLOAT_BYTES"]

FLOAT_BYTES = 4


def xnor_speedup(channels: int, kernel_elems: int) -> float:
    """XNOR-Net's theoretical speed-up of a binary conv: ``64 c N_W / (c N_W + 64)``."""
    if channels < 1 or kernel_elems < 1:
        raise ValueError(
            f"need channels >= 1 and kernel_elems >= 1, got {channels}, {kernel_elems}"
        )
    cn = channels * kernel_elems
    return 64.0 * cn / (cn + 64.0)


@dataclass
class LayerRow:
    """One layer of the summary; memory in bytes, MACs for one image."""

    name: str
    type: str
    mode: str  # "xnor", "bwn", "float" or "float (reason)"
    output_shape: tuple[int, ...]
    params_1bit: int
    params_32bit: int
    scales: int
    buffers_32bit: int
    memory_bytes: int
    binary_macs: int
    float_macs: int
    speedup: float | None  # XNOR layers only


@dataclass
class BinarySummary:
    """Rows plus model totals; ``str()`` renders a table."""

    name: str
    input_size: tuple[int, ...]
    rows: list[LayerRow]
    params_1bit: int
    params_32bit: int
    scales: int
    buffers_32bit: int
    memory_bytes: int
    float_memory_bytes: int
    compression_ratio: float
    binary_weight_bytes: int  # bytes of the binary layers' packed weights and scales
    binary_weight_float_bytes: int  # the same weights in float32
    binary_macs: int
    float_macs: int
    speedup: float
    removed_activations: list[str] = field(default_factory=list)

    @property
    def weight_compression(self) -> float:
        """float32 bytes of the binarized layers' weights over their 1-bit bytes (~32x)."""
        if not self.binary_weight_bytes:
            return 1.0
        return self.binary_weight_float_bytes / self.binary_weight_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weight_compression"] = self.weight_compression
        return d

    def __str__(self) -> str:
        return _render(self)


def _model_mode_notes(model: nn.Module) -> tuple[dict[str, str], list[str]]:
    info = getattr(model, "binarize_info", None)
    if info is None:
        return {}, []
    return dict(info.kept_float), list(info.removed_activations)


def _row_mode(name: str, m: nn.Module, kept: dict[str, str], has_binary: bool) -> str:
    if is_binary(m):
        return m.mode
    if not isinstance(m, (nn.Conv2d, nn.Linear)):
        return "float"
    reason = kept.get(name) or ("depthwise" if has_binary and is_depthwise(m) else "")
    return f"float ({reason})" if reason else "float"


def _layer_macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return out.numel() * (m.in_channels // m.groups) * kh * kw
    return out.numel() * m.in_features  # nn.Linear, batch of one


def _layer_speedup(m: nn.Module) -> float | None:
    if not is_binary(m) or m.mode != "xnor":
        return None
    if isinstance(m, nn.Conv2d):
        return xnor_speedup(m.in_channels // m.groups, m.kernel_size[0] * m.kernel_size[1])
    return xnor_speedup(m.in_features, 1)


def _input_size(model: nn.Module, input_size: int | tuple[int, ...] | None) -> tuple[int, ...]:
    """(C, H, W) from the argument, else default_cfg, else the first conv at 224x224.

    An int means a square image of that side with the model's own channel count."""
    if input_size is not None and not isinstance(input_size, int):
        return tuple(input_size)
    cfg = getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        size = tuple(cfg["input_size"])
    else:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise ValueError(
                "cannot guess the input size of a model without convs; pass input_size"
            )
        size = (conv.in_channels, 224, 224)
    if isinstance(input_size, int):
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        size = (size[0], input_size, input_size)
    return size


def _trace(model: nn.Module, size: tuple[int, ...]) -> tuple[dict[str, tuple], dict[str, int]]:
    """Output shape of every leaf module and MACs of every conv/linear for one image."""
    shapes: dict[str, tuple] = {}
    macs: dict[str, int] = {}
    hooks = []

    def hook_for(name: str):
        def hook(m, _inp, out):
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    macs[name] = macs.get(name, 0) + _layer_macs(m, out)

        return hook

    for name, m in model.named_modules():
        if not list(m.children()) or isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook_for(name)))
    was_training = model.training
    p = next(model.parameters(), None)
    x = torch.randn(1, *size, dtype=p.dtype if p is not None else torch.float32)
    model.eval()
    try:
        with torch.no_grad():
            model(x.to(p.device) if p is not None else x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes, macs


def _direct_counts(m: nn.Module) -> tuple[int, int, int, int]:
    """(1-bit params, 32-bit params, scales, float buffers) held directly by ``m``."""
    n1 = n32 = scales = 0
    for pname, p in m.named_parameters(recurse=False):
        if is_binary(m) and pname == "weight":
            n1 += p.numel()
            scales += m.weight.shape[0] if m.kernel_quantizer.scaled else 0
        elif is_binary(m) and pname == "output_scale":  # XNOR-Net++'s learned alpha
            scales += p.numel()
        else:
            n32 += p.numel()
    bufs = sum(b.numel() for b in m.buffers(recurse=False) if b.is_floating_point())
    return n1, n32, scales, bufs


def _memory(n1: int, n32: int, scales: int, bufs: int) -> int:
    return math.ceil(n1 / 8) + FLOAT_BYTES * (n32 + scales + bufs)


def summary(
    model: nn.Module, input_size: int | tuple[int, ...] | None = None, name: str | None = None
) -> BinarySummary:
    """Binary-aware summary of a model (``zoo.summary`` also takes names and files).

    ``input_size`` is ``(C, H, W)`` or one int side; default: the model's ``default_cfg``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary needs an nn.Module, got {type(model).__name__} {model!r}")
    name = name or type(model).__name__
    size = _input_size(model, input_size)
    shapes, macs = _trace(model, size)
    kept, removed = _model_mode_notes(model)
    has_binary = any(is_binary(m) for m in model.modules())

    rows: list[LayerRow] = []
    bin_bytes = bin_float_bytes = 0
    for lname, m in model.named_modules():
        n1, n32, scales, bufs = _direct_counts(m)
        if not (n1 or n32 or bufs or lname in macs):
            continue
        speed = _layer_speedup(m)
        lm = macs.get(lname, 0)
        rows.append(
            LayerRow(
                name=lname or "(model)", type=type(m).__name__,
                mode=_row_mode(lname, m, kept, has_binary), output_shape=shapes.get(lname, ()),
                params_1bit=n1, params_32bit=n32, scales=scales, buffers_32bit=bufs,
                memory_bytes=_memory(n1, n32, scales, bufs),
                binary_macs=lm if speed is not None else 0,
                float_macs=0 if speed is not None else lm, speedup=speed,
            )
        )  # fmt: skip
        if n1:
            bin_bytes += _memory(n1, 0, scales, 0)
            bin_float_bytes += FLOAT_BYTES * n1

    def total(attr: str) -> int:
        return sum(getattr(r, attr) for r in rows)

    n1, n32, sc, bufs = (
        total("params_1bit"),
        total("params_32bit"),
        total("scales"),
        total("buffers_32bit"),
    )
    mem = total("memory_bytes")
    float_mem = FLOAT_BYTES * (n1 + n32 + bufs)
    fmacs, bmacs = total("float_macs"), total("binary_macs")
    cost = fmacs + sum(r.binary_macs / r.speedup for r in rows if r.speedup)
    return BinarySummary(
        name=name, input_size=size, rows=rows, params_1bit=n1, params_32bit=n32, scales=sc,
        buffers_32bit=bufs, memory_bytes=mem, float_memory_bytes=float_mem,
        compression_ratio=float_mem / mem if mem else 1.0, binary_weight_bytes=bin_bytes,
        binary_weight_float_bytes=bin_float_bytes, binary_macs=bmacs, float_macs=fmacs,
        speedup=(fmacs + bmacs) / cost if cost else 1.0, removed_activations=removed,
    )  # fmt: skip


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.2f} kB"


def _fmt_macs(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _render(s: BinarySummary) -> str:
    head = ("Layer", "Type", "Mode", "Output", "1-bit", "32-bit", "Mem kB", "Bin MACs",
            "Float MACs", "XNOR S")  # fmt: skip
    body = [
        (
            r.name,
            r.type,
            r.mode,
            "x".join(map(str, r.output_shape)) or "-",
            f"{r.params_1bit:,}" if r.params_1bit else "0",
            f"{r.params_32bit:,}",
            f"{r.memory_bytes / 1e3:.2f}",
            _fmt_macs(r.binary_macs) if r.binary_macs else "0",
            _fmt_macs(r.float_macs) if r.float_macs else "0",
            f"{r.speedup:.2f}x" if r.speedup else "-",
        )  # fmt: skip
        for r in s.rows
    ]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    right = {4, 5, 6, 7, 8, 9}

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                         enumerate(zip(cells, widths, strict=True)))  # fmt: skip

    rule = "-" * len(line(head))
    kept = {}
    for r in s.rows:
        if r.mode.startswith("float ("):
            kept[r.mode] = kept.get(r.mode, 0) + 1
    out = [f"Binary summary of {s.name} (input {'x'.join(map(str, s.input_size))})", rule,
           line(head), rule, *map(line, body), rule]  # fmt: skip
    out += [
        f"Params: {s.params_1bit:,} 1-bit, {s.params_32bit:,} 32-bit "
        f"(+ {s.scales:,} scales, {s.buffers_32bit:,} BN statistics in 32-bit)",
        f"Memory: {_fmt_bytes(s.memory_bytes)}; float twin {_fmt_bytes(s.float_memory_bytes)}; "
        f"compression {s.compression_ratio:.2f}x",
        f"Binary layers' weights: {_fmt_bytes(s.binary_weight_float_bytes)} in float32 -> "
        f"{_fmt_bytes(s.binary_weight_bytes)} (1 bit + alpha), {s.weight_compression:.2f}x",
        f"MACs: {_fmt_macs(s.binary_macs)} binary, {_fmt_macs(s.float_macs)} float; "
        f"theoretical XNOR speed-up of the model {s.speedup:.2f}x",
    ]
    if kept:
        out.append("Kept in float: " + ", ".join(f"{n} {m[7:-1]}" for m, n in kept.items()))
    if s.removed_activations:
        out.append(
            f"Activations feeding binary layers replaced by Identity: {len(s.removed_activations)}"
        )
    return "\n".join(out)
