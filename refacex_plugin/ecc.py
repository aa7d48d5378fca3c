"""Error correction for the payload channel: BCH (default) and Reed-Solomon, same interface.

Bits are ``uint8`` arrays of 0/1. ``decode`` takes hard bits or, for soft-decision decoding,
per-bit reliabilities (logits): first the code's own hard decoder, retried with the least reliable
bits flipped (Chase), then ordered-statistics decoding (:func:`osd_candidates`), which also finds
codewords beyond the code's hard radius. It hands every candidate to a ``check`` callback (the
payload's authentication tag), so a wrong correction is never returned.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

_BCH_OBJECTS = threading.local()


def bits_to_bytes(bits: np.ndarray) -> bytes:
    return np.packbits(np.asarray(bits, np.uint8)).tobytes()


def bytes_to_bits(data: bytes, n: int | None = None) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    return bits if n is None else bits[:n]


@dataclass(frozen=True)
class BchCode:
    """Binary BCH over GF(2^m) (``bchlib``), shortened to ``data_bits`` + ``t * m`` parity bits."""

    data_bits: int
    t: int
    m: int = 8

    @property
    def coded_bits(self) -> int:
        return self.data_bits + self._bch().ecc_bits

    def _bch(self):
        # one bchlib object per thread and code (it keeps state between decode and correct)
        cache = _BCH_OBJECTS.__dict__.setdefault("codes", {})
        if (self.t, self.m) not in cache:
            import bchlib

            cache[self.t, self.m] = bchlib.BCH(self.t, m=self.m)
        return cache[self.t, self.m]

    def encode(self, data: np.ndarray) -> np.ndarray:
        assert len(data) == self.data_bits and self.data_bits % 8 == 0
        bch = self._bch()
        ecc = bch.encode(bits_to_bytes(data))
        return np.concatenate([np.asarray(data, np.uint8), bytes_to_bits(bytes(ecc), bch.ecc_bits)])

    def decode_hard(self, coded: np.ndarray) -> tuple[np.ndarray, int] | None:
        """Corrected data bits and the number of corrected bits, or None if uncorrectable."""
        bch = self._bch()
        data = bytearray(bits_to_bytes(coded[: self.data_bits]))
        ecc_bits = np.zeros(bch.ecc_bytes * 8, np.uint8)
        ecc_bits[: bch.ecc_bits] = coded[self.data_bits : self.data_bits + bch.ecc_bits]
        ecc = bytearray(bits_to_bytes(ecc_bits))
        n = bch.decode(data, ecc)
        if n < 0:
            return None
        bch.correct(data, ecc)
        fixed = bytes_to_bits(bytes(data), self.data_bits)
        # bchlib reports some words as corrected that lie far outside every codeword's radius
        # (2.5 % of random words at t = 10, each 38-49 bits from the codeword it names):
        # bounded-distance decoding accepts only a codeword within t of what was read.
        if int((self.encode(fixed) != np.asarray(coded[: self.coded_bits], np.uint8)).sum()) > self.t:
            return None
        return fixed, n


def _flip_patterns(order: np.ndarray, depth: int) -> Iterator[tuple[int, ...]]:
    """All subsets of the ``depth`` least reliable positions, fewest flips first."""
    weakest = order[:depth]
    for k in range(depth + 1):
        yield from itertools.combinations(weakest.tolist(), k)


@functools.cache
def generator_matrix(code) -> np.ndarray:
    """``(data_bits, coded_bits)`` 0/1 generator of a systematic GF(2)-linear ``code`` (BCH, and
    Reed-Solomon's binary image): row ``i`` is the codeword of the ``i``-th unit message."""
    eye = np.eye(code.data_bits, dtype=np.uint8)
    g = np.stack([code.encode(row) for row in eye])
    if not np.array_equal(g[:, : code.data_bits], eye):
        raise ValueError("ordered-statistics decoding needs a systematic code")
    g.setflags(write=False)
    return g


def _reliable_basis(g: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian elimination of ``g (k, n)`` over GF(2), its columns taken in ``order``: the first
    ``k`` independent columns in that order (positions, ``(k,)``) and the generator rewritten as
    the identity on them, ``(k, n)`` in the original column order."""
    a = g[:, order].copy()
    k, n = a.shape
    pivots, row = [], 0
    for col in range(n):
        if row == k:
            break
        below = np.flatnonzero(a[row:, col])
        if len(below) == 0:
            continue  # dependent on the columns already taken
        if below[0]:
            a[[row, row + below[0]]] = a[[row + below[0], row]]
        hit = np.flatnonzero(a[:, col])
        a[hit[hit != row]] ^= a[row]
        pivots.append(col)
        row += 1
    out = np.empty_like(a)
    out[:, order] = a
    return order[np.asarray(pivots)], out


def osd_candidates(code, logits: np.ndarray, order: int = 2, top: int = 4) -> list[np.ndarray]:
    """Ordered-statistics decoding (Fossorier & Lin, 1995): the ``top`` codewords nearest a soft
    reading, as data bits, nearest first.

    The ``k`` most reliable independent positions are taken as right; every codeword that differs
    from the reading there in at most ``order`` (1 or 2) positions is scored by the summed
    reliability of the bits it contradicts. Unlike bounded-distance decoding it always answers (the
    authentication ``check`` decides), and reaches codewords far beyond ``t`` errors when those
    errors sit on weak bits: on simulated noisy readings at a median of 15 wrong bits of 252 (BCH
    t = 10), hard decoding found 6 % of 100 codewords, Chase (6 bits) 24 %, order 2 87 %.

    Args:
        logits: ``(coded_bits,)``, > 0 means 1, the magnitude is the reliability.
    """
    g = generator_matrix(code)
    k, n = g.shape
    logits = np.asarray(logits, np.float64)[:n]
    hard = (logits > 0).astype(np.uint8)
    weight = np.abs(logits)
    basis, a = _reliable_basis(g, np.argsort(-weight, kind="stable"))
    base = (hard[basis].astype(np.int64) @ a % 2).astype(np.uint8)  # the reading's basis bits, re-encoded
    diff = base ^ hard  # (n,) where the re-encoded word contradicts the reading
    one = (diff[None, :] ^ a).astype(np.float64)  # (k, n) the same after flipping one basis bit
    cost1 = one @ weight
    scored = [(float(diff @ weight), ())] + [(float(c), (i,)) for i, c in enumerate(cost1)]
    if order >= 2:
        rows = a.astype(np.float64)
        # |one_i xor row_j| weighted = cost1_i + w(row_j) - 2 <one_i * weight, row_j>
        pair = cost1[:, None] + (rows @ weight)[None, :] - 2 * (one * weight) @ rows.T
        i, j = np.triu_indices(k, 1)
        best = np.argsort(pair[i, j], kind="stable")[:top]
        scored += [(float(pair[i[b], j[b]]), (int(i[b]), int(j[b]))) for b in best]
    scored.sort(key=lambda s: s[0])
    out = []
    for _, flips in scored[:top]:
        word = base.copy()
        for f in flips:
            word ^= a[f]
        out.append(word[:k])  # systematic: the data bits lead
    return out


def decode(
    code, logits: np.ndarray, check: Callable[[np.ndarray], object | None], chase_depth: int = 6, osd_order: int = 2, osd_top: int = 4
):
    """Soft-decision decoding: the hard decision first, then flips of the least reliable bits
    (Chase), then the ``osd_top`` nearest codewords by ordered statistics (:func:`osd_candidates`).

    Args:
        code: a :class:`BchCode`.
        logits: ``(coded_bits,)`` bit logits: > 0 means 1, the magnitude is the reliability. Hard
            bits ``b`` can be passed as ``2 * b - 1`` with ``chase_depth=0, osd_order=0``.
        check: returns a result for data bits it accepts (e.g. an authenticated payload), else None.
        chase_depth: how many of the least reliable bits to try flipping (2^depth attempts at most).
        osd_order, osd_top: ordered-statistics decoding's order (0: none) and how many of its
            codewords ``check`` sees (each is one more tag comparison for a forger).

    Returns:
        ``check``'s first accepted result, or None.
    """
    logits = np.asarray(logits, np.float32)[: code.coded_bits]
    hard = (logits > 0).astype(np.uint8)
    order = np.argsort(np.abs(logits), kind="stable")
    tried: set[bytes] = set()
    for flips in _flip_patterns(order, chase_depth):
        trial = hard.copy()
        trial[list(flips)] ^= 1
        out = code.decode_hard(trial)
        if out is None:
            continue
        key = bits_to_bytes(out[0])
        if key in tried:
            continue
        tried.add(key)
        result = check(out[0])
        if result is not None:
            return result
    if osd_order <= 0:
        return None
    for data in osd_candidates(code, logits, osd_order, osd_top):
        key = bits_to_bytes(data)
        if key in tried:
            continue
        tried.add(key)
        result = check(data)
        if result is not None:
            return result
    return None
