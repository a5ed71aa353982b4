"""ImageFolder reading that fails clearly on bad folders and skips unreadable images.

``SafeImageFolder`` is ``torchvision.datasets.ImageFolder`` plus: a readable error for a
missing, empty or one-class folder; every image checked once with PIL (corrupt or
truncated files are skipped, counted in ``.skipped`` and reported with a warning); images
read by ``zoo.data.images.load_image`` (EXIF orientation, 16-bit and float images scaled to
8 bits) in the model's channel count (grayscale to RGB or back). ``load_splits`` finds
or makes (with a fixed seed) the train/val split, and ``build_transform`` derives train and
eval preprocessing from a model's ``default_cfg``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from tqdm.auto import tqdm

from zoo.data.images import load_image
from zoo.data.transforms import create_eval_transform

__all__ = [
    "ImageFolderError",
    "check_class_folders",
    "verify_image",
    "UnreadableImageWarning",
    "SafeImageFolder",
    "TransformSubset",
    "collate_skip_none",
    "stratified_split",
    "load_splits",
    "resolve_data_cfg",
    "build_transform",
    "IMG_EXTENSIONS",
]

LAYOUT = "ROOT/CLASS_NAME/IMAGE.png (one sub-folder per class)"
_READ_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)


class ImageFolderError(ValueError):
    """The folder cannot be used as an ImageFolder dataset; the message says why and how."""


class UnreadableImageWarning(UserWarning):
    """Some image files could not be decoded and were left out."""


def _check_root(root: Path) -> None:
    if not root.exists():
        raise FileNotFoundError(
            f"data folder {str(root)!r} does not exist; pass --data pointing at an image folder "
            f"laid out as {LAYOUT}"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is a file, not a folder laid out as {LAYOUT}")


def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def check_class_folders(root: Path, min_classes: int) -> list[str]:
    """Class folder names of ``root``; raises ``ImageFolderError`` if fewer than ``min_classes``."""
    _check_root(root)
    classes = _class_dirs(root)
    if not classes:
        loose = [e.name for e in os.scandir(root) if e.is_file()]
        hint = (
            f" It holds {len(loose)} loose file(s); move images into one sub-folder per class."
            if loose
            else " It is empty."
        )
        raise ImageFolderError(f"no class folders in {str(root)!r}; expected {LAYOUT}.{hint}")
    if len(classes) < min_classes:
        raise ImageFolderError(
            f"only {len(classes)} class folder ({', '.join(classes)}) in {str(root)!r}; "
            f"classification needs at least {min_classes} classes: add one sub-folder per class"
        )
    return classes


def verify_image(path: str) -> str | None:
    """None when PIL can read ``path``, else a short reason (checks headers and chunk CRCs)."""
    try:
        with Image.open(path) as img:
            img.verify()
    except _READ_ERRORS as e:
        return f"{type(e).__name__}: {e}"
    return None


class _PilLoader:
    """Load an image (``zoo.data.images``) in the mode matching the model's input channels."""

    def __init__(self, in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        self.mode = "L" if in_chans == 1 else "RGB"

    def __call__(self, path: str) -> Image.Image:
        return load_image(path, self.mode)


class SafeImageFolder(ImageFolder):
    """``ImageFolder`` that checks its folder, skips unreadable images and matches channels.

    ``skipped`` lists ``(path, reason)`` for every image left out. An image that passed
    the up-front check but fails to decode later yields ``None``, which
    ``collate_skip_none`` drops and counts.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        in_chans: int = 3,
        verify: bool = True,
        min_classes: int = 2,
        progress: bool = True,
    ) -> None:
        root_path = Path(root).expanduser()
        check_class_folders(root_path, min_classes)
        self.skipped: list[tuple[str, str]] = []
        self.load_failures = 0
        bar = tqdm(desc=f"scanning {root_path}", unit="img", disable=not progress or None)

        def is_valid(path: str) -> bool:
            if not has_file_allowed_extension(path, IMG_EXTENSIONS):
                return False
            bar.update(1)
            reason = verify_image(path) if verify else None
            if reason is not None:
                self.skipped.append((path, reason))
                return False
            return True

        try:
            super().__init__(
                str(root_path),
                transform=transform,
                target_transform=target_transform,
                loader=_PilLoader(in_chans),
                is_valid_file=is_valid,
                allow_empty=True,
            )
        finally:
            bar.close()
        self._check_not_empty(root_path)
        if self.skipped:
            first = "; ".join(f"{p} ({r})" for p, r in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image(s) in {root_path}: {first}{more}",
                UnreadableImageWarning,
                stacklevel=2,
            )

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        """Sorted class folder names, ignoring hidden folders such as ``.ipynb_checkpoints``."""
        classes = _class_dirs(Path(directory))
        return classes, {c: i for i, c in enumerate(classes)}

    def _check_not_empty(self, root: Path) -> None:
        counts = [0] * len(self.classes)
        for _, y in self.samples:
            counts[y] += 1
        empty = [c for c, n in zip(self.classes, counts, strict=True) if n == 0]
        if empty:
            bad = f" ({len(self.skipped)} unreadable image(s) skipped)" if self.skipped else ""
            raise ImageFolderError(
                f"class folder(s) {', '.join(empty)} in {str(root)!r} hold no readable image{bad}; "
                f"add images with extensions {', '.join(IMG_EXTENSIONS)} or remove the folder"
            )

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        try:
            return super().__getitem__(index)
        except _READ_ERRORS as e:
            path = self.samples[index][0]
            warnings.warn(
                f"skipping unreadable image {path}: {e}", UnreadableImageWarning, stacklevel=2
            )
            self.load_failures += 1
            return None


def collate_skip_none(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Collate ``(image, target)`` pairs, dropping ``None`` (unreadable) samples.

    Returns ``(images, targets, n_dropped)`` so loops can count what was skipped even when
    the loading ran in worker processes.
    """
    good = [s for s in batch if s is not None]
    dropped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), dropped
    images, targets = default_collate(good)
    return images, targets, dropped


