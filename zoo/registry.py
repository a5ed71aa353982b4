"""One registry for every model: register, create, list and describe by name.

Follows timm's conventions: each family module registers one small builder
function per variant with ``@register_model``; metadata (paper, published
figures, input size) lives beside it as data in a ``ModelCfg``.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "ModelCfg",
    "UnknownModelError",
    "register_model",
    "register",
    "create",
    "list_models",
    "list_families",
    "model_info",
    "get_cfg",
    "is_model",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCfg:
    """What a variant is and what its paper says about it (like timm's pretrained_cfg).

    ``published`` holds figures copied from the paper or a reference implementation,
    e.g. ``{"params": 1865728, "macs": 137e6, "top1": 67.4}``; ``published_source`` says
    where each came from.
    """

    family: str
    paper: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    min_input_size: int = 32
    first_conv: str = ""
    classifier: str = ""
    num_classes: int = 1000
    published: dict[str, float] = field(default_factory=dict)
    published_source: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    binary: str = ""  # "", "bwn" or "xnor"
    float_twin: str = ""  # float model a binary variant is derived from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnknownModelError(ValueError):
    """Raised for a name that is not registered; the message lists close matches."""


Builder = Callable[..., nn.Module]

_builders: dict[str, Builder] = {}
_cfgs: dict[str, ModelCfg] = {}


def register(name: str, builder: Builder, cfg: ModelCfg) -> Builder:
    """Register ``builder`` under ``name`` with its metadata; names must be unique."""
    if name in _builders:
        raise ValueError(f"model {name!r} is already registered")
    _builders[name] = builder
    _cfgs[name] = cfg
    return builder


def register_model(cfg: ModelCfg) -> Callable[[Builder], Builder]:
    """Decorator: register a builder function under its own ``__name__``.

    >>> @register_model(ModelCfg(family="toy", paper="-"))
    ... def toy_net(**kwargs): ...
    """

    def wrap(fn: Builder) -> Builder:
        return register(fn.__name__, fn, cfg)

    return wrap


def _ensure_models_loaded() -> None:
    # Importing the models package runs every family module's registrations.
    import zoo.models  # noqa: F401


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _split_tag(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(_builders), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"unknown model {name!r}.{hint} See zoo.list_models() for all {len(_builders)} names."
    )


def is_model(name: str) -> bool:
    """True when ``name`` (optionally ``arch.tag``) is a registered architecture."""
    _ensure_models_loaded()
    return _split_tag(name)[0] in _builders


def get_cfg(name: str) -> ModelCfg:
    """The ``ModelCfg`` of a registered name; raises ``UnknownModelError`` otherwise."""
    _ensure_models_loaded()
    arch, _ = _split_tag(name)
    if arch not in _cfgs:
        raise _unknown(arch)
    return _cfgs[arch]


def _pretrained_tags(arch: str) -> list[str]:
    try:
        from zoo.pretrained import list_tags
    except ImportError:  # weights subsystem not present: no tags
        return []
    return list_tags(arch)


def list_models(pattern: str | list[str] = "*", pretrained: bool = False) -> list[str]:
    """Registered names matching fnmatch ``pattern`` (or any of a list), naturally sorted.

    With ``pretrained=True`` only architectures with weights are listed, as ``arch.tag``.
    """
    _ensure_models_loaded()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    names = sorted(_builders, key=_natural_key)
    if pretrained:
        names = [f"{n}.{t}" for n in names for t in _pretrained_tags(n)]
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def list_families() -> list[str]:
    """Family names in registration order (e.g. ``squeezenet``, ``shufflenet_v1``)."""
    _ensure_models_loaded()
    return list(dict.fromkeys(c.family for c in _cfgs.values()))


def model_info(name: str) -> dict[str, Any]:
    """Family, paper, published figures, default input size and weight tags of a model."""
    cfg = get_cfg(name)
    arch, _ = _split_tag(name)
    info = {"name": arch, **cfg.to_dict(), "pretrained_tags": _pretrained_tags(arch)}
    return info


def _check_positive_int(value: Any, what: str, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}; {fix}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}; {fix}")


def create(
    name: str,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally with pretrained weights.

    ``name`` may carry a weight tag (``"shufflenet_v2_x1_0.tv_in1k"``). ``pretrained`` is
    ``False``, ``True`` (the default tag), a tag, or a local file path. ``num_classes`` and
    ``in_chans`` default to those of the weights (10 and 1 for ``"fashion_mnist"``), else
    1000 and 3; a different ``num_classes`` gets a fresh classifier, as in timm.
    """
    _ensure_models_loaded()
    arch, tag = _split_tag(name)
    if arch not in _builders:
        raise _unknown(arch)
    weights = tag or pretrained
    if weights and (num_classes is None or in_chans is None):
        from zoo.pretrained import pretrained_head

        head = pretrained_head(arch, weights)
        num_classes = head.get("num_classes", 1000) if num_classes is None else num_classes
        in_chans = head.get("in_chans", 3) if in_chans is None else in_chans
    num_classes = 1000 if num_classes is None else num_classes
    in_chans = 3 if in_chans is None else in_chans
    _check_positive_int(num_classes, "num_classes", "pass e.g. num_classes=10")
    _check_positive_int(in_chans, "in_chans", "pass 3 for RGB or 1 for grayscale")
    if weights:
        from zoo.pretrained import pretrained_model_kwargs

        # Some weight sets need a variant of the architecture (e.g. a narrower stem).
        kwargs = {**pretrained_model_kwargs(arch, weights), **kwargs}
    model = _builders[arch](num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.default_cfg = {**_cfgs[arch].to_dict(), "architecture": arch, "num_classes": num_classes}
    model.default_cfg["input_size"] = (in_chans, *_cfgs[arch].input_size[1:])
    model.pretrained_cfg = model.default_cfg
    if weights:
        from zoo.pretrained import load_pretrained

        load_pretrained(model, arch, weights, num_classes, in_chans)
    return model
