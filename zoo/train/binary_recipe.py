"""Two-step training of binary networks (Real-to-Binary, Martinez et al. 2020; ReActNet).

``--binary-steps 2`` splits ``--epochs N`` in two steps run one after the other on the same
model: step 1 trains with binary activations and real weights (the binary layers compute
with their latent float weights), step 2 binarizes the weights too and starts from step 1's
weights. Step 1 gets ``--binary-step1-epochs`` epochs (default ``N // 2``), step 2 the rest.
Each step has its own optimizer and LR schedule (warm-up, then cosine or linear decay over
the step's epochs), as the papers restart from the peak learning rate; ``best.pt`` only ever
holds a step-2 (fully binary) model. One step (the default) is plain training.

A checkpoint records the plan (``binary_recipe``) and its step, so ``--resume`` continues in
either step, also from the checkpoint written at the end of step 1. With ``--model-ema`` the
average restarts from the model's weights when a step starts (step 2 averages binary-weight
models only).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.binary.layers import is_binary, set_binary_weights
from zoo.train.checkpoint import CheckpointError
from zoo.train.distributed import DistInfo
from zoo.train.ema import ModelEma
from zoo.train.fit import fit
from zoo.train.resume import restore

__all__ = [
    "Step",
    "plan_steps",
    "plan_from_args",
    "step_at",
    "recipe_record",
    "check_two_step_model",
    "check_resume_plan",
    "run_steps",
]

# Builds a fresh optimizer and its schedule for a step of ``epochs`` epochs.
MakeOptimizer = Callable[[int], tuple[torch.optim.Optimizer, Any]]


@dataclass(frozen=True)
class Step:
    """Epochs ``start..end-1`` of the run; ``binary_weights`` False in step 1 of two."""

    index: int
    start: int
    end: int
    binary_weights: bool

    @property
    def epochs(self) -> int:
        return self.end - self.start


def plan_steps(epochs: int, steps: int = 1, step1_epochs: int | None = None) -> list[Step]:
    """The steps of a run of ``epochs`` epochs: one, or two split at ``step1_epochs``
    (default half, the larger half to step 2)."""
    if steps == 1:
        if step1_epochs is not None:
            raise ValueError("--binary-step1-epochs needs --binary-steps 2")
        return [Step(1, 0, epochs, True)]
    if steps != 2:
        raise ValueError(f"--binary-steps must be 1 or 2, got {steps}")
    first = epochs // 2 if step1_epochs is None else step1_epochs
    if not 1 <= first < epochs:
        raise ValueError(
            f"--binary-steps 2 needs at least one epoch in each step: --epochs {epochs} "
            f"with {first} in step 1 (use --epochs >= 2 and --binary-step1-epochs < --epochs)"
        )
    return [Step(1, 0, first, False), Step(2, first, epochs, True)]


def plan_from_args(args: argparse.Namespace) -> list[Step]:
    """``plan_steps`` for the parsed ``zoo train`` / ``zoo finetune`` options."""
    return plan_steps(
        args.epochs,
        getattr(args, "binary_steps", 1),
        getattr(args, "binary_step1_epochs", None),
    )


def step_at(plan: list[Step], epoch: int) -> Step:
    """The step that trains ``epoch`` (the last step for epochs past the end)."""
    return next((s for s in plan if epoch < s.end), plan[-1])


def recipe_record(plan: list[Step]) -> dict[str, Any]:
    """What checkpoints record of the plan: the steps and each one's epochs."""
    return {"binary_steps": len(plan), "step_epochs": [s.epochs for s in plan]}


def check_two_step_model(model: nn.Module, plan: list[Step]) -> None:
    """Two steps need binary activations to train first: refuse a model without xnor layers."""
    if len(plan) == 1:
        return
    if not any(is_binary(m) and m.mode == "xnor" for m in model.modules()):
        raise ValueError(
            "--binary-steps 2 trains binary activations first, then binary weights: it needs "
            "a model with binary inputs (an xnor_ twin), not a float or bwn_ model"
        )


