"""``features_only``: a zoo model cut to its body, returning a list of stage outputs.

Works on any :class:`~zoo.models.ZooModel`, float or binarized by ``zoo.binary.binarize``
(which swaps layers in place and keeps their names), as timm's ``FeatureListNet``: the head
is dropped, stages after the deepest one asked for are dropped, and ``feature_info`` says
the channels, reduction and module name of each returned map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.models._base import check_image_batch, feature_child, run_body, take_indices

__all__ = ["FeatureInfo", "FeatureListNet", "build_features"]

Index = int | Sequence[int] | None


class FeatureInfo:
    """A model's feature levels (dicts of ``num_chs``, ``reduction``, ``module``) and the
    ``out_indices`` taken from them, with timm's accessors: ``idx=None`` means the taken
    levels, an int or a list picks levels of the whole list."""

    def __init__(self, feature_info: Sequence[dict[str, Any]], out_indices: Sequence[int]):
        self.info = [dict(f) for f in feature_info]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: Index = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: Index = None) -> Any:
        """The level dicts (restricted to ``keys`` when given)."""

        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, int):
            return pick(idx)
        return [pick(i) for i in idx]

    def channels(self, idx: Index = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: Index = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: Index = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, info={self.info})"


class FeatureListNet(nn.Module):
    """The body of ``model`` up to its deepest requested level; ``forward`` returns the
    feature maps at ``out_indices`` (a list, shallow to deep as asked).

    The stages are the model's own modules (shared, not copied), under the same names, so
    the model's state_dict keys (minus the head) load into this module.
    """

    def __init__(self, model: nn.Module, out_indices: Index = None) -> None:
        super().__init__()
        levels = list(getattr(model, "feature_info", None) or [])
        if not levels or not isinstance(getattr(model, "features", None), nn.Module):
            raise TypeError(
                f"{type(model).__name__} has no feature_info/features body; "
                "features_only needs a zoo model"
            )
        take, _ = take_indices(len(levels), out_indices)
        names = [feature_child(f["module"]) for f in levels]
        stages = list(model.features.named_children())
        order = [n for n, _ in stages]
        missing = [n for n in names if n not in order]
        if missing:
            raise ValueError(f"feature modules {missing} are not stages of the model's body")
        keep_until = max(order.index(names[i]) for i in take)
        self.features = nn.Sequential(OrderedDict(stages[: keep_until + 1]))
        self.feature_info = FeatureInfo(levels, take)
        self.return_layers = [names[i] for i in take]
        self.in_chans = getattr(model, "in_chans", None)
        self.min_input_size = getattr(model, "min_input_size", 1)
        self.grad_checkpointing = getattr(model, "grad_checkpointing", False)
        cfg = getattr(model, "default_cfg", None)
        self.default_cfg = dict(cfg) if isinstance(cfg, dict) else {}
        self.pretrained_cfg = self.default_cfg

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in backward instead of storing them (training)."""
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.in_chans is not None:
            check_image_batch(x, self.in_chans, self.min_input_size, self)
        checkpointed = self.grad_checkpointing and self.training
        _, found = run_body(self.features, x, self.return_layers, checkpointed=checkpointed)
        return [found[name] for name in self.return_layers]


def build_features(model: nn.Module, out_indices: Index = None) -> FeatureListNet:
    """``features_only=True``: ``model`` (float or binary) as a multi-scale feature extractor.

    ``out_indices`` follows timm: None for every level of ``model.feature_info``, an int
    ``n`` for the last ``n``, or a sequence of levels (negative counts from the end).
    """
    return FeatureListNet(model, out_indices)
