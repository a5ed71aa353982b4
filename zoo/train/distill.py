"""Knowledge distillation (Hinton et al., 2015): soft teacher targets mixed with labels.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * CE(student, labels)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones
when the temperature changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.train.checkpoint import create_model, load_checkpoint, load_model_state

__all__ = ["distillation_loss", "DistillationLoss", "load_teacher"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Batch mean of ``alpha * T^2 * KL(soft teacher || soft student) + (1-alpha) * CE``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; the teacher must predict the same classes"
        )
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits.float(), targets, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1.0 - alpha) * hard


class DistillationLoss(nn.Module):
    """``distillation_loss`` with fixed temperature, alpha and label smoothing."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, label_smoothing: float = 0.0):
        super().__init__()
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        return distillation_loss(
            student_logits,
            teacher_logits,
            targets,
            self.temperature,
            self.alpha,
            self.label_smoothing,
        )


def load_teacher(
    name_or_ckpt: str,
    num_classes: int,
    in_chans: int,
    class_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A frozen teacher in eval mode, from a zoo checkpoint or a zoo model name with weights.

    The teacher must predict the same classes (same number, and the same names in the same
    order when the checkpoint records them) and take the same input channels as the student.
    """
    path = Path(os.path.expanduser(name_or_ckpt))
    if path.is_file():
        ckpt = load_checkpoint(path)
        if int(ckpt["num_classes"]) != num_classes:
            raise ValueError(
                f"teacher {str(path)!r} predicts {ckpt['num_classes']} classes but the data has "
                f"{num_classes}; fine-tune the teacher on this data first and pass its best.pt"
            )
        names = ckpt.get("class_names")
        if class_names is not None and names and list(names) != list(class_names):
            raise ValueError(
                f"teacher {str(path)!r} was trained on classes {list(names)} but the data has "
                f"{list(class_names)}; the teacher must use the same class folders"
            )
        teacher = create_model(
            ckpt["arch"],
            num_classes=num_classes,
            in_chans=int(ckpt["in_chans"]),
            arch_overrides=ckpt.get("arch_overrides"),
        )
        load_model_state(teacher, ckpt["state_dict"], source=f"teacher {str(path)!r}")
        teacher_in = int(ckpt["in_chans"])
    elif path.suffix in (".pt", ".pth", ".safetensors") or os.sep in name_or_ckpt:
        raise FileNotFoundError(f"teacher checkpoint {name_or_ckpt!r} does not exist")
    else:
        teacher = create_model(
            name_or_ckpt,
            num_classes=_weights_classes(name_or_ckpt),
            in_chans=in_chans,
            pretrained=True,
        )
        categories = getattr(teacher, "pretrained_cfg", {}).get("categories") or []
        if class_names is not None and categories and list(categories) != list(class_names):
            raise ValueError(
                f"teacher {name_or_ckpt!r} was trained on classes {list(categories)} but the "
                f"data has {list(class_names)}; the teacher must predict the same classes"
            )
        if _out_features(teacher) != num_classes:
            raise ValueError(
                f"teacher {name_or_ckpt!r} predicts {_out_features(teacher)} classes but the data "
                f"has {num_classes}; fine-tune it first (`zoo finetune {name_or_ckpt} --data DIR`) "
                "and pass the resulting best.pt as --teacher"
            )
        teacher_in = in_chans
    if teacher_in != in_chans:
        raise ValueError(
            f"teacher takes {teacher_in} input channels, the student {in_chans}; "
            "use the same --in-chans for both"
        )
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def _weights_classes(name: str) -> int:
    """Number of classes of a zoo model's weights (``arch.tag`` or the default tag), else of
    the architecture's default configuration."""
    from zoo.pretrained import pretrained_head
    from zoo.registry import get_cfg

    arch, _, tag = name.partition(".")
    return int(pretrained_head(arch, tag or True).get("num_classes", get_cfg(arch).num_classes))


def _out_features(model: nn.Module) -> int:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear):
        return head.out_features
    if isinstance(head, nn.Conv2d):
        return head.out_channels
    return int(getattr(model, "num_classes", -1))
