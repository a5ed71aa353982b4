"""Experiments behind docs/compression.md: Deep Compression sizes against the papers, and
Deep Compression, filter pruning, low-rank factorization and int8 on Fashion-MNIST.

    .venv/bin/python scripts/compress_experiments.py            # everything (see --help)
    .venv/bin/python scripts/compress_experiments.py --quick    # a smoke run in a minute

Sizes use randomly initialised weights (He init), since they depend on sparsity, bits and the
weight statistics only; ImageNet weights are not available offline. Accuracies are those of the
zoo's own Fashion-MNIST weights (``zoo.create(name, pretrained="fashion_mnist")``) before and
after each method, on the 10,000 test images; retraining uses a fixed subset of the training
images (sizes and seeds are printed and stored in ``results.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zoo
import zoo.compress as zc
from zoo.compress.lowrank import relative_error, svd_factors, tucker2_factors
from zoo.compress.prune import layer_sparsity
from zoo.counting import count
from zoo.data import FashionMNIST
from zoo.train import create_optimizer, create_scheduler, evaluate, train_one_epoch
from zoo.train.distributed import DistInfo
from zoo.utils import atomic_path, atomic_write_text

# The models compressed on Fashion-MNIST are the zoo's own `fashion_mnist` weights (trained
# with `zoo train`, see docs/fashion_mnist.md); retraining after pruning and codebook
# fine-tuning use AdamW, as their training did, on a fixed subset of the training images.
PLAN = {
    "mobilenet_v1_x0_5": {
        "train": 12000,
        "test": 10000,
        "parts": ("dc", "filter", "lowrank", "int8"),
        "retrain_lr": 2e-4,
        "codebook_lr": 1e-4,
    },
    "squeezenet1_1": {
        "train": 12000,
        "test": 10000,
        "parts": ("dc", "lowrank", "int8"),
        "retrain_lr": 2e-4,
        "codebook_lr": 1e-4,
    },
}
TAG = "fashion_mnist"
CURVE_LAYERS = {
    "mobilenet_v1_x0_5": ["features.block13.pw.conv", "features.block7.pw.conv"],
    "squeezenet1_1": [
        "features.fire9.expand3x3",
        "features.fire5.expand3x3",
        "features.fire9.squeeze",
    ],
}
# Pruning rates used on Fashion-MNIST. SqueezeNet 1.1 shares layer names with 1.0, so the
# SqueezeNet paper's Table 1 rates apply as they are; MobileNet's pointwise convs hold 95 % of
# its weights, so those (and the classifier) are pruned and the tiny depthwise convs are not.
SPARSITY = {
    "squeezenet1_1": zc.paper_sparsity("squeezenet1_0"),
    "mobilenet_v1_x0_5": {"features.block*.pw.conv": 0.6, "classifier": 0.5},
}
BITS = {"squeezenet1_1": (8, 6), "mobilenet_v1_x0_5": (8, 5)}
# Options recorded per model, since results.json merges runs made with different ones.
MODEL_SETTINGS = (
    "prune_steps",
    "retrain_epochs",
    "codebook_epochs",
    "filter_ratio",
    "finetune_epochs",
    "threads",
    "seed",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Data and training (zoo.train's loops over in-memory tensors)


def fashion_mnist(model: nn.Module, train: bool, n: int | None, seed: int) -> TensorDataset:
    """Fashion-MNIST through ``model``'s own eval transform (its weights' preprocessing),
    as tensors; ``n`` images picked by a seeded permutation."""
    ds = FashionMNIST(train=train)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    idx = idx[:n] if n else idx
    tf = zoo.transforms(model)
    x = torch.stack([tf(ds[int(i)][0]) for i in idx])
    return TensorDataset(x, ds.targets[idx])


def input_size(model: nn.Module) -> tuple[int, int, int]:
    return tuple(int(v) for v in zoo.data_config(model)["input_size"])


def loader(ds: TensorDataset, train: bool, batch: int = 128, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch, shuffle=train, drop_last=train, generator=g)


def train_epochs(
    model: nn.Module,
    ds: TensorDataset,
    epochs: float,
    lr: float,
    params: list[nn.Parameter] | None = None,
    desc: str = "train",
    seed: int = 0,
    optimizer: str = "sgd",
) -> None:
    """SGD + cosine schedule with zoo.train.train_one_epoch; fractional epochs use a subset."""
    if epochs <= 0:
        return
    whole, frac = int(epochs), epochs - int(epochs)
    subsets = [ds] * whole
    if frac > 0:
        subsets.append(TensorDataset(*(t[: max(128, int(frac * len(ds)))] for t in ds.tensors)))
    steps = sum(len(s) // 128 for s in subsets)
    if params is None:
        opt = create_optimizer(model, optimizer, lr=lr, weight_decay=4e-5, nesterov=True)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    sched = create_scheduler(opt, steps, warmup_steps=min(50, steps // 10))
    for i, subset in enumerate(subsets):
        train_one_epoch(
            model,
            loader(subset, True, seed=seed + i),
            opt,
            sched,
            DistInfo(),
            nn.CrossEntropyLoss(),
            desc=f"{desc} {i + 1}/{len(subsets)}",
        )


def accuracy(model: nn.Module, ds: TensorDataset) -> float:
    return round(evaluate(model, loader(ds, False, batch=256), progress=False)["top1"], 2)


def trained_float(name: str) -> nn.Module:
    """The zoo's Fashion-MNIST weights of ``name`` (shipped in weights/, no download)."""
    model = zoo.create(name, pretrained=TAG).eval()
    log(f"{name}: loaded {name}.{TAG} ({sum(p.numel() for p in model.parameters()):,} params)")
    return model


