"""Time zoo models against the torchvision / timm / pytorchcv implementation of the same net.

Every model and its peers run on the same input in the same process: each is warmed up, then
the runs alternate (zoo, peer, zoo, peer, ... with the order rotated every repeat) and the
median of the repeats is reported, so a load change on the machine hits all of them alike.
Ratios are paired: for each repeat, peer time / zoo time, and the median of those.

    python scripts/benchmark.py --models 'shufflenet_g*' --batch-sizes 1 32 --fuse
    zoo benchmark --models mobilenet_v2 --repeats 5 --channels-last --compile

This module times a model at each batch size and thread count and holds the command; what
to time for a model (variants, peers, twins) lives in ``zoo.deploy.bench_plan``, the peer
table in ``zoo.pretrained.peers``, the harness in ``zoo.deploy.timing`` and the Markdown
report and plot in ``zoo.deploy.report``.
Numbers are measurements of one machine at one moment; tests never assert them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import gc
import sys
import time
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from zoo.cli_errors import (
    ArgumentParser,
    image_size,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
)
from zoo.deploy.bench_plan import runners_for, runtime_runners, zoo_variants
from zoo.deploy.kernel_report import binary_kernel_report
from zoo.deploy.report import plot_latency, render_markdown
from zoo.deploy.runtimes import RUNTIMES
from zoo.deploy.timing import (
    Measurement,
    Runner,
    load_average,
    machine_info,
    paired_ratio,
    short_error,
    time_runners,
)
from zoo.pretrained.peers import PEERS, PeerSpec, build_peer
from zoo.registry import list_models
from zoo.utils import atomic_write_text

__all__ = [
    # re-exported: they lived here before the split and callers still import them from here
    "PEERS",
    "PeerSpec",
    "Runner",
    "Measurement",
    "build_peer",
    "time_runners",
    "render_markdown",
    "plot_latency",
    "runners_for",
    "runtime_runners",
    # this module's own
    "benchmark_model",
    "binary_kernel_report",
    "build_parser",
    "main",
    "select_models",
    "twins_of",
]


def benchmark_model(
    name: str,
    batch_sizes: Sequence[int] = (1, 32),
    *,
    fuse: bool = True,
    channels_last: bool = False,
    compile: bool = False,
    runtimes: Sequence[str] = (),
    peers: Sequence[PeerSpec] | None = None,
    twins: Sequence[str] = (),
    input_size: tuple[int, int, int] = (3, 224, 224),
    repeats: int = 10,
    warmup: int = 2,
    min_run_s: float = 0.05,
    notes: list[str] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    threads: Sequence[int] | None = None,
) -> list[Measurement]:
    """Time zoo model ``name`` (eager and the requested variants), its peers and twins.

    ``runtimes`` (names from ``zoo.deploy.runtimes.RUNTIMES``) adds the model exported to ONNX
    and run in each of them, with torch's thread count; absent ones are skipped with a note.
    ``threads``: torch thread counts to time at, each in turn (default: the current count,
    which is restored afterwards); runners are rebuilt per count, as compiled code and runtime
    sessions fix theirs, and every row carries its count.
    """
    notes = notes if notes is not None else []
    peers = PEERS.get(name, []) if peers is None else peers
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
    bad = [t for t in threads or () if int(t) < 1]
    if bad:
        raise ValueError(f"thread counts must be >= 1, got {bad}")
    variants = zoo_variants(fuse, channels_last, compile) + list(dict.fromkeys(runtimes))
    before = torch.get_num_threads()
    counts = list(dict.fromkeys(int(t) for t in threads)) if threads else [before]
    results: list[Measurement] = []
    try:
        for count in counts:
            torch.set_num_threads(count)
            for batch in batch_sizes:
                runners = runners_for(name, variants, peers, twins, input_size, notes, batch)
                x = torch.randn(batch, *input_size)
                time_runners(runners, x, repeats, warmup, min_run_s, timer)
                results += _measurements(name, runners, batch, count)
                del runners
                gc.collect()
    finally:
        torch.set_num_threads(before)
    return results


def _measurements(
    name: str, runners: Sequence[Runner], batch: int, threads: int
) -> list[Measurement]:
    """One row per runner, zoo rows with their paired ratio to every timed peer."""
    rows = []
    for r in runners:
        m = Measurement(
            name, r.label, r.kind, r.variant, batch, r.macs, r.params, r.times, r.error,
            threads=threads,
        )  # fmt: skip
        if r.kind == "zoo" and not r.error:
            for p in runners:
                if p.kind == "peer" and not p.error:
                    m.ratios[p.label] = paired_ratio(r.times, p.times)
        rows.append(m)
    return rows


# ---------------------------------------------------------------- command line


def select_models(patterns: Sequence[str] | None) -> list[str]:
    """Zoo models matching any fnmatch pattern (default: every model that has a peer)."""
    if not patterns:
        return [n for n in list_models() if n in PEERS]
    names = [n for n in list_models() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not names:
        raise ValueError(
            f"no zoo model matches {list(patterns)}; see `zoo list` for names "
            f"(models with peers: {', '.join(PEERS)})"
        )
    return names


def _selected(name: str, patterns: Sequence[str] | None) -> bool:
    """True when no patterns are given or ``name`` matches one of them."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def twins_of(name: str) -> list[str]:
    """Registered ``bwn_``/``xnor_`` twins of a float model (none until zoo.binary registers)."""
    registered = set(list_models("*_" + name))
    return [t for t in (f"bwn_{name}", f"xnor_{name}") if t in registered]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="zoo benchmark",
        description="Time zoo models against torchvision/timm/pytorchcv on this CPU.",
    )
    p.add_argument("--models", nargs="+", help="fnmatch patterns (default: all with a peer)")
    p.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 32])
    p.add_argument("--repeats", type=positive_int, default=15, help="timed runs per model (median)")
    p.add_argument("--warmup", type=non_negative_int, default=2)
    p.add_argument(
        "--min-run-ms", type=positive_float, default=50.0, help="length of one timed run"
    )
    p.add_argument("--input-size", type=image_size, default=224)
    p.add_argument(
        "--threads",
        nargs="+",
        type=positive_int,
        default=None,
        help="torch thread counts: every measurement runs at each in turn, e.g. --threads 1 2 "
        "(default: torch's count)",
    )
    p.add_argument(
        "--timer",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: latency (default); cpu: this process's CPU time, which ignores time spent "
        "descheduled on a busy machine (equals latency only with --threads 1)",
    )
    p.add_argument("--fuse", action="store_true", help="also time zoo.deploy.fuse(model)")
    p.add_argument("--channels-last", action="store_true", help="also time channels_last")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument(
        "--runtimes",
        nargs="+",
        choices=RUNTIMES,
        default=[],
        metavar="RUNTIME",
        help="also time the model exported to ONNX in these CPU runtimes "
        f"({', '.join(RUNTIMES)}; one not installed is skipped with a note)",
    )
    p.add_argument(
        "--compile-models",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="with --compile, only these models get the compiled variant (compiling takes "
        "about a minute per model and batch size on CPU)",
    )
    p.add_argument(
        "--binary",
        choices=["auto", "yes", "no"],
        default="auto",
        help="time the bwn_/xnor_ twins (auto: when registered)",
    )
    p.add_argument(
        "--binary-models",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="only these float models get their twins timed (default: all selected)",
    )
    p.add_argument("--no-peers", action="store_true", help="time zoo models only")
    p.add_argument(
        "--binary-kernel",
        action="store_true",
        help="also time one binary conv layer (XNOR kernel vs float conv) and profile "
        "packed xnor_resnet18",
    )
    p.add_argument("--out", default="docs/benchmarks.md", help="Markdown report ('' = none)")
    p.add_argument("--plot", default="docs/benchmark_latency.png", help="PNG plot ('' = none)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``zoo benchmark``: time, print a summary, write the Markdown report and the plot."""
    return run_command("zoo benchmark", _main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # ranges are checked by the parser's types; the highest count is set for the rest
    counts = list(dict.fromkeys(args.threads or [torch.get_num_threads()]))
    torch.set_num_threads(max(counts))
    try:
        names = select_models(args.models)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Random weights can drift into denormal floats, which are slow on x86 and would favour
    # whichever implementation's init avoids them; flush them for every model alike.
    torch.set_flush_denormal(True)
    meta = machine_info()
    meta["threads"] = ", ".join(map(str, counts))
    load_before = load_average()
    print(
        f"torch {meta['torch']}, {meta['threads']} threads, {meta['cpu']}, "
        f"{len(names)} models, batches {args.batch_sizes}, {args.repeats} repeats"
    )
    notes: list[str] = []
    results: list[Measurement] = []
    size = (3, args.input_size, args.input_size)
    for name in tqdm(names, desc="benchmark", unit="model"):
        binary = args.binary == "yes" or (args.binary == "auto" and twins_of(name))
        binary = binary and _selected(name, args.binary_models)
        try:
            rows = benchmark_model(
                name,
                args.batch_sizes,
                fuse=args.fuse,
                channels_last=args.channels_last,
                compile=args.compile and _selected(name, args.compile_models),
                runtimes=args.runtimes,
                peers=[] if args.no_peers else None,
                twins=twins_of(name) if binary else (),
                input_size=size,
                repeats=args.repeats,
                warmup=args.warmup,
                min_run_s=args.min_run_ms / 1e3,
                notes=notes,
                timer=time.perf_counter if args.timer == "wall" else time.process_time,
                threads=counts,
            )
        except (ValueError, RuntimeError) as err:
            notes.append(f"{name}: not timed ({short_error(err)})")
            continue
        results += rows
        _print_rows(rows)
    extra = binary_kernel_report() if args.binary_kernel else []  # 1 and max(counts) threads
    for line in extra:
        if line.startswith("|") or line.startswith("Where") or line.startswith("Its"):
            print(line)
    load_after = load_average()
    meta["timer"] = args.timer
    meta["load avg (start/end)"] = f"{load_before:.1f} / {load_after:.1f}"
    meta["date"] = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    meta["command"] = "`" + " ".join(["zoo benchmark", *(argv or sys.argv[1:])]) + "`"
    if args.out:
        text = render_markdown(
            results, meta, notes, args.repeats, args.min_run_ms / 1e3, extra=extra
        )
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    if args.plot and results:
        plot_latency(results, args.plot, batch=min(args.batch_sizes), threads=max(counts))
        print(f"wrote {args.plot}")
    for n in dict.fromkeys(notes):
        print(f"note: {n}")
    return 0


def _print_rows(rows: Sequence[Measurement]) -> None:
    """One console line per measurement, written through tqdm so the progress bar survives."""
    for m in rows:
        ratios = " ".join(f"{k}={v:.2f}" for k, v in m.ratios.items())
        status = f"FAILED {m.error}" if m.error else f"{m.ms:8.2f} ms {m.images_s:8.1f} img/s"
        tqdm.write(
            f"  {m.model:28s} b{m.batch:<3d} t{m.threads:<2d} {m.label:34s} {status} {ratios}"
        )
