"""The training engine behind ``zoo train`` and ``zoo finetune``, and the train command.

One code path for one process or many (``torchrun``): SGD or AdamW, per-step cosine
schedule with linear warm-up, label smoothing, mixed precision on GPU, optional
knowledge distillation and a frozen-backbone phase. Every epoch ends with an atomic
``last.pt`` (model, optimizer, scheduler, scaler and every rank's RNG state), ``best.pt``
when validation top-1 improves, and a row in ``summary.csv``; ``--resume`` continues
from ``last.pt`` and reproduces an uninterrupted run exactly.

Entry points: ``build_parser()`` / ``main(argv)`` (``scripts/train.py``, ``zoo train``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from zoo.data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from zoo.data.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from zoo.data.fashion_mnist import FashionMNIST
from zoo.data.fashion_mnist import data_config as fashion_mnist_data_config
from zoo.data.folder import (
    TransformSubset,
    build_transform,
    collate_skip_none,
    load_splits,
    resolve_data_cfg,
)
from zoo.train.checkpoint import (
    CheckpointError,
    create_model,
    get_rng_state,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    set_rng_state,
    state_digest,
    unwrap_model,
)
from zoo.train.distill import DistillationLoss, load_teacher
from zoo.train.distributed import (
    DistInfo,
    ShardSampler,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    distribute_bn,
    init_distributed,
)
from zoo.utils import atomic_write

__all__ = [
    "param_groups",
    "create_optimizer",
    "CosineWarmup",
    "create_scheduler",
    "topk_correct",
    "amp_settings",
    "classifier_parameters",
    "set_backbone_frozen",
    "train_one_epoch",
    "evaluate",
    "fit",
    "add_training_args",
    "run",
    "build_parser",
    "main",
]

# --------------------------------------------------------------------------------------
# Optimizer and schedule


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; biases and norm scales are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def create_optimizer(
    model: nn.Module,
    opt: str = "sgd",
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over ``param_groups``."""
    groups = param_groups(model, weight_decay)
    opt = opt.lower()
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {opt!r}; use 'sgd' or 'adamw'")


class CosineWarmup:
    """LR factor per step: linear warm-up from ``warmup_factor`` to 1, cosine to ``min_factor``.

    A plain object (not a lambda) so ``LambdaLR.state_dict`` stores its settings as numbers.
    """

    def __init__(
        self,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_factor: float = 0.01,
        min_factor: float = 0.0,
    ) -> None:
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps))
        self.warmup_factor = float(warmup_factor)
        self.min_factor = float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_factor: float = 0.01,
    min_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step cosine schedule with warm-up (call ``.step()`` after every optimizer step)."""
    fn = CosineWarmup(total_steps, warmup_steps, warmup_factor, min_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


# --------------------------------------------------------------------------------------
# Small helpers


def topk_correct(
    logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> list[int]:
    """How many rows have the target among the k highest logits, for each k (k capped at C)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(targets[:, None])
    return [int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def amp_settings(
    device: torch.device, amp: str = "auto"
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype or None, GradScaler or None): mixed precision only where a GPU exists.

    ``auto`` picks bfloat16 when the GPU supports it (no scaler needed), else float16 with
    a gradient scaler; on CPU mixed precision is off.
    """
    if amp == "off" or device.type != "cuda":
        if amp in ("bf16", "fp16") and device.type != "cuda":
            warnings.warn(f"--amp {amp} needs a CUDA GPU; training in float32", stacklevel=2)
        return None, None
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return torch.bfloat16, None
    if amp == "fp16":
        return torch.float16, torch.amp.GradScaler("cuda")
    raise ValueError(f"unknown --amp {amp!r}; use auto, off, bf16 or fp16")


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the final classifier (``get_classifier()``, cfg name, or last Linear)."""
    model = unwrap_model(model)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        name = getattr(model, "default_cfg", {}).get("classifier")
        if name:
            head = model.get_submodule(name)
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(
                f"cannot find the classifier of {type(model).__name__} to keep trainable"
            )
        head = linears[-1]
    return list(head.parameters())


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) every parameter except the classifier's."""
    model = unwrap_model(model)
    head = {id(p) for p in classifier_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in head)
    model._zoo_backbone_frozen = frozen


