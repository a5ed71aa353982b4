"""One registry for every model: names, builders and their cfgs. A leaf: it imports nothing
else of the zoo.

Follows timm's ``_registry``: each family module registers one small builder per variant with
``@register_model``; what the paper says about a variant (published figures, input size)
lives beside it as data in a ``ModelCfg``. Building with weights is ``zoo.factory``'s job.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "ModelCfg",
    "UnknownModelError",
    "register_model",
    "register",
    "list_models",
    "list_families",
    "get_cfg",
    "get_builder",
    "is_model",
    "split_tag",
    "check_model_name",
    "matches",
    "natural_sorted",
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


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def split_tag(name: str) -> tuple[str, str | None]:
    """``"arch.tag"`` -> ``("arch", "tag")``; ``"arch"`` -> ``("arch", None)``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def check_model_name(name: Any) -> str:
    """``name`` itself when it is a registered ``arch`` or ``arch.tag``; else a clear error."""
    if not isinstance(name, str):
        raise TypeError(
            f"a model name must be a string, got {type(name).__name__} {name!r}; "
            "see zoo.list_models() for the names"
        )
    arch, _ = split_tag(name)
    if arch not in _builders:
        close = difflib.get_close_matches(arch, list(_builders), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {arch!r}.{hint} See zoo.list_models() for all {len(_builders)} names."
        )
    return name


def is_model(name: str) -> bool:
    """True when ``name`` (optionally ``arch.tag``) is a registered architecture."""
    return isinstance(name, str) and split_tag(name)[0] in _builders


def get_cfg(name: str) -> ModelCfg:
    """The ``ModelCfg`` of a registered name; raises ``UnknownModelError`` otherwise."""
    return _cfgs[split_tag(check_model_name(name))[0]]


def get_builder(name: str) -> Builder:
    """The builder function of a registered name (timm's ``model_entrypoint``)."""
    return _builders[split_tag(check_model_name(name))[0]]


def _patterns(value: str | Iterable[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        patterns = list(value)
    except TypeError:
        patterns = [value]
    bad = [p for p in patterns if not isinstance(p, str)]
    if bad:
        raise TypeError(f"{what} must be a string or a list of strings, got {bad[0]!r}")
    return patterns


def matches(name: str, filter: str | Iterable[str] = "*", exclude_filters=None) -> bool:
    """True when ``name`` matches any fnmatch pattern of ``filter`` and none of the excludes."""
    include = _patterns(filter, "filter") or ["*"]
    exclude = _patterns(exclude_filters, "exclude_filters")
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def list_models(
    filter: str | Iterable[str] = "*", exclude_filters: str | Iterable[str] | None = None
) -> list[str]:
    """Registered architectures matching fnmatch ``filter`` (or any of a list) and none of
    ``exclude_filters``, naturally sorted. ``zoo.list_models`` adds ``pretrained=``."""
    if filter is None:
        raise TypeError("filter must be a pattern such as '*' or 'shufflenet*', got None")
    names = sorted(_builders, key=_natural_key)
    return [n for n in names if matches(n, filter, exclude_filters)]


def list_families() -> list[str]:
    """Family names in registration order (e.g. ``squeezenet``, ``shufflenet_v1``)."""
    return list(dict.fromkeys(c.family for c in _cfgs.values()))


def natural_sorted(names: Iterable[str]) -> list[str]:
    """``names`` sorted so that ``x0_5`` < ``x1_0`` < ``x2_0`` and ``g1`` < ``g8``."""
    return sorted(names, key=_natural_key)
