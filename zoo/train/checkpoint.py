"""Checkpoints: tensors plus plain metadata, written atomically, read with ``weights_only``.

A zoo checkpoint is a dict with ``format`` = ``CHECKPOINT_FORMAT``, the architecture name,
``num_classes``, ``in_chans``, ``class_names``, the preprocessing (``data_cfg``), the
model ``state_dict`` and, for resuming, the epoch, optimizer/scheduler/scaler state and
every rank's RNG state. Only tensors and Python primitives go in, so
``torch.load(weights_only=True)`` can read it without trusting pickled code.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.factory import create, load_into
from zoo.pretrained.adapt import strict_load
from zoo.pretrained.errors import StateDictMismatchError
from zoo.pretrained.files import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    read_checkpoint,
    read_model_file,
)
from zoo.utils import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointMismatchError",
    "unwrap_model",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "model_from_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "state_digest",
]

# A state dict that does not fit the model: the resolver's error, under the name trainers know.
CheckpointMismatchError = StateDictMismatchError


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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a zoo checkpoint safely (``weights_only``) and check its fields (for resuming)."""
    return read_checkpoint(path)


def load_model_state(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load ``state_dict`` into ``model`` (unwrapped from DDP/compile) after checking every
    key and shape; ``StateDictMismatchError`` names all that do not fit."""
    strict_load(unwrap_model(model), dict(state_dict), set(), source)


def model_from_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    arch: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model a checkpoint was trained with, its weights loaded, in eval mode, and the
    checkpoint's payload. ``arch`` loads the weights into that architecture instead (built
    with the checkpoint's head); a mismatch lists the keys that do not fit."""
    mf = read_model_file(path)
    if mf.kind != "checkpoint":
        raise CheckpointError(
            f"{str(path)!r} is a {mf.kind} file, not a training checkpoint; load it with "
            "zoo.create(path)"
        )
    if arch is None:
        model = create(path)
    else:
        model = load_into(create(arch, num_classes=mf.num_classes, in_chans=mf.in_chans), mf)
    payload = {**mf.extra, "state_dict": mf.state_dict}
    return model.to(device).eval(), payload


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
