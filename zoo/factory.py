"""The one resolver: any model spec -> model. Every command and function that needs a model
from a name, a tag or a file comes here.

A spec is a registered name (``"shufflenet_g3"``), ``name.tag`` (that weight set), a custom
builder ``"package.module:function"``, or a file: a weights file whose name a manifest knows,
a training checkpoint, a 1-bit file or a ``.zdc`` file (see ``zoo.pretrained.files``).
``create`` decides ``num_classes`` / ``in_chans`` / class names / preprocessing once (the
weights' values unless given, timm's rule), checks every shape before loading anything and
raises the zoo's own errors.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from zoo.binary import binarize, check_binary_layers, is_binary
from zoo.binary.variants import split_binarize_kwargs
from zoo.models import build_model, check_positive_int
from zoo.models.features import build_features
from zoo.pretrained import (
    list_tags,
    load_pretrained,
    pretrained_head,
    pretrained_model_kwargs,
)
from zoo.pretrained.adapt import fit_state_to_model, strict_load
from zoo.pretrained.errors import StateDictMismatchError, WeightsError
from zoo.pretrained.files import ModelFile, read_model_file
from zoo.registry import check_model_name, get_cfg, is_model, split_tag

__all__ = [
    "ConflictingArgumentsError",
    "create",
    "load_into",
    "load_binary",
    "is_file_spec",
    "head_size",
]

_logger = logging.getLogger(__name__)
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar", ".zdc")


class ConflictingArgumentsError(ValueError):
    """Two arguments ask for different things (e.g. a tag in the name and another one in
    ``pretrained=``); the message says which to drop."""


def is_file_spec(spec: Any) -> bool:
    """True when ``spec`` names a file rather than a registered model."""
    if isinstance(spec, os.PathLike):
        return True
    if not isinstance(spec, str) or is_model(spec) or ":" in spec:
        return False
    return (
        os.sep in spec
        or "/" in spec
        or spec.startswith("~")
        or spec.endswith(_FILE_SUFFIXES)
        or Path(spec).expanduser().exists()
    )


def _check_pretrained(pretrained: Any) -> None:
    if pretrained is None or isinstance(pretrained, (bool, str, os.PathLike)):
        return
    raise TypeError(
        f"pretrained must be True/False, a weight tag or a file path, got "
        f"{type(pretrained).__name__} {pretrained!r}"
    )


def _weights_of(arch: str, tag: str | None, pretrained: Any) -> bool | str | os.PathLike:
    """The weights a name and ``pretrained=`` ask for together; a conflict is an error."""
    _check_pretrained(pretrained)
    if not tag:
        return pretrained or False
    if pretrained in (None, False, True, tag, f"{arch}.{tag}"):
        return tag
    raise ConflictingArgumentsError(
        f"{arch}.{tag} already names the weights {tag!r}, but pretrained={pretrained!r} asks "
        f"for others; pass zoo.create({arch!r}, pretrained={pretrained!r}) or drop pretrained="
    )


def _custom_builder(name: str) -> Any:
    module_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"cannot import model builder {name!r} ({e}); use a zoo model name "
            "(see `zoo list`) or an importable package.module:function"
        ) from e


def _build(arch: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A registered or custom (``module:function``) architecture, without weights."""
    if ":" in arch:
        check_positive_int(num_classes, "num_classes", "pass e.g. num_classes=10")
        model = _custom_builder(arch)(num_classes=num_classes, in_chans=in_chans, **kwargs)
        cfg = dict(getattr(model, "default_cfg", None) or {})
        cfg.update(architecture=arch, num_classes=num_classes, in_chans=in_chans)
        model.default_cfg = model.pretrained_cfg = cfg
    else:
        model = build_model(arch, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.default_cfg["model_kwargs"] = dict(kwargs)
    return model


def _twin_float_weights(arch: str, weights: Any, from_float: Any) -> Any:
    """For a binary twin: the float weights to start from, or None for its own weights."""
    twin = get_cfg(arch).float_twin
    if from_float not in (None, False):
        if weights:
            raise ConflictingArgumentsError(
                f"{arch}: pass either pretrained= (its own or its float model's weights) or "
                "from_float=, not both"
            )
        return from_float
    if not weights or is_file_spec(weights):
        return None
    own = list_tags(arch)
    if weights is True:
        return None if own else True
    tag = str(weights).removeprefix(f"{arch}.").removeprefix(f"{twin}.")
    if tag in own:
        return None
    if tag in list_tags(twin):
        return tag
    raise WeightsError(
        f"{arch} has no weights {tag!r}: its own tags are {own or 'none'}, its float model "
        f"{twin}'s are {list_tags(twin) or 'none'}; see zoo.list_pretrained('{arch}*')"
    )


def _create_named(
    arch: str, weights: Any, num_classes: int | None, in_chans: int | None, kwargs: dict
) -> nn.Module:
    cfg = get_cfg(arch) if ":" not in arch else None
    from_float = kwargs.pop("from_float", None)
    if cfg is not None and cfg.binary:
        float_weights = _twin_float_weights(arch, weights, from_float)
        if float_weights is not None:
            options, rest = split_binarize_kwargs(kwargs)
            float_model = _create_named(cfg.float_twin, float_weights, num_classes, in_chans, rest)
            model = binarize(float_model, cfg.binary, **options)
            # The options are builder kwargs of the twin: recorded, so checkpoints and
            # published files rebuild the same variant.
            built = {**(float_model.pretrained_cfg.get("model_kwargs") or {}), **options}
            model.default_cfg = {
                **float_model.pretrained_cfg, "architecture": arch, "model_kwargs": built
            }
            model.pretrained_cfg = model.default_cfg
            return model
    elif from_float not in (None, False):
        raise TypeError(f"from_float= is for binary twins (bwn_*/xnor_*), not {arch!r}")
    if weights and is_file_spec(weights):
        if not Path(weights).expanduser().exists():
            raise FileNotFoundError(
                f"pretrained={str(weights)!r}: no such file. Pass an existing weights file, "
                f"True for the default weights, or a tag of {arch!r} "
                f"({', '.join(list_tags(arch)) or 'it has none'})."
            )
        mf = read_model_file(weights)
        if mf.kind != "weights":
            return _create_from_file(mf, num_classes, in_chans, kwargs, expected_arch=arch)
    if weights and cfg is not None:
        head = pretrained_head(arch, weights)
        num_classes = head.get("num_classes") if num_classes is None else num_classes
        in_chans = head.get("in_chans") if in_chans is None else in_chans
        kwargs = {**pretrained_model_kwargs(arch, weights), **kwargs}
    num_classes = 1000 if num_classes is None else num_classes
    in_chans = 3 if in_chans is None else in_chans
    model = _build(arch, num_classes, in_chans, **kwargs)
    if weights:
        if cfg is None:
            raise ValueError(f"pretrained weights are only available for zoo models, not {arch!r}")
        load_pretrained(model, arch, weights, num_classes, in_chans)
    return model


def _same_arch(recorded: str, wanted: str) -> bool:
    return recorded == wanted or (is_model(wanted) and get_cfg(wanted).float_twin == recorded)


def _create_from_file(
    mf: ModelFile,
    num_classes: int | None,
    in_chans: int | None,
    kwargs: dict,
    expected_arch: str | None = None,
) -> nn.Module:
    """The model a self-describing file records, with its weights (shapes checked first)."""
    if mf.arch is None:
        raise WeightsError(
            f"{mf.path} names no architecture ({mf.kind} file); load it into a model: "
            f"zoo.load_into(model, {str(mf.path)!r}), or zoo.create('ARCH', "
            f"pretrained={str(mf.path)!r}) for a plain state dict"
        )
    if expected_arch and not _same_arch(mf.arch, expected_arch):
        raise WeightsError(
            f"{mf.path} holds a {mf.arch!r} model, not {expected_arch!r}; pass "
            f"zoo.create({str(mf.path)!r}) or weights made for {expected_arch!r}"
        )
    if mf.kind == "weights":
        return _create_named(mf.arch, str(mf.path), num_classes, in_chans, kwargs)
    if ":" not in mf.arch:
        check_model_name(mf.arch)
    nc = mf.num_classes if num_classes is None else num_classes
    ic = mf.in_chans if in_chans is None else in_chans
    model = _build(mf.arch, nc or 1000, ic or 3, **{**mf.model_kwargs, **kwargs})
    if mf.binarize and not any(is_binary(m) for m in model.modules()):
        model = binarize(model, mf.binarize["mode"], **mf.binarize["options"])
    return load_into(model, mf, adapt=True)


def head_size(model: nn.Module) -> tuple[int | None, int | None]:
    """(num_classes, in_chans) of a model: a zoo model's attributes, else its default_cfg
    (custom ``module:function`` builders record them there)."""
    cfg = getattr(model, "default_cfg", None) or {}
    num_classes = getattr(model, "num_classes", cfg.get("num_classes"))
    in_chans = getattr(model, "in_chans", cfg.get("in_chans"))
    return num_classes, in_chans


def _describe_file(model: nn.Module, mf: ModelFile) -> None:
    """Record the file's preprocessing and class names in ``pretrained_cfg``."""
    cfg = dict(getattr(model, "default_cfg", None) or {})
    if mf.data_cfg:
        cfg.update(mf.data_cfg)
        size = list(cfg["input_size"])
        cfg["input_size"] = [getattr(model, "in_chans", size[0]), *size[1:]]
    if mf.class_names and head_size(model)[0] == len(mf.class_names):
        cfg["categories"] = list(mf.class_names)
    cfg["file"] = str(mf.path)
    model.pretrained_cfg = cfg


def load_into(
    model: nn.Module, file: str | os.PathLike | ModelFile, *, adapt: bool = False
) -> nn.Module:
    """Load a model file's weights into ``model``, every key and shape checked first
    (``StateDictMismatchError`` lists what does not fit). With ``adapt=True`` (what
    ``create(file, num_classes=...)`` does) a classifier of another size is re-initialised
    and the first conv adapted to ``model``'s input channels instead."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_into needs an nn.Module to load into, got {type(model).__name__}")
    mf = file if isinstance(file, ModelFile) else read_model_file(file)
    name = f"{mf.path}"
    if mf.kind == "binary":
        meta = mf.extra["binary_meta"]
        if not any(is_binary(m) for m in model.modules()):
            model = binarize(model, meta["mode"], **(meta.get("binarize_options") or {}))
        try:
            check_binary_layers(model, meta)
        except ValueError as e:
            raise StateDictMismatchError(f"{name} does not fit {type(model).__name__}: {e}") from e
    state = dict(mf.state_dict)
    reinit: set[str] = set()
    if adapt:
        num_classes, in_chans = head_size(model)
        reinit = fit_state_to_model(state, model, num_classes, in_chans, name)
    strict_load(model, state, reinit, name)
    _describe_file(model, mf)
    return model


def load_binary(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """A 1-bit file as a model: the architecture it records, or loaded into ``model`` (a float
    model is binarized with the recorded options first). Returns the model in eval mode."""
    mf = read_model_file(path)
    if mf.kind != "binary":
        raise WeightsError(
            f"{path} is not a zoo 1-bit checkpoint (a {mf.kind} file); write one with "
            "zoo.save_binary(model, path), or load this one with zoo.create(path)"
        )
    if model is None:
        return _create_from_file(mf, None, None, {}).eval()
    return load_into(model, mf).eval()


def create(
    model_name: str | os.PathLike,
    pretrained: bool | str | os.PathLike = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    features_only: bool = False,
    out_indices: tuple[int, ...] | list[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model from any spec (see the module doc), as ``timm.create_model`` does.

    ``pretrained``: ``False``, ``True`` (the default tag), a tag or a weights file. A binary
    twin takes its own weights, else its float model's (binarized). ``num_classes`` and
    ``in_chans`` default to the weights' (10 and 1 for ``"fashion_mnist"``), else 1000 and 3;
    a different ``num_classes`` gets a fresh classifier. ``features_only=True`` returns the
    feature maps at ``out_indices`` instead of logits.
    """
    if is_file_spec(model_name):
        if pretrained not in (None, False):
            raise ConflictingArgumentsError(
                f"{str(model_name)!r} is a model file and carries its weights; drop "
                f"pretrained={pretrained!r}, or pass zoo.create('ARCH', pretrained=FILE)"
            )
        model = _create_from_file(read_model_file(model_name), num_classes, in_chans, kwargs)
    else:
        custom = isinstance(model_name, str) and ":" in model_name
        arch, tag = (model_name, None) if custom else split_tag(check_model_name(model_name))
        weights = _weights_of(arch, tag, pretrained)
        model = _create_named(arch, weights, num_classes, in_chans, kwargs)
    if features_only:
        model = build_features(model, out_indices)
    return model
