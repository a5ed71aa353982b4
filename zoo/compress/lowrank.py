"""Low-rank factorization: truncated SVD of linear (and 1x1 conv) layers, Tucker-2 of convs.

* SVD (Denton et al., 2014; the "SVD" row of SqueezeNet's Table 2): ``W (out x in) ~ U_r S_r
  V_r^T`` becomes ``Linear(in, r, bias=False)`` then ``Linear(r, out)``; by Eckart-Young this is
  the best rank-r approximation, with error ``sqrt(sum of the dropped sigma^2)``.
* Tucker-2 (Kim et al., 2016): a KxK conv ``W (out, in, k, k)`` becomes a 1x1 conv ``in -> r_in``
  (input factor), a KxK conv ``r_in -> r_out`` (core, same stride/padding/dilation) and a 1x1
  conv ``r_out -> out`` (output factor, carries the bias). Factors come from the leading left
  singular vectors of the mode-0 and mode-1 unfoldings (HOSVD), refined by a few HOOI sweeps.

A rank is an int, or a float in (0, 1] meaning the smallest rank whose singular values keep
that fraction of the squared energy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from zoo.compress.layers import compressible_layers

__all__ = [
    "rank_for_energy",
    "svd_factors",
    "tucker2_factors",
    "factorize_linear",
    "factorize_conv",
    "factorize",
    "FactorizedLayer",
    "relative_error",
]


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with ``sum(s[:r]^2) >= energy * sum(s^2)``."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    e = singular_values.double() ** 2
    cum = torch.cumsum(e, 0) / e.sum()
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1


def _resolve_rank(rank: int | float, s: torch.Tensor, full: int) -> int:
    if isinstance(rank, bool):
        raise TypeError("rank must be an int or a float energy fraction")
    if isinstance(rank, float):
        return min(full, rank_for_energy(s, rank))
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    return min(int(rank), full)


def svd_factors(weight: torch.Tensor, rank: int | float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``A (out x r) @ B (r x in)`` the best rank-r approximation of ``weight``.

    The singular values are split evenly (``sqrt(S)`` on each side) to balance the factors.
    """
    w = weight.detach().double().reshape(weight.shape[0], -1)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = _resolve_rank(rank, s, s.numel())
    root = s[:r].sqrt()
    return (u[:, :r] * root).to(weight.dtype), (root[:, None] * vh[:r]).to(weight.dtype)


def _leading(mat: torch.Tensor, r: int) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(mat, full_matrices=False)
    return u[:, :r]


