"""The building blocks every family is made of, in one place.

Each block uses plain ``nn.Conv2d`` / norm / activation modules so that the binary converter,
the BN fuser and the counters can recognise the layers by type. Every block takes
``act_layer`` and ``norm_layer`` (a class, or a name resolved by :func:`get_act_layer` /
:func:`get_norm_layer`), as timm's blocks do, so a variant is a keyword, not module surgery.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "ACT_LAYERS",
    "NORM_LAYERS",
    "get_act_layer",
    "get_norm_layer",
    "create_act",
    "ConvBNAct",
    "Fire",
    "DepthwiseSeparable",
    "InvertedResidual",
    "channel_shuffle",
    "ChannelShuffle",
    "ShuffleV1Unit",
    "ShuffleV2Unit",
    "SHUFFLE_ORDERS",
    "V2_LAYOUTS",
    "BasicBlock",
    "make_divisible",
]

ActLayer = Callable[..., nn.Module]
LayerSpec = str | type[nn.Module] | Callable[..., nn.Module]

# The activation names a manifest or a builder keyword may use (timm's spellings).
ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}
NORM_LAYERS: dict[str, type[nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "batchnorm2d": nn.BatchNorm2d,
    "bn": nn.BatchNorm2d,
}


def _resolve(value: LayerSpec | None, table: dict[str, type[nn.Module]], what: str):
    if value is None or (isinstance(value, type) and issubclass(value, nn.Module)):
        return value
    if isinstance(value, str):
        key = value.lower()
        if key not in table:
            raise ValueError(f"unknown {what} {value!r}; use one of {sorted(table)} or a class")
        return table[key]
    if callable(value):
        return value
    raise TypeError(f"{what} must be a name, an nn.Module class or None, got {value!r}")


def get_act_layer(name_or_cls: LayerSpec | None) -> ActLayer | None:
    """An activation class from a name in :data:`ACT_LAYERS` or a class (returned as is)."""
    return _resolve(name_or_cls, ACT_LAYERS, "act_layer")


def get_norm_layer(name_or_cls: LayerSpec | None) -> Callable[..., nn.Module] | None:
    """A norm class (called with a channel count) from a :data:`NORM_LAYERS` name or a class."""
    return _resolve(name_or_cls, NORM_LAYERS, "norm_layer")


def _takes_inplace(layer: Callable[..., nn.Module]) -> bool:
    try:
        params = inspect.signature(layer).parameters
    except (TypeError, ValueError):
        return False
    return "inplace" in params


def create_act(act_layer: LayerSpec | None, inplace: bool = True) -> nn.Module:
    """An activation module; in-place where the class supports it, Identity for None."""
    layer = get_act_layer(act_layer)
    if layer is None:
        return nn.Identity()
    return layer(inplace=inplace) if _takes_inplace(layer) else layer()


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping below 90 %.

    The rule MobileNet v2 and timm use to keep channel counts hardware- and group-friendly.
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> norm -> optional activation (None: none), with "same" padding."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act_layer: LayerSpec | None = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = get_norm_layer(norm_layer)(out_chs)
        self.act = create_act(act_layer)


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated.

    ``bypass`` adds the input to the output (SqueezeNet paper, Sec. 6): ``"simple"`` is an
    identity shortcut (needs in == out channels), ``"complex"`` a 1x1 conv shortcut.
    """

    def __init__(
        self,
        in_chs: int,
        squeeze_chs: int,
        expand1x1_chs: int,
        expand3x3_chs: int,
        bypass: str | None = None,
        act_layer: LayerSpec = nn.ReLU,
    ) -> None:
        super().__init__()
        out_chs = expand1x1_chs + expand3x3_chs
        self.squeeze = nn.Conv2d(in_chs, squeeze_chs, 1)
        self.squeeze_act = create_act(act_layer)
        self.expand1x1 = nn.Conv2d(squeeze_chs, expand1x1_chs, 1)
        self.expand1x1_act = create_act(act_layer)
        self.expand3x3 = nn.Conv2d(squeeze_chs, expand3x3_chs, 3, padding=1)
        self.expand3x3_act = create_act(act_layer)
        self.bypass = _fire_bypass(bypass, in_chs, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_act(self.squeeze(x))
        out = torch.cat(
            [self.expand1x1_act(self.expand1x1(s)), self.expand3x3_act(self.expand3x3(s))], 1
        )
        if self.bypass is not None:
            out = out + self.bypass(x)
        return out


def _fire_bypass(kind: str | None, in_chs: int, out_chs: int) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "simple":
        if in_chs != out_chs:
            raise ValueError(f"simple bypass needs in == out channels, got {in_chs} -> {out_chs}")
        return nn.Identity()
    if kind == "complex":
        return nn.Identity() if in_chs == out_chs else nn.Conv2d(in_chs, out_chs, 1)
    raise ValueError(f"bypass must be None, 'simple' or 'complex', got {kind!r}")


class DepthwiseSeparable(nn.Sequential):
    """MobileNet v1 block: 3x3 depthwise conv-BN-act, then 1x1 pointwise conv-BN-act."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        layers = {"act_layer": act_layer, "norm_layer": norm_layer}
        self.dw = ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs, **layers)
        self.pw = ConvBNAct(in_chs, out_chs, 1, **layers)


class InvertedResidual(nn.Module):
    """MobileNet v2 block: 1x1 expand -> 3x3 depthwise -> linear 1x1 project (+ identity)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        expand_ratio: int,
        act_layer: LayerSpec = nn.ReLU6,
        norm_layer: LayerSpec = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        mid_chs = in_chs * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_chs, mid_chs, 1, act_layer=act_layer, norm_layer=norm_layer))
        layers += [
            ConvBNAct(
                mid_chs, mid_chs, 3, stride, mid_chs, act_layer=act_layer, norm_layer=norm_layer
            ),
            ConvBNAct(mid_chs, out_chs, 1, act_layer=None, norm_layer=norm_layer),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


SHUFFLE_ORDERS = ("paper", "megvii")
V2_LAYOUTS = ("torchvision", "megvii")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across ``groups`` (ShuffleNet): (g, c/g) -> (c/g, g)."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible by {groups} groups")
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle` so it shows up in printed models and traces."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleV1Unit(nn.Module):
    """ShuffleNet v1 unit: grouped 1x1 -> shuffle -> 3x3 depthwise -> grouped 1x1.

    Stride 1 adds the input; stride 2 concatenates a 3x3 average-pooled input, so the
    convolution branch only produces ``out_chs - in_chs`` channels. ``group_first=False``
    keeps the first 1x1 ungrouped (first unit of stage 2, whose input has only 24 channels).
    ``mid_chs`` (bottleneck width) defaults to ``out_chs // 4``. ``shuffle_order="megvii"``
    shuffles where the authors' released code does: after the depthwise conv, with
    ``mid_chs // groups`` groups (the inverse of the paper's shuffle), which their checkpoints
    need when no channel permutation maps them onto the paper's order.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        groups: int,
        stride: int,
        group_first: bool = True,
        mid_chs: int | None = None,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
        shuffle_order: str = "paper",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if shuffle_order not in SHUFFLE_ORDERS:
            raise ValueError(
                f"shuffle_order must be one of {SHUFFLE_ORDERS}, got {shuffle_order!r}"
            )
        mid_chs = mid_chs or out_chs // 4
        if mid_chs % groups or out_chs % groups or in_chs % groups:
            raise ValueError(
                f"channels in={in_chs} mid={mid_chs} out={out_chs} must divide into {groups} groups"
            )
        branch_chs = out_chs - in_chs if stride == 2 else out_chs
        first_groups = groups if group_first else 1
        norm = {"norm_layer": norm_layer}
        self.compress = ConvBNAct(
            in_chs, mid_chs, 1, groups=first_groups, act_layer=act_layer, **norm
        )
        # Shuffle even after an ungrouped first conv, as the paper's Fig. 2 and common ports do.
        self.shuffle_order = shuffle_order
        shuffle_groups = mid_chs // groups if shuffle_order == "megvii" else groups
        self.shuffle = ChannelShuffle(shuffle_groups) if groups > 1 else nn.Identity()
        self.depthwise = ConvBNAct(
            mid_chs, mid_chs, 3, stride, groups=mid_chs, act_layer=None, **norm
        )
        self.expand = ConvBNAct(mid_chs, branch_chs, 1, groups=groups, act_layer=None, **norm)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        self.act = create_act(act_layer)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle_order == "megvii":
            out = self.expand(self.shuffle(self.depthwise(self.compress(x))))
        else:
            out = self.expand(self.depthwise(self.shuffle(self.compress(x))))
        if self.shortcut is not None:
            out = torch.cat([self.shortcut(x), out], 1)
        else:
            out = out + x
        return self.act(out)


class ShuffleV2Unit(nn.Module):
    """ShuffleNet v2 unit: split (or copy when strided), transform a branch, concat, shuffle.

    ``layout="torchvision"`` (torchvision, timm): split into halves, shuffle after the concat;
    each branch of a strided unit gives ``out_chs // 2`` channels. ``layout="megvii"`` (the
    authors' released code): keep ``x[:, 0::2]``, transform ``x[:, 1::2]``, no shuffle; the
    strided unit's first branch keeps ``in_chs`` channels and the second gives the rest.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
        layout: str = "torchvision",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"a stride-1 unit keeps its width, got {in_chs} -> {out_chs}")
        if layout not in V2_LAYOUTS:
            raise ValueError(f"layout must be one of {V2_LAYOUTS}, got {layout!r}")
        mid_chs = out_chs // 2
        proj_chs = in_chs if layout == "megvii" and stride == 2 else mid_chs
        self.stride = stride
        self.layout = layout
        act = {"act_layer": act_layer, "norm_layer": norm_layer}
        linear = {"act_layer": None, "norm_layer": norm_layer}
        if stride == 2:
            self.branch1 = nn.Sequential(
                ConvBNAct(in_chs, in_chs, 3, 2, groups=in_chs, **linear),
                ConvBNAct(in_chs, proj_chs, 1, **act),
            )
            branch2_in = in_chs
        else:
            self.branch1 = None
            branch2_in = mid_chs
        self.branch2 = nn.Sequential(
            ConvBNAct(branch2_in, mid_chs, 1, **act),
            ConvBNAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, **linear),
            ConvBNAct(mid_chs, out_chs - proj_chs, 1, **act),
        )
        self.shuffle = ChannelShuffle(2) if layout == "torchvision" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is not None:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        elif self.layout == "megvii":
            out = torch.cat([x[:, 0::2], self.branch2(x[:, 1::2])], 1)
        else:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], 1)
        return self.shuffle(out)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 projection shortcut, activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        act_layer: LayerSpec = nn.ReLU,
        norm_layer: LayerSpec = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        norm = {"norm_layer": norm_layer}
        self.conv1 = ConvBNAct(in_chs, out_chs, 3, stride, act_layer=act_layer, **norm)
        self.conv2 = ConvBNAct(out_chs, out_chs, 3, act_layer=None, **norm)
        self.downsample = (
            ConvBNAct(in_chs, out_chs, 1, stride, act_layer=None, **norm)
            if stride != 1 or in_chs != out_chs
            else None
        )
        self.act = create_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)
