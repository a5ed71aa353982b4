"""AlexNet (Krizhevsky et al., 2012), torchvision's single-tower layout: the baseline the
SqueezeNet, ShuffleNet and XNOR-Net papers compare with."""

from __future__ import annotations

from torch import nn

from zoo.models._base import ZooModel, init_weights
from zoo.registry import ModelCfg, register_model

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
    """Five convs, 6x6 adaptive pooling, two 4096-d fully connected layers, classifier."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5) -> None:
        super().__init__(in_chans, num_classes, min_input_size=64)
        self.features = nn.Sequential()
        in_chs = in_chans
        for i, (out_chs, k, s, p, pool) in enumerate(CONVS, start=1):
            self.features.add_module(f"conv{i}", nn.Conv2d(in_chs, out_chs, k, s, p))
            self.features.add_module(f"act{i}", nn.ReLU(inplace=True))
            if pool:
                self.features.add_module(f"pool{i}", nn.MaxPool2d(3, 2))
            in_chs = out_chs
        hidden = 4096
        pre_logits = nn.Sequential(
            nn.Dropout(drop_rate),
            nn.Linear(in_chs * 36, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self._build_head(
            in_chs, 0.0, pool=nn.AdaptiveAvgPool2d(6), pre_logits=pre_logits, head_features=hidden
        )
        init_weights(self)


_TV = "torchvision AlexNet_Weights.IMAGENET1K_V1 meta"


@register_model(
    ModelCfg(
        family="alexnet",
        paper=PAPER,
        first_conv="features.conv1",
        classifier="classifier",
        min_input_size=64,
        published={
            "params": 61100840,
            "macs": 720e6,
            "top1": 56.6,
            "top5": 80.2,
            "top1_torchvision": 56.522,
            "size_mb": 240,
        },
        published_source={
            "params": _TV,
            "macs": "ShuffleNet v1 paper Table 6 / classic table",
            "top1": "XNOR-Net paper (full precision)",
            "top5": "XNOR-Net paper",
            "top1_torchvision": _TV,
            "size_mb": "SqueezeNet paper Table 2",
        },
    )
)
def alexnet(**kwargs) -> AlexNet:
    """AlexNet, single-tower torchvision layout."""
    return AlexNet(**kwargs)
