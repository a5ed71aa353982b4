"""The Deep Compression file (``.zdc``): header, per-layer codebooks and Huffman-coded
streams, checksum. The container and the layer codec only; choosing what to prune and share
(and building a model from the file) is done above, in ``zoo.compress`` and the resolver.

Layout (little-endian), version 1::

    magic "\\x89ZDC\\r\\n\\x1a\\n" | u16 version | u64 file length | u32 n | n bytes JSON meta
    u32 record count, then records, then u32 CRC-32 of every byte before it.

A *layer record* holds one Conv2d/Linear weight: name, shape, nominal value bits, relative
index bits (0 = dense, no positions stored), the float32 codebook, the non-zero count, the
Huffman code lengths of the value alphabet and of the index alphabet, and the two bit streams.
Positions are stored as gaps between consecutive non-zeros (Han et al. 2016, Sec. 2): with
``g`` index bits, symbols ``0 .. 2**g - 2`` mean "the next weight is 1 .. 2**g - 1 places on"
and symbol ``2**g - 1`` is a filler that advances ``2**g - 1`` places without a weight (the
paper writes a filler zero weight instead; here the filler carries no value symbol).
A *raw record* holds any other state-dict tensor (biases, BatchNorm, buffers) bit-exactly.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.formats import huffman
from zoo.utils import atomic_write_bytes

__all__ = [
    "MAGIC",
    "VERSION",
    "CompressedFileError",
    "EncodedLayer",
    "CompressedModel",
    "encode_layer",
    "decode_layer",
    "serialize",
    "parse",
    "read",
    "write",
]

MAGIC = b"\x89ZDC\r\n\x1a\n"
VERSION = 1

_KIND_CODES = {"conv": 0, "linear": 1}
_DTYPES = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.float64: 3,
    torch.int64: 4,
    torch.int32: 5,
    torch.uint8: 6,
    torch.bool: 7,
    torch.int8: 8,
}
_DTYPE_OF = {v: k for k, v in _DTYPES.items()}
_REC_LAYER, _REC_RAW = 1, 2


class CompressedFileError(ValueError):
    """The file is not a zoo compressed model, is truncated, corrupt or from a newer version."""


@dataclass
class EncodedLayer:
    """One weight tensor after pruning, weight sharing and Huffman coding."""

    name: str
    kind: str
    shape: tuple[int, ...]
    bits: int
    index_bits: int
    codebook: np.ndarray
    nnz: int
    n_entries: int
    value_lengths: np.ndarray
    index_lengths: np.ndarray
    value_stream: bytes
    value_nbits: int
    index_stream: bytes
    index_nbits: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def fillers(self) -> int:
        return self.n_entries - self.nnz if self.index_bits else 0


@dataclass
class CompressedModel:
    """Everything a compressed file holds, before serialisation / after parsing."""

    meta: dict[str, Any]
    layers: list[EncodedLayer]
    raw: dict[str, torch.Tensor] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The decoded state dict: shared weights for the layers, raw tensors for the rest."""
        state = {f"{layer.name}.weight": decode_layer(layer) for layer in self.layers}
        state.update(self.raw)
        return state

    def to_bytes(self) -> bytes:
        """The exact bytes :func:`write` puts in a file."""
        return serialize(self)[0]


# --------------------------------------------------------------------------------------
# One layer


def _float32_numpy(weight: torch.Tensor, name: str) -> np.ndarray:
    if weight.dtype != torch.float32:
        raise TypeError(
            f"{name}: weights must be float32 for an exact round trip, got {weight.dtype}"
        )
    return weight.detach().cpu().contiguous().numpy().reshape(-1)


def encode_layer(
    name: str,
    weight: torch.Tensor,
    kind: str,
    bits: int | None = None,
    index_bits: int = 8,
) -> EncodedLayer:
    """Encode a shared (few distinct values), possibly sparse weight tensor.

    ``bits=None`` uses the fewest bits that index the layer's distinct non-zero values.
    A layer without zeros is stored densely (no positions), whatever ``index_bits`` says.
    """
    w = _float32_numpy(weight, name)
    nz = np.flatnonzero(w)
    values = w[nz]
    codebook = np.unique(values).astype(np.float32)
    k = len(codebook)
    need = max(1, math.ceil(math.log2(k))) if k > 1 else 1
    if bits is None:
        bits = need
    if k > 2 ** int(bits):
        raise ValueError(
            f"{name} has {k} distinct non-zero weights, more than 2**{bits}; share weights "
            f"first with zoo.compress.share_weights(model, bits={bits})"
        )
    if k > 2**16:
        raise ValueError(f"{name}: codebooks are limited to 65536 entries, got {k}")
    symbols = np.searchsorted(codebook, values)
    value_lengths = huffman.code_lengths(np.bincount(symbols, minlength=k))
    value_stream, value_nbits = huffman.encode(symbols, value_lengths)
    g = 0 if len(nz) == len(w) else int(index_bits)
    if len(nz) and g:
        if not 1 <= g <= 12:
            raise ValueError(f"{name}: index_bits must be between 1 and 12, got {g}")
        entries = _position_symbols(nz, g)
        index_lengths = huffman.code_lengths(np.bincount(entries, minlength=2**g))
        index_stream, index_nbits = huffman.encode(entries, index_lengths)
    else:
        entries = np.zeros(0, dtype=np.int64)
        index_lengths = np.zeros(2**g if g else 0, dtype=np.uint8)
        index_stream, index_nbits = b"", 0
    return EncodedLayer(
        name=name,
        kind=kind,
        shape=tuple(int(s) for s in weight.shape),
        bits=int(bits),
        index_bits=g,
        codebook=codebook,
        nnz=len(nz),
        n_entries=len(entries),
        value_lengths=value_lengths,
        index_lengths=index_lengths,
        value_stream=value_stream,
        value_nbits=value_nbits,
        index_stream=index_stream,
        index_nbits=index_nbits,
    )


