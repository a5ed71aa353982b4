"""Data for the train/finetune command: datasets, their transforms and the loaders.

An image folder (``--data``) or Fashion-MNIST (``--dataset``), optionally subset with
``--seed``; each rank reads its own shard of the training set (``DistributedSampler``)
and of the validation set (``ShardSampler``). Fashion-MNIST validates on its test set
unless ``--val-split`` holds out part of the training images instead. Training
augmentation: random resized crop, horizontal flip, then optionally ``--crop-padding``
and, after normalisation, random erasing (``--reprob``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms as T

from zoo.data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from zoo.data.fashion_mnist import FashionMNIST
from zoo.data.fashion_mnist import data_config as fashion_mnist_data_config
from zoo.data.folder import (
    TransformSubset,
    build_transform,
    collate_skip_none,
    load_splits,
    resolve_data_cfg,
    stratified_split,
)
from zoo.data.transforms import PadRandomCrop, RandomErasing
from zoo.train.distributed import DistInfo, ShardSampler

__all__ = [
    "subset",
    "load_datasets",
    "run_data_cfg",
    "train_transform",
    "set_transforms",
    "make_loaders",
]


def subset(ds: TransformSubset, n: int, seed: int) -> TransformSubset:
    """``n`` images of ``ds`` picked with ``seed``, in their original order (0: all)."""
    if not n or n >= len(ds):
        return ds
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return TransformSubset(ds.dataset, [ds.indices[i] for i in sorted(pick.tolist())], ds.transform)


def load_datasets(
    args: argparse.Namespace, in_chans: int, info: DistInfo, progress: bool
) -> tuple[TransformSubset, TransformSubset, list[str], dict[str, Any]]:
    """Train/val datasets without transforms yet, their class names and a description."""
    val_split = getattr(args, "val_split", None)
    if args.dataset == "fashion-mnist":
        train_base = FashionMNIST(args.dataset_root, train=True)
        classes, desc = list(FASHION_MNIST_CLASSES), {"data": f"fashion-mnist:{args.dataset_root}"}
        if val_split:  # held out of the training images: the test set stays unseen
            keep, held = stratified_split(train_base.targets.tolist(), val_split, args.split_seed)
            train = TransformSubset(train_base, keep, None)
            val = TransformSubset(train_base, held, None)
            desc["val"] = f"{val_split:g} of the training images (--split-seed {args.split_seed})"
        else:
            val_base = FashionMNIST(args.dataset_root, train=False)
            train = TransformSubset(train_base, range(len(train_base)), None)
            val = TransformSubset(val_base, range(len(val_base)), None)
            desc["val"] = "test set"
    else:
        if val_split:
            raise ValueError(
                "--val-split holds out Fashion-MNIST training images; an image folder is "
                "split with --val-fraction (or its own val/ folder)"
            )
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
    train = subset(train, args.train_subset, args.seed)
    val = subset(val, args.val_subset, args.seed + 1)
    return train, val, classes, desc


def run_data_cfg(
    args: argparse.Namespace,
    model: nn.Module,
    in_chans: int,
    resume_ckpt: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Preprocessing of the run: the resumed checkpoint's, else the model's (or the data's).

    From scratch on Fashion-MNIST the images get their own statistics, not ImageNet's,
    and no crop.
    """
    if resume_ckpt is not None:
        return resolve_data_cfg(resume_ckpt.get("data_cfg") or model, args.img_size, in_chans)
    own_cfg = args.dataset == "fashion-mnist" and not args.pretrained
    return resolve_data_cfg(
        fashion_mnist_data_config(in_chans=in_chans) if own_cfg else model,
        args.img_size,
        in_chans,
    )


def set_transforms(
    train_ds: TransformSubset,
    val_ds: TransformSubset,
    data_cfg: Mapping[str, Any],
    args: argparse.Namespace,
) -> None:
    """Training augmentation (or the eval transform with ``--no-aug``) and eval transform."""
    eval_tf = build_transform(data_cfg, train=False)
    train_ds.transform = eval_tf if args.no_aug else train_transform(data_cfg, args)
    val_ds.transform = eval_tf


def train_transform(data_cfg: Mapping[str, Any], args: argparse.Namespace) -> Any:
    """Random resized crop and flip (``zoo.data.folder.build_transform``), the padded random
    crop right after the image becomes a tensor (zero padding is black, whatever the
    normalisation), and random erasing after normalisation (its noise is then unit-scale)."""
    base = build_transform(dict(data_cfg), train=True, scale_min=args.scale_min, hflip=args.hflip)
    padding = getattr(args, "crop_padding", 0)
    reprob = getattr(args, "reprob", 0.0)
    if not padding and not reprob:
        return base
    steps = list(base.transforms)
    if padding:
        at = next(i for i, t in enumerate(steps) if isinstance(t, T.ToTensor)) + 1
        steps.insert(at, PadRandomCrop(padding))
    if reprob:
        steps.append(RandomErasing(reprob, getattr(args, "remode", "pixel")))
    return T.Compose(steps)


def make_loaders(
    train_ds: TransformSubset,
    val_ds: TransformSubset,
    args: argparse.Namespace,
    info: DistInfo,
) -> tuple[DataLoader, DataLoader]:
    """This rank's train loader (shuffled per epoch, full batches) and validation loader."""
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
    return train_loader, val_loader
