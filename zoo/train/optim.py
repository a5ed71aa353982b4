"""Optimizer and learning-rate schedule for training: param groups, SGD/AdamW, cosine or
linear decay after a linear warm-up.

With AdamW the latent float weights of binary layers get no weight decay (as in ReActNet and
Real-to-Binary: decay would pull them to 0, where their sign flips at random, and it does not
act on the binary weights' scale); biases and norm parameters are never decayed.

Kept apart from the epoch loop so scripts (``scripts/compress_experiments.py``) and the
train command build optimizers the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zoo.binary.layers import is_binary

__all__ = [
    "param_groups",
    "binary_latent_weights",
    "create_optimizer",
    "CosineWarmup",
    "LinearWarmup",
    "SCHEDULES",
    "create_scheduler",
    "default_lr",
    "default_weight_decay",
]


def binary_latent_weights(model: nn.Module) -> list[nn.Parameter]:
    """The latent float weights of the model's binary layers (each Parameter once)."""
    found: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if is_binary(m) and isinstance(m.weight, nn.Parameter):
            found.setdefault(id(m.weight), m.weight)
    return list(found.values())


def param_groups(
    model: nn.Module, weight_decay: float, binary_decay: bool = True
) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; biases and norm scales are not decayed, nor
    the binary layers' latent weights when ``binary_decay`` is False."""
    exempt = set() if binary_decay else {id(p) for p in binary_latent_weights(model)}
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 or id(p) in exempt else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def create_optimizer(
    model: nn.Module,
    opt: str = "sgd",
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over ``param_groups``; AdamW never decays binary latent
    weights (SGD keeps decaying them, as the recipes published with it did)."""
    opt = opt.lower()
    groups = param_groups(model, weight_decay, binary_decay=opt != "adamw")
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {opt!r}; use 'sgd' or 'adamw'")


def default_lr(opt: str, finetune: bool) -> float:
    """Peak learning rate when ``--lr`` is not given: adamw 1e-3, sgd 0.1 (0.01 fine-tuning)."""
    return 1e-3 if opt == "adamw" else (0.01 if finetune else 0.1)


def default_weight_decay(opt: str) -> float:
    """Weight decay when ``--weight-decay`` is not given: adamw 0.05, sgd 1e-4."""
    return 0.05 if opt == "adamw" else 1e-4


class CosineWarmup:
    """LR factor per step: linear warm-up from ``warmup_factor`` to 1, cosine to ``min_factor``.

    A plain object (not a lambda) so ``LambdaLR.state_dict`` stores its settings as numbers.
    """

    def __init__(
        self,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_factor: float = 0.01,
        min_factor: float = 0.0,
    ) -> None:
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps))
        self.warmup_factor = float(warmup_factor)
        self.min_factor = float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


class LinearWarmup(CosineWarmup):
    """LR factor per step: the same warm-up, then a straight line from 1 to ``min_factor``
    at ``total_steps`` (ReActNet's and Real-to-Binary's decay)."""

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return super().__call__(step)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 1.0 - (1.0 - self.min_factor) * progress


#: ``--lr-schedule`` choices: the LR factor of each.
SCHEDULES: dict[str, type[CosineWarmup]] = {"cosine": CosineWarmup, "linear": LinearWarmup}


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_factor: float = 0.01,
    min_factor: float = 0.0,
    kind: str = "cosine",
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``kind`` (cosine or linear) decay after warm-up (call ``.step()`` after every
    optimizer step)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; use one of {sorted(SCHEDULES)}")
    fn = SCHEDULES[kind](total_steps, warmup_steps, warmup_factor, min_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
