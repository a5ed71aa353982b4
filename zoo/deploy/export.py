"""ONNX export of zoo models (float, fused and binary), checked in onnxruntime.

    zoo export shufflenet_g3 --onnx shufflenet_g3.onnx --fuse   # then says what runs fastest
    >>> from zoo.deploy.export import export_onnx
    >>> export_onnx("mobilenet_v2", "mnv2.onnx").max_abs_diff < 1e-4

The file is written next to its destination under a temporary name, run in onnxruntime on a
fresh input and compared with PyTorch, and only then moved into place. The TorchScript-based
exporter (``dynamo=False``) is used: it needs no extra package and handles every zoo family.
Binary (XNOR) layers export their ``sign`` as ``Where(x >= 0, 1, -1)``, so ``sign(0) = +1``
exactly as in PyTorch; their latent weights are stored with the ops that binarize them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from zoo import factory
from zoo.binary.layers import is_binary
from zoo.binary.packed import PackedBinaryConv2d, PackedBinaryLinear
from zoo.cli_errors import (
    ArgumentParser,
    add_model_options,
    image_size,
    int_range,
    non_negative_float,
    output_file,
    positive_int,
    run_command,
)
from zoo.deploy.fuse import fuse
from zoo.deploy.runtimes import Recommendation, RuntimeUnavailable, recommend, run_onnx
from zoo.pretrained import WeightsError
from zoo.utils import atomic_path

__all__ = [
    "ExportError",
    "ExportResult",
    "export_onnx",
    "fixed_size_pools",
    "run_onnx",
    "sign_margin",
    "main",
]


class ExportError(RuntimeError):
    """The model cannot be exported (or its export does not match); the message says why."""


@dataclass
class ExportResult:
    """Where the file went and how closely onnxruntime reproduced PyTorch."""

    path: Path
    model: str
    fused: bool
    input_shape: tuple[int, ...]
    opset: int
    max_abs_diff: float | None  # None when not checked
    op_types: list[str] = field(default_factory=list)
    size_bytes: int = 0
    check_note: str = ""  # how the check was done when not on the file itself
    recommendation: Recommendation | None = None  # with recommend=True: the fastest way here


def _binary_input_layers(model: nn.Module) -> list[nn.Module]:
    """Layers that binarize their inputs (XNOR); their outputs jump when a sign flips."""
    return [m for m in model.modules() if is_binary(m) and m.mode == "xnor"]


@torch.no_grad()
def sign_margin(model: nn.Module, x: torch.Tensor) -> float:
    """Smallest non-zero |value| entering a binary activation (inf when there is none).

    Two correct implementations round differently by ~1e-7 relative; a value closer to zero
    than that may get opposite signs, so outputs of XNOR models only compare exactly on
    inputs whose margin is comfortably larger. Exact zeros (padding) are not at risk.
    """
    found: list[float] = []

    def hook(m, inp):
        v = inp[0]
        bn = getattr(m, "input_bn", None)
        if bn is not None:
            v = bn(v)
        nz = v.abs()[v != 0]
        if nz.numel():
            found.append(float(nz.min()))

    hooks = [m.register_forward_pre_hook(hook) for m in _binary_input_layers(model)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return min(found, default=float("inf"))


def _check_input(model: nn.Module, shape: tuple[int, ...], tries: int = 8) -> torch.Tensor:
    """A random input; for XNOR models the one of ``tries`` with the largest sign margin."""
    gen = torch.Generator().manual_seed(0)
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    candidates = [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(tries)]
    if not _binary_input_layers(model):
        return candidates[0]
    return max(candidates, key=lambda x: sign_margin(model, x))


def _resolve(model: nn.Module | str, create_kwargs: dict) -> tuple[nn.Module, str]:
    if isinstance(model, str):
        try:
            return factory.create(model, **create_kwargs), model
        except (ValueError, TypeError, FileNotFoundError, WeightsError) as err:
            raise ExportError(f"cannot create {model!r}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ExportError(f"export needs a model name or an nn.Module, got {type(model).__name__}")
    if any(isinstance(m, PackedBinaryConv2d | PackedBinaryLinear) for m in model.modules()):
        raise ExportError(
            "the model holds packed 1-bit layers (zoo.binary.pack / zoo.fuse_and_pack), which "
            "ONNX cannot express: export the unpacked xnor model instead"
        )
    if hasattr(model, "_orig_mod"):
        raise ExportError(
            "a torch.compile'd model cannot be exported; export the module itself "
            "(compiled._orig_mod) or call export before torch.compile"
        )
    return model, type(model).__name__


def _input_shape(model: nn.Module, input_size: int | tuple | None, batch: int) -> tuple:
    if input_size is None:
        cfg = getattr(model, "default_cfg", None) or {}
        size = tuple(cfg.get("input_size") or ())
        if not size:
            in_chans = getattr(model, "in_chans", 3)
            size = (in_chans, 224, 224)
    elif isinstance(input_size, int):
        size = (getattr(model, "in_chans", 3), input_size, input_size)
    else:
        size = tuple(input_size)
    if len(size) != 3 or any(int(s) < 1 for s in size):
        raise ExportError(f"input_size must be C, H, W (or one side), got {input_size!r}")
    return (batch, *map(int, size))


@contextlib.contextmanager
def _silence_fds() -> Iterator[None]:
    """Send what C++ code writes to stdout/stderr to a scratch file for the block.

    The TorchScript exporter dumps its whole IR graph there when an operator fails, and its
    verbosity switch stays on after the first export; the error message we raise is enough.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _explain(err: BaseException, name: str, shape: tuple) -> ExportError:
    """A one-paragraph reason instead of an exporter stack trace."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    for cut in (" Please feel free", " [Caused by"):
        text = text.split(cut)[0]
    text = text.rstrip(". ")
    hint = ""
    if "adaptive" in text.lower():
        hint = (
            " The model pools to a fixed grid; ONNX can express that only when the feature map "
            "is a multiple of the grid, so export at the model's default input size (e.g. "
            "--input-size 224)."
        )
    elif "input" in text.lower() and ("channels" in text or "smaller" in text):
        hint = " Pass an input size the model accepts (--input-size)."
    elif "Unsupported" in text or "export of operator" in text:
        hint = " The operator has no ONNX equivalent at this opset; try a higher --opset."
    return ExportError(f"cannot export {name} at input {shape} to ONNX: {text}.{hint}")


def export_onnx(
    model: nn.Module | str,
    path: str | os.PathLike,
    *,
    fuse: bool = False,
    input_size: int | tuple[int, int, int] | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = True,
    opset: int = 17,
    check: bool = True,
    atol: float = 1e-4,
    recommend: bool = False,
    **create_kwargs,
) -> ExportResult:
    """Export a zoo model (name or module) to ONNX, then check it in onnxruntime.

    ``fuse`` exports ``zoo.deploy.fuse(model)`` (BN folded; grouped convs stay convs).
    ``input_size`` is C, H, W or one side (default: the model's ``default_cfg``); the batch
    dimension is dynamic unless ``dynamic_batch=False``. With ``check`` the file is run on a
    new input (batch 2 when the batch is dynamic) and must match PyTorch within ``atol``,
    else :class:`ExportError` and no file is written. ``recommend`` then times PyTorch eager,
    ``zoo.fuse`` and the file in each installed runtime at the export shape (a second or two;
    see ``zoo.deploy.runtimes.recommend``). ``create_kwargs`` go to ``zoo.create``.
    """
    module, name = _resolve(model, create_kwargs)
    if batch_size < 1 or opset < 9:
        raise ExportError(f"batch_size must be >= 1 and opset >= 9, got {batch_size}, {opset}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"the output file should end in .onnx, got {str(path)!r}")
    shape = _input_shape(module, input_size, batch_size)
    if hasattr(module, "check_input"):  # zoo models say what input they accept
        try:
            module.check_input(torch.empty(shape, device="meta"))
        except (ValueError, TypeError) as err:
            raise ExportError(f"cannot export {name} at input {shape}: {err}") from err
    original, was_training = module, module.training
    original.eval()
    try:
        if fuse:
            module = _fused(original, name, shape)
        # Renamed into place only if the block ends cleanly: a failed export or check
        # (ExportError) deletes the temporary file and leaves ``path`` as it was.
        with atomic_path(path) as tmp:
            ops = _write(module, tmp, name, shape, dynamic_batch, opset)
            diff, note = None, ""
            if check:
                batch = 2 if dynamic_batch else shape[0]
                diff, note = _check(module, tmp, name, (batch, *shape[1:]), opset, atol)
        advice = None
        if recommend:  # the eager model against the written file, as a user would run it
            xnor = bool(_binary_input_layers(original))
            advice = _recommend(original, path, shape, optimize=not xnor)
    finally:
        original.train(was_training)
    size = path.stat().st_size
    return ExportResult(path, name, fuse, shape, opset, diff, ops, size, note, advice)


def _recommend(*args, **kwargs) -> Recommendation:
    try:
        return recommend(*args, **kwargs)
    except RuntimeUnavailable as err:
        raise ExportError(f"the recommendation needs onnxruntime: {err}") from err


def _fused(model: nn.Module, name: str, shape: tuple) -> nn.Module:
    """BN folded; grouped convs and pools kept as plain ops, which onnxruntime runs natively."""
    try:
        return fuse(
            model,
            grouped_matmul=False,
            fast_pool=False,
            channels_last=False,  # the runtime picks its own layout: no timing here
            example_input=torch.randn(1, *shape[1:]),
        )
    except (ValueError, TypeError, RuntimeError) as err:
        raise _explain(err, name, shape) from err


_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@torch.no_grad()
def fixed_size_pools(model: nn.Module, shape: tuple) -> nn.Module:
    """A copy of ``model`` whose adaptive pools (other than global ones) are plain pools.

    An ONNX file has a fixed image size, so ``AdaptiveAvgPool2d(6)`` on a 6x6 map is an
    identity and on a 12x12 map a 2x2/2 average pool; writing them so keeps the export
    independent of the exporter's shape inference (which loses spatial sizes after ``Pad``).
    Returns ``model`` itself when nothing needs replacing.
    """
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, _ADAPTIVE) and _pair(m.output_size) != (1, 1):

            def hook(_m, inp, _out, _name=name):
                sizes[_name] = tuple(inp[0].shape[-2:])

            hooks.append(m.register_forward_hook(hook))
    if not hooks:
        return model
    try:
        model(torch.zeros(1, *shape[1:]))
    finally:
        for h in hooks:
            h.remove()
    plan = {}
    for name, (h, w) in sizes.items():
        m = model.get_submodule(name)
        oh, ow = _pair(m.output_size)
        if (h, w) == (oh, ow):
            plan[name] = nn.Identity()
        elif h % oh == 0 and w % ow == 0:
            k = (h // oh, w // ow)
            avg = isinstance(m, nn.AdaptiveAvgPool2d)
            plan[name] = nn.AvgPool2d(k, k) if avg else nn.MaxPool2d(k, k)
    if not plan:
        return model
    model = copy.deepcopy(model)
    for name, new in plan.items():
        model.set_submodule(name, new)
    return model


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _write(
    module: nn.Module, tmp: Path, name: str, shape: tuple, dynamic_batch: bool, opset: int
) -> list[str]:
    """Export to ``tmp`` with the TorchScript exporter; returns the ONNX op types used."""
    try:
        import onnx
    except ImportError as err:
        raise ExportError("ONNX export needs the onnx package: pip install onnx") from err
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    try:
        exportable = fixed_size_pools(module, shape)
        with warnings.catch_warnings(), _silence_fds():
            # Tracer notes about Python-side shape checks and the legacy-exporter notice.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*[Cc]onstant fold.*")
            torch.onnx.export(
                exportable,
                (torch.randn(shape),),
                str(tmp),
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
            )
    except (torch.onnx.errors.OnnxExporterError, RuntimeError, ValueError, TypeError) as err:
        raise _explain(err, name, shape) from err
    return sorted({n.op_type for n in onnx.load(str(tmp)).graph.node})


def _check(
    module: nn.Module, path: Path, name: str, shape: tuple, opset: int, atol: float
) -> tuple[float, str]:
    """Max abs difference onnxruntime vs PyTorch, and a note when checked another way.

    XNOR outputs jump wherever float rounding flips a sign, and a full-size image has so many
    values near zero that two correct implementations rarely agree. When the written file does
    not match at its own size, the same graph is exported again at a small image size and
    checked on an input whose sign() arguments keep a safe margin from 0; the note returned
    says so, since that is a check of the graph, not of the written file's numbers.
    """
    diff, x = _compare(module, path, shape)
    if diff <= atol:
        return diff, ""
    if _binary_input_layers(module):
        for side in _small_sides(module, shape):
            small = (shape[0], shape[1], side, side)
            with tempfile.TemporaryDirectory() as tmpdir:
                tmp = Path(tmpdir) / "check.onnx"
                try:
                    _write(module, tmp, name, small, False, opset)
                except ExportError:
                    continue
                small_diff, small_x = _compare(module, tmp, small, tries=16)
            if small_diff <= atol and sign_margin(module, small_x) >= _SAFE_MARGIN:
                return small_diff, (
                    f"binary activations: the written file's outputs at {shape[-2]}x"
                    f"{shape[-1]} differ by {diff:.2g} where float rounding flips signs; the "
                    f"same graph re-exported at {side}x{side} matches on a sign-safe input"
                )
    msg = f"onnxruntime and PyTorch outputs differ by {diff:.3g} (> {atol:g})"
    if _binary_input_layers(module):
        msg += (
            f"; this model binarizes activations, values within {sign_margin(module, x):.1e} "
            "of 0 reach a sign() and float rounding flips them (no smaller input size "
            "checked clean either); pass check=False (--no-check) to export anyway"
        )
    raise ExportError(msg)


_SAFE_MARGIN = 1e-5


def _small_sides(module: nn.Module, shape: tuple) -> list[int]:
    least = int(getattr(module, "min_input_size", 32) or 32)
    return [s for s in (least, 2 * least) if s < min(shape[-2:])]


def _compare(
    module: nn.Module, path: Path, shape: tuple, tries: int = 8
) -> tuple[float, torch.Tensor]:
    x = _check_input(module, shape, tries)
    with torch.no_grad():
        expected = module(x)
    try:
        # XNOR layers: exact ties (a binary dot product of 0) must stay exact, so run the
        # file as written; onnxruntime's conv/scale fusions would round them off zero.
        got = run_onnx(path, x, optimize=not _binary_input_layers(module))
    except RuntimeUnavailable as err:
        raise ExportError(f"checking needs onnxruntime: {err}") from err
    except Exception as err:  # onnxruntime's own errors (missing kernel, bad graph)
        raise ExportError(f"onnxruntime cannot run the exported file: {err}") from err
    if got.shape != expected.shape:
        raise ExportError(
            f"onnxruntime output {tuple(got.shape)} != PyTorch {tuple(expected.shape)}"
        )
    return float((got - expected).abs().max()), x


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="zoo export", description="Export a zoo model to ONNX and check it in onnxruntime."
    )
    p.add_argument("name", help="model name, e.g. shufflenet_g3 or xnor_resnet18")
    p.add_argument(
        "--onnx", type=output_file, required=True, metavar="FILE", help="output .onnx file"
    )
    p.add_argument("--fuse", action="store_true", help="export zoo.deploy.fuse(model)")
    add_model_options(p)
    p.add_argument("--input-size", type=image_size, default=None, help="square input side")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension")
    p.add_argument("--opset", type=int_range(9, 30), default=17)
    p.add_argument("--atol", type=non_negative_float, default=1e-4)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument(
        "--no-recommend",
        action="store_true",
        help="skip timing PyTorch, zoo.fuse and the runtimes (about a second or two)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``zoo export NAME --onnx FILE``: returns 0 on success, 2 with a message otherwise."""
    return run_command("zoo export", _main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    given = {"num_classes": args.num_classes, "in_chans": args.in_chans}
    kwargs = {k: v for k, v in given.items() if v is not None}
    if args.pretrained:
        kwargs["pretrained"] = args.pretrained
    res = export_onnx(
        args.name,
        args.onnx,
        fuse=args.fuse,
        input_size=args.input_size,
        batch_size=args.batch_size,
        dynamic_batch=not args.static_batch,
        opset=args.opset,
        check=not args.no_check,
        atol=args.atol,
        recommend=not args.no_recommend,
        **kwargs,
    )
    checked = (
        f"onnxruntime max abs diff {res.max_abs_diff:.2e}"
        if res.max_abs_diff is not None
        else "not checked"
    )
    print(
        f"wrote {res.path} ({res.size_bytes / 2**20:.1f} MiB, opset {res.opset}, input "
        f"{res.input_shape}{', fused' if res.fused else ''}): {checked}"
    )
    if res.check_note:
        print(f"note: {res.check_note}")
    if res.recommendation is not None:
        print(res.recommendation.line())
        for n in res.recommendation.notes:
            print(f"note: {n}")
    return 0