def _train_mode(model: nn.Module) -> None:
    """``model.train()``, but BatchNorm layers of a frozen backbone keep their statistics."""
    model.train()
    inner = unwrap_model(model)
    if getattr(inner, "_zoo_backbone_frozen", False):
        head = {id(p) for p in classifier_parameters(inner)}
        for m in inner.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                id(p) in head for p in m.parameters()
            ):
                m.eval()


def _unpack(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    x, y = batch[0], batch[1]
    return x, y, int(batch[2]) if len(batch) > 2 else 0


def _bar(iterable: Any, desc: str, progress: bool, total: int | None = None) -> Any:
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        leave=False,
        dynamic_ncols=True,
        disable=(not progress) or None,
    )


# --------------------------------------------------------------------------------------
# Epoch loops


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    info: DistInfo,
    loss_fn: Callable,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    teacher: nn.Module | None = None,
    desc: str = "train",
    progress: bool = True,
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """One pass over ``loader``; returns loss, top-1, images and skipped images (all ranks)."""
    _train_mode(model)
    dev = info.device
    sums = [0.0, 0.0, 0.0, 0.0]  # loss*n, correct, n, skipped
    start = time.perf_counter()
    bar = _bar(loader, desc, progress and info.is_main)
    for step, batch in enumerate(bar):
        x, y, skipped = _unpack(batch)
        sums[3] += skipped
        if y.numel() == 0:
            if info.distributed:
                raise RuntimeError(
                    "a whole batch was unreadable under torchrun; rerun with image verification "
                    "on (drop --no-verify-images) so bad files are removed up front"
                )
            continue
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with _autocast(dev, amp_dtype):
            logits = model(x)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = loss_fn(logits, t_logits, y)
            else:
                loss = loss_fn(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {step} of {desc}; lower --lr or turn off --amp"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        scheduler.step()
        n = y.shape[0]
        sums[0] += float(loss.detach()) * n
        sums[1] += topk_correct(logits.detach(), y, (1,))[0]
        sums[2] += n
        if info.is_main and progress:
            bar.set_postfix(
                loss=f"{sums[0] / sums[2]:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}"
            )
    elapsed = time.perf_counter() - start
    loss_sum, correct, count, skipped = all_reduce_sum(sums, info)
    return {
        "loss": loss_sum / max(count, 1),
        "top1": 100.0 * correct / max(count, 1),
        "count": int(count),
        "skipped": int(skipped),
        "seconds": elapsed,
        "lr": optimizer.param_groups[0]["lr"],
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    info: DistInfo | None = None,
    amp_dtype: torch.dtype | None = None,
    desc: str = "val",
    progress: bool = True,
    target_map: torch.Tensor | None = None,
) -> dict[str, float]:
    """Top-1/top-5 (%), mean cross-entropy, image count and images/s over ``loader``.

    Under torchrun each rank evaluates its own shard and the sums are added up exactly.
    ``target_map`` translates dataset labels to the model's class indices.
    """
    info = info or DistInfo()
    model.eval()
    dev = info.device
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss sum, top1, top5, n, skipped
    start = time.perf_counter()
    for batch in _bar(loader, desc, progress and info.is_main):
        x, y, skipped = _unpack(batch)
        sums[4] += skipped
        if y.numel() == 0:
            continue
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if target_map is not None:
            y = target_map.to(dev)[y]
        with _autocast(dev, amp_dtype):
            logits = model(x)
        logits = logits.float()
        sums[0] += float(F.cross_entropy(logits, y, reduction="sum"))
        c1, c5 = topk_correct(logits, y, (1, 5))
        sums[1] += c1
        sums[2] += c5
        sums[3] += y.shape[0]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - start
    loss_sum, c1, c5, n, skipped = all_reduce_sum(sums, info)
    return {
        "top1": 100.0 * c1 / max(n, 1),
        "top5": 100.0 * c5 / max(n, 1),
        "loss": loss_sum / max(n, 1),
        "count": int(n),
        "skipped": int(skipped),
        "seconds": elapsed,
        "images_per_sec": n / elapsed if elapsed > 0 else float("nan"),
    }


# --------------------------------------------------------------------------------------
# Fitting over epochs with checkpoints


def _wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _write_csv_atomic(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    def write(f) -> None:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)

    atomic_write(path, write, mode="w", newline="")


_SUMMARY_HEADER = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "train_seconds",
    "frozen",
]


