"""Weight manifests: one JSON file per weight set (``weights/<arch>.<tag>.json``).

A manifest says where a checkpoint lives (URL mirrors or a file shipped in ``weights/``), how
to verify it (sha256, or the hash prefix its publisher put in the file name), which converter
maps its keys to ours, how images must be preprocessed, what it scores, and under which
license. The schema is documented in ``weights/README.md``.

The manifest folder is ``$ZOO_WEIGHTS_DIR`` when set, else the package data ``zoo._weights``:
the repository's top-level ``weights/`` folder, which setuptools installs as that package
(``package-dir`` in pyproject.toml), so wheels and editable installs find it the same way.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

from zoo.pretrained.errors import ManifestError

__all__ = [
    "WeightFile",
    "Manifest",
    "weights_dir",
    "load_manifests",
    "get_manifest",
    "list_tags",
    "find_by_file_name",
    "clear_cache",
    "CONVERTERS",
    "RESIZE_MODES",
]

SCHEMA_VERSION = 1
CONVERTERS = ("zoo", "torchvision", "timm", "pytorchcv", "pytorchcv_shufflenet_v1", "megvii")
RESIZE_MODES = ("torchvision", "opencv")
_HEX = set("0123456789abcdef")

_DEFAULT_PREPROCESSING: dict[str, Any] = {
    "input_size": [3, 224, 224],
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channel_order": "RGB",
    "value_range": [0.0, 1.0],
}


WEIGHTS_PACKAGE = "zoo._weights"


def weights_dir() -> Path:
    """``$ZOO_WEIGHTS_DIR`` if set, else the folder of the installed package data
    ``zoo._weights`` (the repository's ``weights/``), located by ``importlib.resources``."""
    env = os.environ.get("ZOO_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = files(WEIGHTS_PACKAGE)
    if not isinstance(root, Path):  # e.g. zoo imported from a zip: no folder to read from
        raise ManifestError(
            f"the shipped weights ({WEIGHTS_PACKAGE}) are not a folder on disk ({root}); "
            "install zoo unzipped, or set ZOO_WEIGHTS_DIR to a copy of its weights/ folder."
        )
    return root


@dataclass(frozen=True)
class WeightFile:
    """One downloadable (``url``), shipped (``file``) or hand-downloaded (``manual``: the page
    to get it from; it is then expected as ``file_name`` in the cache) checkpoint and how to
    verify it."""

    file_name: str
    url: str | None = None
    file: str | None = None
    manual: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    sha1: str | None = None
    sha1_prefix: str | None = None
    hf_etag: bool = False
    size: int | None = None
    size_mb: float | None = None
    archive: str | None = None
    member: str | None = None
    format: str = "torch"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> WeightFile:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ManifestError(f"{where}: unknown file field(s) {sorted(unknown)}")
        if sum(bool(d.get(k)) for k in ("url", "file", "manual")) != 1:
            raise ManifestError(f"{where}: give exactly one of 'url', 'file' or 'manual'")
        if d.get("manual") and not d.get("file_name"):
            raise ManifestError(f"{where}: a manual download needs the 'file_name' to save it as")
        d = dict(d)
        if "file_name" not in d:
            d["file_name"] = Path(d.get("file") or d["url"].split("?")[0]).name
        if d["file_name"].endswith(".zip") and "archive" not in d:
            d["archive"] = "zip"
            d["file_name"] = d["file_name"][: -len(".zip")]
        spec = cls(**d)
        spec._validate(where)
        return spec

    def _validate(self, where: str) -> None:
        for name, full in (("sha256", 64), ("sha1", 40)):
            for key, exact in ((name, True), (f"{name}_prefix", False)):
                value = getattr(self, key)
                if value is None:
                    continue
                ok = set(value) <= _HEX and (
                    len(value) == full if exact else 6 <= len(value) < full
                )
                if not ok:
                    raise ManifestError(f"{where}: {key} {value!r} is not a valid lowercase hex")
        if self.file and not self.sha256:
            raise ManifestError(f"{where}: a shipped file needs its full sha256")
        if self.url and not (self.sha256 or self.sha256_prefix or self.sha1 or self.sha1_prefix):
            if not self.hf_etag:
                raise ManifestError(
                    f"{where}: {self.url} needs sha256, sha256_prefix, sha1, sha1_prefix or "
                    "hf_etag so the download can be verified"
                )
        if self.archive not in (None, "zip"):
            raise ManifestError(f"{where}: archive must be 'zip' or absent")
        if self.format not in ("torch", "safetensors"):
            raise ManifestError(f"{where}: format must be 'torch' or 'safetensors'")
        if "/" in self.file_name or self.file_name.startswith("."):
            raise ManifestError(f"{where}: file_name {self.file_name!r} must be a plain name")


@dataclass(frozen=True)
class Manifest:
    """Everything known about one weight set ``arch.tag``."""

    arch: str
    tag: str
    files: tuple[WeightFile, ...]
    converter: str
    source: str
    preprocessing: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    default: bool = False
    num_classes: int = 1000
    in_chans: int = 3
    source_arch: str = ""
    license: str = ""
    paper: str = ""
    recipe: str = ""
    num_params: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    path: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (files as dicts), for ``model_info`` and printing."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        out["files"] = [
            {k: v for k, v in vars(f).items() if v not in (None, False)} for f in self.files
        ]
        out["name"] = self.name
        return out


def _resolve_preprocessing(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Fill defaults and derive ``crop_size``/``resize_size`` (timm: floor(crop / crop_pct))."""
    unknown = set(raw) - set(_DEFAULT_PREPROCESSING) - {"resize_size", "crop_size", "resize_mode"}
    if unknown:
        raise ManifestError(f"{where}: unknown preprocessing field(s) {sorted(unknown)}")
    p = {**_DEFAULT_PREPROCESSING, **raw}
    p["input_size"] = [int(v) for v in p["input_size"]]
    if len(p["input_size"]) != 3:
        raise ManifestError(f"{where}: input_size must be [channels, height, width]")
    chans = p["input_size"][0]
    if len(p["mean"]) != chans or len(p["std"]) != chans:
        raise ManifestError(f"{where}: mean/std need {chans} values (one per input channel)")
    p["crop_size"] = int(p.get("crop_size") or p["input_size"][-1])
    if "resize_size" not in raw:
        p["resize_size"] = math.floor(p["crop_size"] / float(p["crop_pct"]))
    else:
        p["crop_pct"] = p["crop_size"] / int(raw["resize_size"])
    if p.get("resize_mode", "torchvision") not in RESIZE_MODES:
        raise ManifestError(f"{where}: resize_mode must be one of {RESIZE_MODES}")
    if p["channel_order"] not in ("RGB", "BGR", "L"):
        raise ManifestError(f"{where}: channel_order must be RGB, BGR or L")
    if p["interpolation"] not in ("nearest", "bilinear", "bicubic"):
        raise ManifestError(f"{where}: interpolation must be nearest, bilinear or bicubic")
    p["value_range"] = [float(v) for v in p["value_range"]]
    return p


def _manifest_from_json(path: Path) -> Manifest:
    where = str(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: a manifest is a JSON object")
    raw = dict(raw)
    schema = raw.pop("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ManifestError(f"{where}: schema {schema} is not supported (expected 1)")
    files_raw = raw.pop("files", None)
    shorthand = {k: raw.pop(k) for k in [f.name for f in fields(WeightFile)] if k in raw}
    if files_raw is None:
        files_raw = [shorthand]
    elif shorthand:
        raise ManifestError(f"{where}: put {sorted(shorthand)} inside 'files'")
    if not files_raw:
        raise ManifestError(f"{where}: 'files' is empty")
    files = tuple(WeightFile.from_dict(f, f"{where} files[{i}]") for i, f in enumerate(files_raw))
    for key in ("arch", "tag", "converter", "source"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ManifestError(f"{where}: missing string field {key!r}")
    if raw["converter"] not in CONVERTERS:
        raise ManifestError(f"{where}: converter must be one of {CONVERTERS}")
    if "." in raw["tag"] or "." in raw["arch"]:
        raise ManifestError(f"{where}: arch and tag may not contain '.'")
    known = {f.name for f in fields(Manifest)} - {"path", "files"}
    unknown = set(raw) - known
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {sorted(unknown)}")
    raw["preprocessing"] = _resolve_preprocessing(raw.get("preprocessing", {}), where)
    return Manifest(files=files, path=path, **raw)


_cache: dict[Path, dict[str, Manifest]] = {}


def clear_cache() -> None:
    """Forget parsed manifests (they are re-read on next use)."""
    _cache.clear()


def load_manifests(directory: Path | None = None) -> dict[str, Manifest]:
    """All manifests of ``directory`` (default :func:`weights_dir`) keyed by ``arch.tag``."""
    directory = directory or weights_dir()
    if directory in _cache:
        return _cache[directory]
    found: dict[str, Manifest] = {}
    defaults: dict[str, str] = {}
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    for path in paths:
        m = _manifest_from_json(path)
        if m.name in found:
            raise ManifestError(f"{path}: {m.name} is already defined in {found[m.name].path}")
        if m.default:
            if m.arch in defaults:
                raise ManifestError(f"{path}: {m.arch} already has default tag {defaults[m.arch]}")
            defaults[m.arch] = m.tag
        found[m.name] = m
    _check_unique_file_names(found)
    _cache[directory] = found
    return found


def _check_unique_file_names(manifests: dict[str, Manifest]) -> None:
    """Two different downloads may not share a cache file name."""
    seen: dict[str, tuple[str, str | None]] = {}
    for m in manifests.values():
        for f in m.files:
            if f.url is None:
                continue
            other = seen.setdefault(f.file_name, (m.name, f.url))
            if other[1] != f.url:
                raise ManifestError(
                    f"{m.path}: file_name {f.file_name!r} is also used by {other[0]} for a "
                    "different URL; give one of them another file_name"
                )


def _sort_key(m: Manifest) -> tuple:
    # The default first, then published weights before the zoo's own (other datasets: their
    # top-1 is not comparable), each by top-1, best first.
    top1 = m.metrics.get("top1")
    return (
        not m.default,
        m.source == "zoo",
        -(top1 if isinstance(top1, (int, float)) else -1.0),
        m.tag,
    )


def list_tags(arch: str) -> list[str]:
    """Weight tags of ``arch``: the default first, then published weights by top-1 (best
    first), then the zoo's own (e.g. ``fashion_mnist``)."""
    ms = [m for m in load_manifests().values() if m.arch == arch]
    return [m.tag for m in sorted(ms, key=_sort_key)]


def get_manifest(arch: str, tag: str | None = None) -> Manifest:
    """The manifest of ``arch.tag`` (``tag=None``: the default tag)."""
    tags = list_tags(arch)
    if not tags:
        raise ManifestError(
            f"no pretrained weights are registered for {arch!r}. Architectures with weights: "
            f"{', '.join(sorted({m.arch for m in load_manifests().values()})) or 'none'}. "
            f"Pass a local file instead: pretrained='/path/to/weights.pth'. "
            f"(Manifests are read from {weights_dir()}.)"
        )
    tag = tag or tags[0]
    found = load_manifests().get(f"{arch}.{tag}")
    if found is None:
        raise ManifestError(
            f"{arch!r} has no weight tag {tag!r}; available: {', '.join(tags)}. Pass "
            "pretrained=True for the default, one of these tags, or a local file path."
        )
    return found


def find_by_file_name(arch: str | None, file_name: str) -> Manifest | None:
    """The manifest (of ``arch``, or of any architecture for ``None``) one of whose files is
    named ``file_name`` (offline copies)."""
    for m in load_manifests().values():
        if arch in (None, m.arch) and any(
            file_name in (f.file_name, f"{f.file_name}.zip") for f in m.files
        ):
            return m
    return None
