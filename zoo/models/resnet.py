"""ResNet-18 (He et al., 2016): the XNOR-Net paper's second baseline."""

from __future__ import annotations

from torch import nn

from zoo.blocks import BasicBlock, ConvBNAct, LayerSpec
from zoo.models._base import ZooModel, family_cfg, init_weights
from zoo.registry import register_model

__all__ = ["ResNet"]

PAPER = "Deep Residual Learning for Image Recognition (arXiv:1512.03385)"
STAGE_WIDTHS = (64, 128, 256, 512)


class ResNet(ZooModel):
    """ResNet with basic blocks: 7x7/2 stem, max-pool, four stages, global pool, classifier."""

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(in_chans, num_classes, global_pool=global_pool)
        kinds = {"act_layer": act_layer, "norm_layer": norm_layer}
        self.features = nn.Sequential()
        self.features.add_module("stem", ConvBNAct(in_chans, 64, 7, 2, **kinds))
        self._add_feature("features.stem", 64, 2)
        self.features.add_module("stem_pool", nn.MaxPool2d(3, 2, 1))
        in_chs = 64
        for i, (width, n) in enumerate(zip(STAGE_WIDTHS, layers, strict=True), start=1):
            blocks = [
                BasicBlock(
                    in_chs if j == 0 else width, width, 2 if (j == 0 and i > 1) else 1, **kinds
                )
                for j in range(n)
            ]
            self.features.add_module(f"layer{i}", nn.Sequential(*blocks))
            self._add_feature(f"features.layer{i}", width, 2 ** (i + 1))
            in_chs = width
        self._build_head(in_chs, drop_rate)
        init_weights(self)


@register_model(
    family_cfg("resnet18", "resnet", PAPER)
)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18."""
    return ResNet((2, 2, 2, 2), **kwargs)
