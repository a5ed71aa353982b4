"""The ``zoo`` command: argument parsing only; every subcommand calls library functions."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

import zoo
from zoo.data import FashionMNIST, write_image_folder
from zoo.pretrained import get_manifest
from zoo.pretrained.hub import WeightsError
from zoo.registry import get_cfg
from zoo.reproduce import format_figure, write_tables
from zoo.train.validate import validate_models

__all__ = ["main"]

# Piped or captured output would otherwise be cut to rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)

# Subcommands whose parser and logic live in a library module's ``main(argv)``.
DELEGATED = {
    "train": ("zoo.train.run", "train a model (single process or under torchrun)"),
    "validate": ("zoo.train.validate", "top-1/top-5 of a model on an ImageFolder"),
    "finetune": ("zoo.train.finetune", "fine-tune a model on an ImageFolder"),
    "predict": ("zoo.train.predict", "top-k classes of images from a checkpoint"),
    "benchmark": ("zoo.deploy.benchmark", "time zoo models against their peers"),
    "export": ("zoo.deploy.export", "export a model to ONNX"),
    "compress": ("zoo.compress.cli", "Deep Compression of a model"),
    "publish": ("zoo.train.publish", "package a training run as a shipped weight set"),
}


def _fmt_macs(macs: float) -> str:
    return f"{macs / 1e6:,.1f}M"


def cmd_list(args: argparse.Namespace) -> int:
    names = zoo.list_models(args.pattern, pretrained=args.pretrained)
    table = Table(title=f"{len(names)} models matching {args.pattern!r}")
    top1_col = "weights' top-1" if args.pretrained else "published top-1"
    for col in ("name", "family", "params", "MACs", top1_col):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for name in names:
        cfg = get_cfg(name)
        c = zoo.count(name, fvcore=False)  # arch.tag: the weights' variant, never downloaded
        top1 = _top1(name, cfg.published)
        table.add_row(
            name,
            cfg.family,
            f"{c.params:,}",
            _fmt_macs(c.macs),
            f"{top1:.1f}" if top1 is not None else "-",
        )
    console.print(table)
    return 0


def _top1(name: str, published: dict) -> float | None:
    """The weight set's own top-1 for ``arch.tag``, else the paper's for the architecture."""
    arch, _, tag = name.partition(".")
    if tag:
        return get_manifest(arch, tag).metrics.get("top1")
    return published.get("top1")


def cmd_info(args: argparse.Namespace) -> int:
    info = zoo.model_info(args.name)
    c = zoo.count(args.name, input_size=args.input_size)
    console.print(f"[bold]{info['name']}[/bold]  family={info['family']}")
    console.print(f"paper: {info['paper']}")
    console.print(f"default input: {info['input_size']}  mean={info['mean']}  std={info['std']}")
    if info.get("pretrained_tags"):
        console.print(f"pretrained tags: {', '.join(info['pretrained_tags'])}")
    table = Table(title=f"measured at {c.input_size}")
    for col in ("quantity", "measured", "published", "source"):
        table.add_column(col)
    pub, src = info["published"], info["published_source"]
    table.add_row("params", f"{c.params:,}", _pub(pub, "params"), src.get("params", ""))
    table.add_row(
        "MACs (conv+linear)", _fmt_macs(c.macs), _pub(pub, "macs", _fmt_macs), src.get("macs", "")
    )
    table.add_row("fvcore total", _fmt_macs(c.fvcore_macs or 0), "", "includes BN, pooling")
    table.add_row(
        "fvcore skipped ops",
        ", ".join(f"{k} x{v}" for k, v in c.fvcore_skipped.items()) or "-",
        "",
        "",
    )
    table.add_row(
        "fp32 size (MiB)", f"{c.size_mb:.2f}", _pub(pub, "size_mb"), src.get("size_mb", "")
    )
    for key in sorted(k for k in pub if k.startswith("top")):
        table.add_row(key, "-", f"{pub[key]:.3g}", src.get(key, ""))
    console.print(table)
    return 0


def _pub(published: dict, key: str, fmt: Callable[[float], str] | None = None) -> str:
    if key not in published:
        return "-"
    value = published[key]
    return fmt(value) if fmt else (f"{value:,.0f}" if value > 1000 else f"{value:g}")


def cmd_reproduce(args: argparse.Namespace) -> int:
    accuracy = None
    if args.imagenet:
        accuracy = validate_models(args.pattern, args.imagenet)
    with console.status("measuring every registered model..."):
        rows = write_tables(args.out, args.pattern, accuracy, args.plot)
    table = Table(title="Published vs measured complexity")
    for col in ("model", "quantity", "published", "measured", "diff", "ok"):
        table.add_column(col, justify="left" if col in ("model", "quantity") else "right")
    for r in rows:
        verdict = "[green]yes" if r.ok else ("[yellow]known" if r.note else "[red]NO")
        table.add_row(
            r.model,
            r.quantity,
            format_figure(r.quantity, r.published),
            format_figure(r.quantity, r.measured),
            f"{r.diff:+.1%}",
            verdict,
        )
    console.print(table)
    bad = [r for r in rows if not r.ok and not r.note]
    console.print(
        f"{len(rows)} figures, {sum(r.ok for r in rows)} within tolerance, "
        f"{sum(bool(r.note) and not r.ok for r in rows)} known deviations, "
        f"{len(bad)} unexplained. Written to {args.out}"
    )
    return 1 if bad else 0


def cmd_summary(args: argparse.Namespace) -> int:
    print(zoo.summary(args.name, input_size=args.input_size))  # plain text, never re-wrapped
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    for split in args.splits:
        ds = FashionMNIST(args.root, train=split == "train")
        out = write_image_folder(ds, f"{args.out}/{split}", limit_per_class=args.limit_per_class)
        console.print(f"{split}: wrote {sum(1 for _ in out.rglob('*.png'))} images to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models with params and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'shufflenet*'")
    p.add_argument(
        "--pretrained", action="store_true", help="only models with weights, as arch.tag"
    )
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="one model's metadata, measured and published figures")
    p.add_argument("name")
    p.add_argument("--input-size", type=int, default=None, help="square input side, e.g. 160")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("reproduce", help="rebuild the papers' complexity tables into docs/")
    p.add_argument("--out", default="docs/tables.md")
    p.add_argument("--plot", default="docs/accuracy_vs_macs.png")
    p.add_argument("--pattern", default="*")
    p.add_argument(
        "--imagenet",
        metavar="DIR",
        default=None,
        help="ImageNet val ImageFolder: measure top-1/top-5 of models with weights",
    )
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("summary", help="binary-aware per-layer summary of a model")
    p.add_argument("name")
    p.add_argument("--input-size", type=int, default=None)
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("dataset", help="write Fashion-MNIST out as an ImageFolder (PNG files)")
    p.add_argument("name", choices=["fashion-mnist"])
    p.add_argument("out", help="output folder; gets train/ and/or test/ subfolders")
    p.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    p.add_argument("--limit-per-class", type=int, default=None, help="first N images per class")
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.set_defaults(func=cmd_dataset)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, WeightsError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    except BrokenPipeError:  # `zoo ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
