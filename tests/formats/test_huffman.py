"""Canonical Huffman coding: optimal length, prefix-free, exact round trips, corrupt streams."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from zoo.formats import huffman


def _optimal_cost(freqs: np.ndarray) -> int:
    """Huffman's total cost as the sum of merged weights (no code lengths involved)."""
    heap = [int(f) for f in freqs if f > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@pytest.mark.parametrize("alphabet,n,seed", [(2, 100, 0), (32, 5000, 1), (256, 20000, 2)])
def test_round_trip_and_optimal_length(alphabet, n, seed):
    rng = np.random.default_rng(seed)
    p = np.exp(-np.arange(alphabet) / (alphabet / 6 + 0.5))
    symbols = rng.choice(alphabet, size=n, p=p / p.sum())
    freqs = np.bincount(symbols, minlength=alphabet)
    lengths = huffman.code_lengths(freqs)
    data, nbits = huffman.encode(symbols, lengths)
    assert nbits == _optimal_cost(freqs)
    assert len(data) == math.ceil(nbits / 8)
    probs = freqs[freqs > 0] / n
    entropy = -(probs * np.log2(probs)).sum()
    assert entropy <= nbits / n < entropy + 1
    np.testing.assert_array_equal(huffman.decode(data, nbits, n, lengths), symbols)


def test_codes_are_prefix_free_and_complete():
    freqs = np.array([50, 0, 20, 20, 5, 3, 1, 1])
    lengths = huffman.code_lengths(freqs)
    codes = huffman.canonical_codes(lengths)
    words = [format(int(codes[s]), f"0{lengths[s]}b") for s in np.flatnonzero(lengths)]
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)
    assert sum(2.0 ** -len(w) for w in words) == 1.0  # Kraft equality: a full binary tree
    assert lengths[1] == 0


def test_length_limit_is_enforced_and_still_decodes():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    freqs = np.array(fib)
    assert huffman._unlimited_lengths(freqs).max() > 16  # the unlimited code would be too long
    lengths = huffman.code_lengths(freqs, max_len=16)
    assert lengths.max() <= 16
    symbols = np.repeat(np.arange(30), np.minimum(freqs, 50))
    data, nbits = huffman.encode(symbols, lengths)
    np.testing.assert_array_equal(huffman.decode(data, nbits, len(symbols), lengths), symbols)


def test_single_symbol_and_empty_streams():
    lengths = huffman.code_lengths(np.array([0, 7, 0]))
    assert list(lengths) == [0, 1, 0]
    data, nbits = huffman.encode(np.ones(7, dtype=int), lengths)
    assert nbits == 7
    assert list(huffman.decode(data, nbits, 7, lengths)) == [1] * 7
    assert huffman.encode(np.zeros(0, dtype=int), lengths) == (b"", 0)
    assert huffman.decode(b"", 0, 0, lengths).size == 0


def test_corrupt_streams_raise():
    rng = np.random.default_rng(3)
    symbols = rng.integers(0, 5, 400)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=5))
    data, nbits = huffman.encode(symbols, lengths)
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(data, nbits, len(symbols) + 3, lengths)  # more symbols than the bits hold
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(data, nbits - 1, len(symbols), lengths)  # bit count and bytes disagree
    with pytest.raises(huffman.HuffmanError):
        huffman.encode(np.array([7]), lengths)  # symbol without a code
