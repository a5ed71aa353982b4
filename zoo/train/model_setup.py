"""The model a train/finetune run starts from, through the one resolver ``zoo.factory``:
what ``--pretrained auto`` means, and the rebuild a ``--resume`` loads into."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from zoo.factory import create
from zoo.pretrained import DownloadError, WeightsError, list_tags
from zoo.pretrained.files import translate_arch_overrides
from zoo.registry import get_cfg
from zoo.train.distributed import DistInfo

__all__ = [
    "PretrainedUnavailableError",
    "default_in_chans",
    "has_weights",
    "build_model",
    "replace_classifier",
    "model_for_resume",
]


class PretrainedUnavailableError(WeightsError):
    """``--pretrained auto`` names weights that cannot be had (offline, not cached)."""


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
    name: str,
    num_classes: int,
    in_chans: int,
    pretrained: str | None,
    info: DistInfo,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The model to train, through the resolver: ``pretrained`` is a weight tag, ``'true'``,
    a weights file, a zoo checkpoint (of ``name`` or of its float twin) or ``'auto'``; a
    different number of classes gets a fresh classifier, everything else is loaded.
    ``model_kwargs`` are ``create``'s builder options (``--model-kwargs``)."""
    kwargs = dict(model_kwargs or {})
    if pretrained == "auto" and not kwargs.get("from_float"):
        if has_weights(name):
            return _default_weights(name, num_classes, in_chans, kwargs)
        if info.is_main:
            print(
                f"note: starting {name!r} from random initialisation: no pretrained weights "
                "are registered for it. Pass --pretrained FILE to start from a weights file.",
                flush=True,
            )
    if pretrained == "auto":
        pretrained = None
    flag: bool | str = True if pretrained in ("true", "True", "1") else (pretrained or False)
    return create(name, pretrained=flag, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _default_weights(
    name: str, num_classes: int, in_chans: int, kwargs: Mapping[str, Any]
) -> nn.Module:
    """The model with its default weights; weights that cannot be had are an error (a
    fine-tune silently started from random weights would look like a bad result)."""
    try:
        return create(name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except DownloadError as e:
        raise PretrainedUnavailableError(
            f"the default pretrained weights of {name!r} are not available here "
            f"({str(e).splitlines()[0]}); pass --pretrained FILE to start from a local "
            "weights file, or --no-pretrained to train from random initialisation"
        ) from e


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
    """The untrained model a ``last.pt`` resumes into (its weights are loaded by ``restore``),
    built with the variant kwargs the checkpoint records."""
    kwargs = dict(ckpt.get("model_kwargs") or {})
    kwargs.update(translate_arch_overrides(ckpt.get("arch_overrides")))
    return create(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
