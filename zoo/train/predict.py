"""``zoo predict MODEL IMAGE...``: top-k classes, with names, for each image.

MODEL is a checkpoint (or any model file ``zoo.create`` reads) or a name with weights
(``arch.tag``); it names its architecture, classes and preprocessing, so nothing else is
needed. Folders given as IMAGE are expanded to the images inside them. Unreadable images
are reported and skipped; the exit code is then 1.

Entry points: ``build_parser()`` / ``main(argv)`` (``scripts/predict.py``, ``zoo predict``);
``predict(ckpt, images)`` returns the predictions for use from Python.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.cli_errors import (
    ArgumentParser,
    device_option,
    error_message,
    is_user_error,
    positive_int,
    run_command,
)
from zoo.data.folder import IMG_EXTENSIONS, build_transform, resolve_data_cfg, verify_image
from zoo.data.images import load_image
from zoo.factory import create, is_file_spec
from zoo.pretrained.errors import WeightsError
from zoo.train.checks import check_finite_weights

__all__ = ["build_parser", "main", "predict", "expand_images"]


def build_parser() -> argparse.ArgumentParser:
    """Parser of ``zoo predict`` / ``scripts/predict.py``."""
    p = ArgumentParser(
        prog="zoo predict",
        description="Classify images with a checkpoint written by `zoo train` or `zoo finetune`.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="a zoo checkpoint (best.pt / last.pt)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--topk", "-k", type=positive_int, default=5, help="classes to show per image")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", type=device_option, default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    return p


def expand_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders replaced by their image files (recursively, sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS)
            )
            if not found:
                raise FileNotFoundError(
                    f"folder {str(p)!r} holds no images ({', '.join(IMG_EXTENSIONS)})"
                )
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"image {str(p)!r} does not exist")
    return out


def _load(path: Path, transform: Any, mode: str) -> torch.Tensor | str:
    reason = verify_image(str(path))
    if reason is not None:
        return reason
    try:
        return transform(load_image(path, mode))
    except (OSError, SyntaxError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


@torch.no_grad()
def predict(
    checkpoint: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    topk: int = 5,
    device: str = "auto",
    batch_size: int = 64,
) -> list[dict[str, Any]]:
    """Per image ``{"image", "top": [(class name, probability), ...]}`` or ``{..., "error"}``."""
    if topk < 1:
        raise ValueError(f"--topk must be >= 1, got {topk}")
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    # A checkpoint or any other model file, or a name with weights (``arch.tag``, ``arch``).
    model = create(checkpoint) if is_file_spec(checkpoint) else create(checkpoint, pretrained=True)
    check_finite_weights(model, str(checkpoint))
    model = model.to(dev).eval()
    n_out = int(model.num_classes)
    names = list(model.pretrained_cfg.get("categories") or [])
    if len(names) != n_out:
        names = [str(i) for i in range(n_out)]
    data_cfg = resolve_data_cfg(model, in_chans=int(model.in_chans))
    transform = build_transform(data_cfg, train=False)
    mode = "L" if model.in_chans == 1 else "RGB"
    files = expand_images(images)
    results: list[dict[str, Any]] = []
    k = min(topk, n_out)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        loaded = [(f, _load(f, transform, mode)) for f in chunk]
        good = [(f, t) for f, t in loaded if isinstance(t, torch.Tensor)]
        by_file: dict[Path, dict[str, Any]] = {
            f: {"image": str(f), "error": t} for f, t in loaded if not isinstance(t, torch.Tensor)
        }
        if good:
            probs = model(torch.stack([t for _, t in good]).to(dev)).float().softmax(dim=1)
            values, indices = probs.topk(k, dim=1)
            for (f, _), vals, idxs in zip(good, values.tolist(), indices.tolist(), strict=True):
                by_file[f] = {
                    "image": str(f),
                    "top": [(names[i], v) for i, v in zip(idxs, vals, strict=True)],
                }
        results += [by_file[f] for f in chunk]
    return results


def _print_result(r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(r), flush=True)
    elif "error" in r:
        print(f"{r['image']}: unreadable image skipped ({r['error']})", file=sys.stderr, flush=True)
    else:
        print(r["image"])
        width = max(len(n) for n, _ in r["top"])
        for rank, (name, p) in enumerate(r["top"], start=1):
            print(f"  {rank}. {name:<{width}}  {100 * p:6.2f}%")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo predict``: print the top-k classes of every image; 0 ok, 1 some unreadable, 2 error."""
    return run_command("zoo predict", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = predict(args.checkpoint, args.images, args.topk, args.device, args.batch_size)
    except (OSError, WeightsError, ValueError, TypeError) as e:
        if not is_user_error(e):
            raise  # a bug: run_command shows the traceback
        print(f"zoo predict: error: {error_message(e)}", file=sys.stderr, flush=True)
        return 2  # the checkpoint or an image given cannot be used
    for r in results:
        _print_result(r, args.json)
    bad = sum("error" in r for r in results)
    if bad:
        print(
            f"{bad} of {len(results)} image(s) could not be read and were skipped",
            file=sys.stderr,
            flush=True,
        )
    return 1 if bad else 0