def _position_symbols(positions: np.ndarray, g: int) -> np.ndarray:
    """Relative-index symbols with fillers for gaps longer than ``2**g - 1``."""
    span = 2**g - 1
    gaps = np.diff(np.concatenate([[-1], positions]))
    n_fill = (gaps - 1) // span
    last = gaps - n_fill * span  # in 1 .. span
    total = int((n_fill + 1).sum())
    entries = np.full(total, span, dtype=np.int64)  # fillers everywhere ...
    entries[np.cumsum(n_fill + 1) - 1] = last - 1  # ... then the real gap after each run
    return entries


def decode_layer(layer: EncodedLayer) -> torch.Tensor:
    """The dense float32 weight tensor a layer record stands for."""
    k = len(layer.codebook)
    symbols = huffman.decode(layer.value_stream, layer.value_nbits, layer.nnz, layer.value_lengths)
    if layer.nnz and symbols.max() >= k:
        raise CompressedFileError(f"{layer.name}: value symbol outside the codebook")
    out = np.zeros(layer.numel, dtype=np.float32)
    if layer.index_bits == 0:
        if layer.nnz not in (0, layer.numel):
            raise CompressedFileError(
                f"{layer.name}: dense layer with {layer.nnz} of {layer.numel} values"
            )
        out[: layer.nnz] = layer.codebook[symbols]
    elif layer.nnz:
        span = 2**layer.index_bits - 1
        entries = huffman.decode(
            layer.index_stream, layer.index_nbits, layer.n_entries, layer.index_lengths
        )
        advance = np.where(entries == span, span, entries + 1)
        positions = (np.cumsum(advance) - 1)[entries != span]
        if len(positions) != layer.nnz or (len(positions) and positions[-1] >= layer.numel):
            raise CompressedFileError(f"{layer.name}: positions do not match the weight shape")
        out[positions] = layer.codebook[symbols]
    return torch.from_numpy(out).view(layer.shape)


# --------------------------------------------------------------------------------------
# Serialisation


def _pack_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def _layer_record(layer: EncodedLayer) -> bytes:
    parts = [
        struct.pack("<B", _REC_LAYER),
        _pack_name(layer.name),
        struct.pack("<BB", _KIND_CODES[layer.kind], len(layer.shape)),
        struct.pack(f"<{len(layer.shape)}I", *layer.shape),
        struct.pack("<BBI", layer.bits, layer.index_bits, len(layer.codebook)),
        layer.codebook.astype("<f4").tobytes(),
        struct.pack("<II", layer.nnz, layer.n_entries),
        layer.value_lengths.astype(np.uint8).tobytes(),
        layer.index_lengths.astype(np.uint8).tobytes(),
        struct.pack("<Q", layer.value_nbits),
        layer.value_stream,
        struct.pack("<Q", layer.index_nbits),
        layer.index_stream,
    ]
    return b"".join(parts)


def _raw_record(name: str, tensor: torch.Tensor) -> bytes:
    if tensor.dtype not in _DTYPES:
        raise TypeError(f"{name}: cannot store dtype {tensor.dtype}")
    t = tensor.detach().cpu().contiguous()
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return b"".join(
        [
            struct.pack("<B", _REC_RAW),
            _pack_name(name),
            struct.pack("<BB", _DTYPES[t.dtype], t.dim()),
            struct.pack(f"<{t.dim()}I", *t.shape),
            data,
        ]
    )


def serialize(cm: CompressedModel) -> tuple[bytes, dict[str, int]]:
    """File bytes and the size of every record (``"<header>"`` and ``"<trailer>"`` included).

    The sizes are keyed by layer / tensor name; they add up to the length of the bytes, which
    is what size accounting reports per layer.
    """
    meta = json.dumps(cm.meta, separators=(",", ":")).encode("utf-8")
    sizes: dict[str, int] = {}
    records = []
    for layer in cm.layers:
        rec = _layer_record(layer)
        sizes[layer.name] = len(rec)
        records.append(rec)
    for name, tensor in cm.raw.items():
        rec = _raw_record(name, tensor)
        sizes[name] = len(rec)
        records.append(rec)
    head_len = len(MAGIC) + 2 + 8 + 4 + len(meta) + 4
    total = head_len + sum(len(r) for r in records) + 4
    head = MAGIC + struct.pack("<HQI", VERSION, total, len(meta)) + meta
    head += struct.pack("<I", len(records))
    body = head + b"".join(records)
    sizes["<header>"] = len(head)
    sizes["<trailer>"] = 4
    return body + struct.pack("<I", zlib.crc32(body)), sizes


