"""Pretrained weights: manifests, verified downloads, cache, converters, transforms.

    import zoo
    model = zoo.create("shufflenet_v2_x1_0", pretrained=True)        # default tag
    model = zoo.create("shufflenet_g3", pretrained="ptcv_in1k")       # a tag
    model = zoo.create("mobilenet_v2", pretrained="/data/mobilenet_v2-b0353104.pth")  # offline
    preprocess = zoo.pretrained.transforms(model)                     # eval transform

See ``docs/pretrained.md`` for the tags and the offline workflow.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from torch import nn

from zoo.data.config import resolve_data_config
from zoo.pretrained.adapt import adapt_input_conv, load_pretrained, local_manifest
from zoo.pretrained.errors import (
    CorruptCheckpointError,
    DownloadError,
    HashMismatchError,
    ManifestError,
    OfflineError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    WeightsError,
)
from zoo.pretrained.hub import cache_dir, zoo_home
from zoo.pretrained.manifests import Manifest, get_manifest, list_tags, load_manifests, weights_dir
from zoo.pretrained.safeload import load_state_dict
from zoo.registry import get_cfg

__all__ = [
    "list_tags",
    "load_pretrained",
    "data_config",
    "transforms",
    "get_manifest",
    "pretrained_info",
    "list_pretrained",
    "pretrained_model_kwargs",
    "pretrained_head",
    "adapt_input_conv",
    "load_state_dict",
    "cache_dir",
    "zoo_home",
    "weights_dir",
    "Manifest",
    "WeightsError",
    "ManifestError",
    "DownloadError",
    "OfflineError",
    "HashMismatchError",
    "UnsafeCheckpointError",
    "CorruptCheckpointError",
    "StateDictMismatchError",
]

_DATA_KEYS = (
    "input_size",
    "resize_size",
    "crop_pct",
    "interpolation",
    "mean",
    "std",
    "channel_order",
    "value_range",
    "resize_mode",
)


def list_pretrained() -> list[str]:
    """Every ``arch.tag`` with a manifest, sorted."""
    return sorted(load_manifests())


def _is_tag(arch: str, value: Any) -> bool:
    return isinstance(value, str) and value.removeprefix(f"{arch}.") in list_tags(arch)


def pretrained_model_kwargs(arch: str, tag_or_path: Any = True) -> dict[str, Any]:
    """Builder kwargs a weight set needs (e.g. ``{"stem_chs": 6}`` for pytorchcv's 0.25x
    ShuffleNet v1, ``{"act_layer": "relu6"}`` for timm's MobileNet v1), so the resolver builds
    the matching variant before loading. A local file gets those of the manifest that names
    it or whose source architecture it matches.

    Empty for unknown tags and weights that fit the default architecture.
    """
    if tag_or_path is True:
        return dict(get_manifest(arch).model_kwargs) if list_tags(arch) else {}
    if _is_tag(arch, tag_or_path):
        return dict(get_manifest(arch, tag_or_path.removeprefix(f"{arch}.")).model_kwargs)
    if isinstance(tag_or_path, (str, os.PathLike)) and Path(tag_or_path).expanduser().is_file():
        manifest = local_manifest(arch, Path(tag_or_path).expanduser())
        return dict(manifest.model_kwargs) if manifest else {}
    return {}


def pretrained_head(arch: str, tag_or_path: bool | str = True) -> dict[str, int]:
    """``num_classes`` and ``in_chans`` of a registered weight set (e.g. 10 and 1 for the
    ``fashion_mnist`` tags), so ``zoo.create`` builds the model they fit unless told otherwise.

    Empty for local files and unknown tags.
    """
    tags = list_tags(arch)
    tag = tag_or_path.removeprefix(f"{arch}.") if isinstance(tag_or_path, str) else None
    if (tag_or_path is True and tags) or tag in tags:
        m = get_manifest(arch, tag)
        return {"num_classes": m.num_classes, "in_chans": m.in_chans}
    return {}


def pretrained_info(arch: str) -> list[dict[str, Any]]:
    """One summary per tag of ``arch`` (default first): source, metrics, license, URLs."""
    out = []
    for tag in list_tags(arch):
        m = get_manifest(arch, tag)
        out.append(
            {
                "tag": tag,
                "default": m.default,
                "source": m.source,
                "metrics": dict(m.metrics),
                "license": m.license,
                "urls": [f.url or f.file for f in m.files],
                "preprocessing": dict(m.preprocessing),
            }
        )
    return out


def _config_from_name(name: str) -> dict[str, Any]:
    arch, _, tag = name.partition(".")
    if tag or list_tags(arch):
        return dict(get_manifest(arch, tag or None).preprocessing)
    cfg = get_cfg(arch)
    return {
        "input_size": list(cfg.input_size),
        "crop_pct": cfg.crop_pct,
        "interpolation": cfg.interpolation,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
    }


def data_config(name_or_model: str | nn.Module) -> dict[str, Any]:
    """The preprocessing a model or weight set expects (input size, resize, crop, mean/std,
    channel order, value range), like timm's ``resolve_data_config``.

    A name ``arch.tag`` gives that tag's config, ``arch`` its default tag's (or the
    architecture's defaults without weights); a model gives its ``pretrained_cfg``.
    """
    if isinstance(name_or_model, str):
        raw = _config_from_name(name_or_model)
    elif isinstance(name_or_model, nn.Module):
        cfg = getattr(name_or_model, "pretrained_cfg", None) or getattr(
            name_or_model, "default_cfg", None
        )
        if not cfg:
            raise ValueError(
                f"{type(name_or_model).__name__} has no pretrained_cfg/default_cfg; build it "
                "with zoo.create(...) or pass a model name"
            )
        raw = {k: cfg[k] for k in _DATA_KEYS if k in cfg}
    else:
        raise TypeError(f"expected a model name or an nn.Module, got {type(name_or_model)}")
    return resolve_data_config(raw)


def __getattr__(name: str) -> Any:
    """``transforms`` loads torchvision: it is imported on first use, not with the package."""
    if name == "transforms":
        return importlib.import_module("zoo.pretrained.preprocessing").transforms
    raise AttributeError(f"module 'zoo.pretrained' has no attribute {name!r}")
