"""Real 1-bit inference: swap a model's XNOR layers for ones that store packed sign bits and
compute with the XNOR-popcount kernel (``zoo.binary.kernels``), scales applied after.

    fast = zoo.deploy.fuse_and_pack(zoo.create("xnor_resnet18").eval())

The packed layers reproduce the simulated float layers exactly up to float rounding of the
scaling: the binary dot products are integers in both. Float layers stay as they are.

Building options (``zoo.binary.options``) run around the kernel in float, as the simulated
layer computes them: a learned threshold is subtracted from the input before the kernel signs
and packs it (padded positions still read +1), a learned scale multiplies alpha, and the
shortcut and RPReLU follow the kernel's output.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.binary import kernels
from zoo.binary.kernels.prepared import PreparedXnorConv2d
from zoo.binary.layers import BinaryConv2d, BinaryLinear, input_scale_map, is_binary
from zoo.binary.quantizers import ApproxSign, SteSign

__all__ = [
    "PackedBinaryConv2d",
    "PackedBinaryLinear",
    "pack",
    "pack_layers",
    "packed_weight_bytes",
]

# Input quantizers whose forward is the plain sign (they differ only in their gradients).
_PLAIN_SIGN = (SteSign, ApproxSign)


def _check_packable(layer: BinaryConv2d | BinaryLinear) -> None:
    if not layer.binary_weights:
        raise ValueError(
            "the layer computes with its float latent weights (step 1 of a two-step binary "
            "recipe); switch them back on with set_binary_weights(model, True) before packing"
        )
    if layer.mode != "xnor" or not isinstance(layer.input_quantizer, _PLAIN_SIGN):
        raise ValueError(
            f"only xnor layers with a sign input quantizer can run packed, got mode={layer.mode} "
            f"input_quantizer={layer.input_quantizer!r}; BWN layers have float inputs"
        )


def _signs_and_alpha(layer: BinaryConv2d | BinaryLinear) -> tuple[Tensor, Tensor]:
    """The weights the layer computes with, as signs and one magnitude per output channel.

    Read from ``binary_weight()`` (``alpha * sign(W)``), so a layer whose binarized weights
    ``zoo.deploy.fuse`` froze and scaled by a folded BatchNorm packs too: a negative BN scale
    flips that channel's signs, its magnitude becomes the channel's alpha.
    """
    w = layer.binary_weight().detach()
    return w, w.abs().flatten(1).amax(1).float()


def _output_scale(layer: BinaryConv2d | BinaryLinear, alpha: Tensor) -> Tensor:
    """The per-channel scale the kernel applies: alpha, times the learned scale if any."""
    if layer.output_scale is None:
        return alpha
    return (alpha.double() * layer.output_scale.detach().double()).to(layer.weight.dtype)


class _PackedOptions(nn.Module):
    """What packed layers share: the float prologue (threshold) and epilogue (shortcut, RPReLU)
    copied from the simulated layer."""

    def _copy_options(self, layer: BinaryConv2d | BinaryLinear) -> None:
        t = layer.threshold
        self.register_buffer("threshold", None if t is None else t.detach().clone())
        self.shortcut = copy.deepcopy(layer.shortcut)
        self.rprelu = copy.deepcopy(layer.rprelu)
        self.input_bn = copy.deepcopy(layer.input_bn)

    @property
    def packed(self) -> kernels.PackedWeight:
        """The packed weight, built once per ``words`` tensor (``.to()`` replaces the buffer,
        which rebuilds it); saves re-validating its shape on every call."""
        cached = self.__dict__.get("_packed")
        if cached is None or cached.words is not self.words:
            cached = kernels.PackedWeight(self.words, *self._meta)
            self.__dict__["_packed"] = cached
        return cached

    def _shift(self, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        return x if self.threshold is None else x - self.threshold.to(x.dtype).view(shape)

    def _epilogue(self, out: Tensor, x: Tensor) -> Tensor:
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        if self.rprelu is not None:
            out = self.rprelu(out)
        return out


class PackedBinaryConv2d(_PackedOptions):
    """An XNOR conv whose weights are packed bits: ``popcount_conv(sign(x - t), sign(W)) *
    alpha (* K) + bias`` (then shortcut, RPReLU), padded positions reading +1 as simulated."""

    def __init__(self, layer: BinaryConv2d) -> None:
        super().__init__()
        _check_packable(layer)
        weight, alpha = _signs_and_alpha(layer)
        packed = kernels.pack_conv_weight(weight, layer.groups)
        self.register_buffer("words", packed.words)
        self._meta = (packed.out_channels, packed.in_channels, packed.kernel_size, packed.groups)
        self.register_buffer("alpha", _output_scale(layer, alpha))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self._copy_options(layer)
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        self.kernel_size, self.stride, self.dilation = (
            layer.kernel_size,
            layer.stride,
            layer.dilation,
        )
        self.groups, self.padding_mode = layer.groups, layer.padding_mode
        self.pads = tuple(layer.pads())
        self.input_scale = layer.input_scale

    def forward(self, x: Tensor) -> Tensor:
        if self.input_bn is not None:
            x = self.input_bn(x)
        return self._epilogue(self._binary_conv(self._shift(x, (1, -1, 1, 1))), x)

    def _prepared(self, pads: int | tuple[int, ...]) -> PreparedXnorConv2d:
        """The kernel call with its arguments converted once; rebuilt when a tensor it holds
        is replaced (``.to()``, BatchNorm folding), not when one changes in place."""
        tensors = (self.words, self.alpha, self.bias)
        cached = self.__dict__.get("_prepared_call")
        if cached is not None and cached[1] == pads and all(
            a is b for a, b in zip(cached[0], tensors, strict=True)
        ):
            return cached[2]
        fn = PreparedXnorConv2d(
            self.packed, self.stride, pads, self.dilation, scale=self.alpha, bias=self.bias
        )
        self.__dict__["_prepared_call"] = (tensors, pads, fn)
        return fn

    def _binary_conv(self, x: Tensor) -> Tensor:
        """``popcount_conv(sign(x), sign(W)) * alpha (* K) + bias`` of the shifted input."""
        pads = self.pads
        if self.padding_mode != "zeros":  # pad the floats first, as the simulated layer does
            x, pads = F.pad(x, self.pads, mode=self.padding_mode), 0
        if not self.input_scale:  # alpha and bias applied by the kernel as it writes
            return self._prepared(pads)(x)
        dots = kernels.xnor_conv2d(x, self.packed, self.stride, pads, self.dilation, self.groups)
        out = dots.to(x.dtype) * self.alpha.to(x.dtype).view(1, -1, 1, 1)
        xp = F.pad(x, self.pads) if self.padding_mode == "zeros" else x
        out = out * input_scale_map(
            xp, self.kernel_size, self.stride, self.dilation, self.groups, self.out_channels
        )
        if self.bias is not None:
            out = out + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, groups={self.groups}, packed={self.words.numel() * 8} B"
        )


class PackedBinaryLinear(_PackedOptions):
    """An XNOR linear layer on packed bits: ``popcount(sign(x - t), sign(W)) * alpha (* K) + b``
    (then shortcut, RPReLU)."""

    def __init__(self, layer: BinaryLinear) -> None:
        super().__init__()
        _check_packable(layer)
        weight, alpha = _signs_and_alpha(layer)
        packed = kernels.pack_linear_weight(weight)
        self.register_buffer("words", packed.words)
        self._meta = (packed.out_channels, packed.in_channels, packed.kernel_size, packed.groups)
        self.register_buffer("alpha", _output_scale(layer, alpha))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self._copy_options(layer)
        self.input_scale = layer.input_scale
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def forward(self, x: Tensor) -> Tensor:
        if self.input_bn is not None:
            x = self.input_bn(x)
        xs = self._shift(x, (-1,))
        dots = kernels.xnor_linear(xs, self.packed)
        out = dots.to(x.dtype) * self.alpha.to(x.dtype)
        if self.input_scale:
            out = out * xs.abs().mean(-1, keepdim=True)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return self._epilogue(out, x)


@torch.no_grad()
def pack(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every XNOR conv/linear running on packed bits.

    For deployment use ``zoo.deploy.fuse_and_pack``: it also folds the BatchNorms after the
    binary layers into their scales and runs pooling in channels_last, without which the
    float layers around the popcounts cost more than the popcounts do.
    """
    return pack_layers(copy.deepcopy(model).eval())


@torch.no_grad()
def pack_layers(model: nn.Module) -> nn.Module:
    """Swap every XNOR conv/linear of ``model`` for its packed twin, in place; returns it.

    ``model`` should be in eval mode (and fused, for speed); raises when it has no XNOR layer.
    """
    swaps = [(name, m) for name, m in model.named_modules() if is_binary(m) and m.mode == "xnor"]
    if not swaps:
        raise ValueError(
            "the model has no xnor layers to pack; convert it with "
            "zoo.binarize(model, 'xnor') or create an xnor_* model"
        )
    for name, layer in swaps:
        cls = PackedBinaryConv2d if isinstance(layer, BinaryConv2d) else PackedBinaryLinear
        model.set_submodule(name, cls(layer))
    return model


def packed_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the packed sign bits, bytes the same weights take in float32)."""
    packed = floats = 0
    for m in model.modules():
        if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear)):
            pw = kernels.PackedWeight(m.words, *m._meta)
            packed += pw.nbytes
            floats += pw.float_nbytes
    return packed, floats
