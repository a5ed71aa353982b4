"""Fit a converted checkpoint to the model that was asked for, then load it.

- ``num_classes`` differs from the checkpoint: the classifier keeps its fresh initialisation
  and everything else loads (as timm does).
- ``in_chans`` differs: the first conv's weights are summed over RGB (1 channel) or repeated
  and rescaled (more channels) so the response to a grey / stacked image stays the same.
- anything else that does not fit raises ``StateDictMismatchError`` listing missing,
  unexpected and mis-shaped keys.
Each adaptation is logged on the ``zoo.pretrained`` logger.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from torch import nn

from zoo.pretrained import hub
from zoo.pretrained.converters import (
    classifier_name,
    convert_state_dict,
    first_conv_name,
    matches_source,
    strip_module_prefix,
)
from zoo.pretrained.errors import StateDictMismatchError, WeightsError
from zoo.pretrained.manifests import (
    Manifest,
    find_by_file_name,
    get_manifest,
    list_tags,
    load_manifests,
    weights_dir,
)
from zoo.pretrained.safeload import load_state_dict

__all__ = [
    "adapt_input_conv",
    "fit_state_to_model",
    "load_pretrained",
    "local_manifest",
    "manual_file",
    "resolve_weights",
    "strict_load",
]

_logger = logging.getLogger("zoo.pretrained")

def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-conv weights ``(O, C, kh, kw)`` for ``in_chans`` inputs instead of ``C``.

    1 channel: sum over ``C`` (a grey image x gives the response RGB (x, x, x) gave).
    More: repeat the ``C`` filters cyclically and scale by ``C / in_chans`` so the output for
    a constant image keeps its magnitude.
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a 4-D conv weight, got shape {tuple(weight.shape)}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    src = weight.shape[1]
    if in_chans == src:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / src)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (src / in_chans)


# ----------------------------------------------------------------------------- resolving


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith("~")
        or value.endswith((".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar"))
        or Path(value).expanduser().exists()
    )


def resolve_weights(
    arch: str, tag_or_path: bool | str | os.PathLike, *, progress: bool = True
) -> tuple[Path, Manifest | None]:
    """Local path of the weights and their manifest (``None`` for an unknown local file).

    ``True``: the default tag; a tag (``"tv_in1k"`` or ``"arch.tag"``); or a local file. A
    local file whose name is one of a manifest's files (e.g. downloaded by hand for offline
    use) is verified and converted as that manifest says.
    """
    is_tag = isinstance(tag_or_path, str) and tag_or_path.removeprefix(f"{arch}.") in list_tags(
        arch
    )
    if tag_or_path is True:
        manifest = get_manifest(arch)
    elif (
        not is_tag
        and isinstance(tag_or_path, (str, os.PathLike))
        and _looks_like_path(str(tag_or_path))
    ):
        path = Path(tag_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained={str(tag_or_path)!r}: no such file. Pass an existing checkpoint "
                f"path, True for the default weights, or a tag of {arch!r}."
            )
        manifest = find_by_file_name(arch, path.name)
        if manifest is not None:
            spec = next(
                f for f in manifest.files if path.name in (f.file_name, f"{f.file_name}.zip")
            )
            if path.name == spec.file_name:
                hub.verify_file(path, spec, what=f"{manifest.name}: {path}")
                checked = "hash verified" if hub.has_hash(spec) else "no hash published"
                _logger.info("%s: using the local copy %s (%s)", manifest.name, path, checked)
            else:
                raise WeightsError(
                    f"{path} is the zip archive; unzip it and pass {spec.file_name} instead."
                )
        return path, manifest
    elif isinstance(tag_or_path, str):
        tag = tag_or_path.removeprefix(f"{arch}.")
        manifest = get_manifest(arch, tag)
    else:
        raise TypeError(
            f"pretrained must be True, a weight tag or a file path, got {tag_or_path!r}"
        )
    if any(f.manual for f in manifest.files):
        return manual_file(manifest), manifest
    path, _ = hub.fetch(manifest.files, manifest.name, weights_dir=weights_dir(), progress=progress)
    return path, manifest


def manual_file(manifest: Manifest) -> Path:
    """The cached copy of a checkpoint that must be downloaded by hand (no stable URL),
    verified against the manifest's size/hashes when it records any; a missing file raises
    ``WeightsError`` naming the download page and the path to put it at."""
    spec = next(f for f in manifest.files if f.manual)
    dest = hub.cache_dir() / spec.file_name
    if not dest.is_file():
        raise WeightsError(
            f"pretrained weights {manifest.name!r} cannot be downloaded automatically (the "
            f"authors publish them on a share without stable URLs). Download them by hand from "
            f"{spec.manual}{' (' + manifest.notes + ')' if manifest.notes else ''}, then save "
            f"the file as {dest} (set ZOO_HOME for another cache folder), or pass it directly: "
            f"zoo.create({manifest.arch!r}, pretrained='/path/to/the/file')."
        )
    hub.verify_file(dest, spec, what=f"{manifest.name}: {dest}")
    _logger.info("%s: using the hand-downloaded %s", manifest.name, dest)
    return dest


def local_manifest(arch: str, path: str | os.PathLike) -> Manifest | None:
    """The manifest whose rules (converter, model_kwargs) apply to a local weights file: the
    one naming its file, else the one whose source architecture has exactly its keys."""
    manifest = find_by_file_name(arch, Path(path).name)
    if manifest is not None:
        return manifest
    return _manifest_by_structure(strip_module_prefix(load_state_dict(path)), arch)


# ----------------------------------------------------------------------------- loading


def _checkpoint_classes(state: dict[str, torch.Tensor], head: str) -> int | None:
    weight = state.get(f"{head}.weight")
    return int(weight.shape[0]) if weight is not None else None


def fit_state_to_model(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    num_classes: int | None,
    in_chans: int | None,
    name: str,
) -> set[str]:
    """Drop a classifier of the wrong size, adapt the first conv; return keys left to init."""
    head = classifier_name(model)
    reinit: set[str] = set()
    ckpt_classes = _checkpoint_classes(state, head)
    if ckpt_classes is not None and num_classes is not None and ckpt_classes != num_classes:
        head_keys = (f"{head}.weight", f"{head}.bias")
        for key in head_keys:  # num_classes=0 (pooled features) has no classifier at all
            state.pop(key, None)
        reinit = {k for k in head_keys if k in model.state_dict()}
        _logger.info(
            "%s: checkpoint classifier has %d classes, model has %d: %s re-initialized, "
            "all other layers loaded",
            name,
            ckpt_classes,
            num_classes,
            head,
        )
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    stem = f"{first_conv_name(model)}.weight" if has_conv else ""
    weight = state.get(stem)
    if weight is not None and weight.dim() == 4 and in_chans and weight.shape[1] != in_chans:
        state[stem] = adapt_input_conv(weight, in_chans)
        how = "summed over" if in_chans == 1 else "repeated and scaled from"
        _logger.info(
            "%s: first conv %s adapted from %d to %d input channels (weights %s the %d "
            "pretrained channels)",
            name,
            stem,
            weight.shape[1],
            in_chans,
            how,
            weight.shape[1],
        )
    return reinit


def strict_load(
    model: nn.Module, state: dict[str, torch.Tensor], allowed_missing: set[str], name: str
) -> None:
    """``load_state_dict`` with one error listing every missing/unexpected/mis-shaped key."""
    own = model.state_dict()
    for key, value in own.items():  # counters are bookkeeping, not weights
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = [k for k in own if k not in state and k not in allowed_missing]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [f"{name} does not fit {type(model).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:10])}")
        parts.append(
            "Use weights made for this architecture (see zoo.pretrained.list_tags), or a "
            "checkpoint saved from zoo.create(...) with the same name."
        )
        raise StateDictMismatchError("\n  ".join(parts))
    with torch.no_grad():
        model.load_state_dict(state, strict=False)


def _pretrained_cfg(model: nn.Module, manifest: Manifest | None, path: Path, in_chans: int) -> dict:
    cfg = dict(getattr(model, "default_cfg", None) or {})
    if manifest is not None:
        prep = dict(manifest.preprocessing)
        prep["input_size"] = [in_chans, *prep["input_size"][1:]]
        if in_chans != len(prep["mean"]):
            prep["mean"] = [sum(prep["mean"]) / len(prep["mean"])] * in_chans
            prep["std"] = [sum(prep["std"]) / len(prep["std"])] * in_chans
        cfg.update(prep)
        cfg.update(
            tag=manifest.tag,
            weights=manifest.name,
            source=manifest.source,
            license=manifest.license,
            metrics=dict(manifest.metrics),
        )
        # The class names, as in torchvision, when the model kept the weights' head (a Linear
        # or, for SqueezeNet, a 1x1 conv classifier).
        if manifest.categories and getattr(model, "num_classes", None) == manifest.num_classes:
            cfg["categories"] = list(manifest.categories)
    cfg["file"] = str(path)
    return cfg


def _manifest_by_structure(state: dict[str, torch.Tensor], arch: str) -> Manifest | None:
    """A manifest of ``arch`` whose source architecture has exactly ``state``'s keys: its
    converter and ``model_kwargs`` apply to a local file that matched no file name (e.g. a
    renamed download, or a fine-tuned copy). Its tag and preprocessing are not assumed."""
    for m in sorted(load_manifests().values(), key=lambda m: m.name):
        if m.arch == arch and m.source_arch and matches_source(state, m.source_arch) is not None:
            _logger.info(
                "local checkpoint has the keys of %s: converting it as %s does",
                m.source_arch,
                m.name,
            )
            return m
    return None


def load_pretrained(
    model: nn.Module,
    arch: str,
    tag_or_path: bool | str | os.PathLike = True,
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    progress: bool = True,
) -> nn.Module:
    """Load weights into ``model`` (built as ``arch`` with ``num_classes``/``in_chans``).

    ``tag_or_path``: ``True`` (default tag), a tag of ``arch``, or a local checkpoint. Foreign
    layouts are converted (see :mod:`zoo.pretrained.converters`); the classifier is re-initialised
    when ``num_classes`` differs and the first conv adapted when ``in_chans`` differs. Sets
    ``model.pretrained_cfg`` to the weights' preprocessing, tag and metrics.
    """
    path, manifest = resolve_weights(arch, tag_or_path, progress=progress)
    name = manifest.name if manifest else str(path)
    state = strip_module_prefix(load_state_dict(path))
    rules = manifest or _manifest_by_structure(state, arch)
    converter = rules.converter if rules else "auto"
    source_arch = rules.source_arch if rules else ""
    ckpt_classes = rules.num_classes if rules else num_classes
    if manifest is None and rules is not None:
        ckpt_classes = matches_source(state, rules.source_arch) or ckpt_classes
    try:
        state = convert_state_dict(state, model, converter, source_arch, ckpt_classes)
        reinit = fit_state_to_model(state, model, num_classes, in_chans, name)
        strict_load(model, state, reinit, name)
    except StateDictMismatchError as e:
        if manifest is None or not manifest.model_kwargs:
            raise
        kwargs = ", ".join(f"{k}={v!r}" for k, v in manifest.model_kwargs.items())
        raise StateDictMismatchError(
            f"{e}\n  {name} was trained with a variant of {arch}: build it with "
            f"zoo.create({arch!r}, {kwargs}, pretrained={manifest.tag!r})."
        ) from e
    cfg = _pretrained_cfg(model, manifest, path, in_chans)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    _logger.info("loaded %s into %s", name, arch)
    return model
