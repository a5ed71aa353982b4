"""``zoo validate NAME... --data DIR``: top-1/top-5, loss and images/s over an image folder.

Each model is evaluated with its own eval transform (resize to size/crop_pct, centre crop,
normalise with its mean/std) and gets one row in a timm-style results CSV. A model is a
zoo name (random or ``--pretrained`` weights, or ``--checkpoint`` weights) or a path to a
checkpoint written by ``zoo train`` / ``zoo finetune``. With a checkpoint, the folder's
class names are matched to the checkpoint's by name, so the folder may hold any subset of
the classes; otherwise folders are taken in sorted order as class 0, 1, ...

Entry points: ``build_parser()`` / ``main(argv)`` (``scripts/validate.py``, ``zoo validate``);
``validate(...)`` returns one result row as a dict.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from zoo.catalog import list_models
from zoo.cli_errors import (
    ArgumentParser,
    device_option,
    image_size,
    non_negative_int,
    output_file,
    positive_int,
    pretrained_option,
    run_command,
)
from zoo.data.classes import class_index
from zoo.data.folder import (
    ImageFolderError,
    SafeImageFolder,
    build_transform,
    check_class_folders,
    collate_skip_none,
    resolve_data_cfg,
)
from zoo.factory import create, is_file_spec
from zoo.pretrained import WeightsError, list_tags
from zoo.train.checkpoint import model_from_checkpoint
from zoo.train.checks import check_finite_weights
from zoo.train.distributed import DistInfo, init_distributed
from zoo.train.engine import amp_settings, evaluate
from zoo.utils import atomic_write

__all__ = [
    "RESULT_FIELDS",
    "build_parser",
    "main",
    "validate",
    "validate_models",
    "write_results",
    "load_model",
]

# timm's results-*.csv columns first, then ours.
RESULT_FIELDS = [
    "model",
    "top1",
    "top1_err",
    "top5",
    "top5_err",
    "param_count",
    "img_size",
    "crop_pct",
    "interpolation",
    "loss",
    "images_per_sec",
    "count",
    "skipped",
    "weights",
]


def build_parser() -> argparse.ArgumentParser:
    """Parser of ``zoo validate`` / ``scripts/validate.py``."""
    p = ArgumentParser(
        prog="zoo validate",
        description="Evaluate models on an image folder (DIR/CLASS/*.png): top-1, top-5, loss "
        "and images/s, one CSV row per model.",
    )
    p.add_argument(
        "models", nargs="+", metavar="NAME_OR_CKPT", help="zoo model names and/or checkpoint files"
    )
    p.add_argument(
        "--data", required=True, metavar="DIR", help="image folder; DIR/val is used when it exists"
    )
    p.add_argument(
        "--split",
        default="auto",
        help="sub-folder to evaluate ('auto': val/ or validation/ if present, "
        "else DIR itself; '.' forces DIR)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="CKPT",
        help="weights for the named model (a zoo checkpoint)",
    )
    p.add_argument(
        "--pretrained",
        type=pretrained_option,
        default=None,
        metavar="TAG",
        help="registered weights for named models ('true' for the default tag)",
    )
    p.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="classifier size of a named model without checkpoint (default: 1000 "
        "with --pretrained, else the number of class folders)",
    )
    p.add_argument("--in-chans", type=int, choices=[1, 3], default=None)
    p.add_argument(
        "--img-size", type=image_size, default=None, help="override the model's input size"
    )
    p.add_argument("--batch-size", "-b", type=positive_int, default=128)
    p.add_argument("--workers", type=non_negative_int, default=2)
    p.add_argument("--device", type=device_option, default="auto")
    p.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default="off",
        help="mixed precision on GPU (default off: exact float32 figures)",
    )
    p.add_argument(
        "--results-file",
        type=output_file,
        default=None,
        metavar="CSV",
        help="append one row per model to this CSV (created if missing)",
    )
    p.add_argument("--no-verify-images", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def _eval_root(data: str | os.PathLike, split: str) -> Path:
    root = Path(data).expanduser()
    if split == "auto":
        for name in ("val", "validation"):
            if (root / name).is_dir():
                return root / name
        if (root / "train").is_dir():
            raise ImageFolderError(
                f"{str(root)!r} has a train/ folder but no val/ folder; pass --split train to "
                "evaluate on the training images, or point --data at the folder to evaluate"
            )
        return root
    return root if split in (".", "") else root / split


def load_model(
    spec: str,
    checkpoint: str | None = None,
    pretrained: str | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
) -> tuple[nn.Module, list[str] | None, Any, str]:
    """(model in eval mode, class names or None, data cfg source, weights description).

    ``spec`` is anything ``zoo.create`` takes; ``checkpoint`` loads a training checkpoint
    into the architecture ``spec`` names instead.
    """
    if checkpoint:
        model, _ = model_from_checkpoint(checkpoint, arch=spec)
        where = checkpoint
    elif is_file_spec(spec):
        model, where = create(spec), str(spec)
    else:
        flag: bool | str = True if pretrained in ("true", "True", "1") else (pretrained or False)
        if not flag:
            num_classes, in_chans = num_classes or 1000, in_chans or 3
        # With weights, an unset head and input are the weights' own (the resolver's rule).
        model = create(spec, pretrained=flag, num_classes=num_classes, in_chans=in_chans)
        where = f"pretrained:{pretrained}" if flag else "random-init"
    check_finite_weights(model, where)
    classes = list(model.pretrained_cfg.get("categories") or []) or None
    model.zoo_arch = model.default_cfg.get("architecture", spec)
    return model.eval(), classes, model, where


def _out_features(model: nn.Module) -> int:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear):
        return head.out_features
    if isinstance(head, nn.Conv2d):
        return head.out_channels
    return int(getattr(model, "num_classes", 0) or 0)


def validate(
    spec: str,
    data: str | os.PathLike,
    split: str = "auto",
    checkpoint: str | None = None,
    pretrained: str | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | None = None,
    batch_size: int = 128,
    workers: int = 2,
    info: DistInfo | None = None,
    amp: str = "off",
    verify: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate one model on an image folder and return its results row."""
    info = info or DistInfo()
    root = _eval_root(data, split)
    n_folders = len(check_class_folders(root, min_classes=1))
    if num_classes is None and not checkpoint and not is_file_spec(spec) and not pretrained:
        num_classes = n_folders
    model, model_classes, cfg_src, weights = load_model(
        spec, checkpoint, pretrained, num_classes, in_chans
    )
    chans = int(getattr(model, "in_chans", 0) or resolve_data_cfg(cfg_src)["input_size"][0])
    data_cfg = resolve_data_cfg(cfg_src, img_size, chans)
    ds = SafeImageFolder(
        root,
        transform=build_transform(data_cfg),
        in_chans=chans,
        verify=verify,
        min_classes=1,
        progress=progress,
    )
    tmap = class_index(list(ds.classes), model_classes, _out_features(model))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_skip_none,
        pin_memory=info.device.type == "cuda",
    )
    model.to(info.device)
    amp_dtype, _ = amp_settings(info.device, amp)
    name = getattr(model, "zoo_arch", None) or spec  # the architecture, as in timm's results
    m = evaluate(
        model, loader, info, amp_dtype, desc=f"validate {name}", progress=progress, target_map=tmap
    )
    return {
        "model": name,
        "top1": round(m["top1"], 3),
        "top1_err": round(100 - m["top1"], 3),
        "top5": round(m["top5"], 3),
        "top5_err": round(100 - m["top5"], 3),
        "param_count": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "img_size": data_cfg["input_size"][-1],
        "crop_pct": data_cfg["crop_pct"],
        "interpolation": data_cfg["interpolation"],
        "loss": round(m["loss"], 5),
        "images_per_sec": round(m["images_per_sec"], 1),
        "count": m["count"],
        "skipped": len(ds.skipped) + m["skipped"],
        "weights": weights,
    }


