"""Other binary engines timed on the zoo's binary conv layer, as optional benchmark rows.

Two engines, each skipped with a row saying how to install it when absent, so anyone can
reproduce the comparison:

- Larq Compute Engine 0.16 (LCE), the reference BNN runtime. Its wheel needs tensorflow 2.16
  and numpy < 2, so it lives in its own virtualenv ``.venv-lce`` (``make lce``) and runs in a
  subprocess: ``lce_worker.py`` beside this module converts a larq model of the same layer and
  times LCE's interpreter (every binary conv kernel path of LCE, and a float conv for context).
- bnn-lab's AVX-512 binary GEMM (``pip install bnn-lab --no-deps``: it declares torch < 2.13
  but its kernel needs numpy only), timed on the layer's GEMM shape alone: M = output
  positions, N = output channels, K = c k k bits, without im2col or activation packing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = [
    "LCE_VENV_ENV",
    "LCE_WORKER",
    "bnn_lab_gemm",
    "bnn_lab_rows",
    "engine_rows",
    "lce_python",
    "lce_rows",
]

LCE_VENV_ENV = "ZOO_LCE_VENV"  # overrides where .venv-lce is looked for
LCE_WORKER = Path(__file__).with_name("lce_worker.py")
_REPO = Path(__file__).resolve().parents[2]  # the checkout, when zoo runs from one
LCE_HINT = (
    "run `make lce` in the zoo repository (a .venv-lce with larq-compute-engine 0.16, "
    f"larq 0.14, tensorflow-cpu 2.16), or set {LCE_VENV_ENV} to such a virtualenv"
)
BNN_LAB_HINT = "pip install bnn-lab --no-deps (it declares torch < 2.13; its kernel needs numpy)"


def lce_python(venv: str | Path | None = None) -> Path | None:
    """The python of the LCE virtualenv: ``venv``, else $ZOO_LCE_VENV, else ``.venv-lce`` in
    the repository or the current folder; None when there is none."""
    if venv is None and os.environ.get(LCE_VENV_ENV):
        venv = os.environ[LCE_VENV_ENV]
    candidates = [Path(venv)] if venv is not None else [_REPO / ".venv-lce", Path(".venv-lce")]
    for root in candidates:
        exe = root / "bin" / "python"
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    return None


def _skip(engine: str, why: str) -> dict:
    return {"engine": engine, "skipped": why}


def lce_rows(
    c: int,
    hw: int,
    k: int,
    batch: int,
    threads: int,
    repeats: int,
    *,
    venv: str | Path | None = None,
    dump: str | Path | None = None,
    timeout: float = 600.0,
) -> list[dict]:
    """LCE's rows (ms: median of ``repeats`` interpreter invokes), or one skip row.

    ``dump``: a folder where the worker also writes its input, weights and binary conv output.
    """
    exe = lce_python(venv)
    if exe is None:
        where = venv or os.environ.get(LCE_VENV_ENV) or _REPO / ".venv-lce"
        return [_skip("lce", f"Larq Compute Engine not installed (no {where}): {LCE_HINT}")]
    cmd = [str(exe), str(LCE_WORKER), "--c", str(c), "--hw", str(hw), "--k", str(k),
           "--batch", str(batch), "--threads", str(threads), "--repeats", str(repeats)]  # fmt: skip
    if dump is not None:
        cmd += ["--dump", str(dump)]
    env = {key: v for key, v in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.SubprocessError) as err:
        return [_skip("lce", f"LCE worker did not run ({type(err).__name__}: {err}); {LCE_HINT}")]
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no message"])[-1][:200]
        return [_skip("lce", f"LCE worker failed (exit {run.returncode}: {last}); {LCE_HINT}")]
    try:
        result = json.loads(run.stdout.strip().splitlines()[-1])
        versions = result["versions"]
        label = f"LCE {versions['larq_compute_engine']}, TF {versions['tensorflow']}"
        return [
            {"engine": r["engine"], "ms": float(r["ms"]), "note": f"{r['note']} ({label})"}
            for r in result["rows"]
        ]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        return [_skip("lce", f"LCE worker printed no result ({type(err).__name__}: {err})")]


def _bnn_lab():
    """bnn-lab's packed-kernel module with its native library loaded, or a reason why not."""
    if importlib.util.find_spec("bnn") is None:
        return None, f"bnn-lab not installed: {BNN_LAB_HINT}"
    try:
        from bnn.kernels import packed
    except Exception as err:  # a broken or foreign "bnn" package must not stop the benchmark
        return None, f"bnn-lab does not import ({type(err).__name__}: {err}); {BNN_LAB_HINT}"
    if not packed.native_kernel_available():
        return None, "bnn-lab's native kernel did not load (its numpy fallback is not timed)"
    return packed, ""


