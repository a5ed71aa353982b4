"""What a model file on disk holds: the one reader of every file kind the zoo writes.

- a training checkpoint (``zoo train`` / ``zoo finetune``: a torch zip with ``format``
  ``zoo.checkpoint.v1``, the architecture, head, class names, preprocessing and weights);
- a 1-bit file (``zoo.save_binary``: safetensors with packed signs and ``zoo`` metadata);
- a Deep Compression file (``zoo.compress.save``: ``.zdc``, see ``zoo.formats.zdc``);
- a plain weights file (a state dict, torch or safetensors): its architecture is known only
  when its file name is one of a manifest's.

Every read is safe (``weights_only`` / safetensors) and every failure one of the zoo's weights
errors. ``zoo.factory`` turns a :class:`ModelFile` into a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.binary.packing import FORMAT as BINARY_FORMAT
from zoo.formats import zdc
from zoo.pretrained.errors import CorruptCheckpointError, WeightsError
from zoo.pretrained.manifests import find_by_file_name
from zoo.pretrained.safeload import (
    check_file,
    is_safetensors,
    load_state_dict,
    load_torch_file,
    safetensors_metadata,
    state_dict_of,
)
from zoo.registry import get_cfg, is_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "ModelFile",
    "read_checkpoint",
    "read_model_file",
    "translate_arch_overrides",
]

CHECKPOINT_FORMAT = "zoo.checkpoint.v1"
_CHECKPOINT_FIELDS = ("arch", "num_classes", "in_chans", "state_dict")
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(WeightsError, ValueError):
    """The file is not a usable zoo training checkpoint; the message says what is wrong."""


@dataclass
class ModelFile:
    """A model file's architecture, head and weights, whatever its kind."""

    path: Path
    kind: str  # "checkpoint", "binary", "zdc" or "weights"
    arch: str | None
    state_dict: dict[str, torch.Tensor]
    num_classes: int | None = None
    in_chans: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    binarize: dict[str, Any] | None = None  # {"mode", "options"} of a hand-binarized float arch
    class_names: list[str] | None = None
    data_cfg: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the rest of a training checkpoint


def translate_arch_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Builder kwargs for the ``arch_overrides`` older checkpoints carry (``act_layer``)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {"act_layer"})
    if unknown:
        raise CheckpointError(
            f"unknown arch_overrides {unknown}; this zoo translates only 'act_layer'"
        )
    return overrides


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A zoo training checkpoint's payload, read safely and checked for its fields."""
    p = check_file(path, "checkpoint")
    return _checked_checkpoint(p, load_torch_file(p))


def _checked_checkpoint(p: Path, ckpt: Any) -> dict[str, Any]:
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{str(p)!r} is not a zoo checkpoint (format {CHECKPOINT_FORMAT!r} expected, "
            f"found {found}); plain state dicts go through zoo.create(name, pretrained=PATH)"
        )
    missing = [k for k in _CHECKPOINT_FIELDS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{str(p)!r} lacks field(s) {missing}; the file is incomplete")
    return ckpt


def _kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(len(zdc.MAGIC))
    if head == zdc.MAGIC:
        return "zdc"
    if is_safetensors(path):
        return "binary" if safetensors_metadata(path).get("zoo") else "weights"
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    return "weights"


def _from_checkpoint(path: Path, ckpt: dict[str, Any]) -> ModelFile:
    kwargs = dict(ckpt.get("model_kwargs") or {})
    kwargs.update(translate_arch_overrides(ckpt.get("arch_overrides")))
    extra = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return ModelFile(
        path=path,
        kind="checkpoint",
        arch=str(ckpt["arch"]),
        state_dict=dict(ckpt["state_dict"]),
        num_classes=int(ckpt["num_classes"]),
        in_chans=int(ckpt["in_chans"]),
        model_kwargs=kwargs,
        class_names=list(ckpt.get("class_names") or []) or None,
        data_cfg=dict(ckpt.get("data_cfg") or {}) or None,
        extra=extra,
    )


def _from_binary(path: Path) -> ModelFile:
    meta = json.loads(safetensors_metadata(path)["zoo"])
    if meta.get("format") != BINARY_FORMAT:
        raise CorruptCheckpointError(
            f"{path} has format {meta.get('format')!r}; this zoo reads {BINARY_FORMAT!r} "
            "1-bit files: upgrade zoo or re-save it with zoo.save_binary"
        )
    arch = meta.get("architecture") or None
    binarize = None
    if arch and not (is_model(arch) and get_cfg(arch).binary) and meta.get("mode"):
        binarize = {"mode": meta["mode"], "options": dict(meta.get("binarize_options") or {})}
    kwargs = {} if binarize else dict(meta.get("binarize_options") or {})
    return ModelFile(
        path=path,
        kind="binary",
        arch=arch,
        state_dict=load_state_dict(path),
        num_classes=meta.get("num_classes"),
        in_chans=meta.get("in_chans"),
        model_kwargs=kwargs,
        binarize=binarize,
        extra={"binary_meta": meta},
    )


def _from_zdc(path: Path) -> ModelFile:
    cm = zdc.read(path)
    meta = cm.meta
    return ModelFile(
        path=path,
        kind="zdc",
        arch=meta.get("arch") or None,
        state_dict=cm.state_dict(),
        num_classes=meta.get("num_classes"),
        in_chans=meta.get("in_chans"),
        model_kwargs=dict(meta.get("kwargs") or {}),
    )


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Read any model file the zoo knows (see the module doc) without building a model."""
    p = check_file(path, "model file")
    kind = _kind(p)
    if kind == "zdc":
        return _from_zdc(p)
    if kind == "binary":
        return _from_binary(p)
    obj = load_torch_file(p) if kind == "torch" else None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(p, _checked_checkpoint(p, obj))
    manifest = find_by_file_name(None, p.name)
    state = state_dict_of(obj, p) if obj is not None else load_state_dict(p)
    return ModelFile(
        path=p,
        kind="weights",
        arch=manifest.arch if manifest else None,
        state_dict=state,
        extra={"manifest": manifest},
    )
