"""ShuffleNet v1 (Zhang et al., 2017): grouped 1x1 convs with channel shuffle.

Channel rules (documented in docs/models.md):
- stage widths are the paper's Table 1 channels times the width multiplier, and the bottleneck
  is a quarter of that, each rounded to the nearest multiple of ``groups`` (halves round up):
  the smallest change that lets every grouped conv split evenly. Only 0.5x/0.25x with g=2/4
  are affected (e.g. 0.5x g2: bottleneck 25 -> 26);
- the stem has 24 channels for 1.0x and 1.5x, 48 for 2.0x and 12 below 1.0x (the authors' code,
  and the width at which 0.25x reaches the paper's ~13 MFLOPs), rounded up to a multiple of
  ``groups`` so the first unit's conv branch (out - stem channels) splits into groups too.
"""

from __future__ import annotations

from torch import nn

from zoo.blocks import ConvBNAct, LayerSpec, ShuffleV1Unit
from zoo.models._base import ZooModel, family_cfg, init_weights
from zoo.published import SHUFFLENET_V1_WIDTHS
from zoo.registry import register

__all__ = ["ShuffleNetV1", "stage_channels", "stem_channels"]

PAPER = (
    "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices "
    "(arXiv:1707.01083)"
)

TABLE1_CHANNELS = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
STAGE_REPEATS = (4, 8, 4)


def _round_to(value: float, step: int) -> int:
    return max(step, int(value / step + 0.5) * step)


def stage_channels(groups: int, width: float) -> list[tuple[int, int]]:
    """(output, bottleneck) channels of stages 2-4, each a multiple of ``groups``."""
    if groups not in TABLE1_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(TABLE1_CHANNELS)}, got {groups}")
    outs = [_round_to(c * width, groups) for c in TABLE1_CHANNELS[groups]]
    return [(out, _round_to(out / 4, groups)) for out in outs]


def stem_channels(groups: int, width: float) -> int:
    """24 at 1.0x/1.5x, 48 at 2.0x, 12 below 1.0x; rounded up to a multiple of ``groups``."""
    base = 48 if width >= 2.0 else 24 if width >= 1.0 else 12
    return -(-base // groups) * groups


class ShuffleNetV1(ZooModel):
    """ShuffleNet v1 with ``groups`` in {1, 2, 3, 4, 8} at any width multiplier.

    ``shuffle_order="megvii"`` and ``head_bias=False`` give the authors' released layout
    (see ``zoo.blocks.ShuffleV1Unit`` and docs/pretrained.md, "Megvii checkpoints").
    """

    def __init__(
        self,
        groups: int = 3,
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        stem_chs: int | None = None,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
        global_pool: str = "avg",
        shuffle_order: str = "paper",
        head_bias: bool = True,
    ) -> None:
        super().__init__(in_chans, num_classes, global_pool=global_pool)
        widths = stage_channels(groups, width)
        in_chs = stem_chs or stem_channels(groups, width)
        layers = {"act_layer": act_layer, "norm_layer": norm_layer}
        self.groups = groups
        self.features = nn.Sequential()
        self.features.add_module("stem", ConvBNAct(in_chans, in_chs, 3, 2, **layers))
        self._add_feature("features.stem", in_chs, 2)
        self.features.add_module("stem_pool", nn.MaxPool2d(3, 2, 1))
        for stage, ((out_chs, mid_chs), repeats) in enumerate(
            zip(widths, STAGE_REPEATS, strict=True), 2
        ):
            units = []
            for i in range(repeats):
                group_first = not (stage == 2 and i == 0)
                stride = 2 if i == 0 else 1
                units.append(
                    ShuffleV1Unit(
                        in_chs, out_chs, groups, stride, group_first, mid_chs, **layers,
                        shuffle_order=shuffle_order,
                    )
                )
                in_chs = out_chs
            self.features.add_module(f"stage{stage}", nn.Sequential(*units))
            self._add_feature(f"features.stage{stage}", out_chs, 2 ** (stage + 1))
        self._build_head(in_chs, drop_rate, head_bias=head_bias)
        init_weights(self)


def _register_all() -> None:
    for width, suffix in SHUFFLENET_V1_WIDTHS.items():
        for groups in TABLE1_CHANNELS:
            name = f"shufflenet_g{groups}" + (f"_{suffix}" if suffix else "")

            def builder(_g=groups, _w=width, **kwargs) -> ShuffleNetV1:
                return ShuffleNetV1(_g, _w, **kwargs)

            builder.__doc__ = f"ShuffleNet v1 {width}x, {groups} groups."
            register(
                name,
                builder,
                family_cfg(name, "shufflenet_v1", PAPER),
            )


_register_all()
