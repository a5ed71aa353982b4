"""Trained quantization by weight sharing (Deep Compression, Sec. 3).

The non-zero weights of each layer are clustered into ``2**bits`` shared values with 1-D
k-means, centroids initialised linearly between the layer's min and max weight (the paper's
best initialisation, since it keeps the rare large weights). Each weight is replaced by its
centroid; pruned weights stay exactly zero. For fine-tuning, the codebook becomes a parameter
and the weight is ``codebook[index]``: autograd then sums the gradients of all weights of a
cluster into that centroid, which is the paper's per-cluster gradient accumulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from zoo.compress.layers import PerLayer, compressible_layers, resolve_per_layer
from zoo.compress.prune import finalize

__all__ = [
    "kmeans_1d",
    "SharedLayer",
    "share_weights",
    "SharedWeight",
    "finetune_codebooks",
    "layer_bits",
    "distinct_values",
]


def kmeans_1d(
    values: torch.Tensor, k: int, max_iter: int = 100, init: str = "linear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars: returns sorted float32 centroids (<= k) and each value's label.

    ``init="linear"`` spaces the centroids evenly over [min, max] (Han et al.); ``"density"``
    uses quantiles. Empty clusters are dropped at the end, so every centroid is used. With at
    most ``k`` distinct values the distinct values themselves are the centroids (exact).
    In 1-D every cluster is an interval of the sorted values, so one iteration is ``k`` binary
    searches and prefix-sum differences instead of a pass over all values.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = values.detach().flatten().double().cpu().numpy()
    if x.size == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    xs = np.sort(x)
    uniq = np.unique(xs)
    if uniq.size <= k:
        centroids = uniq.astype(np.float32)
        return torch.from_numpy(centroids), torch.from_numpy(np.searchsorted(centroids, x))
    c = _init_centroids(xs, k, init)
    prefix = np.concatenate([[0.0], np.cumsum(xs)])
    bounds = None
    for _ in range(max_iter):
        new = np.searchsorted(xs, (c[1:] + c[:-1]) / 2, side="right")
        if bounds is not None and np.array_equal(new, bounds):
            break
        bounds = new
        edges = np.concatenate([[0], bounds, [xs.size]])
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        c = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c))
    # The weights become float32 centroids: label against those, drop any unused one.
    c32 = np.unique(c.astype(np.float32))
    labels = _nearest(x, c32)
    used = np.bincount(labels, minlength=c32.size) > 0
    if not used.all():
        c32 = c32[used]
        labels = _nearest(x, c32)
    return torch.from_numpy(c32), torch.from_numpy(labels)


def _init_centroids(xs: np.ndarray, k: int, init: str) -> np.ndarray:
    if init == "linear":
        return np.linspace(xs[0], xs[-1], k)
    if init == "density":
        return np.quantile(xs, np.linspace(0.0, 1.0, k))
    raise ValueError(f"init must be 'linear' or 'density', got {init!r}")


def _nearest(x: np.ndarray, sorted_centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (ties to the lower one)."""
    c = sorted_centroids.astype(np.float64)
    return np.searchsorted((c[1:] + c[:-1]) / 2, x, side="left").astype(np.int64)


def distinct_values(weight: torch.Tensor) -> int:
    """Number of distinct non-zero values in ``weight`` (the codebook size it needs)."""
    w = weight.detach().flatten()
    return int(torch.unique(w[w != 0]).numel())


@dataclass
class SharedLayer:
    """One layer's weight sharing: sorted codebook and, per weight, its cluster (-1 = pruned)."""

    codebook: torch.Tensor  # float32 [K]
    index: torch.Tensor  # int32, same shape as the weight, -1 where the weight is zero
    bits: int

    def weight(self) -> torch.Tensor:
        """The shared weight tensor ``codebook[index]`` with zeros where ``index == -1``."""
        table = torch.cat([self.codebook, self.codebook.new_zeros(1)])
        return table[torch.where(self.index < 0, self.codebook.numel(), self.index)]


