"""Model compression for any zoo model: Deep Compression (magnitude pruning, k-means weight
sharing, Huffman coding, a compact file format), filter pruning, low-rank factorization and
post-training int8 quantization.

    import zoo, zoo.compress as zc
    model = zoo.create("squeezenet1_0")
    report = zc.deep_compress(model, sparsity="paper", bits=6, path="sq.zdc")
    print(report)                       # per-layer table; report.total_bytes == file size
    same = zc.load("sq.zdc")            # exactly the shared-weight model back
"""

from zoo.compress.accounting import LayerSize, SizeReport, size_report
from zoo.compress.encode import encode_model, load, save
from zoo.compress.filter_prune import PruneResult, find_prune_groups, prune_filters
from zoo.compress.int8 import measure_latency, quantize_int8, state_bytes
from zoo.compress.layers import compressible_layers
from zoo.compress.lowrank import factorize, factorize_conv, factorize_linear
from zoo.compress.pipeline import deep_compress
from zoo.compress.prune import (
    PAPER_DENSITY,
    attach_masks,
    finalize,
    magnitude_mask,
    paper_sparsity,
    prune_and_retrain,
    prune_magnitude,
    sparsity_table,
)
from zoo.compress.quantize import finetune_codebooks, kmeans_1d, share_weights
from zoo.formats.zdc import CompressedFileError, CompressedModel, decode_layer, encode_layer, read

__all__ = [
    "CompressedFileError",
    "CompressedModel",
    "LayerSize",
    "PAPER_DENSITY",
    "PruneResult",
    "SizeReport",
    "attach_masks",
    "compressible_layers",
    "decode_layer",
    "deep_compress",
    "encode_layer",
    "encode_model",
    "factorize",
    "factorize_conv",
    "factorize_linear",
    "finalize",
    "find_prune_groups",
    "finetune_codebooks",
    "kmeans_1d",
    "load",
    "magnitude_mask",
    "measure_latency",
    "paper_sparsity",
    "prune_and_retrain",
    "prune_filters",
    "prune_magnitude",
    "quantize_int8",
    "read",
    "save",
    "share_weights",
    "size_report",
    "sparsity_table",
    "state_bytes",
]
