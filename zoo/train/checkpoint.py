"""Checkpoints: tensors plus plain metadata, written atomically, read with ``weights_only``.

A zoo checkpoint is a dict with ``format`` = ``CHECKPOINT_FORMAT``, the architecture name,
``num_classes``, ``in_chans``, ``class_names``, the preprocessing (``data_cfg``), the
model ``state_dict`` and, for resuming, the epoch, optimizer/scheduler/scaler state and
every rank's RNG state. Only tensors and Python primitives go in, so
``torch.load(weights_only=True)`` can read it without trusting pickled code.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.utils import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointMismatchError",
    "create_model",
    "unwrap_model",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "model_from_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "state_digest",
]

CHECKPOINT_FORMAT = "zoo.checkpoint.v1"
_REQUIRED = ("arch", "num_classes", "in_chans", "state_dict")


class CheckpointError(ValueError):
    """The file is not a usable zoo checkpoint; the message says what is wrong."""


class CheckpointMismatchError(CheckpointError):
    """A state dict does not fit the model: lists missing, unexpected and reshaped keys."""


def create_model(
    name: str,
    num_classes: int | None,
    in_chans: int | None = 3,
    pretrained: bool | str = False,
    arch_overrides: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by zoo name, or by ``package.module:function`` for a custom builder.

    The custom form is called as ``function(num_classes=..., in_chans=..., **kwargs)`` and
    lets scripts train models outside the registry; its name is stored in checkpoints the
    same way, so ``--resume`` and ``predict`` rebuild it. ``arch_overrides`` re-applies the
    changes some published weights make to the architecture (e.g. ReLU6 activations), as
    recorded in checkpoints; ``model.zoo_arch_overrides`` says which ones a model carries.
    """
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            builder = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(
                f"cannot import model builder {name!r} ({e}); use a zoo model name "
                "(see `zoo list`) or an importable package.module:function"
            ) from e
        if pretrained:
            raise ValueError(f"pretrained weights are only available for zoo models, not {name!r}")
        model = builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    else:
        import zoo

        model = zoo.create(
            name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    overrides = dict(arch_overrides or {})
    if overrides:
        from zoo.pretrained.adapt import apply_arch_overrides

        apply_arch_overrides(model, overrides, name)
    elif pretrained:
        overrides = _overrides_of_weights(model)
    model.zoo_arch_overrides = overrides
    return model


def _overrides_of_weights(model: nn.Module) -> dict[str, Any]:
    """The ``arch_overrides`` of the registered weights a model was just loaded with."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    if not (arch and tag):
        return {}
    from zoo.pretrained import get_manifest

    return dict(get_manifest(arch, tag).arch_overrides)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` via a temp file in the same folder and ``os.replace``.

    A crash or kill at any moment leaves either the old file or the new one, never a
    half-written file.
    """
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a zoo checkpoint safely (``weights_only=True``) and check its fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        if isinstance(e, pickle.UnpicklingError):
            why = "not a torch file, or it holds Python objects that safe loading refuses"
        else:
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        raise CheckpointError(
            f"cannot read {str(path)!r} as a checkpoint ({why}); "
            "expected a file written by `zoo train` / `zoo finetune`"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a zoo checkpoint (format {CHECKPOINT_FORMAT!r} expected, "
            f"found {found}); plain state dicts go through zoo.create(name, pretrained=PATH)"
        )
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{str(path)!r} lacks field(s) {missing}; the file is incomplete")
    return ckpt


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_model_state(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """``load_state_dict`` that names every missing, unexpected and reshaped key on failure."""
    own = unwrap_model(model).state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        if reshaped:
            parts.append(f"shape mismatches: {_describe(reshaped, 4)}")
        raise CheckpointMismatchError(
            f"{source} does not match the model {type(unwrap_model(model)).__name__}: "
            + "; ".join(parts)
            + ". Use the architecture, num_classes and in_chans the checkpoint was trained with."
        )
    unwrap_model(model).load_state_dict(state_dict, strict=True)


def model_from_checkpoint(
    path_or_ckpt: str | os.PathLike | Mapping[str, Any],
    device: str | torch.device = "cpu",
    arch: str | None = None,
) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode).

    ``arch`` overrides the stored architecture name; a mismatch then fails with the
    list of keys that do not fit.
    """
    ckpt = (
        dict(path_or_ckpt) if isinstance(path_or_ckpt, Mapping) else load_checkpoint(path_or_ckpt)
    )
    name = arch or ckpt["arch"]
    model = create_model(
        name,
        num_classes=int(ckpt["num_classes"]),
        in_chans=int(ckpt["in_chans"]),
        arch_overrides=ckpt.get("arch_overrides"),
    )
    where = f"checkpoint of {ckpt['arch']!r}"
    load_model_state(model, ckpt["state_dict"], source=where)
    return model.to(device).eval(), ckpt


def get_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as tensors and primitives."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``get_rng_state`` saved, so a resumed run draws the same numbers."""
    random.setstate(_to_tuple(state["python"]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def state_digest(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """sha256 of every tensor's bytes (and dtype/shape): equal digests mean identical weights."""
    out = {}
    for k, v in state_dict.items():
        t = v.detach().cpu().contiguous().reshape(-1)
        h = hashlib.sha256(f"{v.dtype}{tuple(v.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        out[k] = h.hexdigest()
    return out
