"""Knowledge distillation (Hinton et al., 2015): soft teacher targets mixed with labels.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * CE(student, labels)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones
when the temperature changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.classes import ClassMismatchError, class_index
from zoo.factory import create, head_size, is_file_spec

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


class _SelectOutputs(nn.Module):
    """A teacher whose logits are reordered (or narrowed) to the student's classes."""

    def __init__(self, teacher: nn.Module, index: torch.Tensor) -> None:
        super().__init__()
        self.teacher = teacher
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x).index_select(1, self.index)


def load_teacher(
    spec: str,
    num_classes: int,
    in_chans: int,
    class_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A frozen teacher in eval mode from anything ``zoo.create`` takes (a checkpoint, or a
    name with weights: ``arch.tag``, or ``arch`` for its default weights).

    Its outputs are matched to the data's classes by name (``zoo.data.classes``, the rule
    validate uses: ``T-shirt_top`` is ``T-shirt/top``) and reordered to the student's order;
    without recorded names it must predict exactly ``num_classes`` classes. It must take the
    student's input channels.
    """
    teacher = create(spec) if is_file_spec(spec) else create(spec, pretrained=True)
    n_out, teacher_in = head_size(teacher)
    if teacher_in != in_chans:
        raise ValueError(
            f"teacher {spec!r} takes {teacher_in} input channels, the student {in_chans}; "
            "use the same --in-chans for both"
        )
    names = list(teacher.pretrained_cfg.get("categories") or []) or None
    if class_names is None or names is None:
        if n_out != num_classes:
            raise ValueError(
                f"teacher {spec!r} predicts {n_out} classes but the data has {num_classes}; "
                f"fine-tune it first (`zoo finetune {spec} --data DIR`) and pass the resulting "
                "best.pt as --teacher"
            )
        index = torch.arange(n_out)
    else:
        try:
            index = class_index(list(class_names), names, n_out)
        except ClassMismatchError as e:
            raise ValueError(
                f"teacher {spec!r}: {e}; the teacher must predict the same classes as the "
                "student (train it on the same class folders)"
            ) from e
    teacher.requires_grad_(False)
    if not torch.equal(index, torch.arange(n_out)):
        teacher = _SelectOutputs(teacher, index)
    return teacher.to(device).eval()
