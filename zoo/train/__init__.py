"""Training, fine-tuning, validation and prediction for zoo models.

Command entry points (each ``main(argv=None) -> int`` with a ``build_parser()`` beside it):
``zoo.train.run`` (train), ``zoo.train.finetune``, ``zoo.train.validate``,
``zoo.train.predict``. The training code is split by job: ``optim`` (optimizer and
schedule), ``engine`` (one epoch), ``fit`` (epochs and checkpoints), ``resume``, ``args``,
``data`` and ``model_setup``.
"""

from zoo.train.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    save_checkpoint,
)
from zoo.train.distill import DistillationLoss, distillation_loss, load_teacher
from zoo.train.engine import evaluate, train_one_epoch
from zoo.train.fit import fit
from zoo.train.optim import CosineWarmup, create_optimizer, create_scheduler

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "load_checkpoint",
    "load_model_state",
    "model_from_checkpoint",
    "save_checkpoint",
    "DistillationLoss",
    "distillation_loss",
    "load_teacher",
    "CosineWarmup",
    "create_optimizer",
    "create_scheduler",
    "evaluate",
    "fit",
    "train_one_epoch",
]