class TransformSubset(Dataset):
    """A subset of a dataset with its own transform (train and val views of one folder)."""

    def __init__(
        self, dataset: Dataset, indices: Sequence[int], transform: Callable | None
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int] | None:
        sample = self.dataset[self.indices[i]]
        if sample is None:
            return None
        img, target = sample
        return (self.transform(img) if self.transform is not None else img), target

    @property
    def targets(self) -> list[int]:
        base = self.dataset.targets
        return [int(base[i]) for i in self.indices]


def stratified_split(
    targets: Sequence[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split indices per class with a seeded permutation: same seed, same split, everywhere.

    Each class with at least 2 images puts ``round(n * val_fraction)`` of them (at least 1,
    at most n - 1) into validation.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(targets):
        by_class.setdefault(int(y), []).append(i)
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for y in sorted(by_class):
        idx = by_class[y]
        perm = torch.randperm(len(idx), generator=gen).tolist()
        n_val = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        val += [idx[p] for p in perm[:n_val]]
        train += [idx[p] for p in perm[n_val:]]
    return sorted(train), sorted(val)


def _find_split_dir(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def load_splits(
    data_dir: str | os.PathLike,
    train_transform: Callable | None,
    eval_transform: Callable | None,
    in_chans: int = 3,
    val_fraction: float = 0.2,
    seed: int = 0,
    verify: bool = True,
    progress: bool = True,
) -> tuple[Dataset, Dataset, list[str], dict[str, Any]]:
    """Train and val datasets from ``data_dir``; returns (train, val, class names, info).

    ``data_dir/train`` and ``data_dir/val`` (or ``validation``) are used when present;
    otherwise ``data_dir`` (or ``data_dir/train``) is split per class with ``seed``.
    ``info`` records where each split came from and how many images were skipped.
    """
    root = Path(data_dir).expanduser()
    _check_root(root)
    train_dir = _find_split_dir(root, ("train",))
    val_dir = _find_split_dir(root, ("val", "validation"))
    if val_dir is not None and train_dir is None:
        raise ImageFolderError(
            f"{str(root)!r} has a {val_dir.name}/ folder but no train/ folder; add train/ "
            f"next to it or point --data at a folder laid out as {LAYOUT}"
        )
    kw = dict(in_chans=in_chans, verify=verify, progress=progress)
    base = SafeImageFolder(train_dir or root, **kw)
    info: dict[str, Any] = {"train_dir": str(train_dir or root), "skipped": list(base.skipped)}
    if val_dir is not None:
        val_base = SafeImageFolder(val_dir, min_classes=1, **kw)
        unknown = sorted(set(val_base.classes) - set(base.classes))
        if unknown:
            raise ImageFolderError(
                f"{val_dir} has class folder(s) {', '.join(unknown)} missing from {train_dir}; "
                "train/ and val/ must use the same class folder names"
            )
        remap = [base.class_to_idx[c] for c in val_base.classes]
        val_base.samples = [(p, remap[y]) for p, y in val_base.samples]
        val_base.targets = [y for _, y in val_base.samples]
        val_base.classes, val_base.class_to_idx = list(base.classes), dict(base.class_to_idx)
        info.update(val_dir=str(val_dir), split="folders")
        info["skipped"] += val_base.skipped
        train = TransformSubset(base, range(len(base)), train_transform)
        val = TransformSubset(val_base, range(len(val_base)), eval_transform)
    else:
        tr_idx, va_idx = stratified_split(base.targets, val_fraction, seed)
        if not va_idx:
            raise ImageFolderError(
                f"{str(root)!r} has too few images to hold out a validation split; add images "
                "(at least 2 per class) or provide a val/ folder"
            )
        info.update(val_dir=None, split=f"seeded split val_fraction={val_fraction} seed={seed}")
        train = TransformSubset(base, tr_idx, train_transform)
        val = TransformSubset(base, va_idx, eval_transform)
    info.update(n_train=len(train), n_val=len(val))
    return train, val, list(base.classes), info


# --------------------------------------------------------------------------------------
# Transforms from a model's pretrained_cfg / default_cfg

_INTERP = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}
_DEFAULTS: dict[str, Any] = dict(
    input_size=(3, 224, 224),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    crop_pct=0.875,
    interpolation="bilinear",
    channel_order="RGB",
    value_range=(0.0, 1.0),
)


def _fit_channels(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    avg = sum(values) / len(values)  # e.g. RGB statistics for a grayscale model
    return (avg,) * in_chans


def resolve_data_cfg(
    model_or_cfg: Any, img_size: int | None = None, in_chans: int | None = None
) -> dict[str, Any]:
    """Preprocessing of a model (its ``pretrained_cfg``, else ``default_cfg``) or a dict.

    Returns input_size, mean, std, crop_pct, interpolation, channel_order, value_range
    (and resize_size when the weights fix it), with ImageNet defaults for anything
    missing. ``img_size``/``in_chans`` override the resolution and channel count; mean/std
    are then averaged or repeated to fit (grayscale models get the mean of RGB statistics).
    """
    cfg = model_or_cfg
    if not isinstance(cfg, dict):
        cfg = getattr(model_or_cfg, "pretrained_cfg", None) or getattr(
            model_or_cfg, "default_cfg", None
        )
    cfg = dict(cfg) if isinstance(cfg, dict) else {}
    out = {k: (cfg.get(k) if cfg.get(k) is not None else v) for k, v in _DEFAULTS.items()}
    c, h, w = (int(v) for v in out["input_size"])
    c = int(in_chans or c)
    if img_size:
        h = w = int(img_size)
    elif cfg.get("resize_size"):
        out["resize_size"] = cfg["resize_size"]
    out["input_size"] = (c, h, w)
    out["mean"] = _fit_channels(out["mean"], c)
    out["std"] = _fit_channels(out["std"], c)
    out["crop_pct"] = float(out["crop_pct"])
    out["value_range"] = tuple(float(v) for v in out["value_range"])
    if c == 1:
        out["channel_order"] = "L"
    elif out["channel_order"] not in ("RGB", "BGR"):
        out["channel_order"] = "RGB"
    if out["interpolation"] not in _INTERP:
        out["interpolation"] = "bilinear"
    return out


def build_transform(
    data_cfg: dict[str, Any], train: bool = False, scale_min: float = 0.08, hflip: float = 0.5
) -> Callable:
    """The eval transform (``zoo.data.transforms``), or the matching train transform.

    Eval: resize to size/crop_pct, centre crop, to tensor, normalise (channel order and
    value range as the weights expect). Train: random resized crop and horizontal flip,
    then the same tensor conversion. Images are converted to L/RGB first.
    """
    if not train:
        return create_eval_transform(data_cfg)
    c, h, w = data_cfg["input_size"]
    interp = _INTERP[data_cfg["interpolation"]]
    steps = [
        _ToMode("L" if c == 1 else "RGB"),
        T.RandomResizedCrop((h, w), scale=(scale_min, 1.0), interpolation=interp),
    ]
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    steps += [
        T.ToTensor(),
        _ChannelsAndRange(data_cfg.get("channel_order", "RGB"), data_cfg.get("value_range")),
        T.Normalize(data_cfg["mean"], data_cfg["std"]),
    ]
    return T.Compose(steps)


class _ToMode:
    """A PIL image in ``mode`` via ``load_image`` (picklable, so DataLoader workers can use it)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return load_image(img, self.mode)

    def __repr__(self) -> str:
        return f"ToMode({self.mode!r})"


class _ChannelsAndRange:
    """RGB to BGR and [0, 1] to another value range, as some published weights expect."""

    def __init__(self, channel_order: str, value_range: Sequence[float] | None) -> None:
        self.bgr = channel_order == "BGR"
        self.low, self.high = (float(v) for v in (value_range or (0.0, 1.0)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(0)
        if (self.low, self.high) != (0.0, 1.0):
            x = x * (self.high - self.low) + self.low
        return x

    def __repr__(self) -> str:
        return f"ChannelsAndRange(bgr={self.bgr}, value_range=({self.low}, {self.high}))"
