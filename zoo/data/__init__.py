"""Datasets and preprocessing: Fashion-MNIST from the system package, checked ImageFolders."""

from zoo.data.fashion_mnist import (
    CLASSES,
    DEFAULT_ROOT,
    FashionMNIST,
    FashionMNISTMissingError,
    read_idx,
    write_image_folder,
)
from zoo.data.folder import (
    ImageFolderError,
    SafeImageFolder,
    TransformSubset,
    UnreadableImageWarning,
    build_transform,
    collate_skip_none,
    load_splits,
    resolve_data_cfg,
    stratified_split,
)

FASHION_MNIST_CLASSES = CLASSES
FASHION_MNIST_ROOT = DEFAULT_ROOT

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "FashionMNIST",
    "FashionMNISTMissingError",
    "read_idx",
    "write_image_folder",
    "ImageFolderError",
    "SafeImageFolder",
    "TransformSubset",
    "UnreadableImageWarning",
    "build_transform",
    "collate_skip_none",
    "load_splits",
    "resolve_data_cfg",
    "stratified_split",
]