# --------------------------------------------------------------------------------------
# Reading


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CompressedFileError(
                f"{self.path}: record runs past the end of the file (corrupt)"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def name(self) -> str:
        (n,) = self.unpack("H")
        return self.take(n).decode("utf-8")


def _check_envelope(data: bytes, path: str) -> None:
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(
            f"{path} is not a zoo compressed model (bad magic); write one with zoo.compress.save"
        )
    if len(data) < len(MAGIC) + 14:
        raise CompressedFileError(f"{path} is truncated ({len(data)} bytes); write it again")
    version, total, _ = struct.unpack_from("<HQI", data, len(MAGIC))
    if version > VERSION:
        raise CompressedFileError(
            f"{path} is format version {version}; this zoo reads up to {VERSION}, upgrade zoo"
        )
    if len(data) != total:
        raise CompressedFileError(
            f"{path} is truncated or has trailing data: {len(data)} bytes, header says {total}; "
            "copy or write the file again"
        )
    (crc,) = struct.unpack_from("<I", data, total - 4)
    if zlib.crc32(data[: total - 4]) != crc:
        raise CompressedFileError(f"{path} is corrupt (CRC-32 mismatch); copy or write it again")


def _parse_layer(r: _Reader) -> EncodedLayer:
    name = r.name()
    kind_code, ndim = r.unpack("BB")
    shape = r.unpack(f"{ndim}I")
    bits, g, k = r.unpack("BBI")
    codebook = np.frombuffer(r.take(4 * k), dtype="<f4").astype(np.float32)
    nnz, n_entries = r.unpack("II")
    value_lengths = np.frombuffer(r.take(k), dtype=np.uint8).copy()
    index_lengths = np.frombuffer(r.take(2**g if g else 0), dtype=np.uint8).copy()
    (value_nbits,) = r.unpack("Q")
    value_stream = r.take((value_nbits + 7) // 8)
    (index_nbits,) = r.unpack("Q")
    index_stream = r.take((index_nbits + 7) // 8)
    kinds = {v: k for k, v in _KIND_CODES.items()}
    if kind_code not in kinds:
        raise CompressedFileError(f"{name}: unknown layer kind {kind_code}")
    return EncodedLayer(
        name, kinds[kind_code], tuple(shape), bits, g, codebook, nnz, n_entries,
        value_lengths, index_lengths, value_stream, value_nbits, index_stream, index_nbits,
    )  # fmt: skip


def _parse_raw(r: _Reader) -> tuple[str, torch.Tensor]:
    name = r.name()
    code, ndim = r.unpack("BB")
    if code not in _DTYPE_OF:
        raise CompressedFileError(f"{name}: unknown dtype code {code}")
    shape = r.unpack(f"{ndim}I")
    dtype = _DTYPE_OF[code]
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    buf = bytearray(r.take(nbytes))
    flat = torch.frombuffer(buf, dtype=torch.uint8) if nbytes else torch.zeros(0, dtype=torch.uint8)
    return name, flat.view(dtype).reshape(shape).clone()


def parse(data: bytes, path: str = "<bytes>") -> CompressedModel:
    """Parse file bytes after checking magic, version, length and checksum."""
    _check_envelope(data, path)
    r = _Reader(data[:-4], path)
    r.take(len(MAGIC))
    _, _, meta_len = r.unpack("HQI")
    try:
        meta = json.loads(r.take(meta_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompressedFileError(f"{path}: unreadable header ({e})") from e
    (n_records,) = r.unpack("I")
    layers, raw = [], {}
    for _ in range(n_records):
        (kind,) = r.unpack("B")
        if kind == _REC_LAYER:
            layers.append(_parse_layer(r))
        elif kind == _REC_RAW:
            name, tensor = _parse_raw(r)
            raw[name] = tensor
        else:
            raise CompressedFileError(f"{path}: unknown record type {kind}")
    if r.pos != len(r.data):
        raise CompressedFileError(f"{path}: {len(r.data) - r.pos} unexplained bytes after records")
    return CompressedModel(meta, layers, raw)


def write(cm: CompressedModel, path: str | os.PathLike) -> dict[str, int]:
    """Write ``cm`` atomically to ``path``; returns the record sizes (see :func:`serialize`)."""
    data, sizes = serialize(cm)
    atomic_write_bytes(path, data)
    return sizes


def read(path: str | os.PathLike) -> CompressedModel:
    """Read and check a compressed file without building a model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; write it with zoo.compress.save(model, path)"
        )
    return parse(path.read_bytes(), str(path))


