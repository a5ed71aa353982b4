"""``zoo compress``: Deep Compression of a zoo model to a file, and inspection of such files.

zoo compress squeezenet1_0 --sparsity paper --bits 6 --out sq6.zdc
zoo compress alexnet --sparsity paper --bits 8 --fc-bits 5
zoo compress resnet18 --checkpoint runs/r18/best.pt --sparsity 0.8 --bits 5
zoo compress inspect sq6.zdc
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch
from rich.console import Console

from zoo import factory
from zoo.cli_errors import (
    ArgumentParser,
    add_model_options,
    error_message,
    int_range,
    output_file,
    run_command,
)
from zoo.compress.accounting import size_report
from zoo.compress.pipeline import deep_compress
from zoo.compress.prune import PAPER_DENSITY
from zoo.formats.zdc import read
from zoo.pretrained.errors import WeightsError

__all__ = ["main", "build_parser"]

BITS = int_range(1, 16)  # k-means codebook and relative-index widths

console = Console()


def _sparsity(text: str) -> float | str:
    if text == "paper":
        return text
    try:
        value = float(text)
    except ValueError:
        msg = f"expected a fraction like 0.66 or 'paper', got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity is the fraction pruned, in [0, 1): {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="zoo compress",
        description="Prune, share weights (k-means) and Huffman-code a zoo model into a file; "
        "'zoo compress inspect FILE' prints the size table of an existing file.",
    )
    p.add_argument("name", help="zoo model name, e.g. squeezenet1_0")
    p.add_argument("--checkpoint", help="a zoo training checkpoint to compress (default: init)")
    add_model_options(p)
    p.add_argument(
        "--sparsity",
        type=_sparsity,
        default="paper",
        help="fraction of weights pruned per layer, or 'paper' for the published per-layer "
        "rates (alexnet, squeezenet1_0) [default: paper]",
    )
    p.add_argument("--bits", type=BITS, default=8, help="shared-value bits of conv layers")
    p.add_argument("--fc-bits", type=BITS, default=None, help="bits of linear layers [= --bits]")
    p.add_argument("--index-bits", type=BITS, default=8, help="relative-index bits, conv")
    p.add_argument("--fc-index-bits", type=BITS, default=5, help="relative-index bits, linear")
    p.add_argument("--out", type=output_file, default=None, help="output file [NAME-<bits>bit.zdc]")
    p.add_argument("--seed", type=int, default=0, help="seed for the random init")
    p.add_argument("--json", action="store_true", help="print the totals as JSON too")
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="zoo compress inspect", description="size table of a file")
    p.add_argument("file")
    p.add_argument("--verify", action="store_true", help="also decode every layer")
    return p


def _build_model(args: argparse.Namespace) -> torch.nn.Module:
    """NAME with the weights (and head) of ``--checkpoint``, else as ``zoo.create`` makes it."""
    if args.checkpoint:  # the resolver checks the checkpoint holds a NAME model
        return factory.create(args.name, pretrained=args.checkpoint).eval()
    torch.manual_seed(args.seed)
    return factory.create(
        args.name,
        pretrained=args.pretrained or False,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
    )


def run_compress(args: argparse.Namespace) -> int:
    if args.sparsity == "paper":
        if args.name not in PAPER_DENSITY:
            raise ValueError(
                f"no published per-layer sparsity for {args.name}; pass --sparsity 0.66 (say)"
            )
    model = _build_model(args)
    bits = {"conv": args.bits, "linear": args.bits if args.fc_bits is None else args.fc_bits}
    index_bits = {"conv": args.index_bits, "linear": args.fc_index_bits}
    out = args.out or f"{args.name}-{args.bits}bit.zdc"
    with console.status(f"compressing {args.name} ..."):
        report = deep_compress(model, args.sparsity, bits, out, index_bits=index_bits)
    console.print(report.rich_table(f"{args.name}: sparsity={args.sparsity}, bits={bits}"))
    console.print(
        f"wrote {out}: {report.total_bytes:,} bytes ({report.total_bytes / 1e6:.3f} MB), "
        f"{report.ratio:.1f}x smaller than its float32 weights ({report.float_bytes:,} bytes)"
    )
    if args.json:
        totals = {
            "file": out,
            "bytes": report.total_bytes,
            "float_bytes": report.float_bytes,
            "ratio": report.ratio,
            "weights": report.weights,
            "nonzero": report.nonzero,
        }
        print(json.dumps(totals))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    cm = read(args.file)
    report = size_report(cm)
    console.print(report.rich_table(f"{args.file} (arch={cm.meta.get('arch')})"))
    if args.verify:
        state = cm.state_dict()
        console.print(f"decoded {len(state)} tensors: OK")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``zoo compress``: compress NAME into a file, or ``inspect FILE``; 0 ok, 2 bad input."""
    return run_command("zoo compress", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "inspect":
            return run_inspect(_inspect_parser().parse_args(argv[1:]))
        return run_compress(build_parser().parse_args(argv))
    except (ValueError, KeyError, TypeError, FileNotFoundError, WeightsError) as err:
        print(f"zoo compress: error: {error_message(err)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
