"""The classical baselines - gaussian blur, pixelation, a solid mask - as pure tensor functions
on aligned crops, and the :class:`BaselineAnonymiser` that wraps one. They stay our comparison
baselines forever (and the composite's fallback is a pixelation)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .anonymised import Anonymised
from .errors import RefacexError


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