def share_layer(
    weight: torch.Tensor, bits: int, max_iter: int = 50, init: str = "linear"
) -> SharedLayer:
    """Cluster the non-zero entries of ``weight`` into at most ``2**bits`` shared values."""
    if not 1 <= int(bits) <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")
    w = weight.detach().float().cpu()
    nz = w != 0
    codebook, labels = kmeans_1d(w[nz], 2 ** int(bits), max_iter=max_iter, init=init)
    index = torch.full(w.shape, -1, dtype=torch.int32)
    index[nz] = labels.to(torch.int32)
    return SharedLayer(codebook, index, int(bits))


def layer_bits(model: nn.Module, bits: PerLayer) -> dict[str, int]:
    """``bits`` resolved to ``{layer name: bits}``; every Conv2d/Linear must get a value."""
    layers = compressible_layers(model)
    resolved = resolve_per_layer(bits, layers, "bits")
    missing = [n for n in layers if n not in resolved]
    if missing:
        raise KeyError(
            f"bits: no value for {missing[:4]}{'...' if len(missing) > 4 else ''}; give a "
            "number, or a mapping with 'conv' and 'linear' keys"
        )
    return {k: int(v) for k, v in resolved.items()}


class SharedWeight(nn.Module):
    """Parametrization ``weight = codebook[index]`` (zero where pruned) with a trainable codebook.

    The original tensor handed in by ``parametrize`` is ignored; only the codebook learns.
    """

    def __init__(self, shared: SharedLayer) -> None:
        super().__init__()
        self.codebook = nn.Parameter(shared.codebook.clone())
        k = shared.codebook.numel()
        self.register_buffer(
            "index", torch.where(shared.index < 0, k, shared.index).to(torch.int32)
        )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.codebook, self.codebook.new_zeros(1)])
        return table[self.index].to(weight.dtype)


def share_weights(
    model: nn.Module,
    bits: PerLayer,
    trainable: bool = False,
    max_iter: int = 50,
    init: str = "linear",
    progress: bool = False,
) -> dict[str, SharedLayer]:
    """Replace every Conv2d/Linear weight by ``2**bits`` shared values (zeros kept).

    With ``trainable=True`` the codebooks stay attached as parameters (see
    :func:`finetune_codebooks`); call :func:`zoo.compress.finalize` when done.
    """
    layers = compressible_layers(model)
    per_layer = layer_bits(model, bits)
    shared = {}
    for name in tqdm(per_layer, desc="k-means", disable=not progress, leave=False):
        module = layers[name]
        if parametrize.is_parametrized(module, "weight"):
            raise RuntimeError(f"{name} is parametrized; call zoo.compress.finalize(model) first")
        s = share_layer(module.weight, per_layer[name], max_iter=max_iter, init=init)
        shared[name] = s
        with torch.no_grad():
            module.weight.copy_(s.weight().to(module.weight))
        if trainable:
            parametrize.register_parametrization(module, "weight", SharedWeight(s), unsafe=True)
    return shared


def finetune_codebooks(
    model: nn.Module,
    bits: PerLayer,
    train: Callable[[nn.Module, list[nn.Parameter]], Any],
    **kwargs: Any,
) -> dict[str, SharedLayer]:
    """Share weights, let ``train(model, codebooks)`` update only the codebooks (plus whatever
    else it chooses to train, e.g. biases and BatchNorm), then bake the result.

    Returns the final codebooks and indices; the model's weights equal ``codebook[index]``.
    """
    per_layer = layer_bits(model, bits)
    share_weights(model, per_layer, trainable=True, **kwargs)
    layers = compressible_layers(model)
    codebooks = [
        p.codebook
        for m in layers.values()
        if parametrize.is_parametrized(m, "weight")
        for p in m.parametrizations.weight
        if isinstance(p, SharedWeight)
    ]
    train(model, codebooks)
    result = {}
    for name, module in layers.items():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        p = next(p for p in module.parametrizations.weight if isinstance(p, SharedWeight))
        k = p.codebook.numel()
        index = torch.where(p.index == k, -1, p.index)
        result[name] = SharedLayer(
            p.codebook.detach().float().cpu().clone(), index.cpu(), per_layer[name]
        )
    finalize(model)
    return result
