"""zoo: compact and binary convolutional networks for PyTorch.

import zoo
model = zoo.create("shufflenet_g3", num_classes=10)
print(zoo.count(model))
"""

from zoo.binary import binarize, load_binary, save_binary, summary
from zoo.counting import count
from zoo.deploy import export_onnx, fuse
from zoo.pretrained import data_config, transforms
from zoo.registry import create, list_families, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = [
    "create",
    "list_models",
    "list_families",
    "model_info",
    "register_model",
    "count",
    "summary",
    "binarize",
    "save_binary",
    "load_binary",
    "fuse",
    "export_onnx",
    "data_config",
    "transforms",
]
