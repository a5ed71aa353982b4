"""SqueezeNet 1.0 / 1.1 (Iandola et al., 2016) and 1.0 with simple or complex bypass.

The classifier is a 1x1 conv over the last feature map followed by ReLU and global average
pooling, as in the paper; ``pre_logits`` returns the pooled 512-d features instead.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.blocks import Fire, LayerSpec, create_act
from zoo.models._base import ZooModel, family_cfg, init_weights, make_pool, reject_norm_layer
from zoo.registry import ModelCfg, register_model

__all__ = ["SqueezeNet"]

PAPER = (
    "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size "
    "(arXiv:1602.07360)"
)

# (squeeze, expand1x1, expand3x3) per fire module, "M" = 3x3/2 max-pool.
FIRE_PLANS: dict[str, list] = {
    "1_0": [
        (16, 64, 64),
        (16, 64, 64),
        (32, 128, 128),
        "M",
        (32, 128, 128),
        (48, 192, 192),
        (48, 192, 192),
        (64, 256, 256),
        "M",
        (64, 256, 256),
    ],
    "1_1": [
        "M",
        (16, 64, 64),
        (16, 64, 64),
        "M",
        (32, 128, 128),
        (32, 128, 128),
        "M",
        (48, 192, 192),
        (48, 192, 192),
        (64, 256, 256),
        (64, 256, 256),
    ],
}
STEMS = {"1_0": (96, 7), "1_1": (64, 3)}


def _max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2, ceil_mode=True)


class SqueezeNet(ZooModel):
    """SqueezeNet; ``bypass`` is None, ``"simple"`` (fire 3, 5, 7, 9) or ``"complex"`` (all).

    ``global_pool`` pools the class map the 1x1-conv classifier makes; ``""`` keeps it.
    """

    def __init__(
        self,
        version: str = "1_0",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        bypass: str | None = None,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(in_chans, num_classes, min_input_size=64, global_pool=global_pool)
        reject_norm_layer(norm_layer, "SqueezeNet")
        if version not in FIRE_PLANS:
            raise ValueError(f"version must be one of {list(FIRE_PLANS)}, got {version!r}")
        self.features = nn.Sequential(OrderedDict(self._body(version, in_chans, bypass, act_layer)))
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = self._new_classifier(num_classes)
        self.classifier_act = create_act(act_layer)
        self.global_pool = make_pool(global_pool)
        init_weights(self)
        if num_classes:  # the paper's init for the last conv
            nn.init.normal_(self.classifier.weight, 0, 0.01)

    def _body(
        self, version: str, in_chans: int, bypass: str | None, act_layer: LayerSpec
    ) -> dict[str, nn.Module]:
        """Stem, pools and fire modules by name; records ``feature_info`` on the way."""
        stem_chs, stem_k = STEMS[version]
        layers: dict[str, nn.Module] = {
            "stem": nn.Conv2d(in_chans, stem_chs, stem_k, stride=2),
            "stem_act": create_act(act_layer),
        }
        reduction = 2
        self._add_feature("features.stem_act", stem_chs, reduction)
        plan = (["M"] if version == "1_0" else []) + FIRE_PLANS[version]
        in_chs, fire_idx, pool_idx = stem_chs, 2, 1
        for item in plan:
            if item == "M":
                layers[f"pool{pool_idx}"] = _max_pool()
                pool_idx, reduction = pool_idx + 1, reduction * 2
                continue
            out_chs = item[1] + item[2]
            kind = _bypass_kind(bypass, fire_idx, in_chs, out_chs)
            layers[f"fire{fire_idx}"] = Fire(in_chs, *item, bypass=kind, act_layer=act_layer)
            self._add_feature(f"features.fire{fire_idx}", out_chs, reduction)
            in_chs, fire_idx = out_chs, fire_idx + 1
        self.num_features = in_chs
        return layers

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or self.num_classes == 0:
            return torch.flatten(self.global_pool(x), 1)
        x = self.classifier_act(self.classifier(self.head_drop(x)))
        return torch.flatten(self.global_pool(x), 1)

    def _check_head(self, num_classes: int, global_pool: str) -> None:
        """The 1x1-conv classifier works on unpooled maps too: any pooling is fine."""

    def _new_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        classifier = nn.Conv2d(self.num_features, num_classes, 1)
        nn.init.normal_(classifier.weight, 0, 0.01)
        nn.init.zeros_(classifier.bias)
        return classifier


def _bypass_kind(bypass: str | None, fire_idx: int, in_chs: int, out_chs: int) -> str | None:
    """The paper's placement: simple bypass where widths match (fire 3, 5, 7, 9)."""
    if bypass is None:
        return None
    if bypass == "simple":
        return "simple" if in_chs == out_chs else None
    if bypass == "complex":
        return "complex"
    raise ValueError(f"bypass must be None, 'simple' or 'complex', got {bypass!r}")


def _cfg(name: str) -> ModelCfg:
    return family_cfg(name, "squeezenet", PAPER, first_conv="features.stem", min_input_size=64)


@register_model(_cfg("squeezenet1_0"))
def squeezenet1_0(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0: 7x7/96 stem, eight fire modules."""
    return SqueezeNet("1_0", **kwargs)


@register_model(_cfg("squeezenet1_1"))
def squeezenet1_1(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.1: 3x3/64 stem and earlier pooling, 2.4x less compute than 1.0."""
    return SqueezeNet("1_1", **kwargs)


@register_model(_cfg("squeezenet1_0_bypass_simple"))
def squeezenet1_0_bypass_simple(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0 with identity shortcuts around fire 3, 5, 7 and 9."""
    return SqueezeNet("1_0", bypass="simple", **kwargs)


@register_model(_cfg("squeezenet1_0_bypass_complex"))
def squeezenet1_0_bypass_complex(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0 with identity shortcuts where widths match and 1x1 conv ones elsewhere."""
    return SqueezeNet("1_0", bypass="complex", **kwargs)
