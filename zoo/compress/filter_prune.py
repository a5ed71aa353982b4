"""Structured (filter) pruning that returns a smaller dense model.

A *prune group* is a layer whose output channels can be removed (a Conv2d with ``groups=1`` or a
Linear) together with what those channels flow into: channel-wise layers on the way
(BatchNorm2d, depthwise convs, activations, pooling) are sliced with it, and the layers that
finally mix channels (Conv2d with ``groups=1``, or a Linear after global pooling + flatten)
lose the matching inputs. Channels that reach an addition, a concatenation, a shuffle or the
model output are never pruned, so residual and Fire/Shuffle outputs keep their widths. The
graph is found with ``torch.fx``.

Criteria: ``"l1"`` ranks filters by the L1 norm of their weights (Li et al., 2017);
``"thinet"`` greedily removes the channels whose contribution to the *next* layer's output is
smallest on calibration data, then rescales the kept input channels by least squares
(Luo et al., ThiNet, 2017, Sec. 3.2-3.3).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from zoo.blocks import ChannelShuffle
from zoo.compress.layers import traceable

__all__ = ["PruneGroup", "find_prune_groups", "filter_importance", "prune_filters", "PruneResult"]

_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.SiLU,
    nn.Hardswish,
    nn.Identity,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh, F.dropout, F.max_pool2d, F.avg_pool2d}
_PASS_METHODS = {"relu", "relu_", "contiguous"}


@dataclass
class PruneGroup:
    """A prunable layer, the channel-wise layers after it and the layers that consume it."""

    source: str
    channels: int
    followers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    # per consumer: inputs per channel (1 for convs; pooled H*W for a Linear after flatten)
    spatial: dict[str, int] = field(default_factory=dict)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ChannelShuffle) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> tuple[fx.Graph, str]:
    root, prefix = traceable(model)
    try:
        return _Tracer().trace(root), prefix
    except Exception as e:  # fx raises many kinds of errors on untraceable code
        raise TypeError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}); "
            "filter pruning needs a model whose forward is traceable"
        ) from e


def find_prune_groups(model: nn.Module) -> list[PruneGroup]:
    """Every layer whose output channels can be removed without touching additions/concats."""
    graph, prefix = _trace(model)
    modules = dict(model.named_modules())

    def mod(node: fx.Node) -> tuple[str, nn.Module] | tuple[None, None]:
        if node.op != "call_module" or not str(node.target).startswith(prefix):
            return None, None
        name = str(node.target)[len(prefix) :]
        return name, modules.get(name)

    calls: dict[str, int] = {}
    for node in graph.nodes:
        name, _ = mod(node)
        if name is not None:
            calls[name] = calls.get(name, 0) + 1
    groups = []
    for node in graph.nodes:
        name, m = mod(node)
        if calls.get(name, 0) != 1:
            continue
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            group = _follow(node, name, m.out_channels, False, mod, calls)
        elif isinstance(m, nn.Linear):
            group = _follow(node, name, m.out_features, True, mod, calls)
        else:
            continue
        if group is not None and group.consumers:
            groups.append(group)
    return groups


def _follow(start: fx.Node, name: str, channels: int, flat: bool, mod, calls) -> PruneGroup | None:
    """Walk forward from ``start``; ``None`` when the channels reach anything unprunable."""
    group = PruneGroup(name, channels)
    # state: (node, flattened?, inputs per channel after flatten, pooled area)
    todo = [(user, flat, 1, None) for user in start.users]
    seen = set()
    while todo:
        node, is_flat, per_ch, area = todo.pop()
        if (node, is_flat) in seen:
            continue
        seen.add((node, is_flat))
        mname, m = mod(node)
        nxt_state = None
        if m is not None:
            if calls.get(mname, 0) != 1:
                return None
            if isinstance(m, nn.Conv2d) and not is_flat:
                if m.groups == 1 and m.in_channels == channels:
                    group.consumers.append(mname)
                    group.spatial[mname] = 1
                    continue
                if m.groups == m.in_channels == m.out_channels == channels:
                    group.followers.append(mname)
                    nxt_state = (is_flat, per_ch, area)
                else:
                    return None
            elif isinstance(m, nn.Linear) and is_flat and m.in_features == channels * per_ch:
                group.consumers.append(mname)
                group.spatial[mname] = per_ch
                continue
            elif isinstance(m, nn.BatchNorm2d) and not is_flat and m.num_features == channels:
                group.followers.append(mname)
                nxt_state = (is_flat, per_ch, area)
            elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and not is_flat:
                size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
                if any(s is None for s in size):
                    return None
                nxt_state = (False, per_ch, math.prod(size))
            elif isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) == (1, -1):
                if is_flat or area is None:
                    return None
                nxt_state = (True, area, None)
            elif isinstance(m, _PASS_MODULES):
                nxt_state = (is_flat, per_ch, area)
            else:
                return None
        elif node.op == "call_function" and node.target in _PASS_FUNCTIONS:
            nxt_state = (is_flat, per_ch, area)
        elif node.op == "call_method" and node.target in _PASS_METHODS:
            nxt_state = (is_flat, per_ch, area)
        elif _is_flatten(node) and not is_flat and area is not None:
            nxt_state = (True, area, None)
        else:
            return None
        if any(arg is not None and isinstance(arg, fx.Node) for arg in node.args[1:]):
            return None  # a second tensor input (e.g. an addition) mixes channels
        todo += [(user, *nxt_state) for user in node.users]
    return group


def _is_flatten(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1
    if node.op == "call_method" and node.target == "flatten":
        return (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)) == 1
    return False


# --------------------------------------------------------------------------------------
# Criteria


def filter_importance(module: nn.Module) -> torch.Tensor:
    """L1 norm of each output filter (Conv2d) or output neuron (Linear)."""
    w = module.weight.detach()
    return w.abs().flatten(1).sum(1)


def _capture_inputs(
    model: nn.Module, names: list[str], data: torch.Tensor
) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    hooks = [
        modules[n].register_forward_hook(
            lambda _m, i, _o, _n=n: store.__setitem__(_n, i[0].detach())
        )
        for n in names
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(data)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return store


def _contributions(
    consumer: nn.Module,
    x: torch.Tensor,
    channels: int,
    per_ch: int,
    samples: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Per sampled output entry of ``consumer`` (image, position, output channel): each input
    channel's share of it, shape (samples, C). The entry is the sum of its row."""
    w = consumer.weight.detach()
    if isinstance(consumer, nn.Conv2d):
        cols = F.unfold(
            x, consumer.kernel_size, consumer.dilation, consumer.padding, consumer.stride
        )
        n, _, length = cols.shape
        cols = cols.view(n, channels, -1, length)  # (N, C, kk, L)
        wk = w.view(w.shape[0], channels, -1)  # (O, C, kk)
    else:
        n = x.shape[0]
        cols = x.view(n, channels, per_ch, 1)
        length = 1
        wk = w.view(w.shape[0], channels, per_ch)
    idx_n = torch.randint(0, n, (samples,), generator=gen)
    idx_l = torch.randint(0, length, (samples,), generator=gen)
    idx_o = torch.randint(0, w.shape[0], (samples,), generator=gen)
    picked = cols[idx_n, :, :, idx_l]  # (m, C, kk)
    return (picked * wk[idx_o]).sum(-1)


