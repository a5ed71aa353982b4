"""Deployment: BN folding and other inference rewrites, ONNX export, speed benchmarks.

>>> import zoo, torch
>>> from zoo.deploy import fuse
>>> fast = fuse(zoo.create("shufflenet_g3"))          # BN folded, same outputs
>>> fast.fuse_report.folded[:1]
[('features.stem.conv', 'features.stem.bn')]

``zoo.deploy.export`` (ONNX) and ``zoo.deploy.benchmark`` import onnx / timm / pytorchcv only
when used. The benchmark is three modules: ``benchmark`` (what to time for a model, and the
``zoo benchmark`` command), ``timing`` (the harness) and ``report`` (Markdown and plot); its
peer table is ``zoo.pretrained.peers``.
"""

import importlib

from zoo.deploy.fuse import FuseReport, GroupedPointwiseConv2d, fold_conv_bn, fuse, fuse_and_pack

__all__ = [
    "FuseReport",
    "GroupedPointwiseConv2d",
    "ExportError",
    "export_onnx",
    "fold_conv_bn",
    "fuse",
    "fuse_and_pack",
]


def __getattr__(name: str):
    # Lazy: keep `import zoo.deploy` free of onnx imports.
    if name in ("ExportError", "export_onnx"):
        return getattr(importlib.import_module("zoo.deploy.export"), name)
    raise AttributeError(f"module 'zoo.deploy' has no attribute {name!r}")