def write_results(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Append ``rows`` to a results CSV (header ``RESULT_FIELDS``), rewriting it atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old: list[dict[str, Any]] = []
    if path.exists() and path.stat().st_size:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != RESULT_FIELDS:
                raise ValueError(
                    f"{path} has columns {reader.fieldnames}, not zoo's results columns; "
                    "pass another --results-file"
                )
            old = list(reader)

    def write(f) -> None:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        w.writeheader()
        w.writerows(old)
        w.writerows({k: r.get(k, "") for k in RESULT_FIELDS} for r in rows)

    return atomic_write(path, write, mode="w", newline="")


def validate_models(
    pattern: str | Sequence[str],
    data: str | os.PathLike,
    batch_size: int = 128,
    workers: int = 4,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """``{arch: {"top1", "top5", ...}}`` for the default weights of every matching architecture.

    ``data`` is an ImageNet-style validation folder (one sub-folder per class, sorted in the
    order of the weights' 1000 outputs). Architectures whose weights cannot be loaded (e.g.
    offline without a cached file) are reported on stderr and left out.
    """
    arches = [a for a in list_models(pattern) if list_tags(a)]
    info = init_distributed(device)
    results: dict[str, dict[str, float]] = {}
    for arch in arches:
        try:
            row = validate(
                arch,
                data,
                pretrained="true",
                batch_size=batch_size,
                workers=workers,
                info=info,
                progress=progress,
            )
        except Exception as e:  # one model's missing weights must not stop the others
            print(f"zoo validate: skipped {arch}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        results[arch] = {k: row[k] for k in ("top1", "top5", "loss", "count", "images_per_sec")}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo validate``: evaluate every model given; returns 0, or 2 if any failed."""
    return run_command("zoo validate", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint and len(args.models) != 1:
        build_parser().error("--checkpoint goes with exactly one model name")
    info = init_distributed(args.device)
    rows, failed = [], 0
    for spec in args.models:
        try:
            row = validate(
                spec,
                args.data,
                args.split,
                args.checkpoint,
                args.pretrained,
                args.num_classes,
                args.in_chans,
                args.img_size,
                args.batch_size,
                args.workers,
                info,
                args.amp,
                verify=not args.no_verify_images,
                progress=not args.no_progress,
            )
        except (
            FileNotFoundError,
            NotADirectoryError,
            ImageFolderError,
            WeightsError,
            ValueError,
        ) as e:
            print(f"zoo validate: error: {spec}: {e}", file=sys.stderr, flush=True)
            failed += 1
            continue
        rows.append(row)
        skipped = f", {row['skipped']} unreadable skipped" if row["skipped"] else ""
        print(
            f"{row['model']}: top1 {row['top1']:.2f}% top5 {row['top5']:.2f}% loss "
            f"{row['loss']:.4f} | {row['count']} images at {row['img_size']}px, "
            f"{row['images_per_sec']:.1f} img/s | {row['param_count']}M params{skipped}",
            flush=True,
        )
    if rows and args.results_file:
        print(f"results appended to {write_results(args.results_file, rows)}", flush=True)
    return 2 if failed else 0
