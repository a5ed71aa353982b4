"""Training over epochs: DDP wrapping per freeze phase, checkpoints and ``summary.csv``.

Every epoch ends with an atomic ``last.pt``, ``best.pt`` when validation top-1 improves,
and a row in ``summary.csv`` (rewritten so a resumed run keeps one row per epoch). With
``--model-ema`` the EMA weights are evaluated beside the raw ones each epoch, choose
``best.pt`` (as in timm) and are the weights checkpoints hold as ``state_dict``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from zoo.train.checkpoint import get_rng_state, save_checkpoint
from zoo.train.distributed import DistInfo, all_gather_objects, barrier, distribute_bn
from zoo.train.ema import ModelEma
from zoo.train.engine import evaluate, set_backbone_frozen, train_one_epoch
from zoo.train.resume import checkpoint_payload
from zoo.utils import atomic_write

__all__ = ["fit", "SUMMARY_HEADER", "check_finite_val_loss"]


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


def check_finite_val_loss(va: dict[str, Any], tag: str, out: Path | None) -> None:
    """Stop the run when the validation loss is NaN/inf: the weights diverged, so the epoch
    must neither count as best nor be saved (as a non-finite train loss already stops it)."""
    if math.isfinite(va["loss"]):
        return
    last = out / "last.pt" if out is not None else None
    kept = f"; {last} holds the last finite epoch" if last is not None and last.exists() else ""
    raise FloatingPointError(
        f"validation loss became {va['loss']} after {tag}: the weights diverged; lower --lr "
        f"(or --momentum), or turn off --amp{kept}"
    )


SUMMARY_HEADER = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "train_seconds",
    "frozen",
    "ema_val_loss",
    "ema_val_top1",
]


def _append_summary(
    path: Path, epoch: int, lr: float, tr: dict, va: dict, frozen: bool, va_ema: dict | None
) -> None:
    """Rewrite ``summary.csv`` with rows before ``epoch`` plus this one (resume-safe); the
    EMA columns stay empty without ``--model-ema``."""
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
            f"{va_ema['loss']:.5f}" if va_ema else "",
            f"{va_ema['top1']:.3f}" if va_ema else "",
        ]
    )
    _write_csv_atomic(path, SUMMARY_HEADER, rows)


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
    ema: ModelEma | None = None,
) -> dict[str, Any]:
    """Train ``model`` for epochs ``start_epoch..epochs-1``, checkpointing after each.

    ``model`` is the plain module (DDP wrapping happens here, once per freeze phase, so
    parameters unfrozen later are synchronised too). ``on_epoch_end(epoch, metrics)`` runs
    after the epoch's checkpoint is on disk. ``ema`` (``zoo.train.ema.ModelEma``) is updated
    every step; its validation top-1 then picks ``best.pt``. Returns the last metrics and
    the best top-1.
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
            ema=ema,
        )
        distribute_bn(model, info)
        va = evaluate(model, val_loader, info, amp_dtype, desc=f"{tag} val", progress=progress)
        check_finite_val_loss(va, tag, out)
        va_ema = None
        if ema is not None:
            distribute_bn(ema.module, info)
            va_ema = evaluate(
                ema.module, val_loader, info, amp_dtype, desc=f"{tag} val ema", progress=progress
            )
        chosen = va_ema if va_ema is not None else va
        improved = chosen["top1"] > best_top1
        if improved:
            best_top1, best_epoch = chosen["top1"], epoch
        rng = all_gather_objects(get_rng_state(), info)
        metrics = {
            "epoch": epoch,
            "train": tr,
            "val": va,
            "best_top1": best_top1,
            "best_epoch": best_epoch,
            "frozen": frozen,
        }
        if va_ema is not None:
            metrics["val_ema"] = va_ema
        history.append(metrics)
        if info.is_main:
            if out is not None:
                payload = checkpoint_payload(
                    ckpt_meta,
                    epoch,
                    model,
                    optimizer,
                    scheduler,
                    scaler,
                    rng,
                    info,
                    (best_top1, best_epoch),
                    {k: metrics[k] for k in ("train", "val", "val_ema") if k in metrics},
                    ema,
                )
                save_checkpoint(out / "last.pt", payload)
                if improved:
                    save_checkpoint(out / "best.pt", payload)
                _append_summary(out / "summary.csv", epoch, tr["lr"], tr, va, frozen, va_ema)
            skipped = f"  skipped {tr['skipped']} unreadable" if tr["skipped"] else ""
            ema_txt = f" | ema top1 {va_ema['top1']:.2f}%" if va_ema is not None else ""
            print(
                f"{tag}: train loss {tr['loss']:.4f} top1 {tr['top1']:.2f}% | val loss "
                f"{va['loss']:.4f} top1 {va['top1']:.2f}% top5 {va['top5']:.2f}%{ema_txt} | "
                f"lr {tr['lr']:.3g} | {tr['seconds']:.1f}s{' *best*' if improved else ''}{skipped}",
                flush=True,
            )
        barrier(info)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return {"history": history, "best_top1": best_top1, "best_epoch": best_epoch}