# --------------------------------------------------------------------------------------
# 1. Sizes against the papers (random weights)


def size_ladder(report: zc.SizeReport) -> dict[str, float]:
    """Bytes after each stage, as in Deep Compression Fig. 1: dense fp32, pruned (fp32 values
    + fixed-width relative indices), + quantization (P+Q), + Huffman (the file)."""
    other = report.other_bytes + report.overhead_bytes
    pruned = sum(s.nonzero * 32 + (s.nonzero + s.fillers) * s.index_bits for s in report.layers) / 8
    pq = sum(s.pq_bits for s in report.layers) / 8
    return {
        "float32": report.float_bytes,
        "pruned": pruned + other,
        "pruned+quantized": pq + other,
        "pruned+quantized+huffman": report.total_bytes,
    }


def paper_sizes(args, work: Path) -> dict[str, Any]:
    out = {}
    runs = [("squeezenet1_0", 8, 0.66e6), ("squeezenet1_0", 6, 0.47e6)]
    if not args.skip_alexnet:
        runs.append(("alexnet", {"conv": 8, "linear": 5}, 6.9e6))
    for name, bits, paper_bytes in runs:
        torch.manual_seed(args.seed)
        model = zoo.create(name)
        t0 = time.time()
        path = work / f"{name}-{bits if isinstance(bits, int) else 'c8f5'}.zdc"
        report = zc.deep_compress(model, "paper", bits, path, progress=True)
        back = zc.load(path)
        sa, sb = model.state_dict(), back.state_dict()
        exact = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        key = f"{name}_{bits if isinstance(bits, int) else 'conv8_fc5'}"
        out[key] = {
            "model": name,
            "bits": bits if isinstance(bits, int) else "conv 8 / fc 5",
            "bytes": report.total_bytes,
            "mb": report.total_bytes / 1e6,
            "paper_mb": paper_bytes / 1e6,
            "ratio": report.ratio,
            "nonzero_weights": report.nonzero,
            "weights": report.weights,
            "round_trip_exact": exact,
            "seconds": time.time() - t0,
            "table": report.markdown(),
            "ladder": size_ladder(report),
        }
        log(
            f"{key}: {report.total_bytes:,} bytes ({report.total_bytes / 1e6:.3f} MB, paper "
            f"{paper_bytes / 1e6} MB), {report.ratio:.1f}x, round trip exact: {exact}"
        )
        del model, back
    return out


# --------------------------------------------------------------------------------------
# 2. Deep Compression on Fashion-MNIST


