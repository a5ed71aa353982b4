"""``zoo finetune NAME --data DIR``: adapt a model to an image folder's classes.

The classifier is replaced for the folder's classes; ``--freeze-epochs N`` trains only
the new head for N epochs (backbone BatchNorm statistics frozen too) before unfreezing
everything; ``--teacher`` adds knowledge distillation. The split is taken from
``DIR/train`` + ``DIR/val`` or made per class with ``--split-seed``. ``best.pt`` keeps the
epoch with the best validation top-1, ``last.pt`` the latest one (for ``--resume``).

Entry points: ``build_parser()`` / ``main(argv)`` (``scripts/finetune.py``, ``zoo finetune``);
``finetune(argv)`` runs it and returns the metrics for use from Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zoo.train.args import build_finetune_parser
from zoo.train.engine import set_backbone_frozen
from zoo.train.model_setup import build_model, replace_classifier
from zoo.train.run import run_cli, train

__all__ = [
    "build_parser",
    "main",
    "finetune",
    "build_model",
    "replace_classifier",
    "set_backbone_frozen",
]


build_parser = build_finetune_parser


def finetune(
    argv: Sequence[str], on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run a fine-tuning from command-line style arguments; returns history and best top-1."""
    args = build_parser().parse_args(list(argv))
    if args.freeze_epochs < 0:
        raise ValueError(f"--freeze-epochs must be >= 0, got {args.freeze_epochs}")
    return train(args, "finetune", on_epoch_end=on_epoch_end)


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo finetune``: parse ``argv`` and fine-tune; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.freeze_epochs < 0:
        build_parser().error(f"--freeze-epochs must be >= 0, got {args.freeze_epochs}")
    return run_cli(args, "finetune")
