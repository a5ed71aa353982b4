"""Turning a model name, weight tag, weights file or zoo checkpoint into a model to train.

All model building of the train/finetune command lives here, in one place, so that it can
be swapped for the single resolver ``zoo.factory.create`` without touching the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from zoo.pretrained import DownloadError, list_tags
from zoo.registry import get_cfg
from zoo.train.checkpoint import CheckpointError, create_model, load_checkpoint, load_model_state
from zoo.train.distributed import DistInfo

__all__ = [
    "default_in_chans",
    "has_weights",
    "build_model",
    "replace_classifier",
    "model_for_resume",
]


def default_in_chans(name: str) -> int:
    """The model's default input channels; raises UnknownModelError for unknown names."""
    if ":" in name:
        return 3
    return int(get_cfg(name).input_size[0])


def has_weights(name: str) -> bool:
    """Whether any weight tag is registered for ``name``'s architecture."""
    try:
        return bool(list_tags(name.partition(".")[0]))
    except Exception:  # unknown arch etc.: treated as "no weights"
        return False


def build_model(
    name: str, num_classes: int, in_chans: int, pretrained: str | None, info: DistInfo
) -> nn.Module:
    """Create the model; ``pretrained`` may be a weight tag, a file, a zoo checkpoint or 'auto'.

    A zoo checkpoint with another number of classes has its classifier replaced (the
    fine-tuning case); registry weights are loaded by ``zoo.create`` with the head dropped
    when the class count differs.
    """
    if pretrained == "auto":
        reason = "no pretrained weights are registered for it"
        if has_weights(name):
            try:
                return create_model(name, num_classes, in_chans, pretrained=True)
            except DownloadError as e:  # offline and not cached: say so, train from scratch
                reason = f"its default weights are not available here ({str(e).splitlines()[0]})"
        if info.is_main:
            print(
                f"note: starting {name!r} from random initialisation: {reason}. Pass "
                "--pretrained FILE to use a local weights file, or --no-pretrained.",
                flush=True,
            )
        pretrained = None
    if pretrained and Path(pretrained).expanduser().is_file():
        path = Path(pretrained).expanduser()
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            ckpt = None
        if ckpt is not None:
            if ckpt["arch"] != name:
                raise CheckpointError(
                    f"--pretrained {str(path)!r} holds a {ckpt['arch']!r} model, not {name!r}"
                )
            model = create_model(
                name,
                num_classes=int(ckpt["num_classes"]),
                in_chans=in_chans,
                arch_overrides=ckpt.get("arch_overrides"),
            )
            load_model_state(model, ckpt["state_dict"], source=f"checkpoint {str(path)!r}")
            if int(ckpt["num_classes"]) != num_classes:
                replace_classifier(model, num_classes)
            if ckpt.get("data_cfg"):  # keep the preprocessing the weights were trained with
                model.pretrained_cfg = {**getattr(model, "default_cfg", {}), **ckpt["data_cfg"]}
            return model
        return create_model(name, num_classes=num_classes, in_chans=in_chans, pretrained=str(path))
    flag: bool | str = True if pretrained in ("true", "True", "1") else (pretrained or False)
    return create_model(name, num_classes=num_classes, in_chans=in_chans, pretrained=flag)


def replace_classifier(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier for ``num_classes`` (``reset_classifier`` or the last Linear)."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return
    target, old = None, None
    # The last Linear child of the last module (in ``named_modules`` order) that has one.
    for prefix, m in model.named_modules():
        for child_name, child in m.named_children():
            if isinstance(child, nn.Linear):
                target, old = f"{prefix}.{child_name}" if prefix else child_name, child
    if old is None:
        raise ValueError(f"cannot find a classifier to replace in {type(model).__name__}")
    model.set_submodule(target, nn.Linear(old.in_features, num_classes))


def model_for_resume(
    name: str, num_classes: int, in_chans: int, ckpt: Mapping[str, Any]
) -> nn.Module:
    """The untrained model a ``last.pt`` resumes into (its weights are loaded by ``restore``)."""
    return create_model(name, num_classes, in_chans, arch_overrides=ckpt.get("arch_overrides"))
