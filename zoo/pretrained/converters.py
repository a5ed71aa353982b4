"""Map a foreign state dict (torchvision, timm, pytorchcv) onto a zoo model's keys.

The zoo's blocks register their layers in the same order as the reference implementations
(conv, then BN; branches in the order they are concatenated), so a source state dict maps to
ours *by position*: after dropping ``num_batches_tracked`` and putting the source keys in its
architecture's registration order, the n-th source tensor is the n-th zoo tensor, and every
shape must agree. Rules per source fix that order or the layout where a port differs:

- ``torchvision`` / ``pytorchcv``: the file keeps registration order (an ordered pickle);
  when the source package is installed the order is taken from its own model instead.
- ``timm``: safetensors files are stored sorted by name, so the order comes from building
  the timm architecture on the ``meta`` device (timm is a dependency of zoo).
- ``pytorchcv_shufflenet_v1``: pytorchcv concatenates ``[conv branch, pooled input]`` in its
  strided units, the zoo (and the authors' code) ``[pooled input, conv branch]``. Reversing the
  channel order of every activation turns one into the other: a channel shuffle commutes with
  reversal, and a grouped conv with reversed inputs and outputs is again a grouped conv. So
  every conv/BN tensor is flipped along its channel dimensions (the stem keeps its RGB input
  order, the classifier keeps its class order).
- ``megvii``: the authors' own checkpoints are converted by key name, never by position
  (``zoo.pretrained.megvii``); a file with their key names is recognised without a manifest.

Only numerical equivalence proves a converter: ``tests/pretrained/test_pretrained_converters.py``
checks each one against the source model's logits.
"""

from __future__ import annotations

import functools
import logging
import warnings

import torch
from torch import nn

from zoo.blocks import ShuffleV1Unit
from zoo.pretrained.errors import StateDictMismatchError
from zoo.pretrained.megvii import convert_megvii, is_megvii_state
from zoo.pretrained.peers import LIBRARIES, PeerLibraryMissing, PeerSpec, build_peer

__all__ = [
    "convert_state_dict",
    "source_key_order",
    "first_conv_name",
    "classifier_name",
    "map_by_order",
    "matches_source",
    "strip_module_prefix",
]

_logger = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def strip_module_prefix(state: Tensors) -> Tensors:
    """Drop the ``module.`` prefix that ``DataParallel`` checkpoints carry."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def first_conv_name(model: nn.Module) -> str:
    """Module name of the model's first conv (``default_cfg['first_conv']`` or the first
    ``nn.Conv2d`` registered)."""
    cfg = getattr(model, "default_cfg", None) or {}
    modules = dict(model.named_modules())
    name = cfg.get("first_conv")
    if name and isinstance(modules.get(name), nn.Conv2d):
        return name
    return next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def classifier_name(model: nn.Module) -> str:
    """Module name of the final classifier (``get_classifier()`` or ``default_cfg``)."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for n, m in model.named_modules():
            if m is head:
                return n
    cfg = getattr(model, "default_cfg", None) or {}
    if cfg.get("classifier"):
        return cfg["classifier"]
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


# ----------------------------------------------------------------------------- source order


@functools.lru_cache(maxsize=64)
def _skeleton_keys(source_arch: str, num_classes: int) -> dict[str, torch.Size] | None:
    """State-dict keys (registration order) and shapes of the source architecture, built on
    the meta device (no memory, no init cost)."""
    lib, _, name = source_arch.partition(":")
    if lib not in LIBRARIES:
        return None
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_peer(PeerSpec(lib, name), num_classes=num_classes)
    except PeerLibraryMissing:
        if lib != "pytorchcv":
            raise
        return None  # optional: a pytorchcv file keeps the registration order anyway
    return {k: v.shape for k, v in model.state_dict().items()}


