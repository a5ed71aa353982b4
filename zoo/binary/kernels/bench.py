"""Benchmark one binary conv layer: XNOR popcount kernel vs PyTorch's float conv.

Run ``python -m zoo.binary.kernels.bench`` (``--help`` for options). Both convolutions run
with the same number of threads, alternating in short blocks of calls so that load from
other processes hits both alike; the figures are medians of per-call times. XNOR-Net's
theoretical speed-up of a binary conv with c input channels and N_W weights per filter is
S = 64 c N_W / (c N_W + 64) (Rastegari et al. 2016; 62.27x for c=256, 3x3).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import (
    _CPP_CODES,
    _extension,
    backend,
    pack_conv_weight,
    use_backend,
    xnor_conv2d,
    xnor_conv2d_profile,
)
from .reference import sign_pm1

__all__ = [
    "bench_binary_conv",
    "layer_table",
    "main",
    "module_time_split",
    "peak_rates",
    "peak_table",
    "theoretical_speedup",
]


def theoretical_speedup(c: int, n_w: int) -> float:
    """XNOR-Net's S = 64 c N_W / (c N_W + 64) for c channels and N_W weights per filter."""
    return 64.0 * c * n_w / (c * n_w + 64.0)


def peak_rates(seconds: float = 0.2) -> dict[str, float]:
    """This CPU's register-only peaks on torch's threads, for the current backend: binary
    products/s through XOR + popcount + add (64 per word) and float32 multiply-adds/s.

    Empty when the C++ extension is unavailable (the ``torch`` backend has no such loop).
    """
    ext = _extension()
    name = backend()
    if ext is None or name not in _CPP_CODES:
        return {}
    words = ext.peak_rate(False, _CPP_CODES[name], seconds)
    return {"peak_gbinops": words * 64 / 1e9, "peak_gmacs": ext.peak_rate(True, 0, seconds) / 1e9}


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time and process CPU time of one call (CPU time is immune to being descheduled,
    but with several threads it also counts their spin-waiting)."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _check_exact(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, pad: int) -> None:
    """The kernel must equal the simulated float XNOR conv before it is timed."""
    ref = F.conv2d(sign_pm1(F.pad(x, (pad,) * 4), torch.float64), sign_pm1(w, torch.float64))
    if not torch.equal(out.double(), ref):
        raise AssertionError("xnor_conv2d differs from the float conv of signs")


