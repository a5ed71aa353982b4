"""The module swaps and the layout choice :func:`zoo.deploy.fuse` applies after folding BNs.

Every rewrite here computes the same outputs as what it replaces; they only change which
PyTorch kernels run. The layout choice (:func:`choose_channels_last`) times the fused model in
NCHW and in channels_last on the example input and keeps the faster: which one wins depends
on the CPU and the thread count (e.g. depthwise convs in NCHW are 2-8x slower than in
channels_last on an AVX-512 Xeon, while dense convs on some CPUs are faster in NCHW), so a fixed
rule would be wrong somewhere. Decisions are cached per model structure, input shape and
thread count, so fusing the same kind of model again costs nothing.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from zoo.blocks import ShuffleV2Unit

__all__ = [
    "ChannelsLastConv2d",
    "FastAvgPool2d",
    "FastMaxPool2d",
    "GroupedPointwiseConv2d",
    "InterleavedShuffleV2Unit",
    "choose_channels_last",
    "clear_layout_cache",
    "fast_pool_of",
    "interleave_shuffles",
    "is_grouped_pointwise",
    "set_conv_layout",
]


# oneDNN's fused-conv op (what inductor calls on CPU); absent from builds without oneDNN.
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_convolution_pointwise"
)


def _onednn_ok(x: torch.Tensor) -> bool:
    """A float32 channels_last CPU tensor in eager mode (not traced, exported or compiled,
    where the plain ops are the ones the tracer understands)."""
    return (
        _ONEDNN
        and x.dim() == 4
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def is_grouped_pointwise(m: nn.Module) -> bool:
    """A plain grouped 1x1, stride-1, unpadded ``nn.Conv2d`` (ShuffleNet v1's)."""
    return (
        type(m) is nn.Conv2d
        and 1 < m.groups < m.in_channels
        and m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.padding in ((0, 0), "valid")
        and m.padding_mode == "zeros"
    )


class GroupedPointwiseConv2d(nn.Conv2d):
    """A grouped 1x1, stride-1 ``nn.Conv2d`` computed as one batched matmul over the groups.

    Same parameters and state_dict keys as the conv it replaces. ``policy="auto"`` takes the
    matmul path only when torch runs single-threaded, where PyTorch's own kernel choice (one
    small convolution per group, then a concat) is the slow one; with more threads PyTorch
    uses oneDNN's grouped convolution. ``"always"`` forces the matmul. float32 CPU inputs in
    ``channels_last`` layout go to oneDNN's convolution op directly, others through
    ``nn.Conv2d``.
    """

    policy: str = "auto"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, policy: str = "auto") -> GroupedPointwiseConv2d:
        """A twin of ``conv`` sharing its weight and bias Parameters."""
        if policy not in ("auto", "always"):
            raise ValueError(f"policy must be 'auto' or 'always', got {policy!r}")
        if not is_grouped_pointwise(conv):
            raise ValueError(f"not a grouped 1x1 stride-1 unpadded convolution: {conv}")
        new = cls(
            conv.in_channels,
            conv.out_channels,
            1,
            groups=conv.groups,
            bias=conv.bias is not None,
            device="meta",
            dtype=conv.weight.dtype,
        )
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        new.policy = policy
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + f", policy={self.policy}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_ok(x):  # oneDNN's grouped conv called directly: ~1.5x faster than F.conv2d
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], self.groups, "none", [], ""
            )
        if (
            x.dim() != 4
            or not x.is_contiguous()
            or not self.weight.is_contiguous()
            or (self.policy == "auto" and torch.get_num_threads() != 1)
        ):
            return super().forward(x)
        n, c, h, w = x.shape
        g = self.groups
        weight = self.weight.view(g, self.out_channels // g, c // g)
        out = torch.matmul(weight, x.view(n, g, c // g, h * w)).view(n, self.out_channels, h, w)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class _ChannelsLastPooling:
    """Pool an NCHW tensor in channels_last layout and hand back NCHW.

    PyTorch's NCHW pooling kernels on CPU are several times slower than its channels_last
    ones (e.g. 3x3/2 max-pool of 24x112x112: ~2.9 ms vs ~0.3 ms single-threaded), more than
    the two layout copies cost. A channels_last input is pooled as it is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous() and x.shape[1] > 1 and x.shape[-1] * x.shape[-2] > 1:
            cl = x.contiguous(memory_format=torch.channels_last)
            return super().forward(cl).contiguous()  # type: ignore[misc]
        return super().forward(x)  # type: ignore[misc]

    @classmethod
    def from_pool(cls, pool: nn.Module) -> nn.Module:
        new = copy.copy(pool)
        new.__class__ = cls
        return new


class FastMaxPool2d(_ChannelsLastPooling, nn.MaxPool2d):
    """``nn.MaxPool2d`` computed in channels_last layout (same outputs, same layout out)."""


class FastAvgPool2d(_ChannelsLastPooling, nn.AvgPool2d):
    """``nn.AvgPool2d`` computed in channels_last layout (same outputs, same layout out)."""


def fast_pool_of(m: nn.Module) -> nn.Module | None:
    """The channels_last twin of a plain max/avg pool, or None for anything else."""
    if type(m) is nn.MaxPool2d and not m.return_indices:
        return FastMaxPool2d.from_pool(m)
    if type(m) is nn.AvgPool2d:
        return FastAvgPool2d.from_pool(m)
    return None


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs in channels_last even when handed an NCHW tensor.

    PyTorch picks a conv's layout from its input and weight; a depthwise weight (C, 1, k, k)
    is both NCHW- and channels_last-contiguous, so an NCHW input (e.g. the output of a packed
    binary layer) sends it to the NCHW depthwise kernel, which on CPU is many times slower
    than the channels_last one (32x112x112 on an AVX-512 Xeon, one thread: ~1.9 ms vs ~0.25 ms
    CPU time). The output
    stays channels_last; the values are the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous() and x.shape[1] > 1:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``channel_shuffle(cat([a, b], 1), 2)`` with one copy instead of two: channel ``2j`` is
    ``a[:, j]`` and ``2j + 1`` is ``b[:, j]``; the result keeps ``b``'s layout."""
    n, k, h, w = b.shape
    if not b.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last):
        out = torch.stack([a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)], dim=-1)
        return out.reshape(n, h, w, 2 * k).permute(0, 3, 1, 2)
    return torch.stack([a, b], dim=2).reshape(n, 2 * k, h, w)


class InterleavedShuffleV2Unit(ShuffleV2Unit):
    """A torchvision-layout ShuffleNet v2 unit whose concat and channel shuffle are one copy
    (:func:`_interleave`); same parameters, same outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is not None:
            return _interleave(self.branch1(x), self.branch2(x))
        x1, x2 = x.chunk(2, dim=1)
        return _interleave(x1, self.branch2(x2))


def interleave_shuffles(model: nn.Module) -> list[str]:
    """Swap every torchvision-layout :class:`ShuffleV2Unit` of ``model`` for
    :class:`InterleavedShuffleV2Unit`, in place; returns their names."""
    done = []
    for name, m in model.named_modules():
        if type(m) is ShuffleV2Unit and m.layout == "torchvision":
            m.__class__ = InterleavedShuffleV2Unit
            done.append(name)
    return done


@torch.no_grad()
def set_conv_layout(model: nn.Module, channels_last: bool) -> None:
    """Store every 4-D conv weight of ``model`` channels_last (or contiguous), in place; with
    ``channels_last`` plain ``nn.Conv2d`` modules become :class:`ChannelsLastConv2d` (and back).

    A conv with channels_last weights runs in that layout whatever its input's layout and
    hands channels_last on; the values are unchanged. Packed binary layers keep their bits.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, nn.Conv2d) and isinstance(w, torch.Tensor) and w.dim() == 4:
            with torch.inference_mode(False):  # ordinary tensors, usable with autograd later
                w.data = w.data.contiguous(memory_format=fmt)
        if channels_last and type(m) is nn.Conv2d:
            m.__class__ = ChannelsLastConv2d
        elif not channels_last and type(m) is ChannelsLastConv2d:
            m.__class__ = nn.Conv2d