def tucker2_factors(
    weight: torch.Tensor, rank: int | float | tuple[int | float, int | float], iters: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 of a conv weight: ``(U_out (out x r_out), core (r_out, r_in, kh, kw),
    U_in (in x r_in))`` with ``W ~ core x_0 U_out x_1 U_in``.

    ``rank`` is one value for both modes or ``(r_out, r_in)``.
    """
    w = weight.detach().double()
    out_ch, in_ch = w.shape[:2]
    r_out_spec, r_in_spec = rank if isinstance(rank, tuple) else (rank, rank)
    unfold0 = w.reshape(out_ch, -1)
    unfold1 = w.transpose(0, 1).reshape(in_ch, -1)
    r_out = _resolve_rank(r_out_spec, torch.linalg.svdvals(unfold0), out_ch)
    r_in = _resolve_rank(r_in_spec, torch.linalg.svdvals(unfold1), in_ch)
    u_out, u_in = _leading(unfold0, r_out), _leading(unfold1, r_in)
    for _ in range(iters):  # HOOI: each factor from the weight projected on the other
        proj_in = torch.einsum("oihw,ir->orhw", w, u_in)
        u_out = _leading(proj_in.reshape(out_ch, -1), r_out)
        proj_out = torch.einsum("oihw,or->rihw", w, u_out)
        u_in = _leading(proj_out.transpose(0, 1).reshape(in_ch, -1), r_in)
    core = torch.einsum("oihw,or,is->rshw", w, u_out, u_in)
    dt = weight.dtype
    return u_out.to(dt), core.to(dt), u_in.to(dt)


@dataclass(frozen=True)
class FactorizedLayer:
    """What :func:`factorize` did to one layer."""

    name: str
    kind: str  # "svd" or "tucker2"
    ranks: tuple[int, ...]
    params_before: int
    params_after: int
    relative_error: float  # ||W - W_r||_F / ||W||_F


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """Relative Frobenius error of an approximation."""
    w = weight.detach().double()
    return float(torch.linalg.norm(w - approx.detach().double()) / torch.linalg.norm(w))


def factorize_linear(layer: nn.Linear | nn.Conv2d, rank: int | float) -> nn.Sequential:
    """Two-layer replacement of a Linear or 1x1 conv (stride 1, no groups) by truncated SVD."""
    a, b = svd_factors(layer.weight, rank)
    r = a.shape[1]
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, r, bias=False)
        second = nn.Linear(r, layer.out_features, bias=layer.bias is not None)
        first.weight.data.copy_(b)
        second.weight.data.copy_(a)
    else:
        _check_pointwise(layer)
        first = nn.Conv2d(layer.in_channels, r, 1, layer.stride, layer.padding, bias=False)
        second = nn.Conv2d(r, layer.out_channels, 1, bias=layer.bias is not None)
        first.weight.data.copy_(b.view(r, -1, 1, 1))
        second.weight.data.copy_(a.view(-1, r, 1, 1))
    if layer.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second).to(layer.weight.device)


def _check_pointwise(conv: nn.Conv2d) -> None:
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError("SVD factorization of a conv needs a 1x1, ungrouped conv; use Tucker-2")


def factorize_conv(conv: nn.Conv2d, rank: int | float | tuple, iters: int = 5) -> nn.Sequential:
    """Three-conv Tucker-2 replacement of an ungrouped KxK conv."""
    if conv.groups != 1:
        raise ValueError(f"Tucker-2 needs an ungrouped conv, this one has groups={conv.groups}")
    u_out, core, u_in = tucker2_factors(conv.weight, rank, iters)
    r_out, r_in = core.shape[:2]
    first = nn.Conv2d(conv.in_channels, r_in, 1, bias=False)
    middle = nn.Conv2d(
        r_in, r_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False,
        padding_mode=conv.padding_mode,
    )  # fmt: skip
    last = nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None)
    first.weight.data.copy_(u_in.t().reshape(r_in, -1, 1, 1))
    middle.weight.data.copy_(core)
    last.weight.data.copy_(u_out.reshape(-1, r_out, 1, 1))
    if conv.bias is not None:
        last.bias.data.copy_(conv.bias.detach())
    return nn.Sequential(first, middle, last).to(conv.weight.device)


def _effective_weight(seq: nn.Sequential, kind: str) -> torch.Tensor:
    if kind == "svd":
        a = seq[1].weight.detach().flatten(1)
        b = seq[0].weight.detach().flatten(1)
        return a @ b
    u_in = seq[0].weight.detach().flatten(1)  # (r_in, in)
    core = seq[1].weight.detach()
    u_out = seq[2].weight.detach().flatten(1)  # (out, r_out)
    return torch.einsum("rshw,or,si->oihw", core, u_out, u_in)


def factorize(
    model: nn.Module,
    rank: int | float | Mapping[str, int | float],
    linear: bool = True,
    conv: bool = True,
    min_params: int = 0,
    only_if_smaller: bool = True,
    inplace: bool = False,
) -> tuple[nn.Module, list[FactorizedLayer]]:
    """Factorize the Linear / 1x1-conv layers (SVD) and ungrouped KxK convs (Tucker-2).

    ``rank`` applies to every chosen layer or is a ``{layer name: rank}`` map (others untouched).
    With ``only_if_smaller`` a layer is left alone when factorizing would not reduce its
    parameters. Returns the new model and a report per factorized layer.
    """
    model = model if inplace else copy.deepcopy(model)
    layers = compressible_layers(model)
    if isinstance(rank, Mapping):
        bad = sorted(set(rank) - set(layers))
        if bad:
            raise KeyError(f"{bad} are not Conv2d/Linear layers of this model")
    report = []
    for name, layer in layers.items():
        r = rank.get(name) if isinstance(rank, Mapping) else rank
        if r is None or layer.weight.numel() < min_params:
            continue
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            continue
        pointwise = isinstance(layer, nn.Linear) or (
            layer.kernel_size == (1, 1) and layer.dilation == (1, 1)
        )
        if (pointwise and not linear) or (not pointwise and not conv):
            continue
        kind = "svd" if pointwise else "tucker2"
        new = factorize_linear(layer, r) if pointwise else factorize_conv(layer, r)
        before = sum(p.numel() for p in layer.parameters())
        after = sum(p.numel() for p in new.parameters())
        if only_if_smaller and after >= before:
            continue
        ranks = (new[0].weight.shape[0],) if kind == "svd" else tuple(new[1].weight.shape[:2])
        err = relative_error(layer.weight, _effective_weight(new, kind).view_as(layer.weight))
        model.set_submodule(name, new)
        report.append(FactorizedLayer(name, kind, ranks, before, after, err))
    return model, report
