"""Size accounting of a compressed model per layer and in total, read like Deep Compression's
per-layer tables (Han et al. 2016, Tables 4 and 5).

Columns: weights, density after pruning (P), value bits per non-zero before (P+Q) and after
Huffman coding (P+Q+H), index bits per non-zero before and after Huffman coding, and the
compression rate of the layer (encoded size over its float32 size). The P+Q rate counts the
fixed-width streams plus the float32 codebook; the P+Q+H rate is the layer's exact record in
the file (streams, codebook, code tables, name and shape). ``total_bytes`` is the file size.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from zoo.formats.zdc import CompressedModel, EncodedLayer, serialize

__all__ = ["LayerSize", "SizeReport", "size_report"]

MB = 1e6
MIB = 2**20


@dataclass(frozen=True)
class LayerSize:
    """Sizes of one Conv2d/Linear weight in the compressed file."""

    name: str
    kind: str
    weights: int
    nonzero: int
    bits: int
    index_bits: int
    codebook_size: int
    fillers: int
    value_stream_bits: int
    index_stream_bits: int
    record_bytes: int

    @property
    def density(self) -> float:
        return self.nonzero / self.weights if self.weights else 0.0

    @property
    def pq_bits(self) -> int:
        """Fixed-width streams (P+Q): bits per value and per relative index, plus codebook."""
        entries = self.nonzero + self.fillers if self.index_bits else 0
        return self.nonzero * self.bits + entries * self.index_bits + 32 * self.codebook_size

    @property
    def weight_bits_pqh(self) -> float:
        return self.value_stream_bits / self.nonzero if self.nonzero else 0.0

    @property
    def index_bits_pq(self) -> float:
        entries = self.nonzero + self.fillers if self.index_bits else 0
        return entries * self.index_bits / self.nonzero if self.nonzero else 0.0

    @property
    def index_bits_pqh(self) -> float:
        return self.index_stream_bits / self.nonzero if self.nonzero else 0.0

    @property
    def rate_pq(self) -> float:
        return self.pq_bits / (32 * self.weights)

    @property
    def rate_pqh(self) -> float:
        return 8 * self.record_bytes / (32 * self.weights)


@dataclass(frozen=True)
class SizeReport:
    """Per-layer and total sizes; ``total_bytes`` is exactly the length of the file."""

    layers: list[LayerSize]
    other_params: int
    other_bytes: int
    overhead_bytes: int
    float_bytes: int

    @property
    def layer_bytes(self) -> int:
        return sum(layer.record_bytes for layer in self.layers)

    @property
    def total_bytes(self) -> int:
        return self.layer_bytes + self.other_bytes + self.overhead_bytes

    @property
    def ratio(self) -> float:
        """Float32 size of every floating state tensor over the file size."""
        return self.float_bytes / self.total_bytes

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    def rows(self) -> list[list[str]]:
        """The table as strings: one row per layer, then the totals."""
        out = []
        for s in self.layers:
            out.append(
                [
                    s.name,
                    f"{s.weights:,}",
                    f"{100 * s.density:.1f}%",
                    f"{s.bits}",
                    f"{s.weight_bits_pqh:.2f}",
                    f"{s.index_bits_pq:.2f}",
                    f"{s.index_bits_pqh:.2f}",
                    f"{100 * s.rate_pq:.2f}%",
                    f"{100 * s.rate_pqh:.2f}%",
                    f"{s.record_bytes:,}",
                ]
            )
        pq = sum(s.pq_bits for s in self.layers)
        val = sum(s.value_stream_bits for s in self.layers)
        idx = sum(s.index_stream_bits for s in self.layers)
        nnz = max(self.nonzero, 1)
        out.append(
            [
                "conv+fc weights",
                f"{self.weights:,}",
                f"{100 * self.nonzero / max(self.weights, 1):.1f}%",
                f"{sum(s.bits * s.nonzero for s in self.layers) / nnz:.2f}",
                f"{val / nnz:.2f}",
                f"{sum(s.index_bits_pq * s.nonzero for s in self.layers) / nnz:.2f}",
                f"{idx / nnz:.2f}",
                f"{100 * pq / (32 * max(self.weights, 1)):.2f}%",
                f"{100 * self.layer_bytes / (4 * max(self.weights, 1)):.2f}%",
                f"{self.layer_bytes:,}",
            ]
        )
        out.append(
            [f"other tensors ({self.other_params:,} values, raw)"]
            + [""] * 8
            + [f"{self.other_bytes:,}"]
        )
        out.append(["header, meta, checksum"] + [""] * 8 + [f"{self.overhead_bytes:,}"])
        out.append(
            [f"file total ({self.total_bytes / MB:.3f} MB, {self.ratio:.1f}x smaller than fp32)"]
            + [""] * 8
            + [f"{self.total_bytes:,}"]
        )
        return out

    HEADER = [
        "layer",
        "#weights",
        "weights% (P)",
        "weight bits (P+Q)",
        "weight bits (P+Q+H)",
        "index bits (P+Q)",
        "index bits (P+Q+H)",
        "rate (P+Q)",
        "rate (P+Q+H)",
        "bytes",
    ]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.HEADER) + " |", "|" + "---|" * len(self.HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(lines)

    def rich_table(self, title: str = "Deep Compression size accounting"):
        table = Table(title=title)
        for i, col in enumerate(self.HEADER):
            table.add_column(col, justify="left" if i == 0 else "right")
        for r in self.rows():
            table.add_row(*r)
        return table

    def __str__(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.HEADER, *self.rows()]) for i in range(len(self.HEADER))
        ]

        def fmt(row: list[str]) -> str:
            cells = zip(row, widths, strict=True)
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

        return "\n".join([fmt(self.HEADER)] + [fmt(r) for r in self.rows()])


def _layer_size(layer: EncodedLayer, record_bytes: int) -> LayerSize:
    return LayerSize(
        name=layer.name,
        kind=layer.kind,
        weights=layer.numel,
        nonzero=layer.nnz,
        bits=layer.bits,
        index_bits=layer.index_bits,
        codebook_size=len(layer.codebook),
        fillers=layer.fillers,
        value_stream_bits=layer.value_nbits,
        index_stream_bits=layer.index_nbits,
        record_bytes=record_bytes,
    )


def size_report(cm: CompressedModel, record_sizes: dict[str, int] | None = None) -> SizeReport:
    """Account for every byte of ``cm`` as it would be written by :func:`zoo.compress.save`."""
    if record_sizes is None:
        record_sizes = serialize(cm)[1]
    layers = [_layer_size(layer, record_sizes[layer.name]) for layer in cm.layers]
    other_params = sum(t.numel() for t in cm.raw.values())
    other_bytes = sum(record_sizes[name] for name in cm.raw)
    overhead = record_sizes["<header>"] + record_sizes["<trailer>"]
    float_values = sum(layer.numel for layer in cm.layers) + sum(
        t.numel() for t in cm.raw.values() if t.is_floating_point()
    )
    return SizeReport(layers, other_params, other_bytes, overhead, 4 * float_values)
