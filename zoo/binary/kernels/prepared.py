"""A binary conv with its arguments checked and converted once: the per-call path of packed
layers.

:func:`zoo.binary.kernels.xnor_conv2d` validates and converts every argument on each call
(about 20-60 us of Python, a fifth of a c=64, 56x56 layer). ``PreparedXnorConv2d`` does that
once and calls the extension directly, holding views of the caller's float32 scale and bias
(so updates made in place are seen); anything unusual (another backend chosen since, a
non-CPU or non-float input, an error from the kernel) goes through ``xnor_conv2d``, so the
results and the error messages are the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

import zoo.binary.kernels as kernels

__all__ = ["PreparedXnorConv2d"]

_FAST_DTYPES = (torch.float32, torch.float64)


class PreparedXnorConv2d:
    """``xnor_conv2d(x, packed, stride, padding, dilation, scale=scale, bias=bias)`` as a
    callable of ``x`` alone. Keep it next to the tensors it holds (it does not copy them)."""

    def __init__(
        self,
        packed: kernels.PackedWeight,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, int] = 1,
        scale: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> None:
        self.packed, self.stride, self.padding, self.dilation = packed, stride, padding, dilation
        self.scale, self.bias = scale, bias
        self._fast = self._fast_args()

    def _fast_args(self) -> tuple | None:
        """The extension's arguments after ``x``, or None where only the general path works."""
        given = [t for t in (self.scale, self.bias) if t is not None]
        if self.scale is None or any(
            t.dtype != torch.float32 or not t.is_contiguous() for t in given
        ):
            return None  # converting would copy, and a copy misses in-place updates
        sh, sw = kernels._pair(self.stride, "stride")
        dh, dw = kernels._pair(self.dilation, "dilation")
        left, right, top, bottom = kernels._pads(self.padding)
        p = self.packed
        scale = self.scale.detach()
        bias = None if self.bias is None else self.bias.detach()
        kh, kw = p.kernel_size
        geometry = (p.words, p.out_channels, kh, kw, sh, sw, top, bottom, left, right, dh, dw)
        return (*geometry, p.groups, scale, bias)

    def __call__(self, x: Tensor) -> Tensor:
        state = kernels._STATE
        name = state.requested if state.requested != "auto" else None
        if (
            self._fast is not None
            and state.ext is not None
            and x.dtype in _FAST_DTYPES
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.shape[1] == self.packed.in_channels * self.packed.groups
        ):
            name = name or (state.cpp_backends[0] if state.cpp_backends else None)
            code = kernels._CPP_CODES.get(name) if name else None
            if code is not None:
                try:
                    return state.ext.xnor_conv2d_affine(x.detach(), *self._fast, code)
                except RuntimeError:
                    pass  # the general path raises the same problem as a clear error
        return kernels.xnor_conv2d(
            x, self.packed, self.stride, self.padding, self.dilation,
            scale=self.scale, bias=self.bias,
        )  # fmt: skip