def bench_binary_conv(
    c: int = 256,
    hw: int = 14,
    k: int = 3,
    batch: int = 1,
    repeats: int = 200,
    warmup: int = 20,
    block: int = 5,
    threads: int | None = None,
    kernel_backend: str | None = None,
    seed: int = 0,
) -> dict[str, float | int | str]:
    """Median times (ms) of float ``F.conv2d`` and ``xnor_conv2d`` on a c->c, k x k conv.

    The two alternate in blocks of ``block`` calls (``block=1``: call by call, each op then
    starts with the other's data in cache), ``repeats`` calls each in all.

    Returns the wall-clock speed-up (and the same from process CPU time), the XNOR time
    split (activation packing, im2col gather, popcount GEMM, and the rest: Python and output
    allocation), the theoretical speed-up and the weight memory of float32 vs packed bits.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with use_backend(kernel_backend or "auto"):
            return _bench(c, hw, k, batch, repeats, warmup, block, seed)
    finally:
        torch.set_num_threads(old_threads)


def _bench(
    c: int, hw: int, k: int, batch: int, repeats: int, warmup: int, block: int, seed: int
) -> dict:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c, hw, hw, generator=gen)
    w = torch.randn(c, c, k, k, generator=gen)
    pad = k // 2
    packed = pack_conv_weight(w)
    _check_exact(x, w, xnor_conv2d(x, packed, 1, pad), pad)

    def run_float() -> object:
        return F.conv2d(x, w, padding=pad)

    def run_xnor() -> object:
        return xnor_conv2d(x, packed, 1, pad)

    with torch.inference_mode():
        for _ in range(warmup):
            run_float()
            run_xnor()
        t_float, t_xnor = [], []
        for i in range(max(1, repeats // block)):  # alternate blocks: drifts hit both alike
            order = ((run_float, t_float), (run_xnor, t_xnor))
            for fn, times in order if i % 2 == 0 else order[::-1]:
                times.extend(_timed(fn) for _ in range(block))
        split = _profile(x, packed, pad, repeats) if backend() != "torch" else {}

    ms_float = statistics.median(t[0] for t in t_float) * 1e3
    ms_xnor = statistics.median(t[0] for t in t_xnor) * 1e3
    cpu_float = statistics.median(t[1] for t in t_float) * 1e3
    cpu_xnor = statistics.median(t[1] for t in t_xnor) * 1e3
    result = {
        "backend": backend(),
        "threads": torch.get_num_threads(),
        "shape": f"N={batch} C={c} {hw}x{hw} k={k}",
        "float_ms": ms_float,
        "xnor_ms": ms_xnor,
        "speedup": ms_float / ms_xnor,
        "float_cpu_ms": cpu_float,
        "xnor_cpu_ms": cpu_xnor,
        "cpu_speedup": cpu_float / cpu_xnor if cpu_xnor > 0 else float("nan"),
        "theoretical_speedup": theoretical_speedup(c, k * k),
        "float_weight_bytes": packed.float_nbytes,
        "packed_weight_bytes": packed.nbytes,
        "weight_memory_ratio": packed.float_nbytes / packed.nbytes,
    }
    if split:
        split["other_ms"] = max(0.0, ms_xnor - split["pack_ms"] - split["gemm_phase_ms"])
        result.update(split)
    result.update(_rates(batch * c * hw * hw * c * k * k, ms_float, ms_xnor))
    return result


def _rates(products: int, ms_float: float, ms_xnor: float) -> dict[str, float]:
    """Achieved rates beside the CPU's peaks: how close each conv runs to its machine limit,
    and the speed-up a popcount kernel at 100 % of peak would reach against this float conv."""
    out = {
        "float_gmacs": products / ms_float / 1e6,
        "xnor_gbinops": products / ms_xnor / 1e6,
    }
    peaks = peak_rates()
    if peaks:
        out.update(peaks)
        out["float_peak_share"] = out["float_gmacs"] / peaks["peak_gmacs"]
        out["xnor_peak_share"] = out["xnor_gbinops"] / peaks["peak_gbinops"]
        out["speedup_ceiling"] = peaks["peak_gbinops"] / out["float_gmacs"]
    return out


def _profile(x: torch.Tensor, packed, pad: int, repeats: int) -> dict[str, float]:
    """Median time split of the C++ kernel, from its own timers."""
    runs = [xnor_conv2d_profile(x, packed, 1, pad)[1] for _ in range(repeats)]
    pack = statistics.median(r["pack"] for r in runs) * 1e3
    phase = statistics.median(r["gemm_phase"] for r in runs) * 1e3
    share = statistics.median(r["im2col_share"] for r in runs)
    return {
        "kernel": runs[0]["kernel"],
        "pack_ms": pack,
        "gemm_phase_ms": phase,
        "im2col_ms": phase * share,
        "popcount_ms": phase * (1.0 - share),
    }


def _format(results: list[dict]) -> str:
    cols = [
        ("backend", "{}"), ("kernel", "{}"), ("threads", "{}"), ("float_ms", "{:.3f}"),
        ("xnor_ms", "{:.3f}"),
        ("speedup", "{:.1f}x"), ("cpu_speedup", "{:.1f}x"), ("pack_ms", "{:.3f}"),
        ("im2col_ms", "{:.3f}"), ("popcount_ms", "{:.3f}"), ("other_ms", "{:.3f}"),
    ]  # fmt: skip
    rows = [[name for name, _ in cols]]
    for r in results:
        rows.append([fmt.format(r[name]) if name in r else "-" for name, fmt in cols])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(wd) for v, wd in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def _peak_line(r: dict) -> str:
    """One line: the layer's achieved rates against this CPU's register-only peaks."""
    return (
        f"{r['backend']} {r['threads']} thread(s): XNOR layer {r['xnor_gbinops']:,.0f} Gbinop/s ="
        f" {r['xnor_peak_share']:.0%} of the XOR+popcount peak {r['peak_gbinops']:,.0f};"
        f" float conv {r['float_gmacs']:.1f} GMAC/s = {r['float_peak_share']:.0%} of the FMA peak"
        f" {r['peak_gmacs']:.1f}; a kernel at 100 % of peak would be"
        f" {r['speedup_ceiling']:.1f}x this float conv"
    )


def main(argv: list[str] | None = None) -> list[dict]:
    """Command line: print one table row per (backend, threads) pair."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=int, default=256, help="input = output channels")
    parser.add_argument("--hw", type=int, default=14, help="input height = width")
    parser.add_argument("--k", type=int, default=3, help="kernel size")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--block", type=int, default=5, help="calls per alternation block")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=None,
        help="thread counts to try (default: torch.get_num_threads())",
    )
    parser.add_argument(
        "--backend",
        nargs="*",
        default=["auto"],
        help="kernels to try: auto avx512 avx2 portable torch",
    )
    args = parser.parse_args(argv)
    results = []
    for name in args.backend:
        for threads in args.threads or [torch.get_num_threads()]:
            results.append(
                bench_binary_conv(args.c, args.hw, args.k, args.batch, args.repeats,
                                  block=args.block, threads=threads, kernel_backend=name)
            )  # fmt: skip
    first = results[0]
    print(f"binary conv {first['shape']}, padding {args.k // 2}, stride 1")
    print(_format(results))
    for r in results:
        if "peak_gbinops" in r:
            print(_peak_line(r))
    print(
        f"theoretical speed-up (XNOR-Net) S = 64cN_W/(cN_W+64) = "
        f"{first['theoretical_speedup']:.2f}x; weights: float32 {first['float_weight_bytes']} B,"
        f" packed {first['packed_weight_bytes']} B ({first['weight_memory_ratio']:.1f}x smaller)"
    )
    return results



