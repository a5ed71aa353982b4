"""Datasets and preprocessing: Fashion-MNIST from the system package, checked ImageFolders,
data configs and transforms. Names load on first use, so that resolving a data config
(``zoo.data.config``) does not import torchvision.
"""

import importlib
from typing import Any

_EXPORTS = {
    "FashionMNIST": "zoo.data.fashion_mnist",
    "FashionMNISTMissingError": "zoo.data.fashion_mnist",
    "read_idx": "zoo.data.fashion_mnist",
    "write_image_folder": "zoo.data.fashion_mnist",
    "ImageFolderError": "zoo.data.folder",
    "SafeImageFolder": "zoo.data.folder",
    "TransformSubset": "zoo.data.folder",
    "UnreadableImageWarning": "zoo.data.folder",
    "build_transform": "zoo.data.folder",
    "collate_skip_none": "zoo.data.folder",
    "load_splits": "zoo.data.folder",
    "resolve_data_cfg": "zoo.data.folder",
    "stratified_split": "zoo.data.folder",
    "class_dirname": "zoo.data.classes",
    "class_index": "zoo.data.classes",
    "resolve_data_config": "zoo.data.config",
    "create_eval_transform": "zoo.data.transforms",
    "load_image": "zoo.data.images",
}
_RENAMED = {
    "FASHION_MNIST_CLASSES": ("zoo.data.fashion_mnist", "CLASSES"),
    "FASHION_MNIST_ROOT": ("zoo.data.fashion_mnist", "DEFAULT_ROOT"),
}

__all__ = sorted([*_EXPORTS, *_RENAMED])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
