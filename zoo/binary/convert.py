"""``binarize(model, mode)``: turn any float network into its BWN or XNOR twin.

Rules (XNOR-Net paper, Sec. 3.2 and 4):

* the first conv and the last classifier stay in full precision (``keep_first``/``keep_last``);
  they are found from ``model.default_cfg["first_conv"]``/``["classifier"]`` when present,
  else they are the first ``nn.Conv2d`` and the last ``nn.Linear`` (last conv if none);
* depthwise convs (``groups == in_channels > 1``) stay float by default: they hold few weights
  (1.4 % of MobileNet v1's conv weights), gain little from XNOR (S <= 7.9x for 3x3) and lose
  much accuracy, so published binary nets keep them real or redesign them; pass
  ``binarize_depthwise=True`` to binarize them anyway;
* every other ``nn.Conv2d``/``nn.Linear`` (grouped 1x1 convs included) becomes a
  ``BinaryConv2d``/``BinaryLinear`` sharing the same weights, so pretrained weights carry over;
* in ``xnor`` mode sign() must see BatchNorm-ed values (paper: BN -> sign -> binary conv).
  A layer whose input comes from no BatchNorm (AlexNet, SqueezeNet have none) gets its own
  ``input_bn`` (``input_bn="auto"``). Elsewhere a ReLU/ReLU6 whose output reaches the binary
  layer only through ops that keep values non-negative (pooling, concat, reshape, shuffle,
  dropout, sums of such) would make ``sign()`` a constant +1; such activations become
  ``nn.Identity``, so conv -> BN -> ReLU -> conv' becomes conv -> BN -> sign -> conv'.
  Both are found from the autograd graph of one forward pass on a random input.

Building options beyond XNOR-Net (``shortcut``, ``downsample``, ``threshold``, ``activation``,
``scale``, ``ste``; see ``zoo.binary.options``) apply to every binarized layer alike.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.binary.layers import MODES, BinaryConv2d, BinaryLinear, is_binary
from zoo.binary.options import check_options

__all__ = ["binarize", "BinarizeInfo", "find_first_last", "is_depthwise"]

# Autograd nodes through which "all inputs >= 0" still implies "output >= 0".
_NONNEG_PRESERVING = {
    "MaxPool2DWithIndicesBackward",
    "MaxPool2DBackward",
    "MaxPool1DWithIndicesBackward",
    "AvgPool2DBackward",
    "AdaptiveAvgPool2DBackward",
    "AdaptiveMaxPool2DBackward",
    "MeanBackward",
    "SumBackward",
    "CatBackward",
    "StackBackward",
    "ViewBackward",
    "UnsafeViewBackward",
    "ReshapeAliasBackward",
    "TransposeBackward",
    "PermuteBackward",
    "CloneBackward",
    "SliceBackward",
    "SplitBackward",
    "SplitWithSizesBackward",
    "UnbindBackward",
    "SelectBackward",
    "SqueezeBackward",
    "UnsqueezeBackward",
    "ExpandBackward",
    "AsStridedBackward",
    "NativeDropoutBackward",
    "ConstantPadNdBackward",
    "ToCopyBackward",
}
_RELU_NODES = {"ReluBackward", "HardtanhBackward", "Relu6Backward"}
_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


@dataclass
class BinarizeInfo:
    """What ``binarize`` did, kept on the model as ``model.binarize_info`` for summaries."""

    mode: str
    binarized: list[str] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)  # layer name -> reason
    removed_activations: list[str] = field(default_factory=list)
    added_norms: list[str] = field(default_factory=list)  # xnor layers given an input BN
    options: dict[str, object] = field(default_factory=dict)


def is_depthwise(module: nn.Module) -> bool:
    """A conv whose every group has one input channel (and more than one group)."""
    return (
        isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
    )


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _cfg_names(model: nn.Module, key: str) -> list[str]:
    cfg = getattr(model, "default_cfg", None) or getattr(model, "pretrained_cfg", None) or {}
    value = cfg.get(key) if isinstance(cfg, dict) else None
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def find_first_last(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the conv/linear layers that form the input layer and the classifier.

    A ``default_cfg`` entry may name the layer itself or a container holding it (all its
    conv/linear layers are then taken).
    """
    layers = _layers(model)
    if not layers:
        raise ValueError("the model has no nn.Conv2d or nn.Linear layer to binarize")

    def resolve(key: str) -> list[str] | None:
        prefixes = _cfg_names(model, key)
        if not prefixes:
            return None
        found = [n for n, _ in layers if any(_under(n, p) for p in prefixes)]
        if not found:
            raise ValueError(
                f"default_cfg[{key!r}] = {prefixes} names no Conv2d/Linear of the model; "
                "fix default_cfg or pass keep=[...] with the layer names to keep float"
            )
        return found

    first = resolve("first_conv")
    if first is None:
        convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
        first = convs[:1] if convs else [layers[0][0]]
    last = resolve("classifier")
    if last is None:
        linears = [n for n, m in layers if isinstance(m, nn.Linear)]
        last = linears[-1:] if linears else [layers[-1][0]]
    return first, last


