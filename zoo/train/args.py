"""Command-line options of ``zoo train`` and ``zoo finetune`` (parser construction only).

Both commands share ``add_training_args``; fine-tuning changes some defaults and adds
``--freeze-epochs`` and ``--no-pretrained``.
"""

from __future__ import annotations

import argparse
from typing import Any

from zoo.cli_errors import (
    ArgumentParser,
    device_option,
    image_size,
    non_negative_float,
    non_negative_int,
    open_fraction,
    output_dir,
    positive_float,
    positive_int,
    pretrained_option,
    probability,
)
from zoo.data.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT

__all__ = ["add_training_args", "build_train_parser", "build_finetune_parser"]


def model_kwarg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--model-kwargs``; numbers and true/false are converted, other
    values stay strings (``downsample=none`` is the option's name, not Python's None)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. shortcut=bireal; got {text!r}")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, raw


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
        type=open_fraction,
        default=0.2,
        help="share of each class held out when DIR has no val/ folder",
    )
    src.add_argument(
        "--val-split",
        type=open_fraction,
        default=None,
        metavar="FRACTION",
        help="--dataset fashion-mnist: validate on this share of each class of the TRAINING "
        "images, held out (seeded by --split-seed), not on the test set, so best.pt and any "
        "other choice never see the test set (default: validate on the test set)",
    )
    src.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split")
    src.add_argument(
        "--train-subset",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="train on N images picked with --seed (0: all)",
    )
    src.add_argument(
        "--val-subset",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="validate on N images picked with --seed (0: all)",
    )
    src.add_argument(
        "--img-size", type=image_size, default=None, help="input resolution (default: the model's)"
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
        type=probability,
        default=0.35 if finetune else 0.08,
        help="lower bound of RandomResizedCrop's area scale",
    )
    src.add_argument("--hflip", type=probability, default=0.5, help="horizontal flip probability")
    src.add_argument(
        "--crop-padding",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="pad the crop by N black pixels on each side, then crop it back to the input "
        "size at a random offset (CIFAR-style random crop; 0: off)",
    )
    src.add_argument(
        "--reprob",
        "--random-erasing",
        dest="reprob",
        type=probability,
        default=0.0,
        metavar="P",
        help="random erasing probability (timm's --reprob): one rectangle of 2-33%% of the "
        "image, aspect 0.3-3.3, after normalisation (0: off)",
    )
    src.add_argument(
        "--remode",
        choices=["pixel", "rand", "const"],
        default="pixel",
        help="random erasing fill, as timm: pixel (normal noise per pixel), rand (one normal "
        "value per channel), const (zeros, the mean after normalisation)",
    )
    src.add_argument("--no-aug", action="store_true", help="train on the eval transform")
    src.add_argument(
        "--workers", type=non_negative_int, default=2, help="data loading processes per rank"
    )
    src.add_argument(
        "--no-verify-images",
        action="store_true",
        help="skip the up-front readability check of every image",
    )

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive_int, default=10 if finetune else 90)
    opt.add_argument(
        "--batch-size",
        "-b",
        type=positive_int,
        default=64 if finetune else 128,
        help="images per process and step",
    )
    opt.add_argument("--opt", choices=["sgd", "adamw"], default="adamw" if finetune else "sgd")
    opt.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="peak learning rate (default: sgd 0.1 train / 0.01 finetune, adamw 1e-3)",
    )
    opt.add_argument("--momentum", type=probability, default=0.9)
    opt.add_argument("--nesterov", action="store_true")
    opt.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=None,
        help="(default: sgd 1e-4, adamw 0.05)",
    )
    opt.add_argument("--warmup-epochs", type=non_negative_float, default=0.0 if finetune else 1.0)
    opt.add_argument(
        "--warmup-factor",
        type=probability,
        default=0.01,
        help="lr factor at the first warm-up step",
    )
    opt.add_argument(
        "--min-lr-factor", type=probability, default=0.0, help="final lr as a fraction of --lr"
    )
    opt.add_argument(
        "--lr-schedule", choices=["cosine", "linear"], default="cosine", help="decay after warm-up"
    )
    opt.add_argument("--label-smoothing", type=probability, default=0.1)
    opt.add_argument(
        "--model-ema",
        action="store_true",
        help="keep an exponential moving average of the weights (timm's ModelEmaV2: "
        "parameters and BatchNorm statistics averaged), evaluated each epoch beside the raw "
        "model; it picks best.pt and is what checkpoints hold and `zoo publish` ships",
    )
    opt.add_argument(
        "--model-ema-decay",
        type=open_fraction,
        default=0.9998,
        metavar="D",
        help="EMA decay per optimizer step: ema = D * ema + (1 - D) * weights",
    )
    opt.add_argument(
        "--grad-clip", type=non_negative_float, default=0.0, help="max gradient norm (0: off)"
    )
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
            type=pretrained_option,
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
            type=non_negative_int,
            default=0,
            metavar="N",
            help="train only the new classifier for the first N epochs",
        )
    else:
        kd.add_argument(
            "--pretrained",
            type=pretrained_option,
            default=None,
            metavar="TAG_OR_PATH",
            help="start from these weights (tag, weights file or zoo checkpoint)",
        )
    kd.add_argument(
        "--model-kwargs",
        nargs="+",
        type=model_kwarg,
        default=[],
        metavar="KEY=VALUE",
        help="builder options of the model, as zoo.create kwargs: e.g. the binary building "
        "options shortcut=bireal threshold=learned activation=rprelu scale=learned "
        "ste=approx_sign, and from_float=TAG to start a binary twin from its float weights",
    )
    kd.add_argument(
        "--teacher",
        default=None,
        metavar="NAME_OR_CKPT",
        help="distil from this teacher (a zoo checkpoint trained on the same classes)",
    )
    kd.add_argument("--kd-temperature", type=positive_float, default=4.0, metavar="T")
    kd.add_argument(
        "--kd-alpha",
        type=probability,
        default=0.5,
        metavar="A",
        help="weight of the soft (teacher) term; 1-A goes to the labels",
    )

    kd.add_argument(
        "--binary-steps",
        type=int,
        choices=[1, 2],
        default=1,
        help="2: binary activations with real weights first, then binary weights (xnor_ models; "
        "each step its own lr schedule, AdamW never decays binary latent weights)",
    )
    kd.add_argument(
        "--binary-step1-epochs",
        type=positive_int,
        default=None,
        metavar="N",
        help="epochs of step 1 out of --epochs (default: half, rounded down)",
    )

    run_g = parser.add_argument_group("run")
    run_g.add_argument(
        "--output",
        "-o",
        type=output_dir,
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
    run_g.add_argument("--force", action="store_true", help="start over in a used --output")
    run_g.add_argument("--seed", type=int, default=42)
    run_g.add_argument(
        "--device", type=device_option, default="auto", help="auto, cpu, cuda or cuda:N"
    )
    run_g.add_argument("--no-progress", action="store_true", help="no progress bars")
    run_g.add_argument(
        "--rank-digest",
        action="store_true",
        help="at the end, each rank writes OUTPUT/rank<R>.digest.json with a "
        "sha256 per tensor (to check that ranks hold identical weights)",
    )


def build_train_parser() -> argparse.ArgumentParser:
    """Parser of ``zoo train`` / ``scripts/train.py``."""
    p = ArgumentParser(
        prog="zoo train",
        description="Train a zoo model on an image folder or Fashion-MNIST; run it under "
        "`torchrun --nproc_per_node=N` for data-parallel training.",
    )
    add_training_args(p, finetune=False)
    return p


def build_finetune_parser() -> argparse.ArgumentParser:
    """Parser of ``zoo finetune`` / ``scripts/finetune.py``."""
    p = ArgumentParser(
        prog="zoo finetune",
        description="Fine-tune a zoo model on an image folder (DIR/CLASS/*.png, or DIR/train "
        "and DIR/val): new classifier for the folder's classes, optional frozen backbone, "
        "optional distillation from a teacher; best.pt and last.pt are written to --output.",
    )
    add_training_args(p, finetune=True)
    return p
