"""Turn a training run into a weight set the zoo ships: file, hash, manifest.

    zoo publish output/fashion_mnist/shufflenet_g3/last.pt --tag fashion_mnist

writes ``weights/fashion_mnist/shufflenet_g3.safetensors`` (a 1-bit file for binary models,
see ``zoo.save_binary``) and ``weights/shufflenet_g3.fashion_mnist.json`` with the sha256,
the preprocessing the model was trained with, the recipe (the ``zoo train`` command that
produced it), the training time, and the test accuracy measured on the published file as
``zoo.create(arch, pretrained=tag)`` loads it. Runs on ``--dataset fashion-mnist`` are
evaluated on the 10,000 test images; other runs keep their last validation figures. A run
with ``--model-ema`` ships its EMA weights. No selection on the test set: a checkpoint of an
epoch before the last (a ``best.pt``) is refused when the run validated on the test set
(train with ``--val-split`` to choose on held-out training images).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from zoo.binary.layers import is_binary
from zoo.binary.packing import save_binary
from zoo.cli_errors import ArgumentParser, error_message, output_dir, run_command
from zoo.data.fashion_mnist import FashionMNIST
from zoo.data.folder import build_transform, resolve_data_cfg
from zoo.factory import create
from zoo.pretrained import manifests
from zoo.registry import get_cfg
from zoo.train.args import build_finetune_parser, build_train_parser
from zoo.train.checkpoint import load_checkpoint, model_from_checkpoint
from zoo.train.engine import evaluate
from zoo.utils import atomic_path, atomic_write_text

__all__ = ["publish", "recipe_command", "evaluate_fashion_mnist", "AlreadyPublishedError", "main"]


def _save_weights(model: nn.Module, path: Path) -> None:
    """safetensors of the state dict, or a 1-bit file for a binary model; atomic, 0o644."""
    if any(is_binary(m) for m in model.modules()):
        save_binary(model, path)  # atomic and 0o644 too (zoo.utils.atomic_write_bytes)
        return
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def recipe_command(args: dict[str, Any], command: str = "train") -> str:
    """The ``zoo train``/``zoo finetune`` command line that reproduces a run: the options that
    differ from that command's defaults (run-local ones such as the output folder left out)."""
    command_parser = build_finetune_parser if command == "finetune" else build_train_parser
    skip = {
        "output",
        "resume",
        "force",
        "no_progress",
        "rank_digest",
        "device",
        "dataset_root",
    }
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in command_parser()._actions:
        if action.option_strings and action.dest not in skip and action.dest in args:
            by_dest.setdefault(action.dest, []).append(action)
    parts = [f"zoo {command}", str(args["model"])]
    for dest, actions in by_dest.items():
        value = args[dest]
        if value == actions[0].default:
            continue
        flag_only = [a for a in actions if a.nargs == 0 and a.const == value]
        with_value = [a for a in actions if a.nargs != 0]
        if flag_only:
            parts.append(max(flag_only[0].option_strings, key=len))
        elif with_value:
            flag = max(with_value[0].option_strings, key=len)
            values = value if isinstance(value, (list, tuple)) and with_value[0].nargs else [value]
            parts += [flag, *(shlex.quote(_option_text(v)) for v in values)]
    return " ".join(parts)


