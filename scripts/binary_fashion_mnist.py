#!/usr/bin/env python
"""Float vs BWN vs XNOR ResNet-18 on Fashion-MNIST: does the XNOR-Net paper's pattern hold?

The paper (Rastegari et al. 2016, ImageNet) finds BWN close to full precision and XNOR-Net
clearly below both. This script trains the three twins from the same initial weights with
the same recipe and prints top-1 test accuracy next to each model's binary-aware size.

Data: the idx.gz files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``), read with ``zoo.data.FashionMNIST``. Images are
zero-padded 28 -> 32 (the zoo's minimum input size) and normalised; no augmentation.

    python scripts/binary_fashion_mnist.py        # the run in docs/binary.md (~15-20 min, 1 core)
    python scripts/binary_fashion_mnist.py --train-size 60000 --test-size 10000 --epochs 5

The defaults train on a fixed random 6,000-image subset for 2 epochs and test on a fixed
5,000-image subset, to fit a shared 2-core machine; pass larger sizes for tighter figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from zoo.data import FashionMNIST
from zoo.data.fashion_mnist import MEAN as _MEAN
from zoo.data.fashion_mnist import STD as _STD

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = _MEAN[0], _STD[0]  # Fashion-MNIST training-set pixel statistics (/255)


def load_split(data_dir: Path, split: str, limit: int | None, seed: int):
    """Normalised, 32x32-padded images (N, 1, 32, 32) and labels; a fixed random subset."""
    ds = FashionMNIST(data_dir, train=split == "train")  # clear error if the files are missing
    images, labels = ds.data.numpy(), ds.targets.numpy()
    if limit is not None and limit < len(labels):
        idx = np.random.default_rng(seed).permutation(len(labels))[:limit]
        images, labels = images[idx], labels[idx]
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - MEAN) / STD
    x = F.pad(x.unsqueeze(1), (2, 2, 2, 2), value=(0.0 - MEAN) / STD)
    return x, torch.from_numpy(labels.astype(np.int64))


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return 100.0 * correct / len(y)


def train(model, x, y, epochs: int, batch: int, lr: float, seed: int, desc: str) -> float:
    """Adam with a cosine schedule; returns the training loss of the last epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(y) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    last = float("nan")
    with tqdm(total=steps, desc=desc, unit="step", leave=False) as bar:
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(y), generator=gen)
            total, n = 0.0, 0
            for i in range(0, len(y), batch):
                idx = order[i : i + batch]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total, n = total + loss.item() * len(idx), n + len(idx)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
            last = total / n
    return last


def build(arch: str, mode: str, seed: int) -> torch.nn.Module:
    """The float model from a fixed seed, then its BWN/XNOR twin: all three share init."""
    import zoo
    from zoo.binary import binarize

    torch.manual_seed(seed)
    model = zoo.create(arch, num_classes=10, in_chans=1)
    return model if mode == "float" else binarize(model, mode)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | top-1 % | last train loss | 1-bit params | memory | compression | "
        "XNOR speed-up (theory) | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['top1']:.2f} | {r['train_loss']:.3f} | {r['params_1bit']:,} | "
            f"{r['memory_mb']:.2f} MB | {r['compression']:.1f}x | {r['speedup']:.1f}x | "
            f"{r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--arch", default="resnet18", help="float zoo model (default: resnet18)")
    p.add_argument("--modes", default="float,bwn,xnor")
    p.add_argument("--train-size", type=int, default=6000, help="random training subset")
    p.add_argument("--test-size", type=int, default=5000, help="random test subset")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    if bad := [m for m in modes if m not in ("float", "bwn", "xnor")]:
        p.error(f"unknown modes {bad}; use float, bwn and/or xnor")

    from zoo.binary import summary

    torch.set_num_threads(args.threads)
    x_tr, y_tr = load_split(args.data_dir, "train", args.train_size, args.seed)
    x_te, y_te = load_split(args.data_dir, "test", args.test_size, args.seed)
    print(f"Fashion-MNIST: {len(y_tr)} train / {len(y_te)} test images, 1x32x32; {args.arch}, "
          f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr} cosine, "
          f"{args.threads} threads, seed {args.seed}")  # fmt: skip
    rows = []
    for mode in modes:
        model = build(args.arch, mode, args.seed)
        t0 = time.time()
        loss = train(model, x_tr, y_tr, args.epochs, args.batch_size, args.lr, args.seed, mode)
        top1 = evaluate(model, x_te, y_te, 500)
        s = summary(model, input_size=(1, 32, 32))
        rows.append(dict(
            mode=mode, top1=top1, train_loss=loss, params_1bit=s.params_1bit,
            memory_mb=s.memory_bytes / 1e6, compression=s.compression_ratio, speedup=s.speedup,
            seconds=time.time() - t0,
        ))  # fmt: skip
        print(
            f"{mode:6s} top-1 {top1:6.2f} %  (train loss {loss:.3f}, {rows[-1]['seconds']:.0f} s)"
        )
    print()
    print(markdown(rows))
    if args.json:
        from zoo.utils import atomic_write

        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "results": rows}
        atomic_write(args.json, lambda f: json.dump(payload, f, indent=2), mode="w")
    return 0


if __name__ == "__main__":
    sys.exit(main())