_LAYOUT_CACHE: dict[tuple, bool] = {}


def clear_layout_cache() -> None:
    """Forget the layouts :func:`choose_channels_last` measured (e.g. after changing CPUs)."""
    _LAYOUT_CACHE.clear()


def _layout_key(model: nn.Module, example: torch.Tensor) -> tuple:
    """Model structure (class, module count, parameter count), input and threads."""
    n_params = sum(p.numel() for p in model.parameters())
    n_modules = sum(1 for _ in model.modules())
    cls = type(model)
    return (
        f"{cls.__module__}.{cls.__qualname__}",
        n_modules,
        n_params,
        tuple(example.shape),
        example.dtype,
        example.device.type,
        torch.get_num_threads(),
    )


def _best_time(model: nn.Module, x: torch.Tensor, calls: int) -> float:
    """The fastest of ``calls`` runs in CPU time of this process, which other processes on a
    busy machine inflate far less than wall time."""
    with torch.inference_mode():
        model(x)  # warm-up: oneDNN primitive creation, allocator
        best = float("inf")
        for _ in range(calls):
            t0 = time.process_time()
            model(x)
            best = min(best, time.process_time() - t0)
    return best


def choose_channels_last(model: nn.Module, example: torch.Tensor, rounds: int = 2) -> bool:
    """Whether ``model`` runs ``example`` faster with channels_last conv weights; leaves the
    model in the faster layout.

    Times both layouts in alternating blocks (``rounds`` each, 1 warm-up + 2 timed calls per
    block) and compares the fastest call of each in CPU time, which a busy machine inflates
    least.
    Inputs other than float32 CPU images (where oneDNN's channels_last kernels are the
    point; float64 convs are slow enough that timing them would dominate ``fuse``) and
    models whose channels_last run fails stay NCHW. Cached, see the module
    notes.
    """
    if example.device.type != "cpu" or example.dim() != 4 or example.dtype != torch.float32:
        set_conv_layout(model, False)
        return False
    key = _layout_key(model, example)
    if key not in _LAYOUT_CACHE:
        best = {False: float("inf"), True: float("inf")}
        try:
            for _ in range(rounds):
                for cl in (False, True):
                    set_conv_layout(model, cl)
                    best[cl] = min(best[cl], _best_time(model, example, 2))
        except RuntimeError:
            best[True] = float("inf")
        _LAYOUT_CACHE[key] = best[True] < best[False]
    choice = _LAYOUT_CACHE[key]
    set_conv_layout(model, choice)
    return choice
