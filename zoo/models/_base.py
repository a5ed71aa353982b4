"""The classifier shell every zoo model shares: body, pooled head, timm-style methods."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ZooModel", "init_weights"]


class ZooModel(nn.Module):
    """A body (``features``) followed by global pooling, optional pre-logits, dropout and a
    classifier, with the methods timm users expect (``forward_features``, ``forward_head``,
    ``get_classifier``, ``reset_classifier``).

    Subclasses build ``self.features`` and call :meth:`_build_head`.
    """

    features: nn.Module
    classifier: nn.Module

    def __init__(self, in_chans: int, num_classes: int, min_input_size: int = 32) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.min_input_size = min_input_size
        self.num_features = 0
        self.default_cfg: dict = {}

    def _build_head(
        self,
        num_features: int,
        drop_rate: float = 0.0,
        pool: nn.Module | None = None,
        pre_logits: nn.Module | None = None,
        head_features: int | None = None,
    ) -> None:
        """Global pool -> flatten -> pre-logits -> dropout -> ``nn.Linear`` classifier."""
        self.num_features = num_features
        self.head_features = head_features or num_features
        self.global_pool = pool if pool is not None else nn.AdaptiveAvgPool2d(1)
        self.pre_logits = pre_logits if pre_logits is not None else nn.Identity()
        self.drop_rate = drop_rate
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = nn.Linear(self.head_features, self.num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for anything but an NCHW batch with ``in_chans`` channels."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
            raise ValueError(f"expected a 4-D NCHW batch, got shape {tuple(x.shape)}{hint}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)}); create the model with in_chans={x.shape[1]} "
                "or convert the images"
            )
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype:
            fix = (
                f"x.to({weight.dtype}) or model.to({x.dtype})"
                if x.is_floating_point()
                else "convert the images to float first, e.g. with zoo.transforms(model)"
            )
            raise TypeError(f"input is {x.dtype} but the model's weights are {weight.dtype}; {fix}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is smaller than this model's minimum "
                f"{self.min_input_size}x{self.min_input_size}; resize the images"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The body's feature map (N, C, H', W')."""
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the feature map and classify; ``pre_logits=True`` stops before the classifier."""
        x = self.pre_logits(torch.flatten(self.global_pool(x), 1))
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` outputs."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.classifier = self._new_classifier(num_classes)
        if isinstance(getattr(self, "default_cfg", None), dict):
            self.default_cfg["num_classes"] = num_classes

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.head_features, num_classes)


def init_weights(model: nn.Module) -> None:
    """He init for convs, unit BN, small normal for linears (the torchvision recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