def _option_text(value: Any) -> str:
    """A value as typed on the command line; a (key, value) pair as ``key=value``."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
        return f"{value[0]}={value[1]}"
    return str(value)


def _training_seconds(run_dir: Path) -> float | None:
    summary = run_dir / "summary.csv"
    if not summary.is_file():
        return None
    with open(summary, newline="") as f:
        return round(sum(float(r["train_seconds"]) for r in csv.DictReader(f)), 1)


def evaluate_fashion_mnist(
    model: nn.Module,
    data_cfg: dict[str, Any],
    root: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, float]:
    """Top-1/top-5 (%) and loss of ``model`` on the 10,000 Fashion-MNIST test images, with
    the eval transform of ``data_cfg``."""
    ds = FashionMNIST(root, train=False) if root else FashionMNIST(train=False)
    ds.transform = build_transform(resolve_data_cfg(data_cfg), train=False)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    m = evaluate(model, loader, desc="test", progress=progress)
    return {"top1": round(m["top1"], 2), "top5": round(m["top5"], 2), "loss": round(m["loss"], 4)}


def _preprocessing(data_cfg: dict[str, Any]) -> dict[str, Any]:
    keys = ("input_size", "crop_pct", "interpolation", "mean", "std", "channel_order")
    out = {k: data_cfg[k] for k in keys if data_cfg.get(k) is not None}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def publish(
    checkpoint: str | os.PathLike,
    tag: str,
    weights_dir: str | os.PathLike = "weights",
    license: str = "Apache-2.0",
    notes: str = "",
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write the run's weights and manifest into ``weights_dir``; returns the manifest path.

    The published file is loaded back through ``zoo.create(arch, pretrained=tag)`` and, for
    Fashion-MNIST runs, its test accuracy measured; that is the figure the manifest records.
    A tag already published for the architecture is refused unless ``force`` replaces it.
    """
    if not tag or "." in tag or "/" in tag:
        raise ValueError(f"tag must be a plain name such as 'fashion_mnist', got {tag!r}")
    checkpoint = Path(checkpoint)
    model, ckpt = model_from_checkpoint(checkpoint)
    arch, args = ckpt["arch"], dict(ckpt.get("args") or {})
    selection = _selection(checkpoint, ckpt, args)
    wdir = Path(weights_dir)
    rel = Path(tag) / f"{arch}.safetensors"
    _check_not_published(wdir, arch, tag, rel, force)
    _save_weights(model, wdir / rel)
    data = (wdir / rel).read_bytes()
    manifest: dict[str, Any] = {
        "schema": 1,
        "arch": arch,
        "tag": tag,
        "source": "zoo",
        "converter": "zoo",
        "num_classes": int(ckpt["num_classes"]),
        "in_chans": int(ckpt["in_chans"]),
        "files": [
            {
                "file": rel.as_posix(),
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "format": "safetensors",
            }
        ],
        "preprocessing": _preprocessing(ckpt["data_cfg"]),
        "metrics": {},
        "num_params": sum(p.numel() for p in model.parameters()),
        "license": license,
        "paper": get_cfg(arch).paper,
        "recipe": recipe_command(args, ckpt.get("command", "train")),
        "training": {
            "epochs": int(ckpt.get("next_epoch", 0)),
            "seconds": _training_seconds(checkpoint.parent),
            "seed": args.get("seed"),
        },
        "categories": list(ckpt.get("class_names") or []),
        "notes": notes,
    }
    model_kwargs = dict(model.default_cfg.get("model_kwargs") or {})
    if model_kwargs:  # a variant of the architecture (e.g. act_layer): built before loading
        manifest["model_kwargs"] = model_kwargs
    if _becomes_default(wdir, arch, tag):
        manifest["default"] = True
    path = wdir / f"{arch}.{tag}.json"
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    old_env = os.environ.get("ZOO_WEIGHTS_DIR")
    os.environ["ZOO_WEIGHTS_DIR"] = str(wdir.resolve())
    manifests.clear_cache()
    try:
        loaded = create(arch, pretrained=tag).eval()
        if args.get("dataset") == "fashion-mnist":
            manifest["metrics"] = {
                "dataset": "fashion-mnist-test",
                **evaluate_fashion_mnist(loaded, ckpt["data_cfg"], progress=progress),
                "img_size": int(ckpt["data_cfg"]["input_size"][-1]),
                "source": "measured on the published file by `zoo publish` (all 10,000 test "
                f"images; {selection}, no selection on the test set)",
            }
        else:
            run_metrics = ckpt.get("metrics") or {}
            val = run_metrics.get("val_ema") or run_metrics.get("val", {})
            manifest["metrics"] = {
                "dataset": str(args.get("data", "")),
                "top1": round(float(val.get("top1", 0.0)), 2),
                "top5": round(float(val.get("top5", 0.0)), 2),
                "source": f"validation split of the training run ({selection})",
            }
    finally:
        if old_env is None:
            os.environ.pop("ZOO_WEIGHTS_DIR", None)
        else:
            os.environ["ZOO_WEIGHTS_DIR"] = old_env
        manifests.clear_cache()
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def _selection(checkpoint: Path, ckpt: dict[str, Any], args: dict[str, Any]) -> str:
    """How the checkpoint's epoch was chosen, for the manifest; refuses an epoch chosen on
    the Fashion-MNIST test set (a best.pt of a run that validated on it)."""
    epochs, done = args.get("epochs"), int(ckpt.get("next_epoch", 0))
    weights = "EMA weights, " if "state_dict_raw" in ckpt else ""
    if epochs is None or done >= int(epochs):
        return f"{weights}last epoch"
    if args.get("dataset") == "fashion-mnist" and not args.get("val_split"):
        raise ValueError(
            f"{str(checkpoint)!r} holds epoch {done} of {epochs}, chosen on the Fashion-MNIST "
            "test set (the run validated on it): publish its last.pt, or train with "
            "--val-split to choose epochs on held-out training images"
        )
    held = f"--val-split {args['val_split']}" if args.get("val_split") else "the run's val split"
    return f"{weights}epoch {done} of {epochs}, chosen on {held}"


