"""What a training checkpoint holds and how a run continues from one.

``checkpoint_meta`` describes the run (model, classes, preprocessing, arguments);
``checkpoint_payload`` adds one epoch's state (model, optimizer, scheduler, scaler, every
rank's RNG; with ``--model-ema`` the EMA weights as ``state_dict`` and the raw ones as
``state_dict_raw``). ``check_resumable`` / ``restore`` read a ``last.pt`` back so that a resumed run
reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.blocks import ACT_LAYERS, NORM_LAYERS
from zoo.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    set_rng_state,
    unwrap_model,
)
from zoo.train.distributed import DistInfo
from zoo.train.ema import ModelEma

__all__ = [
    "RESUME_KEYS",
    "plain_value",
    "plain_cfg_value",
    "checkpoint_meta",
    "checkpoint_payload",
    "resolve_resume",
    "check_resumable",
    "restore",
]

# Arguments whose change makes a resumed run differ from an uninterrupted one (warned about).
RESUME_KEYS = (
    "epochs",
    "batch_size",
    "opt",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "img_size",
    "train_subset",
    "seed",
    "freeze_epochs",
    "teacher",
    "lr_schedule",
    "binary_steps",
    "binary_step1_epochs",
    "model_ema",
    "model_ema_decay",
    "crop_padding",
    "reprob",
    "remode",
    "val_split",
    "split_seed",
)


def plain_value(v: Any) -> Any:
    """``v`` if it is a JSON-like scalar, a list of such values for a list or tuple (e.g.
    ``--model-kwargs`` pairs), else its ``str`` (how arguments are recorded)."""
    if isinstance(v, list | tuple):
        return [plain_value(x) for x in v]
    return v if isinstance(v, int | float | str | bool | type(None)) else str(v)


def plain_cfg_value(v: Any) -> Any:
    """A data-cfg value as stored in checkpoints: tuples become lists, others ``plain_value``."""
    return list(v) if isinstance(v, tuple) else plain_value(v)


def checkpoint_meta(
    args: argparse.Namespace,
    command: str,
    model: nn.Module,
    num_classes: int,
    in_chans: int,
    classes: Sequence[str],
    data_cfg: Mapping[str, Any],
) -> dict[str, Any]:
    """The run's description saved in every checkpoint beside the epoch's state."""
    return {
        "arch": args.model,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "class_names": list(classes),
        "data_cfg": {k: plain_cfg_value(v) for k, v in data_cfg.items()},
        "model_kwargs": plain_model_kwargs(model),
        "args": {k: plain_value(v) for k, v in vars(args).items()},
        "command": command,
    }


def plain_model_kwargs(model: nn.Module) -> dict[str, Any]:
    """The builder kwargs of the model's variant (e.g. ``act_layer="relu6"``), as plain
    values a weights-only checkpoint can hold; a layer class is recorded by its name in
    ``zoo.blocks`` (``nn.ReLU6`` -> ``"relu6"``)."""
    names = {cls: name for name, cls in {**NORM_LAYERS, **ACT_LAYERS}.items()}
    kwargs = (getattr(model, "default_cfg", None) or {}).get("model_kwargs") or {}
    return {
        k: names.get(v, v) if isinstance(v, type) else plain_value(v)
        for k, v in kwargs.items()
    }


def checkpoint_payload(
    meta: Mapping[str, Any] | None,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    rng: list[Any],
    info: DistInfo,
    best: tuple[float, int],
    metrics: dict[str, Any],
    ema: ModelEma | None = None,
) -> dict[str, Any]:
    """Everything ``last.pt`` / ``best.pt`` hold after ``epoch``: enough to resume exactly.

    With ``ema`` the averaged weights are the ``state_dict`` (what is validated, published
    and distilled from) and the raw training weights ``state_dict_raw``.
    """
    raw = unwrap_model(model).state_dict()
    weights: dict[str, Any] = {"state_dict": raw}
    if ema is not None:
        weights = {
            "state_dict": ema.state_dict(),
            "state_dict_raw": raw,
            "model_ema": {"decay": ema.decay},
        }
    return {
        **(meta or {}),
        "epoch": epoch,
        "next_epoch": epoch + 1,
        **weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
        "world_size": info.world_size,
        "best_top1": best[0],
        "best_epoch": best[1],
        "metrics": metrics,
    }


def resolve_resume(args: argparse.Namespace, out: Path) -> Path | None:
    """The checkpoint ``--resume`` names (``auto``: ``out/last.pt`` if present), or None."""
    if args.resume is None:
        return None
    if args.resume == "auto":
        path = out / "last.pt"
        if not path.is_file():
            print(f"note: nothing to resume in {out} (no last.pt); starting afresh", flush=True)
            return None
        return path
    path = Path(args.resume).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--resume {str(path)!r} does not exist; pass OUTPUT/last.pt")
    return path


def check_resumable(path: Path, args: argparse.Namespace, classes: Sequence[str]) -> dict:
    """Load a last.pt and check it belongs to this model and data before anything is built."""
    ckpt = load_checkpoint(path)
    if ckpt["arch"] != args.model:
        raise CheckpointError(
            f"--resume {str(path)!r} was written for model {ckpt['arch']!r}, not {args.model!r}; "
            "pass the same model name or start a new --output"
        )
    if list(ckpt.get("class_names") or []) != list(classes):
        raise CheckpointError(
            f"--resume {str(path)!r} was trained on classes {ckpt.get('class_names')} but the "
            f"data now has {list(classes)}; resume on the same data"
        )
    for key in ("optimizer", "scheduler", "next_epoch"):
        if key not in ckpt:
            raise CheckpointError(f"{str(path)!r} has no {key!r} state and cannot be resumed")
    return ckpt


def restore(
    path: Path,
    ckpt: Mapping[str, Any],
    args: argparse.Namespace,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    info: DistInfo,
    ema: ModelEma | None = None,
) -> tuple[int, tuple[float, int]]:
    """Load a last.pt into model/optimizer/scheduler/scaler/RNG (and ``ema``); returns the
    next epoch and the best so far. A checkpoint of an EMA run resumes its raw weights."""
    source = f"--resume {str(path)!r}"
    has_ema = "state_dict_raw" in ckpt
    load_model_state(model, ckpt["state_dict_raw" if has_ema else "state_dict"], source=source)
    if ema is not None:
        if has_ema:
            ema.load_state_dict(ckpt["state_dict"], source=source)
        else:
            ema.reset(model)
            if info.is_main:
                warnings.warn(
                    f"{source} was trained without --model-ema: the average starts from its "
                    "weights now",
                    stacklevel=2,
                )
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    _restore_rng(ckpt.get("rng") or [], info)
    _warn_changed_settings(ckpt.get("args") or {}, args, info)
    if info.is_main:
        print(
            f"resumed from {path} after epoch {ckpt['next_epoch']} (best top1 "
            f"{ckpt.get('best_top1', -1):.2f}%)",
            flush=True,
        )
    best = (float(ckpt.get("best_top1", -1.0)), int(ckpt.get("best_epoch", -1)))
    return int(ckpt["next_epoch"]), best


def _restore_rng(rngs: list[Any], info: DistInfo) -> None:
    """This rank's saved RNG state, if the checkpoint came from as many processes."""
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank])
    elif info.is_main:
        warnings.warn(
            f"checkpoint was written by {len(rngs)} process(es), now running {info.world_size}: "
            "random augmentation will differ from an uninterrupted run",
            stacklevel=3,
        )


def _warn_changed_settings(
    old: Mapping[str, Any], args: argparse.Namespace, info: DistInfo
) -> None:
    """Warn when settings that shape the run differ from the checkpoint's."""
    changed = [
        k for k in RESUME_KEYS if k in old and old[k] != plain_value(getattr(args, k, None))
    ]
    if changed and info.is_main:
        diffs = ", ".join(f"{k}: {old[k]!r} -> {getattr(args, k, None)!r}" for k in changed)
        warnings.warn(
            f"resuming with changed settings ({diffs}); the run will not match an "
            "uninterrupted one",
            stacklevel=3,
        )
