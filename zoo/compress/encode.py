"""Deep Compression's last step: a pruned, weight-shared model to a ``.zdc`` file and back.

The file format and the per-tensor codec live in :mod:`zoo.formats.zdc`; this module decides
what goes into it (every Conv2d/Linear weight encoded with its bits and index bits, the rest
raw, the architecture recorded in the meta) and accounts for the bytes written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.nn.utils import parametrize

from zoo import factory
from zoo.compress.accounting import SizeReport, size_report
from zoo.compress.layers import PerLayer, compressible_layers, layer_kind, resolve_per_layer
from zoo.formats import zdc
from zoo.formats.zdc import CompressedModel, encode_layer

__all__ = ["DEFAULT_INDEX_BITS", "encode_model", "save", "load"]

# Han et al. 2016, Sec. 2: "we encode this difference in 8 bits for conv layer and 5 bits for
# fc layer" (their AlexNet Table 4 lists 4 index bits before Huffman coding).
DEFAULT_INDEX_BITS = {"conv": 8, "linear": 5}


def encode_model(
    model: nn.Module,
    bits: PerLayer | None = None,
    index_bits: PerLayer | None = None,
    arch: str | None = None,
    create_kwargs: Mapping[str, Any] | None = None,
) -> CompressedModel:
    """Encode every Conv2d/Linear weight of a pruned, weight-shared model; keep the rest raw."""
    layers = compressible_layers(model)
    for name, module in layers.items():
        if parametrize.is_parametrized(module, "weight"):
            raise RuntimeError(f"{name} is parametrized; call zoo.compress.finalize(model) first")
    bits_of = resolve_per_layer(bits, layers, "bits")
    index_of = resolve_per_layer(index_bits, layers, "index_bits")
    state = model.state_dict()
    encoded = []
    for name, module in layers.items():
        kind = layer_kind(module)
        g = int(index_of.get(name, DEFAULT_INDEX_BITS[kind]))
        b = bits_of.get(name)
        encoded.append(encode_layer(name, module.weight, kind, None if b is None else int(b), g))
    weight_keys = {f"{layer.name}.weight" for layer in encoded}
    raw = {k: v.detach().cpu().clone() for k, v in state.items() if k not in weight_keys}
    meta = _meta(model, arch, create_kwargs)
    return CompressedModel(meta, encoded, raw)


def _meta(model: nn.Module, arch: str | None, kwargs: Mapping[str, Any] | None) -> dict:
    cfg = getattr(model, "default_cfg", None) or {}
    return {
        "format": "zoo deep compression",
        "arch": arch or cfg.get("architecture"),
        "num_classes": getattr(model, "num_classes", cfg.get("num_classes")),
        "in_chans": getattr(model, "in_chans", None),
        "kwargs": dict(kwargs or {}),
    }




def save(
    model: nn.Module | CompressedModel,
    path: str | os.PathLike,
    bits: PerLayer | None = None,
    index_bits: PerLayer | None = None,
    arch: str | None = None,
    create_kwargs: Mapping[str, Any] | None = None,
) -> SizeReport:
    """Encode ``model`` (pruned and weight-shared) and write it atomically to ``path``.

    Returns the :class:`~zoo.compress.accounting.SizeReport`, whose total equals the file size.
    """
    cm = (
        model
        if isinstance(model, CompressedModel)
        else encode_model(model, bits, index_bits, arch, create_kwargs)
    )
    return size_report(cm, zdc.write(cm, path))


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the shared-weight model from ``path``.

    Without ``model`` the architecture recorded in the file is created with ``zoo.create``;
    pass ``model`` for models outside the zoo registry.
    """
    cm = zdc.read(path)
    if model is None:
        arch = cm.meta.get("arch")
        if not arch:
            raise ValueError(f"{path} records no zoo architecture; pass model= to load it into")
        model = factory.create(
            arch,
            num_classes=int(cm.meta["num_classes"]),
            in_chans=int(cm.meta["in_chans"]),
            **cm.meta.get("kwargs", {}),
        )
    state = cm.state_dict()
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(
            f"{path} does not fit this model: missing {missing[:4]}, unexpected {extra[:4]}; "
            "load it into the architecture it was saved from"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
