"""``fuse(model)``: an inference copy of a model that computes the same outputs faster.

What it does, in order, on a deep copy put in eval mode:

1. folds every ``BatchNorm2d`` into the ``Conv2d`` whose output only it reads (found from the
   autograd graph of one forward pass, so any model works, not just zoo blocks), and replaces
   the BN by ``nn.Identity``;
2. replaces dropout (a no-op in eval) by ``nn.Identity`` and deletes identities from plain
   ``nn.Sequential`` containers, so a ``ConvBNAct`` becomes two calls instead of three;
   ShuffleNet v2 units concatenate and shuffle their branches in one copy;
3. swaps grouped 1x1 convolutions (ShuffleNet v1) for :class:`GroupedPointwiseConv2d`, which
   runs all groups as one batched matmul when torch is single-threaded; PyTorch's own CPU path
   for them there runs one small convolution per group and concatenates the results;
4. runs max/avg pooling of NCHW tensors in channels_last layout (:class:`FastMaxPool2d`),
   where PyTorch's CPU kernels are several times faster, and converts back;
5. picks the weight layout (NCHW or ``channels_last``) that runs the example input faster on
   this machine, timed once per kind of model, input shape and thread count
   (:func:`zoo.deploy.rewrites.choose_channels_last`); optionally wraps the result in
   ``torch.compile``.

Binary layers (``zoo.binary``) re-binarize their latent weights (``alpha * sign(W)``) on every
call, which dominates the run time of large binary models (~1 s per image for XNOR AlexNet).
``fuse`` first freezes them (``freeze_binary``): the binarized weights are computed once and
stored, the layer keeps its sign() on inputs, padding and scales. Only then can a following
BN be folded; with ``freeze_binary=False`` BNs after binary layers are kept, since folding a
scale into latent weights that are re-binarized would not compute the same function. The
returned model is for inference only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.binary.layers import is_binary
from zoo.binary.packed import pack_layers
from zoo.deploy.rewrites import (
    FastAvgPool2d,
    FastMaxPool2d,
    GroupedPointwiseConv2d,
    choose_channels_last,
    fast_pool_of,
    interleave_shuffles,
    is_grouped_pointwise,
    set_conv_layout,
)

__all__ = [
    "FastAvgPool2d",
    "FastMaxPool2d",
    "FuseReport",
    "GroupedPointwiseConv2d",
    "fold_conv_bn",
    "find_conv_bn_pairs",
    "fuse",
    "fuse_and_pack",
    "default_example",
]


@dataclass
class FuseReport:
    """What :func:`fuse` changed; kept on the fused model as ``model.fuse_report``."""

    folded: list[tuple[str, str]] = field(default_factory=list)  # (conv name, bn name)
    skipped: dict[str, str] = field(default_factory=dict)  # bn name -> why it was kept
    dropped: list[str] = field(default_factory=list)  # no-op modules removed or replaced
    grouped_pointwise: list[str] = field(default_factory=list)  # convs run as one matmul
    pools: list[str] = field(default_factory=list)  # pools computed in channels_last
    shuffles: list[str] = field(default_factory=list)  # concat + shuffle as one copy
    frozen_binary: list[str] = field(default_factory=list)  # binary layers with fixed weights
    channels_last: bool = False
    compiled: bool = False

    def __str__(self) -> str:
        parts = [
            f"folded {len(self.folded)} BatchNorms",
            f"kept {len(self.skipped)}",
            f"dropped {len(self.dropped)} no-op layers",
            f"{len(self.grouped_pointwise)} grouped 1x1 convs as matmul",
            f"{len(self.pools)} pools in channels_last",
        ]
        if self.shuffles:
            parts.append(f"{len(self.shuffles)} concat+shuffles as one copy")
        if self.frozen_binary:
            parts.append(f"{len(self.frozen_binary)} binary layers frozen")
        if self.channels_last:
            parts.append("channels_last")
        if self.compiled:
            parts.append("torch.compile")
        return ", ".join(parts)


def _is_frozen(module: nn.Module) -> bool:
    return is_binary(module) and module.frozen


@torch.no_grad()
def _freeze_binary(model: nn.Module, report: FuseReport) -> None:
    for name, m in model.named_modules():
        if is_binary(m) and not m.frozen:
            m.freeze_weight()
            report.frozen_binary.append(name)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode ``bn`` that follows ``conv`` into the conv's weight and bias, in place.

    ``w' = w * gamma / sqrt(var + eps)`` per output channel and
    ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``, computed in float64.
    """
    reason = _cannot_fold(conv, bn)
    if reason:
        raise ValueError(f"cannot fold {bn} into {conv}: {reason}")
    frozen = conv.kernel_quantizer if _is_frozen(conv) else None
    mean = bn.running_mean.double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    w = frozen.value if frozen is not None else conv.weight
    folded = (w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
    if frozen is not None:  # binary layer: scale the stored binarized weights
        frozen.value = folded
    else:
        conv.weight = nn.Parameter(folded, requires_grad=w.requires_grad)
    conv.bias = nn.Parameter(shift.to(device=w.device, dtype=w.dtype), requires_grad=False)


def _cannot_fold(conv: nn.Module, bn: nn.Module) -> str | None:
    """Why ``bn`` cannot be folded into ``conv``, or None when it can."""
    if is_binary(conv) and not conv.frozen:
        return (
            "the conv is binary: its weights are re-binarized (sign, mean |W|) on every call, "
            "so BN scales cannot be folded into them (fuse with freeze_binary=True)"
        )
    if is_binary(conv) and (
        getattr(conv, "shortcut", None) is not None or getattr(conv, "rprelu", None) is not None
    ):
        return (
            "the binary conv adds a real-valued shortcut or applies RPReLU after its scale: "
            "the BatchNorm acts on that sum, not on the conv's output alone"
        )
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        return "only Conv2d -> BatchNorm2d pairs fold"
    if bn.running_mean is None or bn.running_var is None:
        return "the BatchNorm keeps no running statistics (uses batch statistics in eval)"
    if bn.num_features != conv.out_channels:
        return f"BatchNorm has {bn.num_features} features, conv {conv.out_channels} outputs"
    return None


def _named_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _named_tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _named_tensors(item)


def _consumer_counts(outputs: Any) -> dict[object, int]:
    """How many edges of the autograd graph read each node's output."""
    counts: dict[object, int] = {}
    seen: set[object] = set()
    stack = [t.grad_fn for t in _named_tensors(outputs) if t.grad_fn is not None]
    for node in stack:
        counts[node] = counts.get(node, 0) + 1
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is None:
                continue
            counts[parent] = counts.get(parent, 0) + 1
            stack.append(parent)
    return counts


def default_example(model: nn.Module) -> torch.Tensor:
    """A random input of the model's ``default_cfg["input_size"]`` (3x224x224 otherwise)."""
    cfg = getattr(model, "default_cfg", None) or getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if not size:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        size = (conv.in_channels if conv is not None else 3, 224, 224)
    p = next(model.parameters(), None)
    kw = {"dtype": p.dtype, "device": p.device} if p is not None else {}
    return torch.randn(1, *size, **kw)


def find_conv_bn_pairs(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(conv, bn) name pairs where the BN reads a conv output nothing else reads.

    Runs one eval-mode forward pass with hooks and walks its autograd graph: a pair folds
    only when each module runs once and the conv's output feeds the BN alone. Returns the
    pairs and, for every BatchNorm2d left out, the reason.
    """
    was_training = model.training
    model.eval()
    example = example_input if example_input is not None else default_example(model)
    calls: dict[str, list[tuple[object, object]]] = {}
    hooks = []

    def record(name: str):
        def hook(_m, inp, out):
            if isinstance(out, torch.Tensor):
                calls.setdefault(name, []).append((inp[0].grad_fn, out.grad_fn))

        return hook

    modules = dict(model.named_modules())
    for name, m in modules.items():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            hooks.append(m.register_forward_hook(record(name)))
    try:
        with torch.inference_mode(False), torch.enable_grad():
            out = model(example.detach().clone().requires_grad_(True))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    consumers = _consumer_counts(out)
    producer = {
        calls[n][0][1]: n
        for n, m in modules.items()
        if isinstance(m, nn.Conv2d) and len(calls.get(n, [])) == 1 and calls[n][0][1] is not None
    }
    pairs: list[tuple[str, str]] = []
    skipped: dict[str, str] = {}
    for name, m in modules.items():
        if not isinstance(m, nn.BatchNorm2d):
            continue
        seen = calls.get(name, [])
        if len(seen) != 1:
            skipped[name] = f"runs {len(seen)} times per forward pass (must be once)"
            continue
        conv = producer.get(seen[0][0]) if seen[0][0] is not None else None
        if conv is None:
            skipped[name] = "its input is not the output of a Conv2d run once"
            continue
        if consumers.get(seen[0][0], 0) != 1:
            skipped[name] = f"the output of {conv} is also read elsewhere"
            continue
        reason = _cannot_fold(modules[conv], m)
        if reason:
            skipped[name] = reason
            continue
        pairs.append((conv, name))
    return pairs, skipped


def _is_plain_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _drop_noops(model: nn.Module, report: FuseReport) -> None:
    """Dropout -> Identity everywhere; identities deleted from plain Sequentials."""
    for name, m in list(model.named_modules()):
        if name and isinstance(m, nn.modules.dropout._DropoutNd):
            model.set_submodule(name, nn.Identity())
            report.dropped.append(name)
    for name, m in list(model.named_modules()):
        if not _is_plain_sequential(m):
            continue
        for child, sub in list(m._modules.items()):
            if isinstance(sub, nn.Identity):
                del m._modules[child]
                full = f"{name}.{child}" if name else child
                if full not in report.dropped:
                    report.dropped.append(full)


def fuse(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    drop_noops: bool = True,
    grouped_matmul: bool | str = "auto",
    fast_pool: bool = True,
    freeze_binary: bool = True,
    channels_last: bool | None = None,
    compile: bool = False,
    compile_options: dict[str, Any] | None = None,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """An eval-mode copy of ``model`` that gives the same outputs with fewer, cheaper ops.

    ``model`` is not modified. ``grouped_matmul`` (``"auto"``, True, False) controls the
    :class:`GroupedPointwiseConv2d` swap (``"auto"``: matmul only when single-threaded);
    ``fast_pool`` computes max/avg pooling of NCHW tensors in channels_last layout;
    ``freeze_binary`` stores binary layers' binarized weights once (see the module notes).
    ``channels_last=True`` converts the weights, after which every
    layer runs in that layout (NCHW inputs are converted by the first conv; the logits are
    the same); ``False`` keeps NCHW; ``None`` (default) times both on the example input and
    keeps the faster (cached, so fusing the same kind of model again does not re-time it);
    ``compile`` returns ``torch.compile(fused, **compile_options)``
    (compilation happens on the first call and needs a C++ compiler on CPU).
    ``example_input`` drives the graph walk that pairs convs with BNs (default: one random
    image of the model's input size). ``model.fuse_report`` says what was done.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse needs an nn.Module, got {type(model).__name__}")
    if hasattr(model, "_orig_mod"):
        raise TypeError("fuse the model before torch.compile: pass the uncompiled module")
    # Outside inference mode, so the copy's tensors can be traced with autograd below.
    with torch.inference_mode(False):
        fused, report = _fuse_copy(
            model, fold_bn, drop_noops, grouped_matmul, fast_pool, freeze_binary, example_input
        )
    if channels_last is None:
        example = example_input if example_input is not None else default_example(fused)
        channels_last = choose_channels_last(fused, example)
    if channels_last:
        with torch.inference_mode(False):  # no inference tensors in the returned model
            fused = fused.to(memory_format=torch.channels_last)
        set_conv_layout(fused, True)
        report.channels_last = True
    fused.fuse_report = report
    if compile:
        report.compiled = True
        return torch.compile(fused, **(compile_options or {}))
    return fused


def _fuse_copy(
    model: nn.Module,
    fold_bn: bool,
    drop_noops: bool,
    grouped_matmul: bool | str,
    fast_pool: bool,
    freeze_binary: bool,
    example_input: torch.Tensor | None,
) -> tuple[nn.Module, FuseReport]:
    fused = copy.deepcopy(model).eval()
    report = FuseReport()
    if freeze_binary:
        _freeze_binary(fused, report)
    if fold_bn:
        pairs, report.skipped = find_conv_bn_pairs(fused, example_input)
        for conv_name, bn_name in pairs:
            fold_conv_bn(fused.get_submodule(conv_name), fused.get_submodule(bn_name))
            fused.set_submodule(bn_name, nn.Identity())
            report.folded.append((conv_name, bn_name))
    if drop_noops:
        _drop_noops(fused, report)
    report.shuffles = interleave_shuffles(fused)
    if grouped_matmul:
        policy = "always" if grouped_matmul is True else grouped_matmul
        for name, m in list(fused.named_modules()):
            if is_grouped_pointwise(m):
                fused.set_submodule(name, GroupedPointwiseConv2d.from_conv(m, policy))
                report.grouped_pointwise.append(name)
    if fast_pool:
        for name, m in list(fused.named_modules()):
            new = fast_pool_of(m)
            if new is not None:
                fused.set_submodule(name, new)
                report.pools.append(name)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused, report


@torch.no_grad()
def fuse_and_pack(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """A real 1-bit inference copy: :func:`fuse` (a BN after a binary layer folds into its
    frozen weights, pools run in channels_last), then every XNOR layer on packed bits.

    The deployment path of an ``xnor_*`` model (``zoo.binary.pack`` packs without fusing).
    The float convs around the packed layers then get the weight layout (NCHW or
    channels_last) that runs the packed model faster here, as :func:`fuse` chooses it.
    """
    fused = fuse(model, grouped_matmul=False, channels_last=False, example_input=example_input)
    packed = pack_layers(fused)
    example = example_input if example_input is not None else default_example(packed)
    packed.fuse_report.channels_last = choose_channels_last(packed, example)
    return packed
