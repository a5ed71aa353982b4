"""Time zoo models against the torchvision / timm / pytorchcv implementation of the same net.

Every model and its peers run on the same input in the same process: each is warmed up, then
the runs alternate (zoo, peer, zoo, peer, ... with the order rotated every repeat) and the
median of the repeats is reported, so a load change on the machine hits all of them alike.
Ratios are paired: for each repeat, peer time / zoo time, and the median of those.

    python scripts/benchmark.py --models 'shufflenet_g*' --batch-sizes 1 32 --fuse
    zoo benchmark --models mobilenet_v2 --repeats 5 --channels-last --compile

This module decides what to time for a model (its variants, peers and twins) and holds the
command; the peer table lives in ``zoo.pretrained.peers``, the harness in
``zoo.deploy.timing`` and the Markdown report and plot in ``zoo.deploy.report``.
Numbers are measurements of one machine at one moment; tests never assert them.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import fnmatch
import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from zoo.cli_errors import (
    ArgumentParser,
    image_size,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
)
from zoo.counting import layer_macs
from zoo.deploy.export import export_onnx
from zoo.deploy.fuse import fuse as fuse_model
from zoo.deploy.fuse import fuse_and_pack
from zoo.deploy.kernel_report import binary_kernel_report
from zoo.deploy.report import plot_latency, render_markdown
from zoo.deploy.runtimes import RUNTIMES, OnnxRunner, missing_runtime
from zoo.deploy.timing import (
    Measurement,
    Runner,
    load_average,
    machine_info,
    paired_ratio,
    short_error,
    time_runners,
)
from zoo.factory import create
from zoo.pretrained.peers import PEERS, PeerSpec, PeerUnavailable, build_peer
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
    # this module's own
    "benchmark_model",
    "binary_kernel_report",
    "build_parser",
    "main",
    "runtime_runners",
    "select_models",
    "twins_of",
]


def _macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    return int(sum(layer_macs(model, input_size).values()))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _zoo_variants(fuse: bool, channels_last: bool, compile: bool) -> list[str]:
    bases = ["eager"] + (["fused"] if fuse else [])
    out = list(bases)
    if channels_last:
        out += [f"{b}+cl" for b in bases]
    if compile:
        out.append(f"{bases[-1]}+compile")
    return out


def _make_variant(model: nn.Module, variant: str, example: torch.Tensor) -> nn.Module:
    """The model prepared as ``variant`` says (eager / fused, +cl, +compile)."""
    if variant == "packed":  # XNOR layers on packed bits (zoo.deploy.fuse_and_pack)
        return fuse_and_pack(model)
    cl = "+cl" in variant
    if variant.startswith("fused"):
        return fuse_model(
            model,
            channels_last=cl,
            compile="+compile" in variant,
            compile_options={"dynamic": False},
            example_input=example,
        )
    m = model.eval() if variant == "eager" else copy.deepcopy(model).eval()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    if "+compile" in variant:
        m = torch.compile(m, dynamic=False)
    return m


def runtime_runners(
    model: nn.Module, runtimes: Sequence[str], shape: tuple[int, ...]
) -> dict[str, OnnxRunner]:
    """``model`` exported to ONNX at the fixed ``shape`` and loaded in each of ``runtimes``.

    The file is exported from ``zoo.fuse``'s graph (BN folded; measured as fast as or faster
    than the eager graph in both runtimes, which fold BN themselves) and not checked here:
    tests/deploy/test_runtimes.py holds the runners to the eager outputs. Runtimes threads:
    torch's current count. Raises when the export or a runtime fails.
    """
    with tempfile.TemporaryDirectory() as tmpdir:
        path = Path(tmpdir) / "model.onnx"
        export_onnx(
            model,
            path,
            fuse=True,
            input_size=tuple(shape[1:]),
            batch_size=shape[0],
            dynamic_batch=False,
            check=False,
        )
        return {rt: OnnxRunner(path, rt) for rt in runtimes}  # sessions hold the graph


def _runners_for(
    name: str,
    variants: list[str],
    peers: Sequence[PeerSpec],
    twins: Sequence[str],
    input_size: tuple[int, int, int],
    notes: list[str],
    batch: int = 1,
) -> list[Runner]:
    """Runners for the zoo model's variants, its peers and its binary twins, at one input size.

    Variants named in ``RUNTIMES`` run the model exported to ONNX at ``batch`` in that
    runtime; a runtime that is not installed is left out with a note.
    """
    example = torch.randn(1, *input_size)
    base = create(name).eval()
    macs, params = _macs(base, input_size), _params(base)
    runners = []
    for rt in [v for v in variants if v in RUNTIMES and missing_runtime(v)]:
        notes.append(f"{rt} rows skipped: {missing_runtime(rt)}")
    variants = [v for v in variants if v not in RUNTIMES or not missing_runtime(v)]
    onnx_runners: dict[str, OnnxRunner] = {}
    onnx_error = ""
    if any(v in RUNTIMES for v in variants):
        try:
            rts = [v for v in variants if v in RUNTIMES]
            onnx_runners = runtime_runners(base, rts, (batch, *input_size))
        except Exception as err:  # reported in the table like any failing variant
            onnx_error = short_error(err)
    for v in variants:
        if v in RUNTIMES:
            r = Runner(f"zoo {v}", "zoo", v, fn=onnx_runners.get(v, lambda x: None))
            r.macs, r.params, r.error = macs, params, onnx_error
            runners.append(r)
            continue
        label = "zoo" if v == "eager" else f"zoo {v}"
        r = Runner(label, "zoo", v, fn=lambda x: None, channels_last="+cl" in v)
        r.macs, r.params = macs, params
        try:
            r.fn = _make_variant(base, v, example)
        except Exception as err:
            r.error = short_error(err)
        runners.append(r)
    for spec in peers:
        try:
            peer = build_peer(spec).eval()
        except PeerUnavailable as err:
            notes.append(f"{name}: peer {spec.label} skipped ({err})")
            continue
        r = Runner(spec.label, "peer", "eager", fn=peer, params=_params(peer))
        try:
            r.macs = _macs(peer, input_size)
        except Exception as err:  # e.g. a fixed-size final pooling layer
            r.error = f"fails at input {input_size}: {short_error(err)}"
        runners.append(r)
    for twin in twins:
        twin_variants = [v for v in variants if v in ("eager", "fused")]
        if twin.startswith("xnor_"):
            twin_variants.append("packed")
        for v in twin_variants:
            label = twin if v == "eager" else f"{twin} {v}"
            r = Runner(label, "twin", v, fn=lambda x: None, macs=macs)
            try:
                tm = create(twin).eval()
                r.params = _params(tm)
                r.fn = _make_variant(tm, v, example)
            except Exception as err:
                r.error = short_error(err)
            runners.append(r)
    return runners


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
) -> list[Measurement]:
    """Time zoo model ``name`` (eager and the requested variants), its peers and twins.

    ``runtimes`` (names from ``zoo.deploy.runtimes.RUNTIMES``) adds the model exported to ONNX
    and run in each of them, with torch's thread count; absent ones are skipped with a note.
    """
    notes = notes if notes is not None else []
    peers = PEERS.get(name, []) if peers is None else peers
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
    variants = _zoo_variants(fuse, channels_last, compile) + list(dict.fromkeys(runtimes))
    results: list[Measurement] = []
    for batch in batch_sizes:
        runners = _runners_for(name, variants, peers, twins, input_size, notes, batch)
        x = torch.randn(batch, *input_size)
        time_runners(runners, x, repeats, warmup, min_run_s, timer)
        for r in runners:
            m = Measurement(
                name, r.label, r.kind, r.variant, batch, r.macs, r.params, r.times, r.error
            )
            if r.kind == "zoo" and not r.error:
                for p in runners:
                    if p.kind == "peer" and not p.error:
                        m.ratios[p.label] = paired_ratio(r.times, p.times)
            results.append(m)
        del runners
        gc.collect()
    return results


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
        "--threads", type=positive_int, default=None, help="torch threads (default: torch's)"
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
    if args.threads is not None:  # ranges are checked by the parser's types
        torch.set_num_threads(args.threads)
    try:
        names = select_models(args.models)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Random weights can drift into denormal floats, which are slow on x86 and would favour
    # whichever implementation's init avoids them; flush them for every model alike.
    torch.set_flush_denormal(True)
    meta = machine_info()
    load_before = load_average()
    print(
        f"torch {meta['torch']}, {torch.get_num_threads()} threads, {meta['cpu']}, "
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
            )
        except (ValueError, RuntimeError) as err:
            notes.append(f"{name}: not timed ({short_error(err)})")
            continue
        results += rows
        _print_rows(rows)
    extra = binary_kernel_report() if args.binary_kernel else []
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
        plot_latency(results, args.plot, batch=min(args.batch_sizes))
        print(f"wrote {args.plot}")
    for n in dict.fromkeys(notes):
        print(f"note: {n}")
    return 0


def _print_rows(rows: Sequence[Measurement]) -> None:
    """One console line per measurement, written through tqdm so the progress bar survives."""
    for m in rows:
        ratios = " ".join(f"{k}={v:.2f}" for k, v in m.ratios.items())
        status = f"FAILED {m.error}" if m.error else f"{m.ms:8.2f} ms {m.images_s:8.1f} img/s"
        tqdm.write(f"  {m.model:28s} b{m.batch:<3d} {m.label:34s} {status} {ratios}")
