"""Building options of binary layers beyond XNOR-Net: what each one adds and how it is spelled.

* ``shortcut="bireal"`` (Bi-Real Net, Liu et al. 2018): a real-valued shortcut around each
  binary conv; ``downsample`` picks the path where the conv changes shape: ``"pooled"``
  (average pool + 1x1 float conv + BN, Bi-Real / ReActNet), ``"real"`` (strided 1x1 float
  conv + BN) or ``"none"`` (no shortcut there).
* ``threshold="learned"`` (ReActNet's RSign, Liu et al. 2020): ``sign(x - t_c)``, a learned
  threshold per input channel.
* ``activation="rprelu"`` (ReActNet's RPReLU): ``PReLU(y - gamma_c) + zeta_c`` per output
  channel after the binary conv (and its shortcut).
* ``scale="learned"`` (XNOR-Net++, Bulat & Tzimiropoulos 2019): one output scale per channel
  learned by backprop, replacing the analytic ``alpha = mean |W|`` (and K).
* ``ste="approx_sign"`` (Bi-Real Net's ApproxSign gradient) instead of ``"identity_clip"``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OPTION_CHOICES",
    "OPTION_DEFAULTS",
    "RPReLU",
    "check_options",
    "make_shortcut",
    "same_geometry",
]

# The choices of each option; the first is the default (XNOR-Net as in the paper).
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "shortcut": ("none", "bireal"),
    "downsample": ("pooled", "real", "none"),
    "threshold": ("none", "learned"),
    "activation": ("none", "rprelu"),
    "scale": ("analytic", "learned"),
    "ste": ("identity_clip", "approx_sign"),
}
OPTION_DEFAULTS: dict[str, str] = {k: v[0] for k, v in OPTION_CHOICES.items()}

# Options that act on the binary inputs, so only make sense in xnor mode.
_XNOR_ONLY = {"threshold": "none", "ste": "identity_clip"}


def check_options(mode: str, options: dict[str, str], input_scale: bool = False) -> None:
    """Raise ``ValueError`` for an unknown option, choice, or one that ``mode`` cannot take."""
    for key, value in options.items():
        if key not in OPTION_CHOICES:
            raise ValueError(f"unknown binary option {key!r}; use {sorted(OPTION_CHOICES)}")
        if value not in OPTION_CHOICES[key]:
            raise ValueError(f"{key}={value!r}: use one of {list(OPTION_CHOICES[key])}")
    for key, default in _XNOR_ONLY.items():
        if mode != "xnor" and options.get(key, default) != default:
            raise ValueError(f"{key}={options[key]!r} acts on binary inputs: use mode='xnor'")
    if input_scale and options.get("scale") == "learned":
        raise ValueError("scale='learned' replaces alpha and K (XNOR-Net++): drop input_scale")


class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``PReLU(x - gamma_c) + zeta_c``, all three per channel (dim 1).

    Starts as a plain PReLU with slope 0.25 and no shifts, as in the paper's code.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), 0.25))
        self.zeta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x - self.gamma.view(shape)
        return F.prelu(y, self.slope) + self.zeta.view(shape)

    def extra_repr(self) -> str:
        return f"{self.gamma.numel()}"


def same_geometry(conv: nn.Conv2d) -> bool:
    """True when ``conv``'s output has ``ceil(H / stride)`` rows and columns ("same" padding)."""
    if conv.padding == "same":
        return True
    if conv.padding == "valid":
        return all(k == 1 for k in conv.kernel_size)
    return all(
        2 * p == d * (k - 1)
        for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size, strict=True)
    )


def make_shortcut(conv: nn.Conv2d | nn.Linear, downsample: str) -> nn.Module | None:
    """The real-valued path around a binary layer, or ``None`` where there is none.

    Identity when the layer keeps the shape; else a pooled or strided 1x1 float conv + BN
    (``downsample``), grouped as the layer is. A linear layer gets identity shortcuts only.
    """
    if isinstance(conv, nn.Linear):
        return nn.Identity() if conv.in_features == conv.out_features else None
    if not same_geometry(conv):
        return None
    stride = conv.stride
    if conv.in_channels == conv.out_channels and stride == (1, 1):
        return nn.Identity()
    if downsample == "none":
        return None
    kw = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    groups = conv.groups if conv.groups < conv.in_channels else 1
    conv_stride = stride if downsample == "real" else 1
    proj = nn.Conv2d(
        conv.in_channels, conv.out_channels, 1, conv_stride, groups=groups, bias=False, **kw
    )
    parts = [("conv", proj)]
    if downsample == "pooled" and stride != (1, 1):
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        parts.insert(0, ("pool", pool))
    nn.init.kaiming_normal_(proj.weight, mode="fan_out", nonlinearity="relu")
    parts.append(("bn", nn.BatchNorm2d(conv.out_channels, **kw)))
    return nn.Sequential(OrderedDict(parts))