def _node_kind(node: object) -> str:
    return re.sub(r"\d+$", "", type(node).__name__)


def _probe_input(model: nn.Module) -> torch.Tensor:
    """A random image for the graph probe: the model's smallest accepted size when its
    default_cfg says so (the graph does not depend on resolution, and it is cheaper)."""
    cfg = getattr(model, "default_cfg", None)
    cfg = cfg if isinstance(cfg, dict) else {}
    size = cfg.get("input_size")
    if size and cfg.get("min_input_size"):
        side = max(int(cfg["min_input_size"]), 32)
        size = (size[0], side, side)
    if not size:
        conv = next(m for _, m in _layers(model) if isinstance(m, nn.Conv2d))
        size = (conv.in_channels, 224, 224)
    p = next(model.parameters())
    return torch.randn(1, *size, dtype=p.dtype, device=p.device)


def _probe_graph(
    model: nn.Module, example: torch.Tensor
) -> tuple[dict[object, str], list[tuple[str, object]]]:
    """One eval-mode forward pass that records the autograd graph.

    Returns the grad_fn of every ReLU/ReLU6 module's output (-> module name) and, in call
    order, the grad_fn of each xnor layer's input.
    """
    relu_nodes: dict[object, str] = {}
    inputs: list[tuple[str, object]] = []
    hooks = []

    def on_act(name):
        def hook(_m, _inp, out):
            if out.grad_fn is not None:
                relu_nodes[out.grad_fn] = name

        return hook

    def on_binary(name):
        def hook(_m, inp):
            inputs.append((name, inp[0].grad_fn))

        return hook

    for name, m in model.named_modules():
        if isinstance(m, _ACTIVATIONS):
            hooks.append(m.register_forward_hook(on_act(name)))
        elif is_binary(m) and m.input_quantizer is not None:
            hooks.append(m.register_forward_pre_hook(on_binary(name)))
    was_training = {n: m.training for n, m in model.named_modules()}
    model.eval()
    try:
        with torch.enable_grad():
            model(example.detach().clone().requires_grad_(True))
    finally:
        for h in hooks:
            h.remove()
        for n, m in model.named_modules():
            m.training = was_training[n]
    return relu_nodes, inputs


def _relus_feeding_binary(
    relu_nodes: dict[object, str], inputs: list[tuple[str, object]]
) -> list[str]:
    """Activation modules whose non-negative output reaches an xnor layer's input.

    From each xnor layer's input we walk back through non-negativity-preserving nodes and
    collect the ReLU nodes found (mapped to their modules by forward hooks).
    """
    memo: dict[object, frozenset[str] | None] = {}
    found: dict[str, None] = {}
    for layer, start in inputs:
        sources = _nonneg_sources(start, relu_nodes, memo, layer)
        for name in sorted(sources or ()):
            found[name] = None
    return list(found)


def _normalized(node: object, memo: dict[object, bool]) -> bool:
    """True when ``node``'s output is a BatchNorm output, up to ReLU, pooling, concat,
    reshaping and sums of such outputs: then sign() already sees normalized values."""
    if node is None:
        return False
    if node in memo:
        return memo[node]
    memo[node] = False
    kind = _node_kind(node)
    if "BatchNorm" in kind:
        result = True
    elif kind in _NONNEG_PRESERVING or kind in _RELU_NODES or kind == "AddBackward":
        parts = [fn for fn, _ in node.next_functions if fn is not None]
        result = bool(parts) and all(_normalized(fn, memo) for fn in parts)
    else:
        result = False
    memo[node] = result
    return result


def _layers_without_norm(inputs: list[tuple[str, object]]) -> list[str]:
    """xnor layers whose input does not come from a BatchNorm (e.g. all of AlexNet)."""
    memo: dict[object, bool] = {}
    return list(dict.fromkeys(name for name, node in inputs if not _normalized(node, memo)))


def _nonneg_sources(
    node: object, relu_nodes: dict[object, str], memo: dict, layer: str
) -> frozenset[str] | None:
    """ReLU modules that make (part of) ``node``'s output non-negative, or None if none do.

    Concatenation and reshaping ops keep any non-negative part; a sum is non-negative only
    when all its terms are, so an ``add`` counts only if every branch is.
    """
    if node is None:
        return None
    if node in memo:
        return memo[node]
    memo[node] = None  # guard; autograd graphs have no cycles
    result: frozenset[str] | None = None
    kind = _node_kind(node)
    if node in relu_nodes:
        result = frozenset([relu_nodes[node]])
    elif kind in _RELU_NODES:
        warnings.warn(
            f"a functional ReLU feeds binary layer {layer!r} and makes its sign() constant; "
            "use nn.ReLU modules so binarize() can remove it",
            stacklevel=4,
        )
    elif kind == "AddBackward":
        parts = [_nonneg_sources(fn, relu_nodes, memo, layer) for fn, _ in node.next_functions]
        if parts and all(p is not None for p in parts):
            result = frozenset().union(*parts)
    elif kind in _NONNEG_PRESERVING:
        parts = [_nonneg_sources(fn, relu_nodes, memo, layer) for fn, _ in node.next_functions]
        kept = [p for p in parts if p is not None]
        result = frozenset().union(*kept) if kept else None
    memo[node] = result
    return result