def deep_compression_accuracy(name, float_model, train_ds, test_ds, args, work) -> dict:
    plan = PLAN[name]
    res: dict[str, Any] = {"float_top1": accuracy(float_model, test_ds)}
    model = copy.deepcopy(float_model)
    sparsity = SPARSITY[name]
    res["sparsity"] = {k: round(v, 3) for k, v in layer_sparsity(model, sparsity).items() if v}
    one_shot = copy.deepcopy(model)
    zc.prune_magnitude(one_shot, sparsity)
    res["pruned_no_retrain_top1"] = accuracy(one_shot, test_ds)

    def retrain(m, step):
        train_epochs(
            m,
            train_ds,
            args.retrain_epochs,
            plan["retrain_lr"],
            desc=f"{name} prune step {step}",
            seed=step,
            optimizer="adamw",
        )

    zc.prune_and_retrain(model, sparsity, retrain, steps=args.prune_steps)
    rows = zc.sparsity_table(model)
    res["density"] = sum(r["nonzero"] for r in rows) / sum(r["weights"] for r in rows)
    res["pruned_top1"] = accuracy(model, test_ds)
    log(
        f"{name}: float {res['float_top1']}%, pruned one-shot {res['pruned_no_retrain_top1']}%, "
        f"pruned+retrained {res['pruned_top1']}% (density {res['density']:.3f})"
    )
    for bits in BITS[name]:
        shared = copy.deepcopy(model)
        zc.share_weights(shared, bits)
        no_ft = accuracy(shared, test_ds)
        tuned = copy.deepcopy(model)

        def finetune(m, codebooks, bits=bits):
            extra = [p for n, p in m.named_parameters() if p.ndim <= 1 and "codebook" not in n]
            train_epochs(
                m,
                train_ds,
                args.codebook_epochs,
                lr=plan["codebook_lr"],
                optimizer="adamw",
                params=codebooks + extra,
                desc=f"{name} {bits}-bit codebooks",
            )

        zc.finetune_codebooks(tuned, bits, finetune)
        path = work / f"{name}_fmnist_{bits}bit.zdc"
        report = zc.save(tuned, path, bits=bits)
        back = zc.load(path)
        res[f"{bits}bit"] = {
            "kmeans_top1": no_ft,
            "finetuned_top1": accuracy(tuned, test_ds),
            "file_top1": accuracy(back, test_ds),
            "bytes": report.total_bytes,
            "float_bytes": report.float_bytes,
            "ratio": report.ratio,
            "table": report.markdown(),
        }
        r = res[f"{bits}bit"]
        log(
            f"{name} {bits}-bit: k-means only {no_ft}%, codebooks fine-tuned "
            f"{r['finetuned_top1']}%, from file {r['file_top1']}%, "
            f"{report.total_bytes:,} bytes ({report.ratio:.1f}x)"
        )
    return res


# --------------------------------------------------------------------------------------
# 3. Filter pruning


def filter_pruning(name, float_model, train_ds, test_ds, args) -> dict:
    size = input_size(float_model)
    before = count(float_model, size, fvcore=False)
    calib = train_ds.tensors[0][:256]
    res: dict[str, Any] = {
        "ratio": args.filter_ratio,
        "before": {
            "params": before.params,
            "macs": before.macs,
            "top1": accuracy(float_model, test_ds),
        },
    }
    for method in ("l1", "thinet"):
        t0 = time.time()
        out = zc.prune_filters(
            float_model, args.filter_ratio, method=method, data=calib, samples=4000
        )
        small = out.model
        after = count(small, size, fvcore=False)
        top1_cut = accuracy(small, test_ds)
        train_epochs(
            small,
            train_ds,
            args.finetune_epochs,
            PLAN[name]["retrain_lr"],
            desc=f"{name} {method} finetune",
            optimizer="adamw",
        )
        res[method] = {
            "params": after.params,
            "macs": after.macs,
            "groups": len(out.kept),
            "top1_before_finetune": top1_cut,
            "top1_after_finetune": accuracy(small, test_ds),
            "seconds": time.time() - t0,
        }
        log(
            f"{name} filter pruning {method}: params {before.params:,} -> {after.params:,}, MACs "
            f"{before.macs / 1e6:.2f}M -> {after.macs / 1e6:.2f}M, top-1 {top1_cut}% -> "
            f"{res[method]['top1_after_finetune']}% after {args.finetune_epochs} epoch(s)"
        )
    return res


# --------------------------------------------------------------------------------------
# 4. Low-rank