class AlreadyPublishedError(ValueError):
    """The weight set ``arch.tag`` already exists in the weights folder."""


def _check_not_published(wdir: Path, arch: str, tag: str, rel: Path, force: bool) -> None:
    """Refuse to replace a published weight set (its manifest or file) unless ``force``."""
    found = [p for p in (wdir / f"{arch}.{tag}.json", wdir / rel) if p.exists()]
    if found and not force:
        raise AlreadyPublishedError(
            f"{arch}.{tag} is already published ({', '.join(map(str, found))}); pass --force "
            "to replace it, or publish under another --tag"
        )


def _becomes_default(wdir: Path, arch: str, tag: str) -> bool:
    """True when no other tag of ``arch`` in ``wdir`` is the default: an architecture's first
    weights are what ``pretrained=True`` loads (e.g. the zoo's XNOR twins, with no others)."""
    manifests.clear_cache()  # the folder may have changed since it was last read
    others = [m for m in manifests.load_manifests(wdir).values() if m.arch == arch]
    return not any(m.default and m.tag != tag for m in others)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="zoo publish",
        description="Package a training checkpoint as a shipped weight set (file + manifest).",
    )
    p.add_argument("checkpoint", nargs="+", help="last.pt / best.pt of `zoo train` runs")
    p.add_argument("--tag", required=True, help="weight tag, e.g. fashion_mnist")
    p.add_argument(
        "--weights-dir",
        type=output_dir,
        default="weights",
        help="manifest folder (default: weights)",
    )
    p.add_argument("--license", default="Apache-2.0")
    p.add_argument("--notes", default="")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true", help="replace an already published ARCH.TAG")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo publish CKPT... --tag TAG``: 0 when every checkpoint is published, else 2."""
    return run_command("zoo publish", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    for ckpt in args.checkpoint:
        try:
            load_checkpoint(ckpt)
            path = publish(
                ckpt,
                args.tag,
                args.weights_dir,
                args.license,
                args.notes,
                not args.no_progress,
                force=args.force,
            )
        except (ValueError, FileNotFoundError) as err:  # a bad checkpoint or tag: say which
            print(f"zoo publish: error: {error_message(err)}", file=sys.stderr, flush=True)
            return 2
        m = json.loads(path.read_text())
        top1 = m["metrics"].get("top1")
        print(f"{m['arch']}.{m['tag']}: {path} ({m['files'][0]['size'] / 1e6:.2f} MB, "
              f"top-1 {top1}%)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
