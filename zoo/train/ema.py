"""Exponential moving average (EMA) of a model's weights, as ``--model-ema`` trains it.

After every optimizer step ``ema = d * ema + (1 - d) * w`` for each floating-point entry of
the state dict, parameters and buffers alike (BatchNorm running mean/var are averaged, as
timm's ``ModelEmaV2`` does); integer buffers (``num_batches_tracked``) are copied. The EMA
copy is evaluated each epoch beside the raw model, and it is what checkpoints hold as
``state_dict`` (so ``zoo publish``, ``zoo validate`` and ``--teacher`` use it); the raw
training weights go to ``state_dict_raw`` for ``--resume``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from zoo.train.checkpoint import load_model_state, unwrap_model

__all__ = ["DEFAULT_DECAY", "ModelEma"]

DEFAULT_DECAY = 0.9998


class ModelEma:
    """A frozen copy of ``model`` whose weights follow the EMA of the model's after each step."""

    def __init__(self, model: nn.Module, decay: float = DEFAULT_DECAY) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"--model-ema-decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights (call after ``optimizer.step``)."""
        src = unwrap_model(model).state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = src[name].detach()
            if ema_v.is_floating_point():
                ema_v.mul_(self.decay).add_(v.to(ema_v.dtype), alpha=1.0 - self.decay)
            else:
                ema_v.copy_(v)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the average from ``model``'s current weights (the start of a new step)."""
        self.module.load_state_dict(unwrap_model(model).state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (what checkpoints save as ``state_dict``)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Load averaged weights saved by a checkpoint, every key and shape checked."""
        load_model_state(self.module, state, source=source)
