"""The ``zoo train`` / ``zoo finetune`` command: wires data, model, optimizer and ``fit``.

One code path for one process or many (``torchrun``): SGD or AdamW, per-step cosine or
linear decay after a linear warm-up, label smoothing, an EMA of the weights
(``--model-ema``), mixed precision on GPU, optional knowledge distillation, a
frozen-backbone phase and two-step training of binary nets
(``--binary-steps 2``, see ``zoo.train.binary_recipe``). ``--resume`` continues from
``last.pt`` and reproduces an uninterrupted run exactly.

Entry points: ``build_parser()`` / ``main(argv)`` (``zoo train``); ``train(args)`` from Python.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.data.fashion_mnist import FashionMNISTMissingError
from zoo.data.folder import ImageFolderError
from zoo.pretrained import WeightsError
from zoo.train.args import build_train_parser
from zoo.train.binary_recipe import plan_from_args, run_steps
from zoo.train.checkpoint import CheckpointError, state_digest, unwrap_model
from zoo.train.data import load_datasets, make_loaders, run_data_cfg, set_transforms
from zoo.train.distill import DistillationLoss, load_teacher
from zoo.train.distributed import DistInfo, cleanup_distributed, init_distributed
from zoo.train.ema import ModelEma
from zoo.train.engine import amp_settings
from zoo.train.model_setup import build_model, default_in_chans, model_for_resume
from zoo.train.optim import create_optimizer, create_scheduler, default_lr, default_weight_decay
from zoo.train.resume import check_resumable, checkpoint_meta, resolve_resume
from zoo.train.rundir import claim_output
from zoo.utils import atomic_write

__all__ = [
    "build_parser",
    "train",
    "run_cli",
    "main",
    "seed_everything",
    "output_dir",
    "make_loss_fn",
]

# The errors a user can cause with arguments or data: one line on stderr, exit code 2.
USER_ERRORS = (
    FileNotFoundError,
    NotADirectoryError,
    ImageFolderError,
    CheckpointError,
    FashionMNISTMissingError,
    WeightsError,
    FloatingPointError,
    ValueError,
)

build_parser = build_train_parser


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(
    args: argparse.Namespace,
    command: str = "train",
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train as the parsed ``args`` say; returns ``fit``'s result plus the output folder.

    The output folder is locked for the run (a second run into it is refused) and must not
    hold an earlier run unless ``--resume`` continues it or ``--force`` starts over.
    """
    info = init_distributed(args.device)
    try:
        out = output_dir(args, command)
        resume = resolve_resume(args, out)
        lock = claim_output(out, resume, bool(getattr(args, "force", False)), info)
        try:
            return _train(args, command, info, on_epoch_end, out, resume)
        finally:
            if lock is not None:
                lock.release()
    finally:
        cleanup_distributed()


def output_dir(args: argparse.Namespace, command: str) -> Path:
    """``--output``, else ``output/<command>/<model>``."""
    return Path(args.output or f"output/{command}/{args.model.replace(':', '_')}")


def make_loss_fn(args: argparse.Namespace, teacher: nn.Module | None) -> nn.Module:
    """Cross-entropy with label smoothing, or the distillation loss when there is a teacher."""
    if teacher is not None:
        return DistillationLoss(args.kd_temperature, args.kd_alpha, args.label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)