def source_key_order(state: Tensors, source_arch: str, num_classes: int) -> list[str]:
    """Keys of ``state`` in the source architecture's registration order.

    Raises ``StateDictMismatchError`` when the file does not hold that architecture.
    """
    keys = _skeleton_keys(source_arch, num_classes) if source_arch else None
    if keys is None:
        return list(state)
    want = [k for k in keys if not _is_counter(k)]
    have_shapes = {k: tuple(v.shape) for k, v in state.items()}
    have = {k for k in state if not _is_counter(k)}
    missing = [k for k in want if k not in have]
    unexpected = sorted(have - set(want))
    if missing or unexpected:
        raise StateDictMismatchError(
            f"the checkpoint does not hold {source_arch}: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}. Is it the file the manifest names?"
        )
    wrong = [
        f"{k} {have_shapes[k]} (expected {tuple(keys[k])})"
        for k in want
        if have_shapes[k] != tuple(keys[k])
    ]
    if wrong:
        raise StateDictMismatchError(
            f"the checkpoint does not hold {source_arch}: shapes differ for {', '.join(wrong[:5])}"
            f"{' ...' if len(wrong) > 5 else ''}. Is it the file the manifest names?"
        )
    return want


# ----------------------------------------------------------------------------- by position


def map_by_order(source: list[tuple[str, torch.Tensor]], model: nn.Module) -> Tensors:
    """Pair the n-th source tensor with the n-th zoo tensor (counters excluded).

    Shapes must agree, except the first conv's input channels and the classifier's output
    size, which :func:`zoo.pretrained.adapt.load_pretrained` adapts afterwards.
    """
    target = [(k, v) for k, v in model.state_dict().items() if not _is_counter(k)]
    source = [(k, v) for k, v in source if not _is_counter(k)]
    first = f"{first_conv_name(model)}.weight"
    head = classifier_name(model)
    flexible = {first: 1, f"{head}.weight": 0, f"{head}.bias": 0}
    if len(source) != len(target):
        raise StateDictMismatchError(
            f"the checkpoint has {len(source)} tensors but {type(model).__name__} has "
            f"{len(target)}; it is a different architecture (or width). "
            f"{_first_divergence(source, target, flexible)}"
        )
    out: Tensors = {}
    for (s_key, s_val), (t_key, t_val) in zip(source, target, strict=True):
        if not _shapes_fit(s_val.shape, t_val.shape, flexible.get(t_key)):
            raise StateDictMismatchError(
                f"checkpoint tensor {s_key} {tuple(s_val.shape)} lands on {t_key} "
                f"{tuple(t_val.shape)}: shapes differ, so the checkpoint is a different "
                "architecture or width than this model."
            )
        out[t_key] = s_val
    return out


def _shapes_fit(src: torch.Size, dst: torch.Size, free_dim: int | None) -> bool:
    if src == dst:
        return True
    if free_dim is None or len(src) != len(dst):
        return False
    return all(a == b for i, (a, b) in enumerate(zip(src, dst, strict=True)) if i != free_dim)


def _first_divergence(source, target, flexible) -> str:
    for (s_key, s_val), (t_key, t_val) in zip(source, target, strict=False):
        if not _shapes_fit(s_val.shape, t_val.shape, flexible.get(t_key)):
            return (
                f"First difference: checkpoint {s_key} {tuple(s_val.shape)} vs model "
                f"{t_key} {tuple(t_val.shape)}."
            )
    return ""


# ----------------------------------------------------------------------------- layout rules


def _shuffle_source_index(channels: int, groups: int) -> torch.Tensor:
    """``idx`` with ``shuffled = x[:, idx]`` for the standard (g, c/g) -> (c/g, g) shuffle."""
    per_group = channels // groups
    j = torch.arange(channels)
    return (j % groups) * per_group + j // groups


def _reverse_channels(model: nn.Module, state: Tensors) -> Tensors:
    """Flip every conv/BN tensor along its channel dims (pytorchcv ShuffleNet v1 -> zoo).

    The first conv keeps its input (image) channels; the classifier keeps its outputs.
    """
    out = dict(state)
    stem = first_conv_name(model)
    head = classifier_name(model)
    for name, module in model.named_modules():
        w, b = f"{name}.weight", f"{name}.bias"
        if isinstance(module, nn.Conv2d) and name != head:
            out[w] = out[w].flip(0) if name == stem else out[w].flip(0).flip(1)
            if b in out:
                out[b] = out[b].flip(0)
        elif isinstance(module, nn.BatchNorm2d):
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                key = f"{name}.{suffix}"
                if key in out:
                    out[key] = out[key].flip(0)
        elif name == head:
            out[w] = out[w].flip(1)
    # A zoo unit that skips the shuffle after an ungrouped first conv (pytorchcv shuffles
    # there): fold that fixed permutation into the conv's output channels and its BN.
    for name, unit in model.named_modules():
        if isinstance(unit, ShuffleV1Unit) and isinstance(unit.shuffle, nn.Identity):
            groups = unit.expand.conv.groups
            mid = unit.compress.conv.out_channels
            if groups == 1:
                continue
            rev = torch.arange(mid - 1, -1, -1)
            # out[i] currently holds source channel (mid-1-i); it must hold the shuffled
            # source channel src(mid-1-i), i.e. flipped row (mid-1-src(mid-1-i)).
            idx = (mid - 1) - _shuffle_source_index(mid, groups)[rev]
            for key in _unit_compress_keys(name):
                if key in out:
                    out[key] = out[key][idx]
    return out