def _thinet_keep(zs: list[torch.Tensor], keep: int) -> torch.Tensor:
    """Greedy ThiNet selection: remove channels whose summed contribution stays smallest."""
    z = torch.cat(zs, 0).double()
    channels = z.shape[1]
    removed: list[int] = []
    total = torch.zeros(z.shape[0], dtype=torch.float64)
    available = torch.ones(channels, dtype=torch.bool)
    for _ in range(channels - keep):
        cost = ((total[:, None] + z) ** 2).sum(0)
        cost[~available] = math.inf
        c = int(torch.argmin(cost))
        removed.append(c)
        available[c] = False
        total += z[:, c]
    return torch.nonzero(available).flatten()


def _least_squares_scale(z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """ThiNet Eq. 7: per kept channel scale minimising the reconstruction error."""
    target = z.sum(1, keepdim=True).double()
    a = z[:, keep].double()
    sol = torch.linalg.lstsq(a, target).solution.flatten()
    return sol.float()


# --------------------------------------------------------------------------------------
# Surgery


@dataclass
class PruneResult:
    """The smaller model and, per pruned source layer, the indices of the channels kept."""

    model: nn.Module
    kept: dict[str, torch.Tensor]
    groups: list[PruneGroup]


def _conv_like(old: nn.Conv2d, in_ch: int, out_ch: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch, out_ch, old.kernel_size, old.stride, old.padding, old.dilation, groups,
        old.bias is not None, old.padding_mode,
    ).to(old.weight.device, old.weight.dtype)  # fmt: skip


def _slice_out(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        new = _conv_like(m, m.in_channels, len(keep), 1)
    else:
        new = nn.Linear(m.in_features, len(keep), m.bias is not None).to(m.weight)
    with torch.no_grad():
        new.weight.copy_(m.weight[keep])
        if m.bias is not None:
            new.bias.copy_(m.bias[keep])
    return new


def _slice_follower(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    if isinstance(m, nn.BatchNorm2d):
        new = nn.BatchNorm2d(len(keep), m.eps, m.momentum, m.affine, m.track_running_stats)
        new = new.to(m.weight.device if m.affine else m.running_mean.device)
        with torch.no_grad():
            if m.affine:
                new.weight.copy_(m.weight[keep])
                new.bias.copy_(m.bias[keep])
            if m.track_running_stats:
                new.running_mean.copy_(m.running_mean[keep])
                new.running_var.copy_(m.running_var[keep])
                new.num_batches_tracked.copy_(m.num_batches_tracked)
        return new
    new = _conv_like(m, len(keep), len(keep), len(keep))
    with torch.no_grad():
        new.weight.copy_(m.weight[keep])
        if m.bias is not None:
            new.bias.copy_(m.bias[keep])
    return new


def _slice_in(
    m: nn.Module, keep: torch.Tensor, per_ch: int, scale: torch.Tensor | None
) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        new = _conv_like(m, len(keep), m.out_channels, 1)
        w = m.weight[:, keep]
        if scale is not None:
            w = w * scale.view(1, -1, 1, 1)
    else:
        cols = (keep[:, None] * per_ch + torch.arange(per_ch)).flatten()
        new = nn.Linear(len(cols), m.out_features, m.bias is not None).to(m.weight)
        w = m.weight[:, cols]
        if scale is not None:
            w = w * scale.repeat_interleave(per_ch).view(1, -1)
    with torch.no_grad():
        new.weight.copy_(w)
        if m.bias is not None:
            new.bias.copy_(m.bias)
    return new


def _keep_count(channels: int, ratio: float, round_to: int) -> int:
    keep = channels * (1.0 - ratio)
    keep = int(round(keep / round_to) * round_to) if round_to > 1 else int(round(keep))
    return min(channels, max(1, keep))


def prune_filters(
    model: nn.Module,
    ratio: float | Mapping[str, float],
    method: str = "l1",
    data: torch.Tensor | None = None,
    samples: int = 2000,
    reconstruct: bool = True,
    round_to: int = 1,
    seed: int = 0,
) -> PruneResult:
    """A copy of ``model`` with ``ratio`` of the output channels of every prunable layer removed.

    ``ratio`` is one fraction for all groups or ``{source layer name: fraction}`` (layers not
    named are kept whole). ``method="thinet"`` needs ``data``, a calibration batch; with
    ``reconstruct`` the consumers' kept inputs are rescaled by least squares.
    """
    if method not in ("l1", "thinet"):
        raise ValueError(f"method must be 'l1' or 'thinet', got {method!r}")
    if method == "thinet" and data is None:
        raise ValueError("method='thinet' needs data=, a calibration batch of inputs")
    groups = find_prune_groups(model)
    by_source = {g.source: g for g in groups}
    if isinstance(ratio, Mapping):
        unknown = [k for k in ratio if k not in by_source]
        if unknown:
            raise KeyError(
                f"{unknown} are not prunable layers; prunable ones: {sorted(by_source)[:8]}..."
            )
        ratios = {k: float(v) for k, v in ratio.items()}
    else:
        ratios = {g.source: float(ratio) for g in groups}
    for name, r in ratios.items():
        if not 0.0 <= r < 1.0:
            raise ValueError(f"ratio for {name} must be in [0, 1), got {r}")
    new_model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    current = new_model.get_submodule
    gen = torch.Generator().manual_seed(seed)
    inputs = {}
    if method == "thinet":
        names = [c for s in ratios for c in by_source[s].consumers]
        inputs = _capture_inputs(model, names, data)
    kept = {}
    for source, r in ratios.items():
        g = by_source[source]
        keep_n = _keep_count(g.channels, r, round_to)
        if keep_n == g.channels:
            continue
        scales: dict[str, torch.Tensor | None] = {c: None for c in g.consumers}
        if method == "l1":
            keep = torch.topk(filter_importance(current(source)), keep_n).indices.sort().values
        else:
            zs = {
                c: _contributions(modules[c], inputs[c], g.channels, g.spatial[c], samples, gen)
                for c in g.consumers
            }
            keep = _thinet_keep(list(zs.values()), keep_n)
            if reconstruct:
                scales = {c: _least_squares_scale(z, keep) for c, z in zs.items()}
        kept[source] = keep
        new_model.set_submodule(source, _slice_out(current(source), keep))
        for f in g.followers:
            new_model.set_submodule(f, _slice_follower(current(f), keep))
        for c in g.consumers:
            new_model.set_submodule(c, _slice_in(current(c), keep, g.spatial[c], scales[c]))
    return PruneResult(new_model, kept, [by_source[s] for s in kept])