def check_resume_plan(ckpt: Mapping[str, Any], plan: list[Step], path: Path) -> None:
    """Refuse to resume a checkpoint written under another split of the epochs into steps."""
    old = ckpt.get("binary_recipe") or {"binary_steps": 1, "step_epochs": []}
    new = recipe_record(plan)
    same = old["binary_steps"] == new["binary_steps"] and (
        new["binary_steps"] == 1 or old["step_epochs"][:1] == new["step_epochs"][:1]
    )
    if not same:
        raise CheckpointError(
            f"--resume {str(path)!r} was trained in {old['binary_steps']} step(s) "
            f"{old['step_epochs']}, not {new['binary_steps']} {new['step_epochs']}; resume "
            "with the same --binary-steps and --binary-step1-epochs"
        )


def _resume_state(
    resume: tuple[Path, Mapping[str, Any], argparse.Namespace],
    model: nn.Module,
    plan: list[Step],
    make_optimizer: MakeOptimizer,
    scaler: Any,
    info: DistInfo,
    ema: ModelEma | None = None,
) -> tuple[int, tuple[float, int], tuple[Any, Any]]:
    """Restore a checkpoint: the next epoch, the best so far, and the optimizer and schedule
    to continue with (fresh ones when the checkpoint ended the previous step)."""
    path, ckpt, args = resume
    check_resume_plan(ckpt, plan, path)
    saved = step_at(plan, int(ckpt["next_epoch"]) - 1)
    opt_sched = make_optimizer(saved.epochs)
    start, best = restore(path, ckpt, args, model, *opt_sched, scaler, info, ema)
    if step_at(plan, start).index != saved.index:  # ended step 1: step 2 starts afresh
        return start, (-1.0, -1), make_optimizer(step_at(plan, start).epochs)
    return start, best, opt_sched


def run_steps(
    plan: list[Step],
    model: nn.Module,
    make_optimizer: MakeOptimizer,
    meta: Mapping[str, Any],
    fit_kwargs: dict[str, Any],
    resume: tuple[Path, Mapping[str, Any], argparse.Namespace] | None = None,
    scaler: Any = None,
    info: DistInfo | None = None,
    ema: ModelEma | None = None,
) -> dict[str, Any]:
    """Run the plan's steps with ``fit`` (its other arguments in ``fit_kwargs``), each from
    a fresh optimizer, restoring ``resume`` = (path, checkpoint, args) first if given.
    ``ema`` (``--model-ema``) restarts from the model's weights at the start of each step.

    Returns ``fit``'s result with the history of every step run.
    """
    check_two_step_model(model, plan)
    start, best, opt_sched = 0, (-1.0, -1), None
    if resume is not None:
        start, best, opt_sched = _resume_state(
            resume, model, plan, make_optimizer, scaler, info, ema
        )
    history: list[dict[str, Any]] = []
    result: dict[str, Any] = {"history": history, "best_top1": best[0], "best_epoch": best[1]}
    for step in plan:
        if step.end <= start:
            continue
        if opt_sched is None:
            opt_sched = make_optimizer(step.epochs)
        set_binary_weights(model, step.binary_weights)
        if ema is not None:
            set_binary_weights(ema.module, step.binary_weights)
            if start <= step.start:  # the step begins here, not resumed in its middle
                ema.reset(model)
        step_meta = {**meta, "binary_recipe": {**recipe_record(plan), "step": step.index}}
        result = fit(
            model,
            optimizer=opt_sched[0],
            scheduler=opt_sched[1],
            info=info,
            epochs=step.end,
            ckpt_meta=step_meta,
            start_epoch=max(start, step.start),
            best=best,
            scaler=scaler,
            ema=ema,
            **fit_kwargs,
        )
        history += result["history"]
        opt_sched, best = None, (-1.0, -1)  # the next step's best starts afresh
    result["history"] = history
    return result
