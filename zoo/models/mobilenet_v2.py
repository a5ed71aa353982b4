"""MobileNet v2 (Sandler et al., 2018): inverted residuals with linear bottlenecks."""

from __future__ import annotations

from torch import nn

from zoo.blocks import ConvBNAct, InvertedResidual, LayerSpec, make_divisible
from zoo.models._base import ZooModel, family_cfg, init_weights
from zoo.registry import register_model

__all__ = ["MobileNetV2"]

PAPER = "MobileNetV2: Inverted Residuals and Linear Bottlenecks (arXiv:1801.04381)"

# (expansion t, output channels c, repeats n, first stride s), the paper's Table 2.
STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHS, LAST_CHS = 32, 1280


class MobileNetV2(ZooModel):
    """MobileNet v2; channels rounded to multiples of 8, the last conv never narrower than 1280."""

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        act_layer: LayerSpec = nn.ReLU6,
        norm_layer: LayerSpec = nn.BatchNorm2d,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(in_chans, num_classes, global_pool=global_pool)
        layers = {"act_layer": act_layer, "norm_layer": norm_layer}
        in_chs, reduction = make_divisible(STEM_CHS * width, 8), 2
        last_chs = make_divisible(LAST_CHS * max(1.0, width), 8)
        self.features = nn.Sequential()
        self.features.add_module("stem", ConvBNAct(in_chans, in_chs, 3, 2, **layers))
        self._add_feature("features.stem", in_chs, reduction)
        for i, (t, c, n, s) in enumerate(STAGES, start=1):
            out_chs, reduction = make_divisible(c * width, 8), reduction * s
            stage = nn.Sequential(
                *[
                    InvertedResidual(
                        in_chs if j == 0 else out_chs, out_chs, s if j == 0 else 1, t, **layers
                    )
                    for j in range(n)
                ]
            )
            self.features.add_module(f"stage{i}", stage)
            self._add_feature(f"features.stage{i}", out_chs, reduction)
            in_chs = out_chs
        self.features.add_module("head_conv", ConvBNAct(in_chs, last_chs, 1, **layers))
        self._build_head(last_chs, drop_rate)
        init_weights(self)


@register_model(
    family_cfg("mobilenet_v2", "mobilenet_v2", PAPER)
)
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNet v2 1.0x."""
    return MobileNetV2(1.0, **kwargs)
