"""Helpers for the deployment tests: random BN statistics and sign-safe inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.deploy.export import sign_margin


@torch.no_grad()
def _randomize_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters.

    Freshly built models have mean 0, var 1, weight 1, bias 0, where a wrong fold (e.g. one
    that ignores the mean or the bias) still gives the right answer.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
            if m.weight is not None:
                m.weight.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return model


def _sign_safe_input(model: nn.Module, shape: tuple, tries: int = 10, margin: float = 1e-5):
    """A random input whose values entering every sign() are at least ``margin`` from 0.

    Two correct float implementations differ by rounding (~1e-7); XNOR outputs jump where a
    sign input is closer to zero than that, so exact comparisons need such an input.
    """
    g = torch.Generator().manual_seed(0)
    best, best_margin = None, -1.0
    for _ in range(tries):
        x = torch.randn(shape, generator=g)
        m = sign_margin(model, x)
        if m > best_margin:
            best, best_margin = x, m
    assert best_margin >= margin, (
        f"no input with sign margin >= {margin:g} in {tries} tries (best {best_margin:.1e}); "
        "use a smaller input size"
    )
    return best


@pytest.fixture
def randomize_norms():
    """The :func:`_randomize_norms` helper."""
    return _randomize_norms


@pytest.fixture
def sign_safe_input():
    """The :func:`_sign_safe_input` helper."""
    return _sign_safe_input


@pytest.fixture(autouse=True)
def small_threads():
    """Single-threaded for the duration of each test (restores the previous count): with two
    threads on a shared 2-core machine, every op waits for a descheduled partner thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
