"""One epoch of training or evaluation: mixed precision, non-finite loss checks, metrics.

``train_one_epoch`` and ``evaluate`` work the same in one process or under ``torchrun``
(sums are reduced over ranks); ``set_backbone_frozen`` supports the frozen-head phase of
fine-tuning, with BatchNorm statistics of the frozen backbone kept.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from zoo.train.checkpoint import unwrap_model
from zoo.train.distributed import DistInfo, all_reduce_sum
from zoo.train.ema import ModelEma

__all__ = [
    "topk_correct",
    "amp_settings",
    "classifier_parameters",
    "set_backbone_frozen",
    "train_one_epoch",
    "evaluate",
]


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
    ema: ModelEma | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns loss, top-1, images and skipped images (all ranks).

    ``ema`` (``--model-ema``) takes one averaging step after every optimizer step.
    """
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
        if ema is not None:
            ema.update(model)
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
