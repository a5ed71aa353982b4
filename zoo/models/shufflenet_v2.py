"""ShuffleNet v2 (Ma et al., 2018): channel split, two branches, concat and shuffle."""

from __future__ import annotations

from torch import nn

from zoo.blocks import ConvBNAct, LayerSpec, ShuffleV2Unit
from zoo.models._base import ZooModel, family_cfg, init_weights
from zoo.registry import ModelCfg, register, register_model

__all__ = ["ShuffleNetV2"]

PAPER = (
    "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design (arXiv:1807.11164)"
)

STAGE_REPEATS = (4, 8, 4)
# Stem, stage 2-4 and final 1x1 conv widths per width multiplier (paper Table 5).
WIDTHS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}


class ShuffleNetV2(ZooModel):
    """ShuffleNet v2 at width 0.5x, 1.0x, 1.5x or 2.0x.

    ``layout="megvii"`` with ``head_bias=False`` is the authors' released architecture (the
    ``*_megvii`` variants): see ``zoo.blocks.ShuffleV2Unit``.
    """

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
        global_pool: str = "avg",
        layout: str = "torchvision",
        head_bias: bool = True,
    ) -> None:
        super().__init__(in_chans, num_classes, global_pool=global_pool)
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {sorted(WIDTHS)}, got {width}")
        stem_chs, *stage_chs, last_chs = WIDTHS[width]
        layers = {"act_layer": act_layer, "norm_layer": norm_layer}
        self.features = nn.Sequential()
        self.features.add_module("stem", ConvBNAct(in_chans, stem_chs, 3, 2, **layers))
        self._add_feature("features.stem", stem_chs, 2)
        self.features.add_module("stem_pool", nn.MaxPool2d(3, 2, 1))
        in_chs = stem_chs
        for stage, (out_chs, repeats) in enumerate(
            zip(stage_chs, STAGE_REPEATS, strict=True), start=2
        ):
            units = [
                ShuffleV2Unit(
                    in_chs if i == 0 else out_chs, out_chs, 2 if i == 0 else 1, **layers,
                    layout=layout,
                )
                for i in range(repeats)
            ]
            self.features.add_module(f"stage{stage}", nn.Sequential(*units))
            self._add_feature(f"features.stage{stage}", out_chs, 2 ** (stage + 1))
            in_chs = out_chs
        self.features.add_module("head_conv", ConvBNAct(in_chs, last_chs, 1, **layers))
        self._build_head(last_chs, drop_rate, head_bias=head_bias)
        init_weights(self)


def _cfg(name: str) -> ModelCfg:
    return family_cfg(name, "shufflenet_v2", PAPER)


@register_model(_cfg("shufflenet_v2_x0_5"))
def shufflenet_v2_x0_5(**kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 0.5x."""
    return ShuffleNetV2(0.5, **kwargs)


@register_model(_cfg("shufflenet_v2_x1_0"))
def shufflenet_v2_x1_0(**kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 1.0x."""
    return ShuffleNetV2(1.0, **kwargs)


@register_model(_cfg("shufflenet_v2_x1_5"))
def shufflenet_v2_x1_5(**kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 1.5x."""
    return ShuffleNetV2(1.5, **kwargs)


@register_model(_cfg("shufflenet_v2_x2_0"))
def shufflenet_v2_x2_0(**kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 2.0x."""
    return ShuffleNetV2(2.0, **kwargs)


# The authors' released layout (megvii-model/ShuffleNet-Series): interleaved split, no
# shuffle, a strided unit whose first branch keeps its input width, no classifier bias, and
# dropout 0.2 before the 2.0x classifier. Named like timm's port variants (``*_miil``): the
# architecture their checkpoints (tag ``megvii_in1k``) and their complexity figures belong to.
MEGVII_WIDTHS = {"x0_5": 0.5, "x1_0": 1.0, "x1_5": 1.5, "x2_0": 2.0}


def _register_megvii() -> None:
    for suffix, width in MEGVII_WIDTHS.items():
        name = f"shufflenet_v2_{suffix}_megvii"

        def builder(_w=width, **kwargs) -> ShuffleNetV2:
            kwargs.setdefault("drop_rate", 0.2 if _w == 2.0 else 0.0)
            return ShuffleNetV2(_w, **{"layout": "megvii", "head_bias": False, **kwargs})

        builder.__name__ = name
        builder.__doc__ = f"ShuffleNet v2 {width}x in the authors' (Megvii) layout."
        register(name, builder, _cfg(name))


_register_megvii()
