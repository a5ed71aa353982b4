"""Fashion-MNIST read straight from the idx.gz files of Debian's ``dataset-fashion-mnist``.

The idx format is parsed here with numpy (no download code anywhere): a 4-byte big-endian
magic ``0x000008DD`` (``0x08`` = unsigned byte, ``DD`` = number of dimensions), one big-endian
uint32 per dimension, then the raw bytes. ``write_image_folder`` turns any (image, label)
dataset into an ImageFolder tree of PNGs so the command-line tools can read it.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from zoo.data.classes import class_dirname
from zoo.data.folder import IMG_EXTENSIONS
from zoo.utils import atomic_write

__all__ = [
    "DEFAULT_ROOT",
    "CLASSES",
    "FashionMNIST",
    "FashionMNISTMissingError",
    "FolderNotEmptyError",
    "read_idx",
    "write_image_folder",
    "class_dirname",
    "MEAN",
    "STD",
    "data_config",
]

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist`"

# Label order of the original release (Xiao et al., 2017, github.com/zalandoresearch).
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# Pixel statistics of the 60,000 training images (values / 255), used to normalise models
# trained from scratch here; the images fill their frame, so evaluation resizes without a crop.
MEAN = (0.2860,)
STD = (0.3530,)


def data_config(img_size: int = 32, in_chans: int = 1) -> dict[str, Any]:
    """Preprocessing for a model trained on Fashion-MNIST: resize 28 -> ``img_size``, no crop,
    the dataset's own mean/std (repeated for ``in_chans=3``)."""
    return {
        "input_size": (in_chans, img_size, img_size),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": MEAN * in_chans,
        "std": STD * in_chans,
    }


_FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
_UBYTE = 0x08


class FashionMNISTMissingError(FileNotFoundError):
    """The Fashion-MNIST files are absent, truncated or not in idx format."""


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx(.gz) file with ``ndim`` dimensions into a uint8 array.

    Checks the magic number and that the payload holds exactly prod(dims) bytes, so a
    truncated or foreign file is reported instead of silently giving a short dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise FashionMNISTMissingError(f"{path} not found; {INSTALL_HINT}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises these for truncated/corrupt streams
        raise FashionMNISTMissingError(
            f"{path} is unreadable or truncated ({e}); reinstall with "
            "`sudo apt-get install --reinstall dataset-fashion-mnist`"
        ) from e
    if len(raw) < 4:
        raise FashionMNISTMissingError(f"{path} is truncated ({len(raw)} bytes); {INSTALL_HINT}")
    magic = int.from_bytes(raw[:4], "big")
    expected = (_UBYTE << 8) | ndim
    if magic != expected:
        raise FashionMNISTMissingError(
            f"{path} has magic number {magic:#010x}, expected {expected:#010x} "
            f"(unsigned-byte idx with {ndim} dimensions); {INSTALL_HINT}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FashionMNISTMissingError(f"{path} is truncated ({len(raw)} bytes); {INSTALL_HINT}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims))
    if len(raw) - header != n:
        raise FashionMNISTMissingError(
            f"{path} holds {len(raw) - header} data bytes but its header {dims} needs {n}; "
            f"the file is truncated or corrupt; {INSTALL_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


class FashionMNIST(Dataset):
    """Fashion-MNIST as a map-style dataset yielding ``(PIL 'L' image, int label)``.

    Same interface as ``torchvision.datasets.FashionMNIST`` (``data``, ``targets``,
    ``classes``, ``class_to_idx``) but reads the system copy and never downloads.
    """

    classes = CLASSES

    def __init__(
        self,
        root: str | os.PathLike = DEFAULT_ROOT,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        self.root = Path(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        if not self.root.is_dir():
            raise FashionMNISTMissingError(
                f"Fashion-MNIST folder {self.root} does not exist; {INSTALL_HINT} "
                "(or pass root= the folder holding the *-idx?-ubyte.gz files)"
            )
        images_file, labels_file, count = _FILES[bool(train)]
        images = read_idx(self.root / images_file, 3)
        labels = read_idx(self.root / labels_file, 1)
        if images.shape != (count, 28, 28) or labels.shape != (count,):
            raise FashionMNISTMissingError(
                f"{self.root}: expected {count} 28x28 images and labels, found images "
                f"{images.shape} and labels {labels.shape}; {INSTALL_HINT}"
            )
        if labels.max() >= len(CLASSES):
            raise FashionMNISTMissingError(f"{self.root / labels_file}: label {labels.max()} > 9")
        self.data = torch.from_numpy(images.copy())
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.class_to_idx = {c: i for i, c in enumerate(CLASSES)}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img = Image.fromarray(self.data[index].numpy(), mode="L")
        target = int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"FashionMNIST(root={str(self.root)!r}, split={split}, n={len(self)})"


class FolderNotEmptyError(FileExistsError):
    """``write_image_folder`` was pointed at a folder that already holds images."""


def _images_in(out: Path) -> list[Path]:
    """The image files anywhere under ``out`` (none if it does not exist)."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise NotADirectoryError(f"{str(out)!r} is a file, not a folder; pass a folder to write to")
    return [p for p in out.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS)]


def _clear_images(out: Path, images: list[Path]) -> None:
    """Delete ``images`` and the folders under ``out`` they leave empty (other files stay)."""
    for p in images:
        p.unlink()
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()


def _save_png_atomic(img: Image.Image, path: Path) -> None:
    # No fsync: a folder gets tens of thousands of small files, and a lost one is rewritten.
    atomic_write(path, lambda f: img.save(f, format="PNG"), fsync=False)


def _as_pil(img: Any) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"write_image_folder needs PIL images or uint8 arrays, got {arr.dtype}; "
            "build the dataset with transform=None"
        )
    return Image.fromarray(arr)


def write_image_folder(
    dataset: Dataset,
    out_dir: str | os.PathLike,
    limit_per_class: int | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write ``dataset`` as ``out_dir/<class name>/<index>.png`` and return ``out_dir``.

    ``limit_per_class`` keeps the first N images of each class (in dataset order), which
    makes small, balanced, reproducible subsets. Each PNG is written to a temporary file
    and renamed, so an interrupted run never leaves a half-written image behind. A folder
    that already holds images is refused (the result would mix two sets), unless ``force``
    deletes those images first.
    """
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be >= 1 or None, got {limit_per_class}")
    classes = list(classes if classes is not None else getattr(dataset, "classes", []))
    if not classes:
        raise ValueError("the dataset has no .classes; pass classes=[...] with one name per label")
    out = Path(out_dir)
    dirs = [out / class_dirname(c) for c in classes]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"class names map to clashing folder names: {classes}")
    old = _images_in(out)
    if old and not force:
        raise FolderNotEmptyError(
            f"{out} already holds {len(old)} image(s); pass --force (force=True) to delete "
            "them first, or choose an empty folder"
        )
    if old:
        _clear_images(out, old)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    targets = getattr(dataset, "targets", None)
    labels = (
        [int(t) for t in targets]
        if targets is not None
        else [int(dataset[i][1]) for i in range(len(dataset))]
    )
    chosen, counts = [], [0] * len(classes)
    for i, y in enumerate(labels):
        if limit_per_class is None or counts[y] < limit_per_class:
            counts[y] += 1
            chosen.append(i)
    width = max(5, len(str(len(labels) - 1)))
    for i in tqdm(chosen, desc=f"writing {out}", unit="img", disable=not progress or None):
        img, y = dataset[i]
        _save_png_atomic(_as_pil(img), dirs[labels[i]] / f"{i:0{width}d}.png")
    return out
