"""The building blocks every family is made of, in one place.

Each block uses plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / activation modules so that the
binary converter, the BN fuser and the counters can recognise the layers by type.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "ConvBNAct",
    "Fire",
    "DepthwiseSeparable",
    "InvertedResidual",
    "channel_shuffle",
    "ChannelShuffle",
    "ShuffleV1Unit",
    "ShuffleV2Unit",
    "BasicBlock",
    "make_divisible",
]

ActLayer = Callable[..., nn.Module]


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
    """Conv2d (no bias) -> BatchNorm2d -> optional activation, with "same" padding."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act_layer: ActLayer | None = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()


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
    ) -> None:
        super().__init__()
        out_chs = expand1x1_chs + expand3x3_chs
        self.squeeze = nn.Conv2d(in_chs, squeeze_chs, 1)
        self.squeeze_act = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_chs, expand1x1_chs, 1)
        self.expand1x1_act = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_chs, expand3x3_chs, 3, padding=1)
        self.expand3x3_act = nn.ReLU(inplace=True)
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
    """MobileNet v1 block: 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs)
        self.pw = ConvBNAct(in_chs, out_chs, 1)


class InvertedResidual(nn.Module):
    """MobileNet v2 block: 1x1 expand -> 3x3 depthwise -> linear 1x1 project (+ identity)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        mid_chs = in_chs * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_chs, mid_chs, 1, act_layer=nn.ReLU6))
        layers += [
            ConvBNAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, act_layer=nn.ReLU6),
            ConvBNAct(mid_chs, out_chs, 1, act_layer=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


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
    ``mid_chs`` (bottleneck width) defaults to ``out_chs // 4``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        groups: int,
        stride: int,
        group_first: bool = True,
        mid_chs: int | None = None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        mid_chs = mid_chs or out_chs // 4
        if mid_chs % groups or out_chs % groups or in_chs % groups:
            raise ValueError(
                f"channels in={in_chs} mid={mid_chs} out={out_chs} must divide into {groups} groups"
            )
        branch_chs = out_chs - in_chs if stride == 2 else out_chs
        first_groups = groups if group_first else 1
        self.compress = ConvBNAct(in_chs, mid_chs, 1, groups=first_groups)
        # Shuffle even after an ungrouped first conv, as the paper's Fig. 2 and common ports do.
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.depthwise = ConvBNAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, act_layer=None)
        self.expand = ConvBNAct(mid_chs, branch_chs, 1, groups=groups, act_layer=None)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        self.act = nn.ReLU(inplace=True)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.depthwise(self.shuffle(self.compress(x))))
        if self.shortcut is not None:
            out = torch.cat([self.shortcut(x), out], 1)
        else:
            out = out + x
        return self.act(out)


class ShuffleV2Unit(nn.Module):
    """ShuffleNet v2 unit: split (or copy when strided), transform a branch, concat, shuffle."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"a stride-1 unit keeps its width, got {in_chs} -> {out_chs}")
        branch_chs = out_chs // 2
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(
                ConvBNAct(in_chs, in_chs, 3, 2, groups=in_chs, act_layer=None),
                ConvBNAct(in_chs, branch_chs, 1),
            )
            branch2_in = in_chs
        else:
            self.branch1 = None
            branch2_in = branch_chs
        self.branch2 = nn.Sequential(
            ConvBNAct(branch2_in, branch_chs, 1),
            ConvBNAct(branch_chs, branch_chs, 3, stride, groups=branch_chs, act_layer=None),
            ConvBNAct(branch_chs, branch_chs, 1),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return self.shuffle(out)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 projection shortcut, ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_chs, out_chs, 3, stride)
        self.conv2 = ConvBNAct(out_chs, out_chs, 3, act_layer=None)
        self.downsample = (
            ConvBNAct(in_chs, out_chs, 1, stride, act_layer=None)
            if stride != 1 or in_chs != out_chs
            else None
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)
