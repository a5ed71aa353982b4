"""Checks a model must pass before its predictions are trusted.

A run that diverged can leave NaN/inf weights in a checkpoint; such a model predicts
nonsense (``nan%``) without any error, so ``predict`` and ``validate`` refuse it here.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.pretrained import WeightsError

__all__ = ["NonFiniteWeightsError", "check_finite_weights"]


class NonFiniteWeightsError(WeightsError, ValueError):
    """A model's weights or buffers hold NaN or infinite values."""


def check_finite_weights(model: nn.Module, source: str) -> None:
    """Raise ``NonFiniteWeightsError`` naming ``source`` if any floating-point parameter or
    buffer of ``model`` is NaN or infinite."""
    bad, total = [], 0
    for name, tensor in model.state_dict().items():
        if not torch.is_floating_point(tensor):
            continue
        count = int((~torch.isfinite(tensor)).sum())
        if count:
            bad.append(name)
            total += count
    if bad:
        listed = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteWeightsError(
            f"{source}: {total} weight value(s) are NaN or infinite (in {listed}); the run "
            "that wrote it diverged. Use an earlier checkpoint or retrain with a lower --lr"
        )
