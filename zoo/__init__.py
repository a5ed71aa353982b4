"""zoo: compact and binary convolutional networks for PyTorch.

import zoo
model = zoo.create("shufflenet_g3", num_classes=10)
print(zoo.count(model))

``zoo.compress``, ``zoo.train``, ``zoo.deploy`` and ``zoo.data`` load on first use.
"""

import importlib
from typing import Any

from zoo.binary import binarize, save_binary
from zoo.catalog import (
    count,
    get_pretrained_cfg,
    list_models,
    list_pretrained,
    model_info,
    summary,
)
from zoo.factory import ConflictingArgumentsError, create, load_binary, load_into
from zoo.pretrained import (
    CorruptCheckpointError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    WeightsError,
    data_config,
)
from zoo.registry import UnknownModelError, is_model, list_families, register_model

__version__ = "0.1.0"

__all__ = [
    "create",
    "list_models",
    "list_pretrained",
    "list_families",
    "is_model",
    "model_info",
    "get_pretrained_cfg",
    "register_model",
    "count",
    "summary",
    "binarize",
    "save_binary",
    "load_binary",
    "load_into",
    "fuse",
    "fuse_and_pack",
    "export_onnx",
    "data_config",
    "transforms",
    "UnknownModelError",
    "ConflictingArgumentsError",
    "WeightsError",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "StateDictMismatchError",
]

_LAZY_MODULES = ("compress", "train", "deploy", "data", "counting", "formats")
_LAZY_ATTRS = {
    "fuse": "zoo.deploy",
    "export_onnx": "zoo.deploy",
    "fuse_and_pack": "zoo.deploy",
    "transforms": "zoo.pretrained.preprocessing",
}


def __getattr__(name: str) -> Any:
    """Subpackages, deploy functions and ``transforms`` (torchvision) on first use, so
    ``import zoo`` stays fast."""
    if name in _LAZY_MODULES:
        return importlib.import_module(f"zoo.{name}")
    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