def _unit_compress_keys(unit_name: str) -> list[str]:
    conv, bn = f"{unit_name}.compress.conv", f"{unit_name}.compress.bn"
    return [f"{conv}.weight", f"{conv}.bias"] + [
        f"{bn}.{s}" for s in ("weight", "bias", "running_mean", "running_var")
    ]


# ----------------------------------------------------------------------------- entry point


def matches_source(state: Tensors, source_arch: str) -> int | None:
    """Number of classes if ``state`` has exactly the keys of ``source_arch`` (its last
    weight, the classifier, gives the class count), else ``None``."""
    keys = _skeleton_keys(source_arch, 1000)
    if keys is None:
        return None
    want = {k for k in keys if not _is_counter(k)}
    if want != {k for k in state if not _is_counter(k)}:
        return None
    last_weight = [k for k in keys if k.endswith("weight")][-1]
    return int(state[last_weight].shape[0])


def _detect_converter(state: Tensors, model: nn.Module) -> str:
    """Converter for a local file that matched no manifest: zoo keys load as they are;
    otherwise tensors are mapped by position in file order (with pytorchcv's ShuffleNet v1
    rule when its key names show up)."""
    target = {k for k in model.state_dict() if not _is_counter(k)}
    have = {k for k in state if not _is_counter(k)}
    if len(target & have) >= 0.5 * max(1, len(target)):
        return "zoo"
    if is_megvii_state(state):
        _logger.info("local checkpoint has the authors' (Megvii) ShuffleNet keys")
        return "megvii"
    is_v1 = any(isinstance(m, ShuffleV1Unit) for m in model.modules())
    pytorchcv_v1 = any(".compress_conv1." in k for k in have) and any(
        "init_block" in k for k in have
    )
    converter = "pytorchcv_shufflenet_v1" if is_v1 and pytorchcv_v1 else "positional"
    _logger.warning(
        "local checkpoint without a manifest: its keys are not the zoo's, so tensors are "
        "mapped by position in file order (%s rules; every shape is checked). Check the "
        "accuracy.",
        converter,
    )
    return converter


def _zoo_keys(state: Tensors, model: nn.Module) -> Tensors:
    """A state dict already in zoo layout: keep it (key checks happen when loading)."""
    return dict(state)


def convert_state_dict(
    state: Tensors,
    model: nn.Module,
    converter: str,
    source_arch: str = "",
    num_classes: int = 1000,
) -> Tensors:
    """Return ``state`` re-keyed (and re-laid-out) for ``model``.

    ``converter`` is one of ``zoo``, ``torchvision``, ``timm``, ``pytorchcv``,
    ``pytorchcv_shufflenet_v1``, ``megvii`` or ``auto`` (see :func:`_detect_converter`).
    """
    state = strip_module_prefix(state)
    if converter == "auto":
        converter = _detect_converter(state, model)
    if converter == "zoo":
        return _zoo_keys(state, model)
    if converter == "megvii":
        return convert_megvii(state, model)
    if converter not in (
        "torchvision",
        "timm",
        "pytorchcv",
        "pytorchcv_shufflenet_v1",
        "positional",
    ):
        raise ValueError(f"unknown converter {converter!r}")
    order = source_key_order(state, source_arch, num_classes)
    mapped = map_by_order([(k, state[k]) for k in order], model)
    if converter == "pytorchcv_shufflenet_v1":
        mapped = _reverse_channels(model, mapped)
    return mapped
