"""Distillation loss against a hand computation (with and without label smoothing, and as
the training command builds it), and teacher loading errors."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.train import distillation_loss, load_teacher, save_checkpoint
from zoo.train.finetune import build_parser
from zoo.train.run import make_loss_fn


def _reference(student, teacher, targets, T, alpha, eps=0.0):
    """The formula written out with Python floats: alpha*T^2*KL(p_t||p_s) + (1-alpha)*CE,
    the CE against labels smoothed by ``eps`` (1-eps on the label, eps/K spread over all K
    classes, as in Szegedy et al. 2016 and torch's ``label_smoothing``)."""

    def softmax(row, temp):
        m = max(row)
        e = [math.exp((v - m) / temp) for v in row]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for s_row, t_row, y in zip(student, teacher, targets, strict=True):
        p_s, p_t = softmax(s_row, T), softmax(t_row, T)
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
        p = softmax(s_row, 1.0)
        k = len(p)
        ce += -sum(((1 - eps) * (c == y) + eps / k) * math.log(pc) for c, pc in enumerate(p))
    n = len(targets)
    return alpha * T * T * kl / n + (1 - alpha) * ce / n


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.7), (2.5, 0.0), (3.0, 1.0)])
def test_matches_hand_computation(T, alpha):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    t = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 6, 3, 3, 1])
    got = distillation_loss(s, t, y, temperature=T, alpha=alpha)
    want = _reference(s.tolist(), t.tolist(), y.tolist(), T, alpha)
    assert got.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("T,alpha,eps", [(4.0, 0.5, 0.1), (2.0, 0.3, 0.25), (1.0, 0.0, 0.1)])
def test_matches_hand_computation_with_label_smoothing(T, alpha, eps):
    g = torch.Generator().manual_seed(2)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    t = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([4, 0, 2, 2, 1, 3])
    got = distillation_loss(s, t, y, temperature=T, alpha=alpha, label_smoothing=eps)
    want = _reference(s.tolist(), t.tolist(), y.tolist(), T, alpha, eps)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # the smoothing matters at this size: without it the loss differs well beyond rel=1e-6
    plain = _reference(s.tolist(), t.tolist(), y.tolist(), T, alpha)
    assert abs(plain - want) > 1e-3 * want or alpha == 1.0


def test_training_default_loss_is_kd_with_label_smoothing():
    """The loss ``zoo finetune --teacher`` trains with, at the command's defaults (T=4,
    alpha=0.5, label smoothing 0.1), against the hand computation."""
    args = build_parser().parse_args(["m", "--data", "d", "--teacher", "t"])
    loss_fn = make_loss_fn(args, teacher=torch.nn.Identity())
    g = torch.Generator().manual_seed(3)
    s = torch.randn(4, 10, generator=g, dtype=torch.float64) * 2
    t = torch.randn(4, 10, generator=g, dtype=torch.float64) * 2
    y = torch.tensor([9, 0, 5, 5])
    want = _reference(s.tolist(), t.tolist(), y.tolist(), 4.0, 0.5, 0.1)
    assert (args.kd_temperature, args.kd_alpha, args.label_smoothing) == (4.0, 0.5, 0.1)
    assert loss_fn(s, t, y).item() == pytest.approx(want, rel=1e-6)


def test_identical_logits_leave_only_label_term():
    s = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    full = distillation_loss(s, s.clone(), y, temperature=4.0, alpha=0.25)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert full.item() == pytest.approx(0.75 * ce.item(), abs=1e-6)


def test_gradient_reaches_student_only():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    distillation_loss(s, t.detach(), torch.tensor([0, 1, 2]), 2.0, 0.5).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_bad_arguments():
    s, y = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="same classes"):
        distillation_loss(s, torch.randn(2, 4), y)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, s, y, temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, s, y, alpha=1.5)


def _teacher_ckpt(path, num_classes=3, names=("a", "b", "c"), in_chans=1):
    import zoo

    m = zoo.create("mobilenet_v1_x0_25", num_classes=num_classes, in_chans=in_chans)
    save_checkpoint(
        path,
        {
            "arch": "mobilenet_v1_x0_25",
            "num_classes": num_classes,
            "in_chans": in_chans,
            "class_names": list(names),
            "state_dict": m.state_dict(),
        },
    )
    return m


def test_load_teacher_checks_classes_and_channels(tmp_path):
    ref = _teacher_ckpt(tmp_path / "t.pt")
    teacher = load_teacher(str(tmp_path / "t.pt"), 3, 1, ["a", "b", "c"])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(teacher(x), ref.eval()(x))
    with pytest.raises(ValueError, match="predicts 3 classes but the data has 5"):
        load_teacher(str(tmp_path / "t.pt"), 5, 1)
    with pytest.raises(ValueError, match="same class folders"):
        load_teacher(str(tmp_path / "t.pt"), 3, 1, ["a", "b", "zebra"])
    with pytest.raises(ValueError, match="input channels"):
        load_teacher(str(tmp_path / "t.pt"), 3, 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher(str(tmp_path / "missing.pt"), 3, 1)
