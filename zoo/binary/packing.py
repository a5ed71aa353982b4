"""1-bit checkpoints: binary weights packed 8 per byte, everything else as is.

File format (safetensors, so loading never runs pickled code):

* ``<layer>.weight.signs``: uint8, the signs of the layer's latent weights in C order, bit
  ``i`` of byte ``j`` (least significant first) is element ``8 j + i``; 1 means +1 (w >= 0);
* ``<layer>.weight.alpha``: float32 ``[out]``, the per-output-channel scale;
* every other state_dict entry (float layers, BatchNorm, biases) unchanged;
* metadata: format tag, architecture, num_classes, in_chans, binarize options and the shape
  and mode of each binary layer, enough for ``zoo.create(path)`` to rebuild the model.

On load each latent weight is set to ``alpha * sign``: the layer recomputes exactly the same
``alpha`` (see ``channel_scale``) and the same binary weights, so outputs are bit-exact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from zoo.binary.layers import is_binary
from zoo.utils import atomic_write_bytes

__all__ = [
    "save_binary",
    "check_binary_layers",
    "read_metadata",
    "pack_signs",
    "unpack_signs",
    "expand_binary_state",
    "FORMAT",
]

FORMAT = "zoo-binary-v1"
_SIGNS, _ALPHA = ".signs", ".alpha"


def pack_signs(w: torch.Tensor) -> torch.Tensor:
    """Signs of ``w`` (1 for w >= 0) packed 8 per byte, little bit order: uint8 ``[ceil(n/8)]``."""
    bits = (w.detach() >= 0).flatten().cpu().numpy()
    return torch.from_numpy(np.packbits(bits, bitorder="little"))


def unpack_signs(
    packed: torch.Tensor, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Inverse of ``pack_signs``: a tensor of +1/-1 of ``shape``."""
    n = int(np.prod(shape))
    if packed.dtype != torch.uint8 or packed.numel() != (n + 7) // 8:
        raise ValueError(
            f"packed signs must be uint8 of {(n + 7) // 8} bytes for shape {tuple(shape)}, "
            f"got {packed.dtype} of {packed.numel()}; the checkpoint does not match the model"
        )
    bits = np.unpackbits(packed.numpy(), count=n, bitorder="little")
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1).reshape(shape).to(dtype)


def _binary_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if is_binary(m)}


def _model_meta(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "default_cfg", None) or {}
    info = getattr(model, "binarize_info", None)
    meta: dict[str, Any] = {
        "architecture": cfg.get("architecture", ""),
        "num_classes": cfg.get("num_classes"),
        "in_chans": (cfg.get("input_size") or [None])[0],
    }
    if info is not None:
        meta["mode"] = info.mode
        meta["binarize_options"] = info.options
    return meta


def save_binary(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model`` as a 1-bit checkpoint (safetensors, atomic); returns the path."""
    layers = _binary_layers(model)
    if not layers:
        raise ValueError(
            "the model has no binary layers; binarize it first (zoo.binarize(model, 'xnor')) "
            "or save a float model with torch.save(model.state_dict(), path)"
        )
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    layer_meta: dict[str, Any] = {}
    for name, m in layers.items():
        key = f"{name}.weight" if name else "weight"
        state.pop(key)
        tensors[key + _SIGNS] = pack_signs(m.weight)
        alpha = m.weight_scale()
        if alpha is not None:
            tensors[key + _ALPHA] = alpha.detach().cpu().contiguous()
        layer_meta[name] = {
            "shape": list(m.weight.shape),
            "mode": m.mode,
            "scaled": alpha is not None,
        }
    for key, t in state.items():
        tensors[key] = t.detach().cpu().contiguous()
    meta = {"format": FORMAT, "layers": layer_meta, **_model_meta(model)}
    data = st_save(tensors, metadata={"zoo": json.dumps(meta)})
    return atomic_write_bytes(path, data)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The zoo metadata of a 1-bit checkpoint (architecture, layers, options)."""
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("zoo")
    if raw is None:
        raise ValueError(
            f"{path} is not a zoo 1-bit checkpoint (no 'zoo' metadata); see save_binary"
        )
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, this zoo reads {FORMAT!r}")
    return meta


def expand_binary_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The plain state dict of a 1-bit file: each packed layer's latent weight becomes
    ``alpha * sign``, which re-binarizes to exactly the saved weights."""
    tensors = dict(tensors)
    for name, lm in meta["layers"].items():
        key = f"{name}.weight" if name else "weight"
        if key + _SIGNS not in tensors:
            raise ValueError(f"1-bit checkpoint lacks {key + _SIGNS!r}; it is truncated or corrupt")
        w = unpack_signs(tensors.pop(key + _SIGNS), lm["shape"])
        if lm["scaled"]:
            alpha = tensors.pop(key + _ALPHA).float()
            w = w * alpha.view(-1, *([1] * (w.dim() - 1)))
        tensors[key] = w
    return tensors


def check_binary_layers(model: nn.Module, meta: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first difference between ``model``'s binary layers
    and a 1-bit file's (names, shapes, modes), before anything is loaded."""
    layers = _binary_layers(model)
    if set(layers) != set(meta["layers"]):
        missing = sorted(set(meta["layers"]) ^ set(layers))[:5]
        raise ValueError(
            f"binary layers of the model and the checkpoint differ (e.g. {missing}); "
            "build the model with the same architecture and binarize options"
        )
    for name, m in layers.items():
        lm = meta["layers"][name]
        if list(m.weight.shape) != lm["shape"] or m.mode != lm["mode"]:
            raise ValueError(
                f"layer {name!r}: checkpoint has {lm['mode']} {lm['shape']}, model has "
                f"{m.mode} {list(m.weight.shape)}"
            )