def _append_summary(path: Path, epoch: int, lr: float, tr: dict, va: dict, frozen: bool) -> None:
    """Rewrite ``summary.csv`` with rows before ``epoch`` plus this one (resume-safe)."""
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) < epoch]
    rows.append(
        [
            epoch,
            f"{lr:.6g}",
            f"{tr['loss']:.5f}",
            f"{tr['top1']:.3f}",
            f"{va['loss']:.5f}",
            f"{va['top1']:.3f}",
            f"{va['top5']:.3f}",
            f"{tr['seconds']:.2f}",
            int(frozen),
        ]
    )
    _write_csv_atomic(path, _SUMMARY_HEADER, rows)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    info: DistInfo,
    epochs: int,
    loss_fn: Callable,
    output: str | os.PathLike | None = None,
    ckpt_meta: dict[str, Any] | None = None,
    start_epoch: int = 0,
    best: tuple[float, int] = (-1.0, -1),
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    teacher: nn.Module | None = None,
    freeze_epochs: int = 0,
    progress: bool = True,
    grad_clip: float = 0.0,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for epochs ``start_epoch..epochs-1``, checkpointing after each.

    ``model`` is the plain module (DDP wrapping happens here, once per freeze phase, so
    parameters unfrozen later are synchronised too). ``on_epoch_end(epoch, metrics)`` runs
    after the epoch's checkpoint is on disk. Returns the last metrics and the best top-1.
    """
    out = Path(output) if output is not None else None
    if out is not None and info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    best_top1, best_epoch = best
    wrapped, phase = None, None
    history = []
    for epoch in range(start_epoch, epochs):
        frozen = epoch < freeze_epochs
        if frozen != phase:
            set_backbone_frozen(model, frozen)
            wrapped, phase = _wrap(model, info), frozen
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        tag = f"epoch {epoch + 1}/{epochs}" + (" (backbone frozen)" if frozen else "")
        tr = train_one_epoch(
            wrapped,
            train_loader,
            optimizer,
            scheduler,
            info,
            loss_fn,
            scaler,
            amp_dtype,
            teacher,
            desc=f"{tag} train",
            progress=progress,
            grad_clip=grad_clip,
        )
        distribute_bn(model, info)
        va = evaluate(model, val_loader, info, amp_dtype, desc=f"{tag} val", progress=progress)
        improved = va["top1"] > best_top1
        if improved:
            best_top1, best_epoch = va["top1"], epoch
        rng = all_gather_objects(get_rng_state(), info)
        metrics = {
            "epoch": epoch,
            "train": tr,
            "val": va,
            "best_top1": best_top1,
            "best_epoch": best_epoch,
            "frozen": frozen,
        }
        history.append(metrics)
        if info.is_main:
            if out is not None:
                payload = {
                    **(ckpt_meta or {}),
                    "epoch": epoch,
                    "next_epoch": epoch + 1,
                    "state_dict": unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": rng,
                    "world_size": info.world_size,
                    "best_top1": best_top1,
                    "best_epoch": best_epoch,
                    "metrics": {"train": tr, "val": va},
                }
                save_checkpoint(out / "last.pt", payload)
                if improved:
                    save_checkpoint(out / "best.pt", payload)
                _append_summary(out / "summary.csv", epoch, tr["lr"], tr, va, frozen)
            skipped = f"  skipped {tr['skipped']} unreadable" if tr["skipped"] else ""
            print(
                f"{tag}: train loss {tr['loss']:.4f} top1 {tr['top1']:.2f}% | val loss "
                f"{va['loss']:.4f} top1 {va['top1']:.2f}% top5 {va['top5']:.2f}% | "
                f"lr {tr['lr']:.3g} | {tr['seconds']:.1f}s{' *best*' if improved else ''}{skipped}",
                flush=True,
            )
        barrier(info)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return {"history": history, "best_top1": best_top1, "best_epoch": best_epoch}


# --------------------------------------------------------------------------------------
# Command line (train and, with extra options, finetune)


def add_training_args(parser: argparse.ArgumentParser, finetune: bool = False) -> None:
    """Options shared by ``zoo train`` and ``zoo finetune`` (defaults differ slightly)."""
    parser.add_argument("model", help="zoo model name (see `zoo list`) or package.module:function")
    src = parser.add_argument_group("data")
    which = src.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--data", metavar="DIR", help="image folder: DIR/CLASS/*.png, or DIR/train and DIR/val"
    )
    which.add_argument(
        "--dataset", choices=["fashion-mnist"], help="built-in dataset read from the system package"
    )
    src.add_argument(
        "--dataset-root",
        default=FASHION_MNIST_ROOT,
        help="folder of the Fashion-MNIST idx.gz files (default: %(default)s)",
    )
    src.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of each class held out when DIR has no val/ folder",
    )
    src.add_argument("--split-seed", type=int, default=0, help="seed of that split")
    src.add_argument(
        "--train-subset",
        type=int,
        default=0,
        metavar="N",
        help="train on N images picked with --seed (0: all)",
    )
    src.add_argument(
        "--val-subset",
        type=int,
        default=0,
        metavar="N",
        help="validate on N images picked with --seed (0: all)",
    )
    src.add_argument(
        "--img-size", type=int, default=None, help="input resolution (default: the model's)"
    )
    src.add_argument(
        "--in-chans",
        type=int,
        default=None,
        choices=[1, 3],
        help="input channels; images are converted (default: the model's, 3)",
    )
    src.add_argument(
        "--scale-min",
        type=float,
        default=0.35 if finetune else 0.08,
        help="lower bound of RandomResizedCrop's area scale",
    )
    src.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    src.add_argument("--no-aug", action="store_true", help="train on the eval transform")
    src.add_argument("--workers", type=int, default=2, help="data loading processes per rank")
    src.add_argument(
        "--no-verify-images",
        action="store_true",
        help="skip the up-front readability check of every image",
    )

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=10 if finetune else 90)
    opt.add_argument(
        "--batch-size",
        "-b",
        type=int,
        default=64 if finetune else 128,
        help="images per process and step",
    )
    opt.add_argument("--opt", choices=["sgd", "adamw"], default="adamw" if finetune else "sgd")
    opt.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default: sgd 0.1 train / 0.01 finetune, adamw 1e-3)",
    )
    opt.add_argument("--momentum", type=float, default=0.9)
    opt.add_argument("--nesterov", action="store_true")
    opt.add_argument(
        "--weight-decay", type=float, default=None, help="(default: sgd 1e-4, adamw 0.05)"
    )
    opt.add_argument("--warmup-epochs", type=float, default=0.0 if finetune else 1.0)
    opt.add_argument(
        "--warmup-factor", type=float, default=0.01, help="lr factor at the first warm-up step"
    )
    opt.add_argument(
        "--min-lr-factor", type=float, default=0.0, help="final lr as a fraction of --lr"
    )
    opt.add_argument("--label-smoothing", type=float, default=0.1)
    opt.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0: off)")
    opt.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default="auto",
        help="mixed precision on GPU (auto: bf16 if supported, else fp16)",
    )

    kd = parser.add_argument_group("initialisation and distillation")
    if finetune:
        kd.add_argument(
            "--pretrained",
            default="auto",
            metavar="TAG_OR_PATH",
            help="weights to start from: 'auto' (the model's default weights if "
            "any), a weight tag, a weights file or a zoo checkpoint",
        )
        kd.add_argument(
            "--no-pretrained",
            dest="pretrained",
            action="store_const",
            const=None,
            help="start from random initialisation",
        )
        kd.add_argument(
            "--freeze-epochs",
            type=int,
            default=0,
            metavar="N",
            help="train only the new classifier for the first N epochs",
        )
    else:
        kd.add_argument(
            "--pretrained",
            default=None,
            metavar="TAG_OR_PATH",
            help="start from these weights (tag, weights file or zoo checkpoint)",
        )
    kd.add_argument(
        "--teacher",
        default=None,
        metavar="NAME_OR_CKPT",
        help="distil from this teacher (a zoo checkpoint trained on the same classes)",
    )
    kd.add_argument("--kd-temperature", type=float, default=4.0, metavar="T")
    kd.add_argument(
        "--kd-alpha",
        type=float,
        default=0.5,
        metavar="A",
        help="weight of the soft (teacher) term; 1-A goes to the labels",
    )

    run_g = parser.add_argument_group("run")
    run_g.add_argument(
        "--output",
        "-o",
        default=None,
        help="folder for last.pt, best.pt, summary.csv (default: output/<command>/<model>)",
    )
    run_g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="continue from CKPT (no value: OUTPUT/last.pt if it exists)",
    )
    run_g.add_argument("--seed", type=int, default=42)
    run_g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run_g.add_argument("--no-progress", action="store_true", help="no progress bars")
    run_g.add_argument(
        "--rank-digest",
        action="store_true",
        help="at the end, each rank writes OUTPUT/rank<R>.digest.json with a "
        "sha256 per tensor (to check that ranks hold identical weights)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Parser of ``zoo train`` / ``scripts/train.py``."""
    p = argparse.ArgumentParser(
        prog="zoo train",
        description="Train a zoo model on an image folder or Fashion-MNIST; run it under "
        "`torchrun --nproc_per_node=N` for data-parallel training.",
    )
    add_training_args(p, finetune=False)
    return p


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _subset(ds: TransformSubset, n: int, seed: int) -> TransformSubset:
    if not n or n >= len(ds):
        return ds
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return TransformSubset(ds.dataset, [ds.indices[i] for i in sorted(pick.tolist())], ds.transform)


