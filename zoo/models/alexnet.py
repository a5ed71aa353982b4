"""AlexNet (Krizhevsky et al., 2012), torchvision's single-tower layout: the baseline the
SqueezeNet, ShuffleNet and XNOR-Net papers compare with."""

from __future__ import annotations

from torch import nn

from zoo.blocks import LayerSpec, create_act
from zoo.models._base import ZooModel, family_cfg, init_weights, reject_norm_layer
from zoo.registry import register_model

__all__ = ["AlexNet"]

PAPER = "ImageNet Classification with Deep Convolutional Neural Networks (NeurIPS 2012)"

# (out channels, kernel, stride, padding, max-pool after)
CONVS = [
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
]


class AlexNet(ZooModel):
    """Five convs, 6x6 adaptive pooling, two 4096-d fully connected layers, classifier.

    ``global_pool`` ("avg" or "max") is the 6x6 pooling the fully connected layers expect.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(in_chans, num_classes, min_input_size=64, global_pool=global_pool)
        reject_norm_layer(norm_layer, "AlexNet")
        self.features = nn.Sequential()
        in_chs, reduction = in_chans, 1
        for i, (out_chs, k, s, p, pool) in enumerate(CONVS, start=1):
            self.features.add_module(f"conv{i}", nn.Conv2d(in_chs, out_chs, k, s, p))
            self.features.add_module(f"act{i}", create_act(act_layer))
            reduction *= s
            self._add_feature(f"features.act{i}", out_chs, reduction)
            if pool:
                self.features.add_module(f"pool{i}", nn.MaxPool2d(3, 2))
                reduction *= 2
            in_chs = out_chs
        self._add_feature(f"features.pool{len(CONVS)}", in_chs, reduction)
        hidden = 4096
        pre_logits = nn.Sequential(
            nn.Dropout(drop_rate),
            nn.Linear(in_chs * 36, hidden),
            create_act(act_layer),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),
            create_act(act_layer),
        )
        self._build_head(in_chs, 0.0, pool_size=6, pre_logits=pre_logits, head_features=hidden)
        init_weights(self)

    def _check_head(self, num_classes: int, global_pool: str) -> None:
        """The fully connected layers take the 6x6 pooled map, so pooling cannot be removed."""
        if global_pool == "":
            raise ValueError("AlexNet's fully connected layers need global_pool 'avg' or 'max'")


@register_model(
    family_cfg("alexnet", "alexnet", PAPER, first_conv="features.conv1", min_input_size=64)
)
def alexnet(**kwargs) -> AlexNet:
    """AlexNet, single-tower torchvision layout."""
    return AlexNet(**kwargs)
