"""Binary layers of XNOR-Net (Rastegari et al., 2016), simulated in float.

``BinaryConv2d`` and ``BinaryLinear`` subclass ``nn.Conv2d`` / ``nn.Linear``: their parameters
(``weight`` holds the latent float weights, ``bias``) and state_dict keys are exactly those of
the float layer, so float checkpoints load into binary models and back.

Modes:

* ``bwn``: weights ``alpha * sign(W)``, ``alpha = mean |W|`` per output channel; float inputs.
* ``xnor``: the same weights and binary inputs ``sign(x)``. The input is zero-padded *before*
  the sign, so padded positions read ``sign(0) = +1`` (larq's ``pad_values=1``); the optional
  input scale K (off by default) is the mean of ``|x|`` over the channels of the zero-padded
  input, box-filtered with the kernel's size, stride and dilation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.binary.options import RPReLU, make_shortcut
from zoo.binary.quantizers import Quantizer, ScaledSign, SteSign, channel_scale, get_quantizer
from zoo.binary.quantizers import sign as hard_sign

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryMode",
    "FrozenBinaryWeight",
    "MODES",
    "conv_pads",
    "set_binary_weights",
    "input_scale_map",
    "is_binary",
]

BinaryMode = Literal["bwn", "xnor"]
MODES: tuple[str, ...] = ("bwn", "xnor")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown binary mode {mode!r}; use 'bwn' (binary weights) or 'xnor'")


def _default_quantizers(
    mode: str, kernel_quantizer: str | Quantizer | None, input_quantizer: str | Quantizer | None
) -> tuple[Quantizer, Quantizer | None]:
    """Weights always get a quantizer (ScaledSign by default); inputs only in xnor mode."""
    _check_mode(mode)
    kq = get_quantizer(kernel_quantizer) if kernel_quantizer is not None else ScaledSign()
    if mode == "bwn":
        if input_quantizer is not None:
            raise ValueError("mode='bwn' keeps float inputs; use mode='xnor' for input_quantizer")
        return kq, None
    iq = get_quantizer(input_quantizer) if input_quantizer is not None else SteSign()
    return kq, iq


def conv_pads(
    padding: str | tuple[int, int], kernel_size: tuple[int, int], dilation: tuple[int, int]
) -> list[int]:
    """``F.pad`` amounts (left, right, top, bottom) equal to what a conv's ``padding`` means.

    ``"same"`` splits the total ``dilation * (kernel - 1)`` with the extra pixel on the right
    and bottom, as PyTorch's convolution does.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        pads: list[int] = []
        for d, k in zip(reversed(dilation), reversed(kernel_size), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads
    ph, pw = padding
    return [pw, pw, ph, ph]


def input_scale_map(
    x_padded: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    out_channels: int,
) -> Tensor:
    """XNOR-Net's K for an already padded input: mean ``|x|`` over each group's channels,
    box-filtered with the conv's kernel, stride and dilation; shape ``[N, out, H', W']``.

    With one group this is the paper's ``K = A * k`` (A = mean_c |I|, k = 1/(kh kw)).
    """
    n, c, h, w = x_padded.shape
    a = x_padded.abs().reshape(n, groups, c // groups, h, w).mean(2)
    kh, kw = kernel_size
    box = a.new_full((groups, 1, kh, kw), 1.0 / (kh * kw))
    k = F.conv2d(a, box, None, stride, 0, dilation, groups)
    return k.repeat_interleave(out_channels // groups, dim=1)


class FrozenBinaryWeight(nn.Module):
    """Stands in for a binary layer's kernel quantizer: returns weights binarized once.

    The layer calls ``kernel_quantizer(latent_weight)``; this returns the stored
    ``alpha * sign(W)`` (a buffer, so ``.to()`` and channels_last move it) and ignores the
    latent weight. A BN folded into the layer (``zoo.deploy.fuse``) scales this buffer.
    """

    def __init__(self, weight: Tensor, scaled: bool) -> None:
        super().__init__()
        self.register_buffer("value", weight.detach().clone())
        self.scaled = scaled

    def forward(self, _latent: Tensor) -> Tensor:
        return self.value

    def extra_repr(self) -> str:
        return f"shape={tuple(self.value.shape)}"


class _BinaryMixin:
    """What both binary layers share: quantized weights, signs and scales for packing."""

    weight: Tensor
    kernel_quantizer: Quantizer | FrozenBinaryWeight
    input_quantizer: Quantizer | None
    input_scale: bool
    input_bn: nn.Module | None
    threshold: nn.Parameter | None
    output_scale: nn.Parameter | None
    shortcut: nn.Module | None
    rprelu: nn.Module | None
    binary_weights: bool

    def _init_binary(
        self,
        mode: str,
        kernel_quantizer: str | Quantizer | None,
        input_quantizer: str | Quantizer | None,
        input_scale: bool,
    ) -> None:
        """Quantizers, XNOR's K and no options yet: what both layers' constructors set."""
        self.kernel_quantizer, self.input_quantizer = _default_quantizers(
            mode, kernel_quantizer, input_quantizer
        )
        if input_scale and self.input_quantizer is None:
            raise ValueError("input_scale (K) only applies to mode='xnor'")
        self.input_scale = bool(input_scale)
        self.input_bn = None
        self._init_options()

    def _init_options(self) -> None:
        self.threshold = self.output_scale = None
        self.shortcut = self.rprelu = None
        self.binary_weights = True

    @property
    def has_options(self) -> bool:
        """True when any option beyond XNOR-Net's (threshold, scale, shortcut, RPReLU) is on."""
        parts = (self.threshold, self.output_scale, self.shortcut, self.rprelu)
        return any(p is not None for p in parts)

    @torch.no_grad()
    def set_options(
        self,
        threshold: bool = False,
        learned_scale: bool = False,
        rprelu: bool = False,
        shortcut: bool = False,
        downsample: str = "pooled",
    ) -> None:
        """Turn on the layer's building options (new parameters on the weight's device).

        ``threshold``: a learned per-input-channel ``t`` (zeros), sign sees ``x - t``;
        ``learned_scale``: weights become plain signs times a learned per-output-channel scale
        (starting at the analytic alpha); ``rprelu``: RPReLU on the output; ``shortcut``: the
        input added to the output, through ``downsample`` where the shape changes.
        """
        kw = {"device": self.weight.device, "dtype": self.weight.dtype}
        n_in = self.weight.shape[1] * (self.groups if isinstance(self, nn.Conv2d) else 1)
        n_out = self.weight.shape[0]
        if threshold:
            if self.input_quantizer is None:
                raise ValueError("a learned threshold acts before sign(): use mode='xnor'")
            self.threshold = nn.Parameter(torch.zeros(n_in, **kw))
        if learned_scale:
            if self.input_scale:
                raise ValueError("a learned scale replaces alpha and K: drop input_scale")
            self.output_scale = nn.Parameter(channel_scale(self.weight).to(**kw))
            if self.kernel_quantizer.scaled:
                self.kernel_quantizer = SteSign()
        if rprelu:
            self.rprelu = RPReLU(n_out).to(**kw)
        if shortcut:
            self.shortcut = make_shortcut(self, downsample)

    def _channel_shape(self) -> tuple[int, ...]:
        """How a per-channel vector broadcasts: NCHW for convs, the last dim for linears."""
        return (1, -1, 1, 1) if isinstance(self, nn.Conv2d) else (-1,)

    def _shift(self, x: Tensor) -> Tensor:
        """``x - threshold`` per channel (RSign) when the layer learns one."""
        if self.threshold is None:
            return x
        return x - self.threshold.view(self._channel_shape())

    def _epilogue(self, out: Tensor, x: Tensor) -> Tensor:
        """Learned scale, bias, shortcut from the (normalized) input ``x``, RPReLU."""
        shape = self._channel_shape()
        if self.output_scale is not None:
            out = out * self.output_scale.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        if self.rprelu is not None:
            out = self.rprelu(out)
        return out

    def add_input_bn(self) -> None:
        """Give the layer its own BatchNorm before the binary activation (paper: BN -> sign).

        ``binarize`` adds it in xnor mode where no BatchNorm precedes the layer (AlexNet,
        SqueezeNet), so that sign() thresholds normalized values.
        """
        if self.input_quantizer is None:
            raise ValueError("an input BatchNorm only makes sense before binary inputs (xnor)")
        if isinstance(self, nn.Conv2d):
            bn = nn.BatchNorm2d(self.in_channels)
        else:
            bn = nn.BatchNorm1d(self.weight.shape[1])
        self.input_bn = bn.to(device=self.weight.device, dtype=self.weight.dtype)

    @property
    def mode(self) -> str:
        """``"xnor"`` when inputs are binarized too, else ``"bwn"``."""
        return "xnor" if self.input_quantizer is not None else "bwn"

    def binary_weight(self) -> Tensor:
        """The weights the layer computes with: ``alpha * sign(W)`` (differentiable), or the
        latent weights themselves while ``binary_weights`` is off (:func:`set_binary_weights`)."""
        if not self.binary_weights:
            return self.weight
        return self.kernel_quantizer(self.weight)

    @property
    def frozen(self) -> bool:
        """True after :meth:`freeze_weight`: the weights are no longer re-binarized per call."""
        return isinstance(self.kernel_quantizer, FrozenBinaryWeight)

    @torch.no_grad()
    def freeze_weight(self) -> None:
        """Binarize the latent weights once and compute with that stored tensor from now on.

        For inference: saves the sign and mean per call, and lets a following BatchNorm be
        folded into the stored weights. Inputs are still binarized (xnor). No-op when frozen.
        """
        if not self.binary_weights:
            raise ValueError(
                "the layer computes with float weights (binary_weights off, step 1 of two-step "
                "training); turn them back on with set_binary_weights(model, True) first"
            )
        if not self.frozen:
            weight = self.binary_weight()
            self.kernel_quantizer = FrozenBinaryWeight(weight, self.kernel_quantizer.scaled)

    @torch.no_grad()
    def weight_signs(self) -> Tensor:
        """+1/-1 signs of the latent weights (``sign(0) = +1``), same shape as ``weight``."""
        return hard_sign(self.weight)

    @torch.no_grad()
    def weight_scale(self) -> Tensor | None:
        """Per-output-channel alpha, or ``None`` when the kernel quantizer has no scale."""
        return channel_scale(self.weight) if self.kernel_quantizer.scaled else None

    def _binary_repr(self) -> str:
        s = f", mode={self.mode}, kernel_quantizer={self.kernel_quantizer!r}"
        if not self.binary_weights:
            s += ", binary_weights=False"
        if self.input_quantizer is not None:
            s += f", input_quantizer={self.input_quantizer!r}, input_scale={self.input_scale}"
        if self.threshold is not None:
            s += ", threshold=learned"
        if self.output_scale is not None:
            s += ", scale=learned"
        return s


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """``nn.Conv2d`` with binary weights (``bwn``) or binary weights and inputs (``xnor``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        mode: BinaryMode = "bwn",
        input_scale: bool = False,
        kernel_quantizer: str | Quantizer | None = None,
        input_quantizer: str | Quantizer | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )  # fmt: skip
        self._init_binary(mode, kernel_quantizer, input_quantizer, input_scale)

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, mode: BinaryMode = "bwn", options: dict | None = None, **kwargs
    ) -> BinaryConv2d:
        """A binary twin of ``conv`` that shares its weight and bias Parameters;
        ``options`` go to :meth:`set_options`."""
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
            dtype=conv.weight.dtype, mode=mode, **kwargs,
        )  # fmt: skip
        new.weight = conv.weight
        new.bias = conv.bias
        new.set_options(**(options or {}))
        new.train(conv.training)
        return new

    def pads(self) -> list[int]:
        """F.pad amounts (left, right, top, bottom) equal to what the conv's padding means."""
        return conv_pads(self.padding, self.kernel_size, self.dilation)

    def pad_input(self, x: Tensor) -> Tensor:
        """``x`` padded as the conv would pad it, so that sign() sees the padded zeros."""
        pads = self.pads()
        if not any(pads):
            return x
        pad_mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, pads, mode=pad_mode)

    def input_scale_map(self, x_padded: Tensor) -> Tensor:
        """K for this conv (see :func:`input_scale_map`); ``[N, out, H', W']``."""
        return input_scale_map(
            x_padded, self.kernel_size, self.stride, self.dilation, self.groups,
            self.out_channels,
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        w = self.binary_weight()
        if self.input_quantizer is None:
            if not self.has_options:
                return self._conv_forward(x, w, self.bias)
            return self._epilogue(self._conv_forward(x, w, None), x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"BinaryConv2d expects NCHW input with {self.in_channels} channels, "
                f"got shape {tuple(x.shape)}"
            )
        if self.input_bn is not None:
            x = self.input_bn(x)
        xp = self.pad_input(self._shift(x))
        out = F.conv2d(
            self.input_quantizer(xp), w, None, self.stride, 0, self.dilation, self.groups
        )
        if self.input_scale:
            out = out * self.input_scale_map(xp)
        return self._epilogue(out, x)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._binary_repr()


class BinaryLinear(_BinaryMixin, nn.Linear):
    """``nn.Linear`` with binary weights (``bwn``) or binary weights and inputs (``xnor``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        mode: BinaryMode = "bwn",
        input_scale: bool = False,
        kernel_quantizer: str | Quantizer | None = None,
        input_quantizer: str | Quantizer | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_binary(mode, kernel_quantizer, input_quantizer, input_scale)

    @classmethod
    def from_float(
        cls, fc: nn.Linear, mode: BinaryMode = "bwn", options: dict | None = None, **kwargs
    ) -> BinaryLinear:
        """A binary twin of ``fc`` that shares its weight and bias Parameters;
        ``options`` go to :meth:`set_options`."""
        new = cls(
            fc.in_features, fc.out_features, fc.bias is not None, device="meta",
            dtype=fc.weight.dtype, mode=mode, **kwargs,
        )  # fmt: skip
        new.weight = fc.weight
        new.bias = fc.bias
        new.set_options(**(options or {}))
        new.train(fc.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        w = self.binary_weight()
        if self.input_quantizer is None:
            if not self.has_options:
                return F.linear(x, w, self.bias)
            return self._epilogue(F.linear(x, w), x)
        if self.input_bn is not None:
            x = self.input_bn(x)
        xs = self._shift(x)
        out = F.linear(self.input_quantizer(xs), w)
        if self.input_scale:
            out = out * xs.abs().mean(-1, keepdim=True)
        return self._epilogue(out, x)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._binary_repr()


def is_binary(module: nn.Module) -> bool:
    """True for the binary layers of this package."""
    return isinstance(module, (BinaryConv2d, BinaryLinear))


def set_binary_weights(model: nn.Module, on: bool) -> int:
    """Binarize the weights of every binary layer of ``model`` (``on``, the default state) or
    let them compute with their latent float weights (``off``); returns how many layers.

    Off gives step 1 of two-step training (Real-to-Binary, ReActNet): binary activations,
    real weights. Inputs stay binarized either way; the latent weights are the same tensors,
    so step 2 starts from what step 1 learned. A frozen layer cannot be switched off.
    """
    layers = [m for m in model.modules() if is_binary(m)]
    for m in layers:
        if not on and m.frozen:
            raise ValueError("a frozen (fused) binary layer has no latent weights to train")
        m.binary_weights = bool(on)
    return len(layers)