def _datasets(args: argparse.Namespace, in_chans: int, info: DistInfo, progress: bool):
    """Train/val datasets without transforms yet, their class names and a description."""
    if args.dataset == "fashion-mnist":
        train_base = FashionMNIST(args.dataset_root, train=True)
        val_base = FashionMNIST(args.dataset_root, train=False)
        train = TransformSubset(train_base, range(len(train_base)), None)
        val = TransformSubset(val_base, range(len(val_base)), None)
        classes, desc = list(FASHION_MNIST_CLASSES), {"data": f"fashion-mnist:{args.dataset_root}"}
    else:
        train, val, classes, desc = load_splits(
            args.data,
            None,
            None,
            in_chans=in_chans,
            val_fraction=args.val_fraction,
            seed=args.split_seed,
            verify=not args.no_verify_images,
            progress=progress and info.is_main,
        )
        desc = {"data": str(args.data), **desc}
    train = _subset(train, args.train_subset, args.seed)
    val = _subset(val, args.val_subset, args.seed + 1)
    return train, val, classes, desc


def _default_in_chans(name: str) -> int:
    """The model's default input channels; raises UnknownModelError for unknown names."""
    if ":" in name:
        return 3
    from zoo.registry import get_cfg

    return int(get_cfg(name).input_size[0])


