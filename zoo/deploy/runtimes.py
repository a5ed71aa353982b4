"""CPU runtimes for exported ONNX files: onnxruntime, and OpenVINO when it is installed.

A file exported by :mod:`zoo.deploy.export` runs here as a callable on torch tensors, so the
benchmark times it beside the PyTorch variants and ``zoo export`` can say which is fastest:

    >>> run = OnnxRunner("mnv2.onnx", "onnxruntime")   # intra-op threads = torch's
    >>> run(torch.randn(1, 3, 224, 224)).shape
    torch.Size([1, 1000])

Both runtimes get their fastest exact CPU settings: onnxruntime with every graph rewrite on,
sequential execution and torch's thread count; OpenVINO with the latency hint, one stream,
torch's thread count and float32 arithmetic (its default on CPUs with bf16 units is bfloat16,
which does not reproduce PyTorch within 1e-4). OpenVINO is optional: without it its rows are
skipped with a message saying how to install it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from zoo.deploy.fuse import fuse
from zoo.deploy.timing import Runner, load_average, time_runners

__all__ = [
    "RUNTIMES",
    "OnnxRunner",
    "Recommendation",
    "RuntimeUnavailable",
    "missing_runtime",
    "ort_session",
    "openvino_model",
    "recommend",
    "run_onnx",
]

RUNTIMES = ("onnxruntime", "openvino")
_PIP = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install openvino"}


class RuntimeUnavailable(RuntimeError):
    """The runtime's package is not installed; the message says how to install it."""


def missing_runtime(name: str) -> str:
    """Why ``name`` cannot run here ('' when it can): unknown, or its package is absent."""
    if name not in RUNTIMES:
        return f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}"
    if importlib.util.find_spec(name) is None:
        return f"{name} is not installed ({_PIP[name]})"
    return ""


def _threads(threads: int | None) -> int:
    return torch.get_num_threads() if threads is None else int(threads)


def ort_session(path: str | os.PathLike, threads: int | None = None, optimize: bool = True):
    """An onnxruntime CPU session with its best settings and ``threads`` (default: torch's).

    ``optimize=False`` turns off onnxruntime's graph rewrites, which fold scales into conv
    weights and so change rounding: the file's own arithmetic is then what runs.
    """
    if missing_runtime("onnxruntime"):
        raise RuntimeUnavailable(missing_runtime("onnxruntime"))
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads(threads)  # the same budget as PyTorch's
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def openvino_model(path: str | os.PathLike, threads: int | None = None):
    """An OpenVINO model compiled for the CPU: latency hint, float32, ``threads`` threads."""
    if missing_runtime("openvino"):
        raise RuntimeUnavailable(missing_runtime("openvino"))
    import openvino as ov

    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(_threads(threads)),
        "INFERENCE_PRECISION_HINT": "f32",  # not bf16: outputs must equal PyTorch's
    }
    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", config)


class OnnxRunner:
    """An exported ONNX file in ``runtime`` as a callable: float tensor in, tensor out."""

    def __init__(
        self,
        path: str | os.PathLike,
        runtime: str = "onnxruntime",
        threads: int | None = None,
        optimize: bool = True,
    ):
        if runtime not in RUNTIMES:
            raise ValueError(missing_runtime(runtime))
        self.runtime = runtime
        if runtime == "onnxruntime":
            sess = ort_session(path, threads, optimize)
            name = sess.get_inputs()[0].name
            self._call = lambda a: sess.run(None, {name: a})[0]
        else:
            compiled = openvino_model(path, threads)
            request = compiled.create_infer_request()  # reused: no allocation per call
            self._call = lambda a: request.infer([a], share_inputs=True)[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().numpy()
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        return torch.from_numpy(np.asarray(self._call(a)))  # a fresh array each call


def run_onnx(path: str | os.PathLike, x: torch.Tensor, optimize: bool = True) -> torch.Tensor:
    """Run an exported file in onnxruntime (CPU, torch's thread count) on one input."""
    return OnnxRunner(path, "onnxruntime", optimize=optimize)(x)


@dataclass
class Recommendation:
    """Which way of running the model was fastest on this machine, and by how much."""

    fastest: str  # a label of ``times``
    speedup: float  # median PyTorch eager time / median fastest time
    times: dict[str, float]  # label -> median ms per forward
    repeats: int
    load: float  # 1-minute load average after timing
    notes: list[str] = field(default_factory=list)  # runners skipped or failed, and why
    threads: int = field(default_factory=torch.get_num_threads)  # each runner's budget

    def line(self) -> str:
        """e.g. ``fastest here: onnxruntime 1.9x PyTorch eager (medians of 5 ...)``."""
        what = (
            f"{self.fastest} {self.speedup:.2f}x PyTorch eager"
            if self.fastest != EAGER
            else f"{EAGER} (the others are slower)"
        )
        each = ", ".join(f"{k} {v:.2f} ms" for k, v in self.times.items())
        return (
            f"fastest here: {what} (medians of {self.repeats} alternating runs, "
            f"{self.threads} thread(s), load {self.load:.1f}; {each})"
        )


EAGER = "PyTorch eager"
FUSED = "zoo.fuse"


def recommend(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    shape: Sequence[int],
    *,
    repeats: int = 5,
    min_run_s: float = 0.04,
    optimize: bool = True,
    timer: Callable[[], float] = time.perf_counter,
) -> Recommendation:
    """Time PyTorch eager, ``zoo.fuse(model)``, and the file in every installed runtime.

    Runs alternate (``zoo.deploy.timing``) on one random input of ``shape``; with the defaults
    and four runners it takes about a second plus the warm-up. ``optimize`` is passed to
    onnxruntime (off for XNOR models, as in the export check).
    """
    model.eval()
    x = torch.randn(tuple(shape))
    notes: list[str] = []
    runners = [Runner(EAGER, "zoo", "eager", fn=model)]
    try:
        runners.append(Runner(FUSED, "zoo", "fused", fn=fuse(model, example_input=x[:1])))
    except (ValueError, TypeError, RuntimeError) as err:
        notes.append(f"{FUSED} skipped: {err}")
    for name in RUNTIMES:
        reason = missing_runtime(name)
        if reason:
            notes.append(f"{name} skipped: {reason}")
            continue
        try:
            fn = OnnxRunner(onnx_path, name, optimize=optimize)
        except Exception as err:  # the runtime's own errors (unsupported op, bad file)
            notes.append(f"{name} skipped: {err}")
            continue
        runners.append(Runner(name, "zoo", name, fn=fn))
    time_runners(runners, x, repeats, warmup=1, min_run_s=min_run_s, timer=timer)
    timed = [r for r in runners if r.times and not r.error]
    notes += [f"{r.label} failed: {r.error}" for r in runners if r.error]
    eager = runners[0]
    if eager not in timed:
        raise RuntimeError(f"PyTorch eager failed on input {tuple(shape)}: {eager.error}")
    # Medians, as printed: the ratio is what a reader recomputes from the line.
    ms = {r.label: float(np.median(r.times)) * 1e3 for r in timed}
    best = min(ms, key=ms.get)
    return Recommendation(best, ms[EAGER] / ms[best], ms, repeats, load_average(), notes)
