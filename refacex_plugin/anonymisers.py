"""Anonymisers: ``(crops, donors, strength) -> crops`` on aligned face crops.

The classical baselines - gaussian blur, pixelation, a solid mask - are pure tensor functions and
stay our comparison baselines forever. Learned methods register themselves in the same registry;
:func:`default_method` picks the best one that is available.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from .errors import RefacexError
from .registry import Registry


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur with replicate borders.

    Args:
        x: ``(B, C, H, W)``.
    Returns:
        ``(B, C, H, W)``.
    """
    radius = max(int(round(3 * sigma)), 1)
    c = int(x.shape[1])
    taps = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-radius, radius + 1)]
    # a constant kernel (also when traced for ONNX export)
    k = torch.tensor([v / sum(taps) for v in taps], dtype=x.dtype, device=x.device).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k, groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), k.transpose(-1, -2), groups=c)


def blur_faces(crops: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Gaussian blur with sigma = 5% of the crop side times ``strength``.

    Wide blurs run at reduced resolution (area-downsample, blur, bilinear upsample), which matches
    the full-resolution result to a mean of 0.3 grey levels (more only at the crop border,
    outside the face mask) at a fraction of the cost.

    Args:
        crops: ``(B, 3, S, S)`` in [0, 1].
    Returns:
        ``(B, 3, S, S)``.
    """
    s = int(crops.shape[-1])  # a plain int also while tracing for ONNX export
    sigma = max(0.05 * s * strength, 0.5)
    factor = 1
    while sigma / (factor * 2) >= 2.0 and s % (factor * 2) == 0:
        factor *= 2
    if factor == 1:
        return gaussian_blur(crops, sigma)
    small = F.avg_pool2d(crops, factor)
    small = gaussian_blur(small, (sigma**2 - (factor / 2) ** 2) ** 0.5 / factor)
    return F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)


def pixelate_faces(crops: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Mosaic of ``16 / strength`` blocks across the crop (area-averaged, nearest-upsampled).

    Args:
        crops: ``(B, 3, S, S)`` in [0, 1].
    Returns:
        ``(B, 3, S, S)``.
    """
    s = crops.shape[-1]
    blocks = max(int(round(16 / max(strength, 1e-3))), 2)
    small = F.adaptive_avg_pool2d(crops, blocks)
    return F.interpolate(small, size=(s, s), mode="nearest")


def mask_faces(crops: torch.Tensor, strength: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fill each crop with one flat colour: its mean colour under ``mask`` (keeps skin tone, no detail).

    Args:
        crops: ``(B, 3, S, S)`` in [0, 1].
        mask: ``(B, 1, S, S)`` weights; default uniform.
    Returns:
        ``(B, 3, S, S)``.
    """
    if mask is None:
        mask = torch.ones_like(crops[:, :1])
    mean = (crops * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp_min(1e-6)
    flat = mean.expand_as(crops)
    return crops + strength * (flat - crops) if strength < 1 else flat.contiguous()


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


@dataclass
class BaselineAnonymiser:
    """Wraps one of the classical functions; no donors."""

    name: str
    fn: Callable[..., torch.Tensor]
    reversible: bool = False
    experimental: bool = False

    def __call__(self, crops: torch.Tensor, donors: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        return self.fn(crops, strength)

    def anonymise(self, crops: torch.Tensor, strength: float = 1.0, scores: torch.Tensor | None = None) -> Anonymised:
        return Anonymised(self.fn(crops, strength).clamp(0.0, 1.0))

    def with_donors(self, bank=None, policy: str = "random", key: bytes | None = None, seed: int | None = None) -> BaselineAnonymiser:
        if bank is not None:
            raise RefacexError(f"method {self.name!r} uses no donors: --donors needs the refacex method")
        return self


#: Preference order for the default: the donor composite, then the baselines (``generator``, the
#: learned network kept for its approximate recovery, is experimental: used only when named).
PREFERENCE = ("refacex", "generator", "pixelate", "blur", "mask")
BASELINES = ("blur", "pixelate", "mask")

ANONYMISERS: Registry[Anonymiser] = Registry("method", PREFERENCE, hint="use blur, pixelate or mask")
ANONYMISERS.register("blur", lambda: BaselineAnonymiser("blur", blur_faces))
ANONYMISERS.register("pixelate", lambda: BaselineAnonymiser("pixelate", pixelate_faces))
ANONYMISERS.register("mask", lambda: BaselineAnonymiser("mask", mask_faces))


def _load_composite() -> Anonymiser:
    from .composite import load_composite

    return load_composite()


def _load_generator() -> Anonymiser:
    from .anonymiser.model import load_refacex_model

    return load_refacex_model()


ANONYMISERS.register("refacex", _load_composite)
ANONYMISERS.register("generator", _load_generator)


def register_anonymiser(name: str, factory: Callable[[], Anonymiser]) -> None:
    """Make a method available by name (e.g. an ablation's configured composite)."""
    ANONYMISERS.register(name, factory)


def reset_learned() -> None:
    """Forget the methods loaded so far (after the models folder changed)."""
    ANONYMISERS.reset()


def is_experimental(name: str) -> bool:
    """A method whose shipped weights are not the default: usable by name, with a warning."""
    return ANONYMISERS.is_experimental(name)


def known_methods() -> list[str]:
    return ANONYMISERS.names()


def available_methods() -> list[str]:
    return ANONYMISERS.available()


def default_method() -> str:
    """The best method this installation can run."""
    return ANONYMISERS.default()


def get_anonymiser(name: str) -> Anonymiser:
    return ANONYMISERS.get(name)