def _has_weights(name: str) -> bool:
    try:
        from zoo.pretrained import list_tags
    except ImportError:
        return False
    try:
        return bool(list_tags(name.partition(".")[0]))
    except Exception:  # unknown arch etc.: treated as "no weights"
        return False


def build_model(
    name: str, num_classes: int, in_chans: int, pretrained: str | None, info: DistInfo
) -> nn.Module:
    """Create the model; ``pretrained`` may be a weight tag, a file, a zoo checkpoint or 'auto'.

    A zoo checkpoint with another number of classes has its classifier replaced (the
    fine-tuning case); registry weights are loaded by ``zoo.create`` with the head dropped
    when the class count differs.
    """
    if pretrained == "auto":
        reason = "no pretrained weights are registered for it"
        if _has_weights(name):
            from zoo.pretrained import DownloadError

            try:
                return create_model(name, num_classes, in_chans, pretrained=True)
            except DownloadError as e:  # offline and not cached: say so, train from scratch
                reason = f"its default weights are not available here ({str(e).splitlines()[0]})"
        if info.is_main:
            print(
                f"note: starting {name!r} from random initialisation: {reason}. Pass "
                "--pretrained FILE to use a local weights file, or --no-pretrained.",
                flush=True,
            )
        pretrained = None
    if pretrained and Path(pretrained).expanduser().is_file():
        path = Path(pretrained).expanduser()
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            ckpt = None
        if ckpt is not None:
            if ckpt["arch"] != name:
                raise CheckpointError(
                    f"--pretrained {str(path)!r} holds a {ckpt['arch']!r} model, not {name!r}"
                )
            model = create_model(
                name,
                num_classes=int(ckpt["num_classes"]),
                in_chans=in_chans,
                arch_overrides=ckpt.get("arch_overrides"),
            )
            load_model_state(model, ckpt["state_dict"], source=f"checkpoint {str(path)!r}")
            if int(ckpt["num_classes"]) != num_classes:
                replace_classifier(model, num_classes)
            if ckpt.get("data_cfg"):  # keep the preprocessing the weights were trained with
                model.pretrained_cfg = {**getattr(model, "default_cfg", {}), **ckpt["data_cfg"]}
            return model
        return create_model(name, num_classes=num_classes, in_chans=in_chans, pretrained=str(path))
    flag: bool | str = True if pretrained in ("true", "True", "1") else (pretrained or False)
    return create_model(name, num_classes=num_classes, in_chans=in_chans, pretrained=flag)