def lowrank_sweep(name, float_model, test_ds, energies) -> dict:
    size = input_size(float_model)
    base = count(float_model, size, fvcore=False)
    rows = []
    for energy in energies:
        model, report = zc.factorize(float_model, float(energy))
        c = count(model, size, fvcore=False)
        errs = [r.relative_error for r in report]
        rows.append(
            {
                "energy": energy,
                "layers": len(report),
                "params": c.params,
                "macs": c.macs,
                "mean_rel_error": sum(errs) / len(errs) if errs else 0.0,
                "top1": accuracy(model, test_ds),
            }
        )
        log(
            f"{name} low-rank energy {energy}: {len(report)} layers, params {base.params:,} -> "
            f"{c.params:,}, MACs {base.macs / 1e6:.2f}M -> {c.macs / 1e6:.2f}M, "
            f"top-1 {rows[-1]['top1']}%"
        )
    return {"base": {"params": base.params, "macs": base.macs}, "rows": rows}


def error_curves(model: nn.Module, layers: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Relative weight error against the kept fraction of the rank for chosen layers: SVD for
    1x1 convs / linears, Tucker-2 (that fraction of both the output and the input rank)."""
    curves = {}
    fractions = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    for name in layers:
        w = model.get_submodule(name).weight.detach()
        pointwise = w.dim() == 2 or w.shape[-2:] == (1, 1)
        points = []
        for f in fractions:
            if pointwise:
                r = max(1, round(f * min(w.shape[0], w.flatten(1).shape[1])))
                a, b = svd_factors(w.flatten(1), r)
                approx = (a @ b).view_as(w)
            else:
                ranks = (max(1, round(f * w.shape[0])), max(1, round(f * w.shape[1])))
                u_out, core, u_in = tucker2_factors(w, ranks)
                approx = torch.einsum("rshw,or,is->oihw", core, u_out, u_in)
            points.append((f, relative_error(w, approx)))
        kind = "SVD" if pointwise else "Tucker-2"
        curves[f"{name} ({kind}, {tuple(w.shape[:2])})"] = points
    return curves


# --------------------------------------------------------------------------------------
# 5. int8


def int8_eval(name, float_model, train_ds, test_ds) -> dict:
    size = input_size(float_model)
    q = zc.quantize_int8(
        float_model, loader(TensorDataset(*(t[:512] for t in train_ds.tensors)), False)
    )
    res = {
        "float_top1": accuracy(float_model, test_ds),
        "int8_top1": accuracy(q, test_ds),
        "float_bytes": zc.state_bytes(float_model),
        "int8_bytes": zc.state_bytes(q),
    }
    float_model.eval()
    for batch in (1, 32):
        lf = zc.measure_latency(float_model, size, batch=batch, threads=1)
        lq = zc.measure_latency(q, size, batch=batch, threads=1)
        res[f"batch{batch}"] = {
            "float_ms": lf.median_ms,
            "int8_ms": lq.median_ms,
            "speedup": lf.median_ms / lq.median_ms,
        }
    log(
        f"{name} int8: top-1 {res['float_top1']}% -> {res['int8_top1']}%, state "
        f"{res['float_bytes']:,} -> {res['int8_bytes']:,} bytes, batch-1 "
        f"{res['batch1']['float_ms']:.2f} -> {res['batch1']['int8_ms']:.2f} ms, batch-32 "
        f"{res['batch32']['float_ms']:.1f} -> {res['batch32']['int8_ms']:.1f} ms"
    )
    return res


# --------------------------------------------------------------------------------------
# Plots


def plot_all(results: dict, curves: dict, docs: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if curves:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, pts in curves.items():
            ax.plot([f for f, _ in pts], [e for _, e in pts], marker="o", ms=3, label=label)
        ax.set_xlabel("kept rank / full rank (Tucker-2: of both output and input modes)")
        ax.set_ylabel("relative weight error ||W - W_r|| / ||W||")
        ax.set_title("Low-rank error against rank (trained on Fashion-MNIST)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = docs / "compression_lowrank_error.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        written.append(path)
    sweeps = {
        k: v["lowrank"] for k, v in results.get("fashion_mnist", {}).items() if "lowrank" in v
    }
    if sweeps:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name, sw in sweeps.items():
            xs = [r["macs"] / 1e6 for r in sw["rows"]]
            energy_range = f"{sw['rows'][0]['energy']}..{sw['rows'][-1]['energy']}"
            ys = [r["top1"] for r in sw["rows"]]
            ax.plot(
                xs,
                ys,
                marker="o",
                label=f"{name} factorized, energy {energy_range}",
            )
            base = results["fashion_mnist"][name]
            ax.scatter(
                [sw["base"]["macs"] / 1e6],
                [base["deep_compression"]["float_top1"]],
                marker="*",
                s=120,
                label=f"{name} float",
            )
        ax.set_xlabel("MACs (M, conv + linear)")
        ax.set_ylabel("Fashion-MNIST top-1 (%), no fine-tuning")
        ax.set_title("Accuracy against compute of low-rank models")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = docs / "compression_lowrank_accuracy.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        written.append(path)
    ladders = {k: v["ladder"] for k, v in results.get("paper_sizes", {}).items()}
    if ladders:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        stages = list(next(iter(ladders.values())))
        width = 0.8 / len(ladders)
        for i, (key, lad) in enumerate(ladders.items()):
            xs = [j + i * width for j in range(len(stages))]
            ax.bar(xs, [lad[s] / 1e6 for s in stages], width, label=key)
        ax.set_xticks([j + width * (len(ladders) - 1) / 2 for j in range(len(stages))])
        ax.set_xticklabels(stages, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("size (MB)")
        ax.set_title("Deep Compression stages (random weights, paper sparsity)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = docs / "compression_stages.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------
# docs/compression.md


def _mb(b: float) -> str:
    return f"{b / 1e6:.3f} MB"


def render_docs(results: dict, plots: list[str]) -> str:
    """docs/compression.md from ``results.json``: every table comes from this run."""
    s = results.get("settings", {})
    lines = [
        "# Compression",
        "",
        "Generated by `python scripts/compress_experiments.py` "
        f"(torch {results.get('torch')}, {s.get('threads')} thread(s), seed {s.get('seed')}); "
        "do not edit by hand. The toolkit is `zoo.compress`; `zoo compress NAME --bits B "
        "--sparsity paper` runs Deep Compression from the command line.",
    ]
    sizes = results.get("paper_sizes", {})
    if sizes:
        paper_ratio = {
            "squeezenet1_0_8": "7.3x (4.8 -> 0.66 MB)",
            "squeezenet1_0_6": "10.2x (4.8 -> 0.47 MB)",
            "alexnet_conv8_fc5": "35x (240 -> 6.9 MB)",
        }
        lines += [
            "",
            "## Deep Compression sizes against the papers",
            "",
            "Prune to the papers' per-layer densities (SqueezeNet Table 1, Deep Compression "
            "Table 4), share weights with k-means (linear init), Huffman-code indices and sparse "
            "positions, write the file; size = file bytes. Weights are random (He init): sizes "
            "depend on the densities, bits and weight statistics, not on ImageNet training.",
            "",
            "| model | bits | file | paper | ratio to float32 | paper ratio | nonzero / weights "
            "| round trip exact |",
            "|---|---|--:|--:|--:|---|--:|---|",
        ]
        for key, r in sizes.items():
            lines.append(
                f"| {r['model']} | {r['bits']} | {_mb(r['bytes'])} | {r['paper_mb']} MB | "
                f"{r['ratio']:.1f}x | {paper_ratio.get(key, '-')} | "
                f"{r['nonzero_weights']:,} / {r['weights']:,} | {r['round_trip_exact']} |"
            )
        alex = sizes.get("alexnet_conv8_fc5")
        sq6 = sizes.get("squeezenet1_0_6")
        if alex and sq6:
            lines += [
                "",
                f"SqueezeNet 6-bit against AlexNet's float32 file: "
                f"{alex['ladder']['float32'] / sq6['bytes']:.0f}x (paper: 510x).",
            ]
        if sq6:
            lines += ["", "Per-layer accounting of SqueezeNet 1.0 at 6 bits:", "", sq6["table"]]
        if "compression_stages.png" in plots:
            lines += ["", "![Deep Compression stages](compression_stages.png)"]
    for name, r in results.get("fashion_mnist", {}).items():
        s = {**results.get("settings", {}), **r.get("settings", {})}
        lines += ["", f"## {name} on Fashion-MNIST (`{r.get('weights', name)}`)", ""]
        plan = r.get("plan", {})
        lines.append(
            f"Input {r['input_size']}; retraining on {plan.get('train')} training images, "
            f"accuracy on {plan.get('test')} test images; {r['seconds'] / 60:.1f} min in all."
        )
        dc = r.get("deep_compression")
        if dc:
            lines += [
                "",
                "### Deep Compression",
                "",
                f"Pruned in {s.get('prune_steps')} steps with {s.get('retrain_epochs')} epoch(s) "
                f"of retraining each to density {dc['density']:.3f}, then k-means codebooks "
                f"fine-tuned for {s.get('codebook_epochs')} epoch(s) (gradients summed per "
                "cluster), Huffman-coded to a file that is read back for the last column.",
                "",
                "| stage | top-1 % | size | ratio |",
                "|---|--:|--:|--:|",
                f"| float32 | {dc['float_top1']} | - | 1x |",
                f"| pruned, no retraining | {dc['pruned_no_retrain_top1']} | - | - |",
                f"| pruned + retrained | {dc['pruned_top1']} | - | - |",
            ]
            for key in [k for k in dc if k.endswith("bit")]:
                q = dc[key]
                lines.append(
                    f"| {key}: k-means only | {q['kmeans_top1']} | - | - |\n"
                    f"| {key}: codebooks fine-tuned | {q['finetuned_top1']} | - | - |\n"
                    f"| {key}: loaded from the file | **{q['file_top1']}** | {_mb(q['bytes'])} "
                    f"(float {_mb(q['float_bytes'])}) | {q['ratio']:.1f}x |"
                )
            best = min((dc[k] for k in dc if k.endswith("bit")), key=lambda q: q["bytes"])
            lines += [
                "",
                f"Smallest file: {best['ratio']:.1f}x smaller, "
                f"{best['file_top1'] - dc['float_top1']:+.2f} points of top-1 against float.",
            ]
        fp = r.get("filter_pruning")
        if fp:
            b = fp["before"]
            lines += [
                "",
                "### Filter pruning",
                "",
                f"{fp['ratio']:.0%} of the filters of every prunable conv removed, giving a "
                f"smaller dense model; then {s.get('finetune_epochs')} epoch(s) of fine-tuning.",
                "",
                "| criterion | params | MACs | top-1 before fine-tuning | top-1 after |",
                "|---|--:|--:|--:|--:|",
                f"| (float) | {b['params']:,} | {b['macs'] / 1e6:.2f}M | {b['top1']} | - |",
            ]
            for method in ("l1", "thinet"):
                m = fp.get(method)
                if m:
                    lines.append(
                        f"| {method} | {m['params']:,} | {m['macs'] / 1e6:.2f}M | "
                        f"{m['top1_before_finetune']} | {m['top1_after_finetune']} |"
                    )
        lr = r.get("lowrank")
        if lr:
            lines += [
                "",
                "### Low-rank factorization (no fine-tuning)",
                "",
                "SVD of linears and 1x1 convs, Tucker-2 of kxk convs, each layer at the "
                "smallest rank keeping the given share of its spectral energy (only where that "
                "saves MACs).",
                "",
                "| energy | layers | params | MACs | mean relative weight error | top-1 |",
                "|--:|--:|--:|--:|--:|--:|",
                f"| (float) | - | {lr['base']['params']:,} | {lr['base']['macs'] / 1e6:.2f}M | "
                f"- | {dc['float_top1'] if dc else '-'} |",
            ]
            for row in lr["rows"]:
                lines.append(
                    f"| {row['energy']} | {row['layers']} | {row['params']:,} | "
                    f"{row['macs'] / 1e6:.2f}M | {row['mean_rel_error']:.3f} | {row['top1']} |"
                )
        q8 = r.get("int8")
        if q8:
            lines += [
                "",
                "### Post-training int8 (PyTorch FX, fbgemm)",
                "",
                "| | float32 | int8 |",
                "|---|--:|--:|",
                f"| top-1 % | {q8['float_top1']} | {q8['int8_top1']} |",
                f"| state size | {_mb(q8['float_bytes'])} | {_mb(q8['int8_bytes'])} |",
            ]
            for batch in (1, 32):
                t = q8[f"batch{batch}"]
                lines.append(
                    f"| latency, batch {batch}, 1 thread | {t['float_ms']:.2f} ms | "
                    f"{t['int8_ms']:.2f} ms ({t['speedup']:.2f}x) |"
                )
    for png, title in (("compression_lowrank_error.png", "Low-rank error against rank"),
                       ("compression_lowrank_accuracy.png", "Accuracy against MACs")):  # fmt: skip
        if png in plots:
            lines += ["", f"![{title}]({png})"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="mobilenet_v1_x0_5,squeezenet1_1")
    p.add_argument("--train-images", type=int, default=None, help="override PLAN for all")
    p.add_argument("--test-images", type=int, default=None, help="override PLAN for all")
    p.add_argument("--prune-steps", type=int, default=3)
    p.add_argument("--retrain-epochs", type=float, default=1.0, help="per pruning step")
    p.add_argument("--codebook-epochs", type=float, default=1.0)
    p.add_argument("--filter-ratio", type=float, default=0.5)
    p.add_argument("--finetune-epochs", type=float, default=1.0, help="after filter pruning")
    p.add_argument("--energies", default="0.5,0.7,0.8,0.9,0.95,0.99")
    p.add_argument("--skip-alexnet", action="store_true")
    p.add_argument("--skip-sizes", action="store_true")
    p.add_argument("--skip-fmnist", action="store_true", help="only the paper size runs")
    p.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (1 is fastest on a busy box)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="tmp/compress_experiments")
    p.add_argument("--docs", default="docs", help="where compression.md and the plots go")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.train_images, args.test_images = "mobilenet_v1_x0_5", 1024, 1000
        args.retrain_epochs = args.codebook_epochs = args.finetune_epochs = 0.25
        args.prune_steps, args.energies, args.skip_alexnet = 1, "0.8,0.95", True
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work, docs = Path(args.work_dir), Path(args.docs)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    out = work / "results.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    results.update({"settings": vars(args).copy(), "torch": torch.__version__})
    if not args.skip_sizes:
        results["paper_sizes"] = paper_sizes(args, work)
    results.setdefault("fashion_mnist", {})
    curves = results.get("lowrank_error_curves", {})
    energies = [float(e) for e in args.energies.split(",")]
    for name in [] if args.skip_fmnist else args.models.split(","):
        plan = dict(PLAN[name])
        for key, override in (("train", args.train_images), ("test", args.test_images)):
            plan[key] = override or plan[key]
        float_model = trained_float(name)
        train_ds = fashion_mnist(float_model, True, plan["train"], args.seed)
        test_ds = fashion_mnist(float_model, False, plan["test"], args.seed)
        size = input_size(float_model)
        log(f"{name}: {len(train_ds)} train / {len(test_ds)} test images, input {size}")
        t_model = time.time()
        r: dict[str, Any] = {"input_size": size, "plan": plan, "weights": f"{name}.{TAG}"}
        r["settings"] = {k: getattr(args, k) for k in MODEL_SETTINGS}  # models may differ
        parts = plan["parts"]
        if "dc" in parts:
            r["deep_compression"] = deep_compression_accuracy(
                name, float_model, train_ds, test_ds, args, work
            )
        if "filter" in parts:
            r["filter_pruning"] = filter_pruning(name, float_model, train_ds, test_ds, args)
        if "lowrank" in parts:
            r["lowrank"] = lowrank_sweep(name, float_model, test_ds, energies)
        if "int8" in parts:
            r["int8"] = int8_eval(name, float_model, train_ds, test_ds)
        r["seconds"] = time.time() - t_model
        results["fashion_mnist"][name] = r
        curves.update(
            {f"{name}: {k}": v for k, v in error_curves(float_model, CURVE_LAYERS[name]).items()}
        )
        atomic_write_text(out, json.dumps(results, indent=1, default=float))  # keep what is done
    results["lowrank_error_curves"] = curves
    part = "sizes" if args.skip_fmnist else ("fmnist" if args.skip_sizes else "all")
    results[f"seconds_{part}"] = time.time() - t_start
    docs.mkdir(parents=True, exist_ok=True)
    plots = plot_all(results, curves, docs)
    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    atomic_write_text(docs / "compression.md", render_docs(results, [p.name for p in plots]))
    names = [str(p) for p in plots]
    log(f"done in {(time.time() - t_start) / 60:.1f} min; results in {out}; plots: {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
