"""The whole Deep Compression pipeline in one call: prune -> retrain -> share -> fine-tune ->
Huffman-code to a file."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from zoo.compress.accounting import SizeReport
from zoo.compress.encode import save
from zoo.compress.layers import PerLayer
from zoo.compress.prune import paper_sparsity, prune_and_retrain
from zoo.compress.quantize import finetune_codebooks, share_weights

__all__ = ["deep_compress", "resolve_sparsity"]


def resolve_sparsity(sparsity: PerLayer | str, model: nn.Module) -> PerLayer:
    """``"paper"`` becomes the published per-layer rates of the model's architecture."""
    if isinstance(sparsity, str):
        if sparsity != "paper":
            raise ValueError(f"sparsity must be a number, a mapping or 'paper', got {sparsity!r}")
        arch = (getattr(model, "default_cfg", None) or {}).get("architecture")
        if arch is None:
            raise ValueError(
                "sparsity='paper' needs a zoo model (with default_cfg['architecture'])"
            )
        return paper_sparsity(arch)
    return sparsity


def deep_compress(
    model: nn.Module,
    sparsity: PerLayer | str,
    bits: PerLayer,
    path: str | os.PathLike | None = None,
    index_bits: PerLayer | None = None,
    retrain: Callable[[nn.Module, int], Any] | None = None,
    prune_steps: int = 1,
    finetune: Callable[[nn.Module, list[nn.Parameter]], Any] | None = None,
    progress: bool = False,
) -> SizeReport | None:
    """Compress ``model`` in place; write ``path`` and return its size report when given.

    ``retrain(model, step)`` runs after each of the ``prune_steps`` pruning rounds with the
    pruned weights held at zero; ``finetune(model, codebooks)`` trains the shared centroids.
    Without them this is one-shot pruning and k-means quantization.
    """
    prune_and_retrain(model, resolve_sparsity(sparsity, model), retrain, prune_steps)
    if finetune is not None:
        finetune_codebooks(model, bits, finetune, progress=progress)
    else:
        share_weights(model, bits, progress=progress)
    if path is None:
        return None
    return save(model, path, bits=bits, index_bits=index_bits)