def _optimizer_and_schedule(
    args: argparse.Namespace, model: nn.Module, steps: int, finetune: bool, epochs: int
) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer with the command's default lr / weight decay and its per-step schedule
    over ``epochs`` epochs (the whole run, or one step of two-step training)."""
    lr = args.lr if args.lr is not None else default_lr(args.opt, finetune)
    wd = args.weight_decay if args.weight_decay is not None else default_weight_decay(args.opt)
    optimizer = create_optimizer(model, args.opt, lr, wd, args.momentum, args.nesterov)
    scheduler = create_scheduler(
        optimizer,
        epochs * steps,
        round(args.warmup_epochs * steps),
        args.warmup_factor,
        args.min_lr_factor,
        getattr(args, "lr_schedule", "cosine"),
    )
    return optimizer, scheduler


def _train(
    args, command, info: DistInfo, on_epoch_end, out: Path, resume: Path | None
) -> dict[str, Any]:
    # The order of the steps below fixes which random numbers each draws: keep it so that
    # runs stay reproducible (and resumable) across versions.
    progress = not args.no_progress
    plan = plan_from_args(args)  # a bad split of the epochs into steps fails before any work
    default_chans = default_in_chans(args.model)  # fails early for an unknown model name
    in_chans = args.in_chans or default_chans
    seed_everything(args.seed)

    train_ds, val_ds, classes, data_desc = load_datasets(args, in_chans, info, progress)
    num_classes = len(classes)
    resume_ckpt = check_resumable(resume, args, classes) if resume is not None else None
    if resume_ckpt is None:
        model = build_model(
            args.model, num_classes, in_chans, args.pretrained, info, dict(args.model_kwargs)
        )
    else:  # weights come from the checkpoint: no need to load (or download) pretrained ones
        model = model_for_resume(args.model, num_classes, in_chans, resume_ckpt)
    data_cfg = run_data_cfg(args, model, in_chans, resume_ckpt)
    seed_everything(args.seed + info.rank)  # same model everywhere, own augmentation per rank
    set_transforms(train_ds, val_ds, data_cfg, args)
    model.to(info.device)
    ema = ModelEma(model, args.model_ema_decay) if getattr(args, "model_ema", False) else None

    teacher = None
    if args.teacher:
        teacher = load_teacher(args.teacher, num_classes, in_chans, classes, info.device)
    loss_fn = make_loss_fn(args, teacher)
    train_loader, val_loader = make_loaders(train_ds, val_ds, args, info)

    def make_optimizer(epochs: int) -> tuple[torch.optim.Optimizer, Any]:
        return _optimizer_and_schedule(
            args, model, len(train_loader), command == "finetune", epochs
        )

    amp_dtype, scaler = amp_settings(info.device, args.amp)
    meta = checkpoint_meta(args, command, model, num_classes, in_chans, classes, data_cfg)
    if info.is_main:
        skipped = data_desc.get("skipped") or []
        val_from = data_desc.get("val") or data_desc.get("split")
        print(
            f"{command} {args.model}: {len(train_ds)} train / {len(val_ds)} val images, "
            f"{num_classes} classes (validation: {val_from}), input "
            f"{data_cfg['input_size']}, {info.world_size} process(es) "
            f"on {info.device}"
            + (f", {len(skipped)} unreadable image(s) skipped" if skipped else ""),
            flush=True,
        )
    fit_kwargs = dict(
        train_loader=train_loader,
        val_loader=val_loader,
        loss_fn=loss_fn,
        output=out,
        amp_dtype=amp_dtype,
        teacher=teacher,
        freeze_epochs=getattr(args, "freeze_epochs", 0),
        progress=progress,
        grad_clip=args.grad_clip,
        on_epoch_end=on_epoch_end,
    )
    resumed = (resume, resume_ckpt, args) if resume_ckpt is not None else None
    result = run_steps(
        plan, model, make_optimizer, meta, fit_kwargs, resumed, scaler, info, ema=ema
    )
    if args.rank_digest:
        digest = state_digest(unwrap_model(model).state_dict())
        _write_json_atomic(out / f"rank{info.rank}.digest.json", digest)
    if info.is_main and result["best_epoch"] >= 0:
        print(
            f"best val top1 {result['best_top1']:.2f}% at epoch {result['best_epoch'] + 1}; "
            f"checkpoints in {out}",
            flush=True,
        )
    result.update(
        output=str(out), classes=list(classes), skipped_images=data_desc.get("skipped", [])
    )
    return result


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True), mode="w")


def run_cli(args: argparse.Namespace, command: str) -> int:
    """Run and turn the expected user errors into a one-line message and exit code 2."""
    try:
        train(args, command)
    except USER_ERRORS as e:
        print(f"zoo {command}: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"zoo {command}: interrupted; continue with --resume", file=sys.stderr, flush=True)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo train``: parse ``argv`` and train; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(args, "train")