def replace_classifier(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier for ``num_classes`` (``reset_classifier`` or the last Linear)."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return
    parent, attr, old = None, None, None
    for m in model.modules():
        for child_name, child in m.named_children():
            if isinstance(child, nn.Linear):
                parent, attr, old = m, child_name, child
    if old is None:
        raise ValueError(f"cannot find a classifier to replace in {type(model).__name__}")
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


_RESUME_KEYS = (
    "epochs",
    "batch_size",
    "opt",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "img_size",
    "train_subset",
    "seed",
    "freeze_epochs",
    "teacher",
)


def _plain(v: Any) -> Any:
    return v if isinstance(v, int | float | str | bool | type(None)) else str(v)


def _resolve_resume(args: argparse.Namespace, out: Path) -> Path | None:
    if args.resume is None:
        return None
    if args.resume == "auto":
        path = out / "last.pt"
        if not path.is_file():
            print(f"note: nothing to resume in {out} (no last.pt); starting afresh", flush=True)
            return None
        return path
    path = Path(args.resume).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--resume {str(path)!r} does not exist; pass OUTPUT/last.pt")
    return path


def run(
    args: argparse.Namespace,
    command: str = "train",
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train as the parsed ``args`` say; returns ``fit``'s result plus the output folder."""
    info = init_distributed(args.device)
    try:
        return _run(args, command, info, on_epoch_end)
    finally:
        cleanup_distributed()


def _run(args, command, info, on_epoch_end):
    progress = not args.no_progress
    out = Path(args.output or f"output/{command}/{args.model.replace(':', '_')}")
    finetune = command == "finetune"
    default_chans = _default_in_chans(args.model)  # fails early for an unknown model name
    in_chans = args.in_chans or default_chans
    _seed_everything(args.seed)

    train_ds, val_ds, classes, data_desc = _datasets(args, in_chans, info, progress)
    num_classes = len(classes)
    resume = _resolve_resume(args, out)
    resume_ckpt = _check_resumable(resume, args, classes) if resume is not None else None
    if resume_ckpt is None:
        model = build_model(args.model, num_classes, in_chans, args.pretrained, info)
        own_cfg = args.dataset == "fashion-mnist" and not args.pretrained
        # From scratch on Fashion-MNIST: its own statistics, not ImageNet's, and no crop.
        data_cfg = resolve_data_cfg(
            fashion_mnist_data_config(in_chans=in_chans) if own_cfg else model,
            args.img_size,
            in_chans,
        )
    else:  # weights come from the checkpoint: no need to load (or download) pretrained ones
        model = create_model(
            args.model, num_classes, in_chans, arch_overrides=resume_ckpt.get("arch_overrides")
        )
        data_cfg = resolve_data_cfg(resume_ckpt.get("data_cfg") or model, args.img_size, in_chans)
    _seed_everything(args.seed + info.rank)  # same model everywhere, own augmentation per rank
    eval_tf = build_transform(data_cfg, train=False)
    train_ds.transform = (
        eval_tf
        if args.no_aug
        else build_transform(data_cfg, train=True, scale_min=args.scale_min, hflip=args.hflip)
    )
    val_ds.transform = eval_tf
    model.to(info.device)

    teacher = None
    if args.teacher:
        teacher = load_teacher(args.teacher, num_classes, in_chans, classes, info.device)
    label_smoothing = args.label_smoothing
    if teacher is not None:
        loss_fn = DistillationLoss(args.kd_temperature, args.kd_alpha, label_smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    sampler = DistributedSampler(
        train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed
    )
    loader_kw = dict(
        num_workers=args.workers,
        collate_fn=collate_skip_none,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,
    )
    per_rank = len(sampler)
    if per_rank < 1:
        raise ValueError(
            f"no training images for rank {info.rank}; add images or use fewer processes"
        )
    train_loader = DataLoader(
        train_ds,
        batch_size=args.batch_size,
        sampler=sampler,
        drop_last=per_rank > args.batch_size,
        **loader_kw,
    )
    val_loader = DataLoader(
        val_ds,
        batch_size=args.batch_size,
        sampler=ShardSampler(len(val_ds), info.rank, info.world_size),
        **loader_kw,
    )

    lr = (
        args.lr
        if args.lr is not None
        else (1e-3 if args.opt == "adamw" else (0.01 if finetune else 0.1))
    )
    wd = (
        args.weight_decay
        if args.weight_decay is not None
        else (0.05 if args.opt == "adamw" else 1e-4)
    )
    optimizer = create_optimizer(model, args.opt, lr, wd, args.momentum, args.nesterov)
    steps = len(train_loader)
    scheduler = create_scheduler(
        optimizer,
        args.epochs * steps,
        round(args.warmup_epochs * steps),
        args.warmup_factor,
        args.min_lr_factor,
    )
    amp_dtype, scaler = amp_settings(info.device, args.amp)

    arg_record = {k: _plain(v) for k, v in vars(args).items()}
    meta = {
        "arch": args.model,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "class_names": list(classes),
        "data_cfg": {k: _plain_cfg(v) for k, v in data_cfg.items()},
        "arch_overrides": dict(getattr(model, "zoo_arch_overrides", None) or {}),
        "args": arg_record,
        "command": command,
    }

    start_epoch, best = 0, (-1.0, -1)
    if resume_ckpt is not None:
        start_epoch, best = _restore(
            resume, resume_ckpt, args, model, optimizer, scheduler, scaler, info
        )
    elif info.is_main and (out / "last.pt").exists() and args.resume is None:
        print(
            f"note: {out / 'last.pt'} exists and will be overwritten; pass --resume to continue it",
            flush=True,
        )
    if info.is_main:
        skipped = data_desc.get("skipped") or []
        print(
            f"{command} {args.model}: {len(train_ds)} train / {len(val_ds)} val images, "
            f"{num_classes} classes, input {data_cfg['input_size']}, {info.world_size} process(es) "
            f"on {info.device}"
            + (f", {len(skipped)} unreadable image(s) skipped" if skipped else ""),
            flush=True,
        )
    result = fit(
        model,
        train_loader,
        val_loader,
        optimizer,
        scheduler,
        info,
        args.epochs,
        loss_fn,
        output=out,
        ckpt_meta=meta,
        start_epoch=start_epoch,
        best=best,
        scaler=scaler,
        amp_dtype=amp_dtype,
        teacher=teacher,
        freeze_epochs=getattr(args, "freeze_epochs", 0),
        progress=progress,
        grad_clip=args.grad_clip,
        on_epoch_end=on_epoch_end,
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


def _plain_cfg(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else _plain(v)


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True), mode="w")


def _check_resumable(path: Path, args: argparse.Namespace, classes: Sequence[str]) -> dict:
    """Load a last.pt and check it belongs to this model and data before anything is built."""
    ckpt = load_checkpoint(path)
    if ckpt["arch"] != args.model:
        raise CheckpointError(
            f"--resume {str(path)!r} was written for model {ckpt['arch']!r}, not {args.model!r}; "
            "pass the same model name or start a new --output"
        )
    if list(ckpt.get("class_names") or []) != list(classes):
        raise CheckpointError(
            f"--resume {str(path)!r} was trained on classes {ckpt.get('class_names')} but the "
            f"data now has {list(classes)}; resume on the same data"
        )
    for key in ("optimizer", "scheduler", "next_epoch"):
        if key not in ckpt:
            raise CheckpointError(f"{str(path)!r} has no {key!r} state and cannot be resumed")
    return ckpt


def _restore(path, ckpt, args, model, optimizer, scheduler, scaler, info) -> tuple[int, tuple]:
    """Load a last.pt into model/optimizer/scheduler/scaler/RNG; returns the next epoch, best."""
    load_model_state(model, ckpt["state_dict"], source=f"--resume {str(path)!r}")
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng") or []
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank])
    elif info.is_main:
        warnings.warn(
            f"checkpoint was written by {len(rngs)} process(es), now running {info.world_size}: "
            "random augmentation will differ from an uninterrupted run",
            stacklevel=2,
        )
    old = ckpt.get("args") or {}
    changed = [k for k in _RESUME_KEYS if k in old and old[k] != _plain(getattr(args, k, None))]
    if changed and info.is_main:
        diffs = ", ".join(f"{k}: {old[k]!r} -> {getattr(args, k, None)!r}" for k in changed)
        warnings.warn(
            f"resuming with changed settings ({diffs}); the run will not match an "
            "uninterrupted one",
            stacklevel=2,
        )
    if info.is_main:
        print(
            f"resumed from {path} after epoch {ckpt['next_epoch']} (best top1 "
            f"{ckpt.get('best_top1', -1):.2f}%)",
            flush=True,
        )
    best = (float(ckpt.get("best_top1", -1.0)), int(ckpt.get("best_epoch", -1)))
    return int(ckpt["next_epoch"]), best


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo train``: parse ``argv`` and train; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(args, "train")


def run_cli(args: argparse.Namespace, command: str) -> int:
    """Run and turn the expected user errors into a one-line message and exit code 2."""
    from zoo.data.fashion_mnist import FashionMNISTMissingError
    from zoo.data.folder import ImageFolderError
    from zoo.pretrained import WeightsError

    try:
        run(args, command)
    except (
        FileNotFoundError,
        NotADirectoryError,
        ImageFolderError,
        CheckpointError,
        FashionMNISTMissingError,
        WeightsError,
        FloatingPointError,
        ValueError,
    ) as e:
        print(f"zoo {command}: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"zoo {command}: interrupted; continue with --resume", file=sys.stderr, flush=True)
        return 130
    return 0
