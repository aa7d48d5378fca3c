"""Error correction for the payload channel: BCH (default) and Reed-Solomon, same interface.

Bits are ``uint8`` arrays of 0/1. ``decode`` takes hard bits or, for soft-decision (Chase)
decoding, per-bit reliabilities: it retries with the least reliable bits flipped and hands every
candidate that the code accepts to a ``check`` callback (the payload's authentication tag), so a
wrong correction is never returned.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


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
        import bchlib

        return bchlib.BCH(self.t, m=self.m)

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


@dataclass(frozen=True)
class ReedSolomonCode:
    """Reed-Solomon over GF(2^8) (``reedsolo``): ``data_bits / 8`` data bytes + ``nsym`` parity bytes."""

    data_bits: int
    nsym: int

    @property
    def coded_bits(self) -> int:
        return self.data_bits + 8 * self.nsym

    def encode(self, data: np.ndarray) -> np.ndarray:
        import reedsolo

        out = reedsolo.RSCodec(self.nsym).encode(bits_to_bytes(data))
        return bytes_to_bits(bytes(out))

    def decode_hard(self, coded: np.ndarray) -> tuple[np.ndarray, int] | None:
        import reedsolo

        try:
            msg, _, errata = reedsolo.RSCodec(self.nsym).decode(bits_to_bytes(coded[: self.coded_bits]))
        except reedsolo.ReedSolomonError:
            return None
        return bytes_to_bits(bytes(msg), self.data_bits), len(errata)


def _flip_patterns(order: np.ndarray, depth: int) -> Iterator[tuple[int, ...]]:
    """All subsets of the ``depth`` least reliable positions, fewest flips first."""
    weakest = order[:depth]
    for k in range(depth + 1):
        yield from itertools.combinations(weakest.tolist(), k)


def decode(code, logits: np.ndarray, check: Callable[[np.ndarray], object | None], chase_depth: int = 6):
    """Chase decoding: the hard decision first, then flips of the least reliable bits.

    Args:
        code: :class:`BchCode` or :class:`ReedSolomonCode`.
        logits: ``(coded_bits,)`` bit logits: > 0 means 1, the magnitude is the reliability. Hard
            bits ``b`` can be passed as ``2 * b - 1`` with ``chase_depth=0``.
        check: returns a result for data bits it accepts (e.g. an authenticated payload), else None.
        chase_depth: how many of the least reliable bits to try flipping (2^depth attempts at most).

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
    return None
