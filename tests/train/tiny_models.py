"""A custom model builder for the ``package.module:function`` hook of ``create_model``."""

from torch import nn


def tiny_net(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """Conv-BN-ReLU, global pool, linear: the smallest net with the layers zoo models use."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def linear_net(num_classes: int = 10, in_chans: int = 1, size: int = 32) -> nn.Module:
    """Multinomial logistic regression on the pixels: learns Fashion-MNIST in a few steps."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * size * size, num_classes))
