"""Pure-PyTorch side of the 1-bit kernels: the bit layout, and the exact fallback path.

The bit layout (shared with ``xnor.cpp``): a bit is 0 where the value is >= 0 (sign +1,
-0.0 included) and 1 elsewhere (sign -1, NaN included, like ``zoo.binary.quantizers.sign``).
Channel ``c`` of a group is bit ``c % 64`` of word ``c // 64``; unused bits are 0. A packed
conv weight is an int64 tensor ``[groups, Og_pad, Ks]``: one row per output channel holding
its ``(kh, kw, words)`` words, zero-filled up to ``Ks = roundup(kh * kw * words, 4)``;
``Og_pad`` rounds the output channels per group up to 8 with all-zero rows.

The fallback computes the same integers as the C++ kernels with unfold and a matmul of +-1
values, exact while the number of products per output is below 2**24 (float64 past that).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "WORD_ALIGN",
    "OUT_ALIGN",
    "sign_pm1",
    "pack_bits",
    "unpack_bits",
    "pack_conv_weight_words",
    "unpack_conv_weight",
    "xnor_conv2d",
    "xnor_linear",
]

WORD_ALIGN = 4  # words per packed weight row are padded to a multiple of this
OUT_ALIGN = 8  # output channels per group are padded to a multiple of this
_EXACT_FLOAT32 = 1 << 24  # float32 holds every integer up to 2**24 exactly


def sign_pm1(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """+1 where ``x >= 0`` (-0.0 included), -1 elsewhere (NaN included), as ``dtype``."""
    one = torch.ones((), dtype=dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


def pack_bits(t: Tensor) -> Tensor:
    """Pack the signs along the last dim into int64 words: ``[..., C] -> [..., ceil(C/64)]``.

    Bit ``c % 64`` of word ``c // 64`` is 1 where ``t[..., c]`` is not ``>= 0``. A word is the
    sum of its distinct powers of two; bit 63 weighs ``-2**63`` in int64: no overflow.
    """
    c = t.shape[-1]
    words = -(-c // 64)
    bits = F.pad((~(t >= 0)).to(torch.int64), (0, words * 64 - c))
    shifts = torch.arange(64, dtype=torch.int64, device=t.device)
    return (bits.view(*t.shape[:-1], words, 64) << shifts).sum(-1)


def _byte_signs(dtype: torch.dtype, device: torch.device) -> Tensor:
    """[256, 8] table: the +-1 values of the 8 bits of every byte, least significant first."""
    bits = (torch.arange(256, device=device).unsqueeze(1) >> torch.arange(8, device=device)) & 1
    return (1 - 2 * bits).to(dtype)


def unpack_bits(words: Tensor, c: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Inverse of :func:`pack_bits`: ``[..., W] int64 -> [..., c]`` of +-1 values."""
    if sys.byteorder == "little":  # bytes of a word in memory order = its bits 0-7, 8-15, ...
        byte_vals = words.contiguous().view(torch.uint8).long()
        signs = _byte_signs(dtype, words.device)[byte_vals]  # [..., W * 8, 8]
        return signs.flatten(-2)[..., :c]
    shifts = torch.arange(64, dtype=torch.int64, device=words.device)
    bits = ((words.unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., :c]
    return (1 - 2 * bits).to(dtype)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def pack_conv_weight_words(w: Tensor, groups: int = 1) -> Tensor:
    """Signs of a conv weight ``[O, C/g, kh, kw]`` as packed rows ``[g, Og_pad, Ks]`` int64."""
    o, cg, kh, kw = w.shape
    og = o // groups
    words = pack_bits(w.detach().permute(0, 2, 3, 1))  # [O, kh, kw, Wg]
    rows = words.reshape(groups, og, -1)
    k = rows.shape[-1]
    rows = F.pad(rows, (0, _round_up(k, WORD_ALIGN) - k, 0, _round_up(og, OUT_ALIGN) - og))
    return rows.contiguous()


def unpack_conv_weight(
    words: Tensor,
    out_channels: int,
    in_per_group: int,
    kernel_size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The +-1 conv weight ``[O, C/g, kh, kw]`` held in packed rows ``[g, Og_pad, Ks]``."""
    groups = words.shape[0]
    og = out_channels // groups
    kh, kw = kernel_size
    wg = -(-in_per_group // 64)
    rows = words[:, :og, : kh * kw * wg].reshape(out_channels, kh, kw, wg)
    return unpack_bits(rows, in_per_group, dtype).permute(0, 3, 1, 2).contiguous()


def _matmul_dtype(products: int) -> torch.dtype:
    return torch.float32 if products < _EXACT_FLOAT32 else torch.float64


def xnor_conv2d(
    x: Tensor,
    weight_pm1: Tensor,
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor:
    """Exact int32 ``conv2d(sign(zero_pad(x)), weight_pm1)`` via unfold and a +-1 matmul.

    ``pads`` is ``(left, right, top, bottom)`` as for ``F.pad``; padded positions read +1.
    """
    n = x.shape[0]
    o, cg, kh, kw = weight_pm1.shape
    dtype = _matmul_dtype(cg * kh * kw)
    xs = sign_pm1(F.pad(x, pads), dtype)  # zero padding first, so padded positions are +1
    ho = (xs.shape[2] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    wo = (xs.shape[3] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    cols = F.unfold(xs, (kh, kw), dilation=dilation, stride=stride)  # [N, C*kh*kw, L]
    cols = cols.view(n, groups, cg * kh * kw, ho * wo)
    w = weight_pm1.to(dtype=dtype, device=x.device).view(groups, o // groups, cg * kh * kw)
    out = torch.matmul(w.unsqueeze(0), cols)  # [N, g, Og, L]
    return out.reshape(n, o, ho, wo).round().to(torch.int32)


def xnor_linear(x: Tensor, weight_pm1: Tensor) -> Tensor:
    """Exact int32 ``sign(x) @ weight_pm1.T`` for ``x [N, I]`` and ``weight_pm1 [O, I]``."""
    dtype = _matmul_dtype(weight_pm1.shape[1])
    out = sign_pm1(x, dtype) @ weight_pm1.to(dtype=dtype, device=x.device).t()
    return out.round().to(torch.int32)