# Binary convs of XNOR ResNet-18 at 224x224 (3x3, stride 1): channels and input size.
RESNET18_LAYERS = ((64, 56), (128, 28), (256, 14), (512, 7))


def layer_table(results: list[dict]) -> list[str]:
    """Markdown rows of ``bench_binary_conv`` results."""
    out = [
        "| shape | backend | threads | float conv ms | XNOR ms | speed-up | theory | "
        "pack ms | im2col ms | popcount ms | other ms | weights float / packed |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        split = " | ".join(
            f"{r[k]:.3f}" if k in r else "-" for k in ("pack_ms", "im2col_ms", "popcount_ms",
                                                       "other_ms")
        )  # fmt: skip
        out.append(
            f"| {r['shape']} | {r['backend']}/{r.get('kernel', '-')} | {r['threads']} | "
            f"{r['float_ms']:.3f} | {r['xnor_ms']:.3f} | **{r['speedup']:.1f}x** | "
            f"{r['theoretical_speedup']:.1f}x | {split} | "
            f"{r['float_weight_bytes'] / 1024:.0f} / {r['packed_weight_bytes'] / 1024:.1f} KiB |"
        )
    return out


def peak_table(results: list[dict]) -> list[str]:
    """Markdown rows: each layer's achieved rates against the CPU's register-only peaks."""
    out = [
        "| shape | threads | XNOR Gbinop/s | XOR+popcount peak | share | float GMAC/s | "
        "FMA peak | share | speed-up | ceiling |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if "peak_gbinops" not in r:
            continue
        out.append(
            f"| {r['shape']} | {r['threads']} | {r['xnor_gbinops']:,.0f} | "
            f"{r['peak_gbinops']:,.0f} | {r['xnor_peak_share']:.0%} | {r['float_gmacs']:.1f} | "
            f"{r['peak_gmacs']:.1f} | {r['float_peak_share']:.0%} | {r['speedup']:.1f}x | "
            f"{r['speedup_ceiling']:.1f}x |"
        )
    return out


def module_time_split(
    model: torch.nn.Module, x: torch.Tensor, repeats: int = 10
) -> dict[str, float]:
    """Median ms per forward spent in each kind of leaf module (by class name), plus the
    rest ("other": residual adds, reshapes, Python), from timing hooks on every leaf."""
    spent: dict[str, list[float]] = {}
    start: dict[int, float] = {}
    current = [0]  # index of the forward pass being timed
    hooks = []

    def pre(m, _inp):
        start[id(m)] = time.perf_counter()

    def post(m, _inp, _out):
        key = type(m).__name__
        times = spent.setdefault(key, [0.0] * (repeats + 1))
        times[current[0]] += time.perf_counter() - start[id(m)]

    for m in model.modules():
        if not list(m.children()):
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    totals = []
    try:
        with torch.inference_mode():
            for run in range(repeats + 1):  # run 0 warms up
                current[0] = run
                t0 = time.perf_counter()
                model(x)
                totals.append(time.perf_counter() - t0)
    finally:
        for h in hooks:
            h.remove()
    out = {k: statistics.median(v[1:]) * 1e3 for k, v in spent.items()}
    total = statistics.median(totals[1:]) * 1e3
    out["other"] = max(0.0, total - sum(out.values()))
    out["total"] = total
    return out


if __name__ == "__main__":
    main()
