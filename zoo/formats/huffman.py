"""Canonical Huffman coding of integer symbol streams, vectorised with numpy.

Only the code length of each symbol is stored; codes are assigned canonically (shorter codes
first, then by symbol), so a decoder rebuilds them from the lengths alone. Lengths are capped
at :data:`MAX_CODE_LEN` bits by repeatedly halving the frequencies, which keeps the decoding
table at ``2**MAX_CODE_LEN`` entries. Bits are written most significant first.

Decoding looks up the symbol starting at *every* bit position with one table read, then finds
the positions where symbols really start by pointer doubling, so no Python loop runs per symbol.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = [
    "MAX_CODE_LEN",
    "HuffmanError",
    "code_lengths",
    "canonical_codes",
    "encode",
    "decode",
    "encoded_bits",
]

MAX_CODE_LEN = 16


class HuffmanError(ValueError):
    """A stream or code table is inconsistent (corrupt file or wrong table)."""


def _unlimited_lengths(freqs: np.ndarray) -> np.ndarray:
    """Optimal (Huffman) code lengths for the symbols with non-zero frequency."""
    lengths = np.zeros(len(freqs), dtype=np.int64)
    used = np.flatnonzero(freqs)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    # heap items: (weight, tie-breaker, symbols in this subtree)
    heap = [(int(freqs[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, t1, s1 = heapq.heappop(heap)
        w2, t2, s2 = heapq.heappop(heap)
        merged = s1 + s2
        lengths[merged] += 1
        heapq.heappush(heap, (w1 + w2, min(t1, t2), merged))
    return lengths


def code_lengths(freqs: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Huffman code length (bits) per symbol, 0 for unused symbols, none above ``max_len``."""
    freqs = np.asarray(freqs, dtype=np.int64)
    if freqs.ndim != 1 or (freqs < 0).any():
        raise ValueError("freqs must be a 1-D array of non-negative counts")
    if not freqs.any():
        return np.zeros(len(freqs), dtype=np.uint8)
    if np.count_nonzero(freqs) > 2**max_len:
        raise ValueError(f"{np.count_nonzero(freqs)} symbols cannot fit codes of <= {max_len} bits")
    f = freqs.copy()
    while True:
        lengths = _unlimited_lengths(f)
        if lengths.max() <= max_len:
            return lengths.astype(np.uint8)
        f = np.where(f > 0, np.maximum(f >> 1, 1), 0)  # flatten the distribution and retry


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code (as an integer, MSB first) of every symbol with a non-zero length."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    order = sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s))
    code, prev = 0, 0
    for i, s in enumerate(order):
        length = int(lengths[s])
        if i:
            code = (code + 1) << (length - prev)
        codes[s] = code
        prev = length
    if order and code >= (1 << prev):
        raise HuffmanError("code lengths violate the Kraft inequality")
    return codes


def encoded_bits(symbols: np.ndarray, lengths: np.ndarray) -> int:
    """Total bits of ``symbols`` under ``lengths`` (without writing the stream)."""
    return int(np.asarray(lengths, dtype=np.int64)[np.asarray(symbols, dtype=np.int64)].sum())


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Pack ``symbols`` with the canonical code of ``lengths``; returns (bytes, bit count)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size == 0:
        return b"", 0
    if symbols.min() < 0 or symbols.max() >= len(lengths) or (lengths[symbols] == 0).any():
        raise HuffmanError("a symbol has no code in this table")
    codes = canonical_codes(lengths).astype(np.int64)
    width = int(lengths.max())
    sym_len = lengths[symbols]
    # Each code left-aligned in a ``width``-bit field; bit j of a symbol sits at start + j.
    aligned = codes[symbols] << (width - sym_len)
    starts = np.cumsum(sym_len) - sym_len
    nbits = int(starts[-1] + sym_len[-1])
    bits = np.zeros(nbits + width, dtype=np.uint8)
    for j in range(width):
        bit = ((aligned >> (width - 1 - j)) & 1).astype(np.uint8)
        keep = sym_len > j
        bits[starts[keep] + j] = bit[keep]
    return np.packbits(bits[:nbits]).tobytes(), nbits


