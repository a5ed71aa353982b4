"""Time one binary conv layer in Larq Compute Engine (LCE); run by ``binary_engines``.

A standalone script for the separate ``.venv-lce`` (``make lce``: tensorflow-cpu 2.16, larq
0.14, LCE 0.16, numpy < 2), which cannot hold the zoo, so it imports none of it. It builds a
larq ``QuantConv2D`` c->c, k x k, stride 1, padding "same" with +1 padding (what LCE's
binary conv kernels implement natively; equal to the zoo's zero padding before its sign, which
maps 0 to +1), converts it with ``convert_keras_model``, and times LCE's interpreter on it
(medians of ``--repeats`` single invokes), along with a float ``Conv2D`` of the same shape.

    .venv-lce/bin/python zoo/deploy/lce_worker.py --c 256 --hw 14 --k 3 --threads 1

prints one JSON object: ``{"versions": {...}, "rows": [{"engine", "ms", "note"}, ...]}``.
``--dump DIR`` also writes ``x.npy`` (NHWC input), ``kernel.npy`` (HWIO latent weights, binarised
by the sign with sign(0) = +1) and ``y.npy`` (LCE's binary conv output) for an outside check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Larq 0.14 needs Keras 2 (tf_keras): TensorFlow 2.16 reads this at import time.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# The interpreter's options for LceBconv2d on x86: (label, keyword arguments, note).
BCONV_PATHS = (
    ("lce bconv", {}, "LCE default bgemm kernel (its optimised kernels target ARM)"),
    ("lce bconv indirect", {"use_indirect_bgemm": True}, "LCE indirect bgemm kernel"),
    ("lce bconv reference", {"use_reference_bconv": True}, "LCE reference kernel"),
)
FLOAT_PATHS = (
    ("lce float conv", {}, "float Conv2D, TFLite builtin kernel in LCE's interpreter"),
    ("lce float conv xnnpack", {"use_xnnpack": True}, "float Conv2D, XNNPACK delegate"),
)


def build_models(c: int, hw: int, k: int, batch: int, seed: int):
    """The larq binary conv and the float conv, as Keras models with a fixed batch size."""
    import larq as lq
    import tensorflow as tf

    tf.random.set_seed(seed)
    x = tf.keras.Input(shape=(hw, hw, c), batch_size=batch)
    y = lq.layers.QuantConv2D(
        c,
        k,
        padding="same",
        pad_values=1.0,
        use_bias=False,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
    )(x)
    binary = tf.keras.Model(x, y)
    xf = tf.keras.Input(shape=(hw, hw, c), batch_size=batch)
    floating = tf.keras.Model(xf, tf.keras.layers.Conv2D(c, k, padding="same")(xf))
    return binary, floating


def time_invokes(wrapper, x, repeats: int, warmup: int) -> tuple[float, list]:
    """Median ms of one interpreter invoke on ``x`` (the whole batch), and its output."""
    out = wrapper.predict([x])
    for _ in range(warmup):
        wrapper.predict([x])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        wrapper.predict([x])
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, out


def run(args: argparse.Namespace) -> dict:
    import larq_compute_engine as lce
    import numpy as np
    import tensorflow as tf

    binary, floating = build_models(args.c, args.hw, args.k, args.batch, args.seed)
    x = np.random.default_rng(args.seed).standard_normal(
        (args.batch, args.hw, args.hw, args.c), dtype=np.float32
    )
    rows, outputs = [], {}
    for model, paths in ((binary, BCONV_PATHS), (floating, FLOAT_PATHS)):
        flatbuffer = lce.convert_keras_model(model)
        for label, options, note in paths:
            interp = lce.testing.Interpreter(flatbuffer, num_threads=args.threads, **options)
            # The wrapper's predict takes the whole batch; Interpreter.predict would split it.
            ms, out = time_invokes(interp.interpreter, x, args.repeats, args.warmup)
            rows.append({"engine": label, "ms": ms, "note": note})
            outputs[label] = out[0]
    ref = outputs[BCONV_PATHS[0][0]]
    for label, _, _ in BCONV_PATHS[1:]:  # every kernel path must compute the same conv
        if not np.array_equal(outputs[label], ref):
            raise SystemExit(f"{label} differs from {BCONV_PATHS[0][0]}")
    if args.dump:
        out_dir = Path(args.dump)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "x.npy", x)
        np.save(out_dir / "kernel.npy", binary.layers[-1].get_weights()[0])
        np.save(out_dir / "y.npy", ref)
    import larq

    return {
        "shape": f"N={args.batch} C={args.c} {args.hw}x{args.hw} k={args.k}",
        "threads": args.threads,
        "versions": {
            "larq_compute_engine": getattr(lce, "__version__", "?"),
            "larq": getattr(larq, "__version__", "?"),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=int, default=256, help="input = output channels")
    parser.add_argument("--hw", type=int, default=14, help="input height = width")
    parser.add_argument("--k", type=int, default=3, help="kernel size")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dump", default="", help="folder for x.npy, kernel.npy, y.npy")
    result = run(parser.parse_args(argv))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
