"""The binary training recipe: two-step training, no decay on binary latent weights, linear LR.

References are independent of the code under test: hand-written sign convolutions, hand LR
formulas, the model's own list of binary layers, and an uninterrupted run for resuming.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_helpers import FAST

import zoo
from zoo.binary.layers import BinaryConv2d, is_binary, set_binary_weights
from zoo.train import binary_recipe, load_checkpoint
from zoo.train import run as run_mod
from zoo.train.optim import create_optimizer, create_scheduler
from zoo.train.publish import recipe_command

BINARY_MODEL = "xnor_mobilenet_v1_x0_25"


def _hand_sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0)


def test_step1_layer_computes_with_latent_weights_and_binary_inputs():
    torch.manual_seed(0)
    layer = BinaryConv2d(3, 4, 3, padding=1, bias=False, mode="xnor")
    x = torch.randn(2, 3, 6, 6)
    seen, quantize = [], layer.input_quantizer
    layer.input_quantizer = lambda t: seen.append(quantize(t)) or seen[-1]
    assert set_binary_weights(layer, False) == 1
    assert torch.equal(layer.binary_weight(), layer.weight)
    expect = F.conv2d(_hand_sign(F.pad(x, [1, 1, 1, 1])), layer.weight)
    torch.testing.assert_close(layer(x), expect, rtol=0, atol=1e-5)
    assert set(seen[-1].unique().tolist()) == {-1.0, 1.0}  # activations stay binary
    with pytest.raises(ValueError, match="float weights"):
        layer.freeze_weight()

    set_binary_weights(layer, True)  # step 2: alpha * sign(W), alpha = mean |W| per channel
    w = layer.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    expect = F.conv2d(_hand_sign(F.pad(x, [1, 1, 1, 1])), alpha * _hand_sign(w))
    torch.testing.assert_close(layer(x), expect, rtol=0, atol=1e-5)


def test_adamw_gives_no_weight_decay_to_binary_latent_weights():
    model = zoo.create(BINARY_MODEL, num_classes=10)
    binary = {id(m.weight) for m in model.modules() if is_binary(m)}
    assert len(binary) > 10
    decay_of = {}
    for group in create_optimizer(model, "adamw", 1e-3, 0.05).param_groups:
        for p in group["params"]:
            assert id(p) not in decay_of, "a parameter in two groups"
            decay_of[id(p)] = group["weight_decay"]
    assert set(decay_of) == {id(p) for p in model.parameters()}
    for name, p in model.named_parameters():
        expected = 0.0 if id(p) in binary or p.ndim <= 1 else 0.05
        assert decay_of[id(p)] == expected, name
    first = model.get_submodule(model.default_cfg["first_conv"])
    assert not is_binary(first) and decay_of[id(first.weight)] == 0.05  # float layers decay

    sgd = create_optimizer(model, "sgd", 0.1, 1e-4)  # SGD recipes as published: decayed
    sgd_decay = {id(p): g["weight_decay"] for g in sgd.param_groups for p in g["params"]}
    assert all(sgd_decay[i] == 1e-4 for i in binary)


def test_linear_schedule_equals_hand_formula():
    lr, total, warmup, factor, min_f = 0.4, 12, 3, 0.1, 0.25
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = create_scheduler(opt, total, warmup, factor, min_f, kind="linear")
    seen = []
    for _ in range(total + 2):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step, got in enumerate(seen):
        if step < warmup:
            want = lr * (factor + (1 - factor) * step / warmup)
        else:
            want = lr * (1 - (1 - min_f) * min(1.0, (step - warmup) / (total - warmup)))
        assert got == pytest.approx(want, rel=1e-12), step
    with pytest.raises(ValueError, match="schedule"):
        create_scheduler(opt, total, kind="step")


def test_plan_splits_epochs():
    plan = binary_recipe.plan_steps(5, 2)
    assert [(s.start, s.end, s.binary_weights) for s in plan] == [(0, 2, False), (2, 5, True)]
    assert [s.epochs for s in binary_recipe.plan_steps(5, 2, 4)] == [4, 1]
    assert [s.epochs for s in binary_recipe.plan_steps(5)] == [5]
    for bad in ((1, 2, None), (4, 2, 4), (4, 2, 0), (4, 1, 2)):
        with pytest.raises(ValueError):
            binary_recipe.plan_steps(*bad)


def _args(data, out, epochs, *extra):
    return run_mod.build_parser().parse_args(
        [BINARY_MODEL, "--data", str(data), "--output", str(out), "--epochs", str(epochs),
         "--train-subset", "64", "--val-subset", "32", "--opt", "adamw", "--lr", "0.002",
         "--seed", "3", "--binary-steps", "2", "--lr-schedule", "linear", *FAST, *extra]
    )  # fmt: skip


def _state(path):
    return load_checkpoint(path)["state_dict"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.data
def test_two_step_training_end_to_end(fm_split_folder, tmp_path, monkeypatch):
    real_fit, steps = binary_recipe.fit, []

    def spy_fit(model, **kw):
        layers = [m for m in model.modules() if is_binary(m)]
        layer = layers[0]
        steps.append(
            {
                "binary_weights": [m.binary_weights for m in layers],
                "state": {k: v.clone() for k, v in model.state_dict().items()},
                "float_forward": torch.equal(layer.binary_weight(), layer.weight),
                "start": kw["start_epoch"],
                "lr": kw["optimizer"].param_groups[0]["lr"],
            }
        )
        return real_fit(model, **kw)

    monkeypatch.setattr(binary_recipe, "fit", spy_fit)
    out = tmp_path / "run"
    result = run_mod.train(_args(fm_split_folder, out, 2, "--warmup-epochs", "0"))
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    assert [s["start"] for s in steps] == [0, 1]
    assert not any(steps[0]["binary_weights"]) and steps[0]["float_forward"]
    assert all(steps[1]["binary_weights"]) and not steps[1]["float_forward"]
    assert steps[0]["lr"] == steps[1]["lr"] == 0.002  # each step restarts at the peak lr

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["binary_recipe"] == {"binary_steps": 2, "step_epochs": [1, 1], "step": 2}
    assert load_checkpoint(out / "best.pt")["binary_recipe"]["step"] == 2  # never step 1
    recipe = recipe_command(ckpt["args"])
    assert "--binary-steps 2" in recipe and "--lr-schedule linear" in recipe


@pytest.mark.data
def test_step2_starts_from_step1_weights(fm_split_folder, tmp_path, monkeypatch):
    real_set, at_switch = binary_recipe.set_binary_weights, []

    def spy_set(model, on):
        if on:
            at_switch.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_set(model, on)

    monkeypatch.setattr(binary_recipe, "set_binary_weights", spy_set)
    ends = {}

    def keep_last(epoch, metrics):
        ends[epoch] = _state(tmp_path / "run" / "last.pt")

    run_mod.train(_args(fm_split_folder, tmp_path / "run", 2), on_epoch_end=keep_last)
    assert len(at_switch) == 1
    _assert_same(ends[0], at_switch[0])  # step 1's final weights, unchanged
    assert any(not torch.equal(ends[0][k], ends[1][k]) for k in ends[0])  # step 2 trained


@pytest.mark.data
@pytest.mark.parametrize("cut_after", [0, 1])  # at the step boundary, and inside step 2
def test_resume_across_boundary_matches_uninterrupted(fm_split_folder, tmp_path, cut_after):
    ref = tmp_path / "ref"
    run_mod.train(_args(fm_split_folder, ref, 3, "--binary-step1-epochs", "1"))

    class Killed(Exception):
        pass

    def die(epoch, metrics):
        if epoch == cut_after:
            raise Killed

    cut = tmp_path / "cut"
    with pytest.raises(Killed):
        run_mod.train(
            _args(fm_split_folder, cut, 3, "--binary-step1-epochs", "1"), on_epoch_end=die
        )
    assert load_checkpoint(cut / "last.pt")["binary_recipe"]["step"] == (1 if cut_after == 0 else 2)
    resumed = run_mod.train(
        _args(fm_split_folder, cut, 3, "--binary-step1-epochs", "1", "--resume")
    )
    assert [h["epoch"] for h in resumed["history"]] == list(range(cut_after + 1, 3))
    _assert_same(_state(ref / "last.pt"), _state(cut / "last.pt"))
    _assert_same(_state(ref / "best.pt"), _state(cut / "best.pt"))

    with pytest.raises(Exception, match="binary-step1-epochs"):  # another split is refused
        run_mod.train(_args(fm_split_folder, cut, 3, "--binary-step1-epochs", "2", "--resume"))


def test_two_steps_refuse_a_model_without_binary_inputs():
    plan = binary_recipe.plan_steps(2, 2)
    with pytest.raises(ValueError, match="xnor"):
        binary_recipe.check_two_step_model(zoo.create("bwn_mobilenet_v1_x0_25"), plan)
    with pytest.raises(ValueError, match="xnor"):
        binary_recipe.check_two_step_model(zoo.create("mobilenet_v1_x0_25"), plan)
    binary_recipe.check_two_step_model(zoo.create(BINARY_MODEL), plan)


def test_bad_split_is_a_one_line_usage_error(tmp_path, capsys):
    argv = [BINARY_MODEL, "--data", str(tmp_path / "none"), "--output", str(tmp_path / "o"),
            "--binary-steps", "2", "--epochs", "1", *FAST]  # fmt: skip
    assert run_mod.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least one epoch in each step" in err[0]
