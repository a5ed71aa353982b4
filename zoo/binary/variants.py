"""Register a ``bwn_<name>`` and an ``xnor_<name>`` twin of every float model: the one place
binary variants are registered.

Each builder builds the float model (``zoo.models.build_model``) and passes it through
``binarize`` (first conv and classifier float, depthwise convs float, see
``zoo.binary.convert``). Keyword arguments of ``binarize`` (``input_scale``, XNOR's K;
``binarize_depthwise``; ``keep``; the building options ``shortcut``, ``downsample``,
``threshold``, ``activation``, ``scale``, ``ste`` of ``zoo.binary.options``) go to it, the rest
to the float builder. Weights, including
starting a twin from its float model's weights, are ``zoo.factory``'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from zoo.binary.convert import binarize
from zoo.binary.layers import MODES
from zoo.binary.options import OPTION_DEFAULTS
from zoo.models import build_model
from zoo.published import published, published_source
from zoo.registry import ModelCfg, get_cfg, is_model, list_models, register

__all__ = ["BINARIZE_KWARGS", "register_binary_variants", "binary_name", "split_binarize_kwargs"]

_PAPER = (
    "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks "
    "(arXiv:1603.05279)"
)

# ``binarize`` options a twin takes as keyword arguments (and a 1-bit file records).
BINARIZE_KWARGS = (
    "keep_first",
    "keep_last",
    "binarize_depthwise",
    "input_scale",
    "keep",
    "input_bn",
    *OPTION_DEFAULTS,  # shortcut, downsample, threshold, activation, scale, ste
)


def binary_name(mode: str, float_name: str) -> str:
    """``"xnor", "resnet18"`` -> ``"xnor_resnet18"``."""
    return f"{mode}_{float_name}"


def split_binarize_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(binarize options, float builder kwargs) of a twin's keyword arguments."""
    options = {k: v for k, v in kwargs.items() if k in BINARIZE_KWARGS}
    rest = {k: v for k, v in kwargs.items() if k not in BINARIZE_KWARGS}
    return options, rest


def _binary_cfg(mode: str, float_name: str, cfg: ModelCfg) -> ModelCfg:
    name = binary_name(mode, float_name)
    what = "binary weights" if mode == "bwn" else "binary weights and activations"
    notes = (
        f"{mode.upper()} twin of {float_name} ({what}); first conv and classifier float, "
        "depthwise convs float" + (", ReLUs feeding binary convs removed" if mode == "xnor" else "")
    )
    return dataclasses.replace(
        cfg,
        binary=mode,
        float_twin=float_name,
        published=published(name),
        published_source=published_source(name),
        notes=notes,
        paper=f"{cfg.paper}; {_PAPER}",
    )


def _make_builder(mode: str, float_name: str) -> Callable[..., nn.Module]:
    def builder(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> nn.Module:
        options, rest = split_binarize_kwargs(kwargs)
        model = build_model(float_name, num_classes=num_classes, in_chans=in_chans, **rest)
        return binarize(model, mode, **options)

    builder.__name__ = binary_name(mode, float_name)
    builder.__doc__ = f"{mode.upper()} variant of ``{float_name}`` (see zoo.binary)."
    return builder


def register_binary_variants() -> list[str]:
    """Register the bwn/xnor twin of every float model not yet twinned; returns new names."""
    added = []
    for name in list_models():
        cfg = get_cfg(name)
        if cfg.binary:
            continue
        for mode in MODES:
            new = binary_name(mode, name)
            if is_model(new):
                continue
            register(new, _make_builder(mode, name), _binary_cfg(mode, name, cfg))
            added.append(new)
    return added


register_binary_variants()
