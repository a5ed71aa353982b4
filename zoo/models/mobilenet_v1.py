"""MobileNet v1 (Howard et al., 2017): a 3x3 stem and 13 depthwise-separable blocks.

Width multipliers scale every layer with ``int(channels * width)`` (the common PyTorch port's
rule, which reproduces its exact parameter counts). Any input resolution works; the head pools
globally, so the paper's resolution multiplier is just the input size.
"""

from __future__ import annotations

from torch import nn

from zoo.blocks import ConvBNAct, DepthwiseSeparable, LayerSpec
from zoo.models._base import ZooModel, family_cfg, init_weights
from zoo.registry import ModelCfg, register_model

__all__ = ["MobileNetV1"]

PAPER = (
    "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications "
    "(arXiv:1704.04861)"
)

STEM_CHS = 32
# (output channels, stride) of the 13 depthwise-separable blocks.
BLOCKS = (
    [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
    + [(512, 1)] * 5
    + [(1024, 2), (1024, 1)]
)


class MobileNetV1(ZooModel):
    """MobileNet v1 at a given width multiplier (timm's weights use ``act_layer="relu6"``)."""

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(in_chans, num_classes, global_pool=global_pool)
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width}")
        layers = {"act_layer": act_layer, "norm_layer": norm_layer}
        in_chs, reduction = int(STEM_CHS * width), 2
        self.features = nn.Sequential()
        self.features.add_module("stem", ConvBNAct(in_chans, in_chs, 3, 2, **layers))
        self._add_feature("features.stem", in_chs, reduction)
        for i, (chs, stride) in enumerate(BLOCKS, start=1):
            out_chs, reduction = int(chs * width), reduction * stride
            block = DepthwiseSeparable(in_chs, out_chs, stride, **layers)
            self.features.add_module(f"block{i}", block)
            self._add_feature(f"features.block{i}", out_chs, reduction)
            in_chs = out_chs
        self._build_head(in_chs, drop_rate)
        init_weights(self)


def _cfg(name: str) -> ModelCfg:
    return family_cfg(name, "mobilenet_v1", PAPER)


@register_model(_cfg("mobilenet_v1"))
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet v1 1.0x."""
    return MobileNetV1(1.0, **kwargs)


@register_model(_cfg("mobilenet_v1_x0_75"))
def mobilenet_v1_x0_75(**kwargs) -> MobileNetV1:
    """MobileNet v1 0.75x."""
    return MobileNetV1(0.75, **kwargs)


@register_model(_cfg("mobilenet_v1_x0_5"))
def mobilenet_v1_x0_5(**kwargs) -> MobileNetV1:
    """MobileNet v1 0.5x."""
    return MobileNetV1(0.5, **kwargs)


@register_model(_cfg("mobilenet_v1_x0_25"))
def mobilenet_v1_x0_25(**kwargs) -> MobileNetV1:
    """MobileNet v1 0.25x."""
    return MobileNetV1(0.25, **kwargs)
