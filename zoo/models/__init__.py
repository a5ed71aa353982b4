"""Every float model family; importing this package registers all of them.

``build_model`` is how every caller above builds a registered architecture without weights:
the registry's builder plus the model's ``default_cfg`` (the binary twins register in
``zoo.binary.variants``; weights are ``zoo.factory``'s job).
"""

from typing import Any

from torch import nn

from zoo.models import (  # noqa: F401  (imported for their registrations)
    alexnet,
    mobilenet_v1,
    mobilenet_v2,
    resnet,
    shufflenet_v1,
    shufflenet_v2,
    squeezenet,
)
from zoo.models._base import ZooModel
from zoo.registry import get_builder, get_cfg

__all__ = ["ZooModel", "build_model", "check_positive_int"]


def check_positive_int(value: Any, what: str, fix: str, minimum: int = 1) -> int:
    """``value`` when it is an int >= ``minimum``; else a TypeError/ValueError naming the fix."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}; {fix}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}; {fix}")
    return value


def build_model(name: str, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """A registered architecture with random weights and its ``default_cfg`` set."""
    fix = "pass e.g. num_classes=10, or 0 for pooled features without a classifier"
    check_positive_int(num_classes, "num_classes", fix, minimum=0)
    check_positive_int(in_chans, "in_chans", "pass 3 for RGB or 1 for grayscale")
    cfg = get_cfg(name)
    model = get_builder(name)(num_classes=num_classes, in_chans=in_chans, **kwargs)
    arch = name.partition(".")[0]
    default_cfg = {**cfg.to_dict(), "architecture": arch, "num_classes": num_classes}
    default_cfg["input_size"] = (in_chans, *cfg.input_size[1:])
    model.default_cfg = default_cfg
    model.pretrained_cfg = default_cfg
    return model