def _decode_table(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbol and code length for every ``width``-bit window (length 0 = no code starts so)."""
    codes = canonical_codes(lengths)
    table_sym = np.zeros(1 << width, dtype=np.int32)
    table_len = np.zeros(1 << width, dtype=np.int32)
    for s in np.flatnonzero(lengths):
        length = int(lengths[s])
        lo = int(codes[s]) << (width - length)
        hi = (int(codes[s]) + 1) << (width - length)
        table_sym[lo:hi] = s
        table_len[lo:hi] = length
    return table_sym, table_len


def _windows(data: bytes, nbits: int, width: int) -> np.ndarray:
    """The ``width`` bits starting at every bit position (zero-padded past the end)."""
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.uint32)
    raw = np.concatenate([raw, np.zeros(3, dtype=np.uint32)])
    # 32 bits starting at each byte, big-endian: enough for a 24-bit window at any bit offset.
    word = (raw[:-3] << 24) | (raw[1:-2] << 16) | (raw[2:-1] << 8) | raw[3:]
    shifts = (32 - width - np.arange(8, dtype=np.uint32)).astype(np.uint32)
    out = np.repeat(word, 8)[:nbits]
    out >>= np.tile(shifts, len(word))[:nbits]
    out &= np.uint32((1 << width) - 1)
    return out.astype(np.int32)


def _chain(step: np.ndarray, count: int, nbits: int) -> np.ndarray:
    """Start positions of the first ``count`` symbols, following ``p -> p + step[p]`` from 0.

    Two levels: jumps of ``B = 2**r`` symbols by pointer doubling, a short walk over the
    block starts, then all blocks advanced in parallel one symbol at a time.
    """
    end = nbits + 1  # absorbing "invalid" state; nbits itself is the clean end
    nxt = np.arange(nbits + 2, dtype=np.int32)
    nxt[:nbits] += step
    np.minimum(nxt, end, out=nxt)
    nxt[:nbits][step == 0] = end
    nxt[nbits + 1] = end
    r = 4 if count > 4096 else 0
    jump = nxt
    for _ in range(r):
        jump = jump[jump]
    block = 1 << r
    n_blocks = (count + block - 1) // block
    starts = [0] * n_blocks
    p = 0
    for i in range(n_blocks):
        starts[i] = p
        p = jump[p]
    pos = np.empty((block, n_blocks), dtype=np.int32)
    cur = np.asarray(starts, dtype=np.int32)
    for j in range(block):
        pos[j] = cur
        cur = nxt[cur]
    return pos.T.reshape(-1)[:count].astype(np.int64)


def decode(data: bytes, nbits: int, count: int, lengths: np.ndarray) -> np.ndarray:
    """Decode exactly ``count`` symbols from the first ``nbits`` bits of ``data``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        if nbits:
            raise HuffmanError(f"stream holds {nbits} bits but no symbols")
        return np.zeros(0, dtype=np.int64)
    if not lengths.any():
        raise HuffmanError("empty code table for a non-empty stream")
    if len(data) != (nbits + 7) // 8 or nbits == 0:
        raise HuffmanError(f"stream of {len(data)} bytes cannot hold exactly {nbits} bits")
    width = int(lengths.max())
    if width > 24:
        raise HuffmanError(f"code lengths up to {width} bits are not supported (max 24)")
    if nbits >= 2**31 - 2:
        raise HuffmanError(f"streams are limited to 2**31 bits, got {nbits}")
    table_sym, table_len = _decode_table(lengths, width)
    window = _windows(data, nbits, width)
    step = table_len[window].astype(np.int32)
    pos = _chain(step, count, nbits)
    last = pos[-1]
    if last >= nbits or step[last] == 0 or last + step[last] != nbits:
        raise HuffmanError(
            f"stream does not decode into exactly {count} symbols over {nbits} bits (corrupt data)"
        )
    return table_sym[window[pos]].astype(np.int64)
