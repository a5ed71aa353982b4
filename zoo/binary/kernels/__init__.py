"""Real 1-bit inference kernels: binary conv and linear layers computed with XOR + popcount.

Weights are stored as packed sign bits (:func:`pack_conv_weight`, :func:`pack_linear_weight`,
32x smaller than float32 up to channel padding), activations are binarized and bit-packed
inside the kernel, and every output is the exact integer dot product of +-1 values::

    xnor_conv2d(x, pack_conv_weight(w), stride, padding)
        == conv2d(sign(zero_pad(x)), sign(w))      # sign(v) = +1 for v >= 0, else -1

Zero padding reads as +1 (larq's ``pad_values=1``). The float scales (XNOR-Net's alpha per
output channel, the optional K map) are applied by the caller.

Backends: ``avx512`` (XOR + AVX-512 VPOPCNTDQ), ``avx2`` (vpshufb nibble tables) and
``portable`` C++, all in one PyTorch extension compiled on first use (cached under
``$ZOO_HOME/extensions`` or ``~/.cache/zoo/extensions``; :func:`build_extension` builds it
ahead of time) and chosen from the CPU's features at run time; and ``torch``, a pure-PyTorch
path with identical results, used when the extension cannot be built (no C++ compiler or
ninja), for non-CPU tensors, or on request. Threads: ``torch.set_num_threads``. Set
``ZOO_NO_EXTENSION=1`` to skip building, ``ZOO_XNOR_BACKEND=<name>`` to pick the default.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from . import reference

__all__ = [
    "PackedWeight",
    "pack_conv_weight",
    "pack_linear_weight",
    "xnor_conv2d",
    "xnor_linear",
    "xnor_conv2d_profile",
    "backend",
    "set_backend",
    "use_backend",
    "available_backends",
    "is_compiled",
    "build_extension",
    "extension_error",
    "BACKENDS",
]

BACKENDS = ("auto", "avx512", "avx2", "portable", "torch")
_CPP_CODES = {"portable": 0, "avx2": 1, "avx512": 2}
_SOURCES = ("xnor.cpp", "peak.cpp")
_CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off")  # epilogues round as PyTorch does
_LDFLAGS = ("-fopenmp",)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# Packed weights


@dataclass(frozen=True)
class PackedWeight:
    """Sign bits of a conv/linear weight in the kernel's layout (see ``reference``).

    ``words`` is int64 ``[groups, Og_pad, Ks]``; a linear weight is a 1x1 conv weight. Keep
    ``words`` as a module buffer to move/save it, and rebuild with the same fields.
    """

    words: Tensor
    out_channels: int
    in_channels: int  # per group
    kernel_size: tuple[int, int]
    groups: int = 1

    def __post_init__(self) -> None:
        kh, kw = self.kernel_size
        og = self.out_channels // self.groups
        ks = -(-(kh * kw * (-(-self.in_channels // 64))) // reference.WORD_ALIGN)
        shape = (
            self.groups,
            -(-og // reference.OUT_ALIGN) * reference.OUT_ALIGN,
            ks * reference.WORD_ALIGN,
        )
        if self.words.dtype != torch.int64 or tuple(self.words.shape) != shape:
            raise ValueError(
                f"PackedWeight.words must be int64 of shape {shape}, got "
                f"{self.words.dtype} {tuple(self.words.shape)}; build it with pack_conv_weight"
            )

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed bits (padding words included)."""
        return self.words.numel() * self.words.element_size()

    @property
    def float_nbytes(self) -> int:
        """Bytes the same weight takes in float32."""
        kh, kw = self.kernel_size
        return self.out_channels * self.in_channels * kh * kw * 4

    def unpack(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The +-1 weight ``[O, C/g, kh, kw]`` (what the kernels multiply with)."""
        return reference.unpack_conv_weight(
            self.words, self.out_channels, self.in_channels, self.kernel_size, dtype
        )


def pack_conv_weight(weight: Tensor, groups: int = 1) -> PackedWeight:
    """Pack ``sign(weight)`` of a conv weight ``[O, C/groups, kh, kw]`` (any float dtype)."""
    if weight.dim() != 4:
        raise ValueError(f"conv weight must be [O, C/groups, kh, kw], got {tuple(weight.shape)}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"out channels {weight.shape[0]} not divisible by groups={groups}")
    o, cg, kh, kw = weight.shape
    words = reference.pack_conv_weight_words(weight.detach().cpu(), groups)
    return PackedWeight(words, o, cg, (kh, kw), groups)


def pack_linear_weight(weight: Tensor) -> PackedWeight:
    """Pack ``sign(weight)`` of a linear weight ``[O, I]`` (any float dtype)."""
    if weight.dim() != 2:
        raise ValueError(f"linear weight must be [out, in], got {tuple(weight.shape)}")
    return pack_conv_weight(weight[:, :, None, None])


# ------------------------------------------------------------------------------------------
# Extension loading and backend choice


class _State:
    """Lazily loaded extension and the requested backend (process-wide)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ext: ModuleType | None = None
        self.cpp_backends: list[str] = []  # C++ backends this CPU runs, fastest first
        self.tried = False
        self.error: str | None = None
        self.requested = os.environ.get("ZOO_XNOR_BACKEND", "auto")


_STATE = _State()


def _cache_root() -> Path:
    home = os.environ.get("ZOO_HOME")
    return Path(home) if home else Path.home() / ".cache" / "zoo"


def _build_key(sources: list[Path]) -> str:
    """Hash of everything the binary depends on, so a change rebuilds in a new folder."""
    h = hashlib.sha256()
    for src in sources:
        h.update(src.read_bytes())
    for part in (torch.__version__, sys.version, sys.platform, " ".join(_CFLAGS)):
        h.update(part.encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """Make a venv's ninja visible when the venv's bin folder is not on PATH."""
    old = os.environ.get("PATH", "")
    venv_bin = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and shutil.which("ninja", path=venv_bin):
        os.environ["PATH"] = venv_bin + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _import_built(name: str, build_dir: Path) -> ModuleType | None:
    """Import an extension built earlier (marked READY), without ninja or a compiler."""
    library = build_dir / f"{name}{importlib.machinery.EXTENSION_SUFFIXES[-1]}"
    if not (build_dir / "READY").exists() or not library.exists():
        return None
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_extension() -> ModuleType:
    """Import the C++ extension, compiling it first if this build is not cached; raises on
    any failure. The cache folder is keyed by a hash of the sources, torch, Python and flags.
    """
    here = Path(__file__).resolve().parent
    sources = [here / s for s in _SOURCES]
    key = _build_key(sources)
    name = f"zoo_xnor_{key}"
    build_dir = _cache_root() / "extensions" / f"xnor_{key}"
    with contextlib.suppress(Exception):  # a broken cached build is simply rebuilt
        module = _import_built(name, build_dir)
        if module is not None:
            return module
    build_dir.mkdir(parents=True, exist_ok=True)
    logger.warning("compiling the 1-bit XNOR kernel into %s (first use only, ~1 min)", build_dir)
    ext_logger = logging.getLogger("torch.utils.cpp_extension")
    level = ext_logger.level
    ext_logger.setLevel(logging.ERROR)  # hide "No CUDA runtime is found": CPU-only build
    try:
        from torch.utils import cpp_extension

        with _ninja_on_path():
            module = cpp_extension.load(
                name=name,
                sources=[str(s) for s in sources],
                extra_cflags=list(_CFLAGS),
                extra_ldflags=list(_LDFLAGS),
                build_directory=str(build_dir),
                verbose=False,
            )
    finally:
        ext_logger.setLevel(level)
    (build_dir / "READY").touch()
    return module


def build_extension() -> str:
    """Build (or find) the C++ extension now, e.g. at install time; returns the backend."""
    ext = _extension()
    if ext is None:
        raise RuntimeError(f"the XNOR C++ extension could not be built: {_STATE.error}")
    return backend()


def _extension() -> ModuleType | None:
    """The loaded extension, building it on first call; None (and one warning) on failure."""
    if _STATE.tried:
        return _STATE.ext
    with _STATE.lock:
        if _STATE.tried:
            return _STATE.ext
        if os.environ.get("ZOO_NO_EXTENSION", "") not in ("", "0"):
            _STATE.error = "disabled by ZOO_NO_EXTENSION"
        else:
            try:
                ext = _load_extension()
                names = list(ext.available_backends())
                _STATE.cpp_backends = [b for b in ("avx512", "avx2", "portable") if b in names]
                _STATE.ext = ext
            except Exception as err:  # noqa: BLE001 - any build/import failure falls back
                _STATE.error = f"{type(err).__name__}: {str(err).strip()[:2000]}"
                warnings.warn(
                    "zoo.binary.kernels: could not build the C++ XNOR kernel, using the "
                    "pure-PyTorch path (same results, much slower). To get the fast path, "
                    "install a C++ compiler (g++ or clang) and ninja (`pip install ninja`). "
                    f"Cause: {_STATE.error}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                logger.warning("XNOR extension unavailable: %s", _STATE.error)
        _STATE.tried = True
        return _STATE.ext


def is_compiled() -> bool:
    """True when the C++ extension is built and loaded (builds it on first call)."""
    return _extension() is not None


def extension_error() -> str | None:
    """Why the C++ extension is unavailable, or None when it loaded (or was not tried)."""
    return _STATE.error


def available_backends() -> list[str]:
    """Backends this machine can run, fastest first; ``torch`` is always there."""
    _extension()
    return [*_STATE.cpp_backends, "torch"]


def set_backend(name: str) -> None:
    """Pick the kernel: ``auto`` (fastest here), ``avx512``, ``avx2``, ``portable``, ``torch``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name != "auto" and name not in available_backends():
        raise RuntimeError(
            f"backend {name!r} is not available here (available: {available_backends()}); "
            + (
                f"the C++ extension failed to build: {_STATE.error}"
                if _STATE.error
                else "this CPU lacks the instructions it needs"
            )
        )
    _STATE.requested = name


def backend() -> str:
    """The backend CPU tensors go to now (``auto`` resolved to the fastest available)."""
    name = _STATE.requested
    if name == "auto":
        _extension()
        return _STATE.cpp_backends[0] if _STATE.cpp_backends else "torch"
    if name not in BACKENDS or name not in available_backends():
        set_backend(name)  # raises the error that says what is available and why
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: run the block with ``set_backend(name)``, then restore the choice."""
    old = _STATE.requested
    set_backend(name)
    try:
        yield
    finally:
        _STATE.requested = old


# ------------------------------------------------------------------------------------------
# Public ops


def _pair(v: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if len(v) == 2 and all(isinstance(i, int) for i in v):
        return int(v[0]), int(v[1])
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")


def _pads(padding: int | tuple[int, ...] | list[int]) -> tuple[int, int, int, int]:
    """Padding as ``(left, right, top, bottom)`` from an int, ``(ph, pw)`` or an F.pad 4-tuple."""
    if isinstance(padding, str):
        raise ValueError(
            f"padding={padding!r}: pass explicit amounts, e.g. (left, right, top, bottom)"
        )
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        ph, pw = _pair(tuple(padding), "padding")
        return pw, pw, ph, ph
    if len(padding) == 4 and all(isinstance(i, int) for i in padding):
        return tuple(int(i) for i in padding)  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, (ph, pw) or (left, right, top, bottom): {padding!r}")


def _check_input(x: Tensor, packed: PackedWeight, groups: int | None) -> Tensor:
    if not isinstance(packed, PackedWeight):
        raise TypeError("weight must be a PackedWeight; make one with pack_conv_weight(w)")
    if groups is not None and groups != packed.groups:
        raise ValueError(f"groups={groups} but the weight was packed with groups={packed.groups}")
    if x.dim() != 4:
        raise ValueError(f"input must be NCHW (4-D), got shape {tuple(x.shape)}")
    if x.shape[1] != packed.in_channels * packed.groups:
        raise ValueError(
            f"input has {x.shape[1]} channels, the weight expects "
            f"{packed.in_channels * packed.groups} ({packed.groups} groups of {packed.in_channels})"
        )
    if not x.is_floating_point():
        raise TypeError(f"input must be a float tensor, got {x.dtype}; convert it with x.float()")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()  # float16/bfloat16 -> float32 is exact, signs unchanged
    return x


def _check_geometry(x: Tensor, packed: PackedWeight, stride, pads, dilation) -> None:
    if min(stride) < 1 or min(dilation) < 1 or min(pads) < 0:
        raise ValueError(
            f"stride {stride} and dilation {dilation} must be >= 1, padding {pads} >= 0"
        )
    for size, lo, hi, k, d in (
        (x.shape[2], pads[2], pads[3], packed.kernel_size[0], dilation[0]),
        (x.shape[3], pads[0], pads[1], packed.kernel_size[1], dilation[1]),
    ):
        if size + lo + hi < (k - 1) * d + 1:
            raise ValueError(
                f"padded input {tuple(x.shape[2:])} + padding {pads} is smaller than the "
                f"kernel {packed.kernel_size} with dilation {dilation}"
            )


def _affine(dots: Tensor, dtype: torch.dtype, scale: Tensor, bias: Tensor | None) -> Tensor:
    shape = (1, -1) + (1,) * (dots.dim() - 2)
    out = dots.to(dtype) * scale.to(dtype).view(shape)
    return out if bias is None else out + bias.to(dtype).view(shape)


def _run_conv(x, packed, stride, pads, dilation, profile: bool, scale=None, bias=None):
    _check_geometry(x, packed, stride, pads, dilation)
    name = backend()
    ext = _extension() if name != "torch" else None
    if ext is None or x.device.type != "cpu":
        out = reference.xnor_conv2d(x, packed.unpack(), stride, pads, dilation, packed.groups)
        return (out if scale is None else _affine(out, x.dtype, scale, bias)), None
    left, right, top, bottom = pads
    kh, kw = packed.kernel_size
    geometry = (
        x, packed.words, packed.out_channels, kh, kw, stride[0], stride[1],
        top, bottom, left, right, dilation[0], dilation[1], packed.groups,
    )  # fmt: skip
    code = _CPP_CODES[name]
    if profile:
        out, times = ext.xnor_conv2d_profile(*geometry, code)
        return out, times
    if scale is not None:
        scale = scale.detach().float().contiguous()
        bias = None if bias is None else bias.detach().float().contiguous()
        return ext.xnor_conv2d_affine(*geometry, scale, bias, code), None
    return ext.xnor_conv2d(*geometry, code), None


def xnor_conv2d(
    x: Tensor,
    packed: PackedWeight,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int | None = None,
    scale: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """Exact ``conv2d(sign(zero_pad(x)), sign(w))`` as int32 ``[N, O, Ho, Wo]``.

    ``padding`` is an int, ``(ph, pw)``, or ``(left, right, top, bottom)`` like ``F.pad``;
    padded positions read +1. ``groups`` defaults to the packed weight's. With ``scale`` (one
    value per output channel, and optionally ``bias``) the result is ``dots * scale + bias``
    in ``x``'s dtype, computed as the kernel writes its output. Not differentiable: this is
    the inference path.
    """
    x = _check_input(x, packed, groups)
    for name, t in (("scale", scale), ("bias", bias)):
        if t is not None and t.numel() != packed.out_channels:
            raise ValueError(
                f"{name} needs {packed.out_channels} values (one per output channel), "
                f"got {t.numel()}"
            )
    out, _ = _run_conv(
        x.detach(),
        packed,
        _pair(stride, "stride"),
        _pads(padding),
        _pair(dilation, "dilation"),
        profile=False,
        scale=scale,
        bias=bias,
    )
    return out


def xnor_conv2d_profile(
    x: Tensor,
    packed: PackedWeight,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, int] = 1,
) -> tuple[Tensor, dict[str, float]]:
    """:func:`xnor_conv2d` on a C++ backend, plus where its time went (seconds).

    ``pack``: sign + bit-packing of the activations (wall); ``gemm_phase``: the gather and
    popcount phase (wall); ``im2col_share``: the fraction of that phase's thread time spent
    gathering receptive fields (and preparing weights), the rest being the popcount GEMM;
    ``kernel``: ``table`` (AVX2 activation-table kernel, used with >= 32 output channels per
    group and < 2**16 products per output) or ``xor`` (XOR + popcount).
    """
    x = _check_input(x, packed, None)
    if backend() == "torch":
        raise RuntimeError("xnor_conv2d_profile needs a C++ backend; see set_backend()")
    out, times = _run_conv(
        x.detach(),
        packed,
        _pair(stride, "stride"),
        _pads(padding),
        _pair(dilation, "dilation"),
        profile=True,
    )
    pack, phase2, gather, pop, table = times
    share = gather / (gather + pop) if gather + pop > 0 else 0.0
    kernel = "table" if table else "xor"
    return out, {"pack": pack, "gemm_phase": phase2, "im2col_share": share, "kernel": kernel}


def xnor_linear(x: Tensor, packed: PackedWeight) -> Tensor:
    """Exact ``sign(x) @ sign(w).T`` as int32 ``[N, O]`` for ``x [N, I]``."""
    if x.dim() != 2:
        raise ValueError(f"xnor_linear input must be [N, in_features], got {tuple(x.shape)}")
    if packed.kernel_size != (1, 1) or packed.groups != 1:
        raise ValueError("xnor_linear needs a weight packed with pack_linear_weight")
    if backend() == "torch" or x.device.type != "cpu":
        x = _check_input(x[:, :, None, None], packed, 1)
        return reference.xnor_linear(x[:, :, 0, 0], packed.unpack()[:, :, 0, 0])
    out = xnor_conv2d(x[:, :, None, None], packed)
    return out.view(out.shape[0], out.shape[1])
