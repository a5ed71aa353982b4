"""Old import path of the train command, kept while its importers move to the new modules.

The training code now lives in ``zoo.train.optim`` (optimizer, schedule),
``zoo.train.engine`` (one epoch), ``zoo.train.fit`` (epochs and checkpoints),
``zoo.train.resume``, ``zoo.train.args``, ``zoo.train.data``, ``zoo.train.model_setup``
and ``zoo.train.run`` (the command). This module only re-exports them for
``zoo.cli`` ("zoo.train.loop"), ``scripts/train.py``, ``zoo.train.publish``,
``zoo.train.validate`` and their tests; delete it once they import from the new modules.
"""

from __future__ import annotations

from zoo.train.args import add_training_args
from zoo.train.engine import (
    amp_settings,
    classifier_parameters,
    evaluate,
    set_backbone_frozen,
    topk_correct,
    train_one_epoch,
)
from zoo.train.fit import fit
from zoo.train.model_setup import build_model, replace_classifier
from zoo.train.optim import CosineWarmup, create_optimizer, create_scheduler, param_groups
from zoo.train.resume import plain_value
from zoo.train.run import build_parser, main, run_cli
from zoo.train.run import train as run

_plain = plain_value  # tests/train/test_publish.py reads the old private name

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
    "build_model",
    "replace_classifier",
    "run",
    "run_cli",
    "build_parser",
    "main",
]