def _layer_kwargs(mode: str, input_scale: bool, choices: dict[str, str]) -> dict:
    """``from_float`` keyword arguments of every binarized layer for these options."""
    kwargs: dict = {
        "options": dict(
            threshold=choices["threshold"] == "learned",
            learned_scale=choices["scale"] == "learned",
            rprelu=choices["activation"] == "rprelu",
            shortcut=choices["shortcut"] == "bireal",
            downsample=choices["downsample"],
        )
    }
    if mode == "xnor":
        kwargs["input_scale"] = input_scale
        if choices["ste"] == "approx_sign":
            kwargs["input_quantizer"] = "approx_sign"
    return kwargs


def binarize(
    model: nn.Module,
    mode: str = "bwn",
    keep_first: bool = True,
    keep_last: bool = True,
    binarize_depthwise: bool = False,
    input_scale: bool = False,
    keep: Iterable[str] = (),
    input_bn: str = "auto",
    example_input: torch.Tensor | None = None,
    shortcut: str = "none",
    downsample: str = "pooled",
    threshold: str = "none",
    activation: str = "none",
    scale: str = "analytic",
    ste: str = "identity_clip",
) -> nn.Module:
    """A deep copy of ``model`` with its conv/linear layers made binary (``"bwn"``/``"xnor"``).

    Weights are shared with the copy's float layers, so a pretrained model keeps its weights;
    state_dict keys do not change. ``keep`` adds fnmatch patterns of layer names to leave float.
    ``input_bn`` (xnor only): ``"auto"`` gives a layer its own input BatchNorm when none
    precedes it, ``"always"`` to every xnor layer, ``"never"`` to none.
    ``example_input`` is used (xnor only) to trace the graph; by default a random image of the
    model's ``default_cfg`` minimum input size (else ``input_size``, else 224x224).
    Options (``zoo.binary.options``): ``shortcut="bireal"`` with ``downsample="pooled"|"real"|
    "none"``, ``threshold="learned"``, ``activation="rprelu"``, ``scale="learned"``,
    ``ste="approx_sign"``; the defaults give XNOR-Net.
    """
    if mode not in MODES:
        raise ValueError(f"unknown binary mode {mode!r}; use 'bwn' or 'xnor'")
    if not isinstance(model, nn.Module):
        raise TypeError(f"binarize needs an nn.Module, got {type(model).__name__}")
    if input_bn not in ("auto", "always", "never"):
        raise ValueError(f"input_bn must be 'auto', 'always' or 'never', got {input_bn!r}")
    if any(is_binary(m) for m in model.modules()):
        raise ValueError("the model is already binarized; binarize its float twin instead")
    choices = dict(
        shortcut=shortcut, downsample=downsample, threshold=threshold, activation=activation,
        scale=scale, ste=ste,
    )  # fmt: skip
    check_options(mode, choices, input_scale)
    keep = list(keep)
    model = copy.deepcopy(model)
    first, last = find_first_last(model)
    info = BinarizeInfo(
        mode=mode,
        options=dict(
            keep_first=keep_first, keep_last=keep_last, binarize_depthwise=binarize_depthwise,
            input_scale=input_scale, keep=keep, input_bn=input_bn, **choices,
        ),
    )  # fmt: skip
    extra = _layer_kwargs(mode, input_scale, choices)
    for name, m in _layers(model):
        reason = None
        if keep_first and name in first:
            reason = "first layer"
        elif keep_last and name in last:
            reason = "last layer"
        elif is_depthwise(m) and not binarize_depthwise:
            reason = "depthwise"
        elif any(fnmatch.fnmatchcase(name, p) for p in keep):
            reason = "kept (keep=)"
        if reason:
            info.kept_float[name] = reason
            continue
        cls = BinaryConv2d if isinstance(m, nn.Conv2d) else BinaryLinear
        model.set_submodule(name, cls.from_float(m, mode=mode, **extra))
        info.binarized.append(name)
    if mode == "xnor" and info.binarized:
        if example_input is None:
            example_input = _probe_input(model)
        relu_nodes, inputs = _probe_graph(model, example_input)
        if input_bn == "always":
            info.added_norms = list(dict.fromkeys(n for n, _ in inputs))
        elif input_bn == "auto":
            info.added_norms = _layers_without_norm(inputs)
        for name in info.added_norms:
            model.get_submodule(name).add_input_bn()
        # A BatchNorm right before sign() re-centres ReLU outputs, so those ReLUs can stay.
        inputs = [(n, node) for n, node in inputs if n not in info.added_norms]
        for name in _relus_feeding_binary(relu_nodes, inputs):
            model.set_submodule(name, nn.Identity())
            info.removed_activations.append(name)
    model.binarize_info = info
    cfg = getattr(model, "default_cfg", None)
    if isinstance(cfg, dict):
        model.default_cfg = {**cfg, "binary": mode, "float_twin": cfg.get("architecture", "")}
        if hasattr(model, "pretrained_cfg"):
            model.pretrained_cfg = model.default_cfg
    return model