def bnn_lab_gemm(x_pm1: np.ndarray, w_pm1: np.ndarray) -> np.ndarray | None:
    """``x_pm1 @ w_pm1.T`` of +-1 matrices by bnn-lab's native binary GEMM (packing
    included); None when bnn-lab or its native kernel is missing."""
    packed, _ = _bnn_lab()
    if packed is None:
        return None
    xp, n = packed.pack_binary_pm1(np.asarray(x_pm1), axis=1)
    wp, _ = packed.pack_binary_pm1(np.asarray(w_pm1), axis=1)
    return packed.binary_gemm_native_prepacked(xp, wp, n)


def bnn_lab_rows(c: int, hw: int, k: int, batch: int, threads: int, repeats: int) -> list[dict]:
    """bnn-lab's GEMM on the layer's shape (operands packed before timing), or a skip row."""
    packed, why = _bnn_lab()
    if packed is None:
        return [_skip("bnn-lab gemm", why)]
    m, n, bits = batch * hw * hw, c, c * k * k  # stride 1, "same" padding
    rng = np.random.default_rng(0)
    xp, _ = packed.pack_binary_pm1(rng.choice([-1.0, 1.0], (m, bits)).astype(np.float32), 1)
    wp, _ = packed.pack_binary_pm1(rng.choice([-1.0, 1.0], (n, bits)).astype(np.float32), 1)
    old = packed.get_num_threads()
    packed.set_num_threads(threads)
    try:
        for _ in range(max(3, repeats // 10)):
            packed.binary_gemm_native_prepacked(xp, wp, bits)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            packed.binary_gemm_native_prepacked(xp, wp, bits)
            times.append(time.perf_counter() - t0)
    finally:
        packed.set_num_threads(old)
    kernel = getattr(packed, "kernel_name", lambda: "?")()
    note = (f"bnn-lab {_version('bnn-lab')} {kernel} binary GEMM alone, M={m} N={n} K={bits} "
            "bits, operands prepacked (no im2col, no activation packing)")  # fmt: skip
    return [{"engine": "bnn-lab gemm", "ms": statistics.median(times) * 1e3, "note": note}]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def engine_rows(
    c: int,
    hw: int,
    k: int,
    batch: int,
    threads: int,
    repeats: int,
    *,
    lce_venv: str | Path | None = None,
) -> list[dict]:
    """Rows ``{engine, ms, note}`` of LCE and bnn-lab on a binary conv c->c, k x k, stride 1,
    "same" padding, ``hw`` x ``hw``, batch ``batch``; ``{engine, skipped}`` for an engine that
    is absent or fails, with how to install it. Never raises for a missing engine."""
    rows = lce_rows(c, hw, k, batch, threads, repeats, venv=lce_venv)
    try:
        rows += bnn_lab_rows(c, hw, k, batch, threads, repeats)
    except Exception as err:  # an optional engine must not stop the benchmark
        rows.append(_skip("bnn-lab gemm", f"bnn-lab failed ({type(err).__name__}: {err})"))
    return rows


if __name__ == "__main__":  # python -m zoo.deploy.binary_engines: the default layer, 1 thread
    for row in engine_rows(256, 14, 3, 1, int(sys.argv[1]) if sys.argv[1:] else 1, 50):
        print(row)
