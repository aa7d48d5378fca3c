"""Anonymisers: ``(crops, donors, strength) -> crops`` on aligned face crops.

The classical baselines - gaussian blur, pixelation, a solid mask - are pure tensor functions and
stay our comparison baselines forever. Learned methods register themselves in the same registry;
:func:`default_method` picks the best one that is available.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .errors import ModelNotAvailableError


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


class Anonymiser(Protocol):
    """Changes who is in an aligned crop. ``reversible``: whether a recovery code can undo it."""

    name: str
    reversible: bool

    def __call__(self, crops: torch.Tensor, donors: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor: ...


@dataclass
class BaselineAnonymiser:
    """Wraps one of the classical functions; ignores donors."""

    name: str
    fn: Callable[..., torch.Tensor]
    reversible: bool = False

    def __call__(self, crops: torch.Tensor, donors: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        return self.fn(crops, strength)


_FACTORIES: dict[str, Callable[[], Anonymiser]] = {
    "blur": lambda: BaselineAnonymiser("blur", blur_faces),
    "pixelate": lambda: BaselineAnonymiser("pixelate", pixelate_faces),
    "mask": lambda: BaselineAnonymiser("mask", mask_faces),
}
_UNAVAILABLE: dict[str, str] = {}
#: Learned methods that load their weights from the zoo the first time they are asked for.
_LEARNED: dict[str, str] = {
    "refacex": "refacex_plugin.composite:load_composite",
    "generator": "refacex_plugin.anonymiser.model:load_refacex_model",
}
_LOADED: dict[str, Anonymiser] = {}
_NOT_DEFAULT: set[str] = set()  # available by name, but not preferred (its manifest says default: false)


def reset_learned() -> None:
    """Forget the learned methods loaded so far (after the models folder changed)."""
    for name in _LEARNED:
        _FACTORIES.pop(name, None)
        _UNAVAILABLE.pop(name, None)
        _LOADED.pop(name, None)
        _NOT_DEFAULT.discard(name)


def _probe_learned() -> None:
    """Register each learned method whose weights load (once); remember why the others do not."""
    import importlib

    for name, target in list(_LEARNED.items()):
        if name in _FACTORIES or name in _UNAVAILABLE:
            continue
        module, fn = target.split(":")
        try:
            model, default = getattr(importlib.import_module(module), fn)()
        except ModelNotAvailableError as exc:
            _UNAVAILABLE[name] = f"the learned {name} anonymiser has no usable weights here ({exc}); use blur, pixelate or mask"
            continue
        _LOADED[name] = model
        if not default:
            _NOT_DEFAULT.add(name)
        _FACTORIES[name] = lambda n=name: _LOADED[n]


#: Preference order for :func:`default_method`: learned first, then the baselines.
PREFERENCE = ("refacex", "generator", "pixelate", "blur", "mask")
BASELINES = ("blur", "pixelate", "mask")


def register_anonymiser(name: str, factory: Callable[[], Anonymiser]) -> None:
    """Make a method available by name (learned models call this when their weights are found)."""
    _FACTORIES[name] = factory
    _UNAVAILABLE.pop(name, None)


def is_experimental(name: str) -> bool:
    """A learned method whose shipped weights are not (yet) the default: usable by name, with a warning."""
    _probe_learned()
    return name in _NOT_DEFAULT


def known_methods() -> list[str]:
    return list(dict.fromkeys([*PREFERENCE, *_FACTORIES]))


def available_methods() -> list[str]:
    _probe_learned()
    return [m for m in known_methods() if m in _FACTORIES]


def default_method() -> str:
    """The best method this installation can run."""
    _probe_learned()
    return next(m for m in PREFERENCE if m in _FACTORIES and m not in _NOT_DEFAULT)


def get_anonymiser(name: str) -> Anonymiser:
    _probe_learned()
    if name in _FACTORIES:
        return _FACTORIES[name]()
    if name in _UNAVAILABLE:
        raise ModelNotAvailableError(f"method {name!r} not available: {_UNAVAILABLE[name]}")
    raise ModelNotAvailableError(f"unknown method {name!r} (choose from {', '.join(known_methods())})")
