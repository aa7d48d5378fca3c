"""What an anonymiser is and what it returns: the protocol every method implements.

A leaf module (torch only), so the methods, the registry and the writer can all import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class Anonymised:
    """What an anonymiser made of a batch of aligned crops.

    ``crops (B, 3, S, S)`` in [0, 1]; ``masks (B, 1, S, S)`` where each crop changed (outside them
    it equals its input), or None for the whole face mask; ``donors``: per face, the donor indices
    used (empty for methods without donors); ``notes``: per face, what the method could not keep
    (e.g. glasses replaced by donor eyes); ``fallbacks``: per face, why it got the method's
    fallback instead of its own result (None where it did not).
    """

    crops: torch.Tensor
    masks: torch.Tensor | None = None
    donors: list[list[int]] = field(default_factory=list)
    notes: list[list[str]] = field(default_factory=list)
    fallbacks: list[str | None] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.crops)
        self.donors = self.donors or [[] for _ in range(n)]
        self.notes = self.notes or [[] for _ in range(n)]
        self.fallbacks = self.fallbacks or [None] * n


class Anonymiser(Protocol):
    """Changes who is in an aligned crop. ``reversible``: whether a recovery code can undo it."""

    name: str
    reversible: bool
    #: usable by name only: its shipped weights are not the default (see :mod:`~refacex_plugin.registry`)
    experimental: bool

    def anonymise(self, crops: torch.Tensor, strength: float = 1.0, scores: torch.Tensor | None = None) -> Anonymised:
        """``scores (B,)``: the detector's confidence per crop, for methods that treat doubtful faces apart."""
        ...

    def with_donors(self, bank=None, policy: str = "random", key: bytes | None = None, seed: int | None = None) -> Anonymiser:
        """A copy drawing donors from ``bank`` (default its own) under ``policy`` (``random`` or
        ``consistent``: one person, one donor set, keyed by ``key``); itself if it has no donors."""
        ...
