"""What the zoo offers, by name: listing with weights, model cards, pretrained cfgs and
complexity of a name or ``arch.tag``, on top of the registry, the manifests and the resolver.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torch import nn

from zoo import counting, registry
from zoo.binary.summary import BinarySummary
from zoo.binary.summary import summary as summarize
from zoo.factory import create, is_file_spec
from zoo.pretrained import (
    data_config,
    get_manifest,
    list_tags,
    pretrained_head,
    pretrained_model_kwargs,
)

__all__ = [
    "count",
    "get_pretrained_cfg",
    "list_models",
    "list_pretrained",
    "model_info",
    "summary",
]


def list_models(
    filter: str | Iterable[str] = "*",
    exclude_filters: str | Iterable[str] | None = None,
    pretrained: bool = False,
) -> list[str]:
    """Registered names matching ``filter`` (fnmatch, or a list of patterns) and none of
    ``exclude_filters``, naturally sorted, as timm's ``list_models``. With ``pretrained=True``
    only weight sets, as ``arch.tag`` (default tag first), matched on the full name."""
    if not pretrained:
        return registry.list_models(filter, exclude_filters)
    names = [f"{a}.{t}" for a in registry.list_models() for t in list_tags(a)]
    return [n for n in names if registry.matches(n, filter, exclude_filters)]


def list_pretrained(
    filter: str | Iterable[str] = "*", exclude_filters: str | Iterable[str] | None = None
) -> list[str]:
    """Every ``arch.tag`` with weights matching ``filter``, as timm's ``list_pretrained``."""
    return list_models(filter, exclude_filters, pretrained=True)


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """The cfg of ``arch.tag`` (or ``arch``'s default weights): preprocessing, head, source,
    license, metrics, files, as timm's ``get_pretrained_cfg``."""
    arch, tag = registry.split_tag(registry.check_model_name(name))
    manifest = get_manifest(arch, tag)
    return {**manifest.to_dict(), **data_config(f"{arch}.{manifest.tag}")}


def model_info(name: str) -> dict[str, Any]:
    """Family, paper, published figures, default input size and weight tags of a model."""
    arch, _ = registry.split_tag(registry.check_model_name(name))
    cfg = registry.get_cfg(arch)
    return {"name": arch, **cfg.to_dict(), "pretrained_tags": list_tags(arch)}


def _architecture_of(spec: str | os.PathLike) -> tuple[nn.Module, tuple[int, int, int] | None]:
    """The model a spec stands for, built without loading weights where it can be (counting
    needs none): for ``arch.tag`` the variant and head of that weight set, at its input size."""
    if is_file_spec(spec):
        model = create(spec)
        return model, tuple(model.pretrained_cfg.get("input_size") or ()) or None
    arch, tag = registry.split_tag(registry.check_model_name(spec))
    if not tag:
        return create(arch), None
    model = create(arch, **pretrained_head(arch, tag), **pretrained_model_kwargs(arch, tag))
    return model, tuple(data_config(spec)["input_size"])


def count(
    model_or_name: nn.Module | str | os.PathLike,
    input_size: tuple[int, int, int] | int | None = None,
    fvcore: bool = True,
) -> counting.Complexity:
    """``zoo.counting.count`` of a model, a name, ``arch.tag`` (at the weights' input size
    and head) or a model file."""
    if isinstance(model_or_name, nn.Module):
        return counting.count(model_or_name, input_size, fvcore)
    if not isinstance(model_or_name, (str, os.PathLike)):
        raise TypeError(
            f"count needs an nn.Module or a model name (or a model file), got "
            f"{type(model_or_name).__name__} {model_or_name!r}"
        )
    model, weights_size = _architecture_of(model_or_name)
    result = counting.count(model, weights_size if input_size is None else input_size, fvcore)
    result.name = str(model_or_name)
    return result



def summary(
    model_or_name: nn.Module | str | os.PathLike,
    input_size: int | tuple[int, ...] | None = None,
    **create_kwargs: Any,
) -> BinarySummary:
    """Binary-aware per-layer summary (larq's ``summary``) of a model, a name or a file;
    ``create_kwargs`` go to ``zoo.create`` for a name."""
    if isinstance(model_or_name, nn.Module):
        if create_kwargs:
            raise TypeError(f"{sorted(create_kwargs)} only apply when a model name is given")
        return summarize(model_or_name, input_size)
    if not isinstance(model_or_name, (str, os.PathLike)):
        raise TypeError(
            f"summary needs an nn.Module or a model name (or a model file), got "
            f"{type(model_or_name).__name__} {model_or_name!r}"
        )
    model = create(model_or_name, **create_kwargs)
    return summarize(model, input_size, name=str(model_or_name))
