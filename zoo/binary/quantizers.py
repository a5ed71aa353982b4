"""Quantizers: small named objects that turn float tensors into binary ones.

Like larq's ``ste_sign`` / ``magnitude_aware_sign``, a quantizer is written once and passed to
any binary layer (``BinaryConv2d(kernel_quantizer=..., input_quantizer=...)``). All of them
use the same sign convention as XNOR-Net needs: ``sign(x) = +1 for x >= 0`` (also for
``-0.0``), ``-1`` otherwise, so a binary value is never 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "Quantizer",
    "SteSign",
    "ApproxSign",
    "ScaledSign",
    "sign",
    "ste_sign",
    "scaled_sign",
    "channel_scale",
    "get_quantizer",
    "QUANTIZERS",
]


def sign(x: Tensor) -> Tensor:
    """Binary sign with no zero: +1 where ``x >= 0`` (including -0.0), -1 elsewhere."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


def channel_scale(w: Tensor) -> Tensor:
    """Per-output-channel ``alpha = mean |w|`` over all dims but the first, shape ``[out]``.

    The mean is taken in float64 and rounded once to ``w.dtype``: n copies of a float32
    ``a`` then average back to exactly ``a``, which makes 1-bit checkpoints bit-exact.
    """
    if w.dim() < 2:
        raise ValueError(
            f"channel_scale needs a weight with an output dim, got shape {tuple(w.shape)}"
        )
    return w.detach().abs().double().flatten(1).mean(1).to(w.dtype)


class _SignSTE(torch.autograd.Function):
    """sign() forward; straight-through gradient, zeroed where ``|x| > clip``."""

    @staticmethod
    def forward(ctx, x: Tensor, clip: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.clip = clip
        return sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.clip).to(grad.dtype), None


class _ApproxSign(torch.autograd.Function):
    """sign() forward; Bi-Real Net's piecewise-polynomial gradient ``2 - 2|x|`` in [-1, 1]."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp_min(0.0)


class _ScaledSign(torch.autograd.Function):
    """``alpha * sign(w)`` per output channel with the XNOR-Net paper's gradient.

    Backward (Rastegari et al. 2016, Sec. 3.1): dC/dW_i = dC/dW~_i * (1/n + alpha * 1{|W_i|<=clip}),
    with n the number of weights per output channel.
    """

    @staticmethod
    def forward(ctx, w: Tensor, clip: float) -> Tensor:  # type: ignore[override]
        alpha = channel_scale(w).view(-1, *([1] * (w.dim() - 1)))
        ctx.save_for_backward(w, alpha)
        ctx.clip = clip
        return alpha * sign(w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        w, alpha = ctx.saved_tensors
        inv_n = 1.0 / w[0].numel()
        return grad * torch.where(w.abs() <= ctx.clip, alpha + inv_n, inv_n), None


def ste_sign(x: Tensor, clip: float = 1.0) -> Tensor:
    """sign(x) with a straight-through gradient that is zero where ``|x| > clip``."""
    return _SignSTE.apply(x, clip)


def scaled_sign(w: Tensor, clip: float = 1.0) -> Tensor:
    """``alpha * sign(w)`` with ``alpha = mean |w|`` per output channel (BWN weights)."""
    return _ScaledSign.apply(w, clip)


class Quantizer:
    """Base class: a callable with a registry name; subclasses say if they carry a scale."""

    name: str = ""
    scaled: bool = False  # True when the output is alpha * (+-1) rather than +-1

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


class SteSign(Quantizer):
    """Binary activations of XNOR-Net / BNN: sign with the clipped straight-through estimator."""

    name = "ste_sign"

    def __init__(self, clip: float = 1.0) -> None:
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}; the paper uses clip=1.0")
        self.clip = float(clip)

    def __call__(self, x: Tensor) -> Tensor:
        return ste_sign(x, self.clip)

    def __repr__(self) -> str:
        return f"SteSign(clip={self.clip:g})"


class ApproxSign(Quantizer):
    """sign with the gradient of Bi-Real Net's ApproxSign (2 - 2|x| in [-1, 1], else 0)."""

    name = "approx_sign"

    def __call__(self, x: Tensor) -> Tensor:
        return _ApproxSign.apply(x)


class ScaledSign(Quantizer):
    """BWN / XNOR weights: ``alpha * sign(W)``, alpha = mean |W| per output channel.

    larq calls the same idea ``magnitude_aware_sign``; the gradient follows the XNOR-Net paper.
    """

    name = "scaled_sign"
    scaled = True

    def __init__(self, clip: float = 1.0) -> None:
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}; the paper uses clip=1.0")
        self.clip = float(clip)

    def __call__(self, w: Tensor) -> Tensor:
        return scaled_sign(w, self.clip)

    def __repr__(self) -> str:
        return f"ScaledSign(clip={self.clip:g})"


QUANTIZERS: dict[str, type[Quantizer]] = {q.name: q for q in (SteSign, ApproxSign, ScaledSign)} | {
    "magnitude_aware_sign": ScaledSign
}


def get_quantizer(spec: str | Quantizer | None) -> Quantizer | None:
    """Resolve a quantizer from a name (``"ste_sign"``), an instance, or ``None``."""
    if spec is None or isinstance(spec, Quantizer):
        return spec
    if isinstance(spec, str) and spec in QUANTIZERS:
        return QUANTIZERS[spec]()
    raise ValueError(
        f"unknown quantizer {spec!r}; use one of {sorted(QUANTIZERS)} or a Quantizer instance"
    )
