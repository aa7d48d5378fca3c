"""Watermarks that carry the payload's channel bits inside aligned face crops.

A watermark is two calls on ``(B, 3, S, S)`` crops in [0, 1] (TrustMark's shape):
``embed(crops, bits) -> crops`` and ``extract(crops) -> logits`` with ``logits (B, CHANNEL_BITS)``,
> 0 meaning 1 and the magnitude the confidence. The decoder runs on crops that were re-detected
and re-aligned after the image went through the world.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..registry import Registry


class Watermark(Protocol):
    name: str
    bits: int
    #: Whether ``embed``'s ``strength`` may differ from 1 (a reader never knows the strength used).
    variable_strength: bool
    #: Times :func:`~refacex_plugin.channel.embed_in_image` embeds into its own output: pasting a
    #: crop back and reading it again resamples it, and another pass restores what that moved (1: once).
    embed_passes: int
    #: ``(y0, y1, x0, x1)``: the crop pixels the carriers cover (``embed`` changes nothing outside it
    #: and ``extract`` reads nothing outside it, so the channel samples only that part of each crop,
    #: widened by the search's reach when it searches), or None: the whole crop.
    carrier_window: tuple[int, int, int, int] | None

    def embed(self, crops: torch.Tensor, bits: torch.Tensor, strength: float = 1.0) -> torch.Tensor: ...

    def extract(self, crops: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SearchableWatermark(Watermark, Protocol):
    """A watermark whose reader searches for the mark around each re-detected face
    (:mod:`refacex_plugin.channel.search`): it reads many translations and carrier gains of a crop
    at once, so the search can afford to try them. A watermark without these is read at the
    re-detected frame itself."""

    #: Whether the search must try every coarse gain from its first stage on (carriers that read
    #: nothing at a wrong gain).
    gains_first: bool

    def carrier_gains(self, gain: float, falloff: float = 1.0) -> torch.Tensor:
        """``(C,)`` the factor each carrier went through, for a contrast ``gain`` and a low-pass ``falloff``."""
        ...

    def extract_shifted(self, crops: torch.Tensor, shifts: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Logits ``(B, T, bits)`` (``(B, T, P, bits)`` for ``(P, C)`` gains) of ``crops (B, C, S, S)``
        read as if translated by each of ``shifts (T, 2)`` integer crop pixels."""
        ...


def _classical() -> Watermark:
    from .classical import DctQimWatermark

    return DctQimWatermark()


def _classical_low() -> Watermark:
    """dct-qim on the two lowest carriers of each block only, (0, 1) and (1, 0), at step 52 (face
    PSNR 40.2 dB in the quick robustness run; ``dct-qim``'s 40.3): the 8-px blocks of the 256-px crop are ~4 image pixels on an
    LFW face, so ``dct-qim``'s (1, 1), (0, 2) and (2, 0) carriers sit at image periods JPEG Q50 and
    WebP quantise away; the same energy in the two lowest carriers (416 slots instead of 1,040)
    survives them better. In the marks' own frames (30 LFW faces, an ad hoc script; median
    wrong bits of 252, share within 10): original faces JPEG Q50 10 -> 3 (53 -> 100 %),
    WebP Q80 11 -> 4 (50 -> 97 %); refacex-anonymised faces (step 50) Q50 20 -> 8 (20 -> 80 %), WebP
    16 -> 10 (17 -> 57 %); blur sigma 1 stays out of reach there (60 -> 49, 36 -> 30; none within
    10) until the reader deblurs (:func:`~refacex_plugin.channel.fallbacks._search_deblurred`).
    The default (:data:`PREFERENCE`). A different layout: marks of one are not read by the other."""
    from .classical import DctQimWatermark

    return DctQimWatermark(step=52.0, coeffs=((0, 1), (1, 0)), name="dct-qim-low")


def _learned() -> Watermark:
    from .learned import load_learned_watermark

    return load_learned_watermark()


#: Preference order; the first is the default (missing weights are an error, never a step down).
#: The learned watermark is experimental (usable by name) until its shipped weights meet their bars;
#: then it moves first. ``dct-qim-low`` ranks above ``dct-qim``
#: because, with the reader's deblurring, neither loses blurred faces wholesale, and the low
#: carriers keep what JPEG and WebP quantise away: on the same 40 original faces (fresh keys)
#: dct-qim / dct-qim-low opened JPEG Q50 in 65.0 / 97.5 %, WebP Q80 77.5 / 90.0 %, a half-size
#: resize 65.0 / 77.5 %, blur 97.5 / 95.0 %; on generator-anonymised faces Q50 30.0 / 92.5 %,
#: WebP 47.5 / 85.0 % (docs/decisions/0007).
PREFERENCE = ("dct-qim-low", "dct-qim", "learned")
#: Watermarks that were the default before (oldest last): a reader not told which watermark to read
#: also tries these on faces the default finds no payload in, so marks written then still open.
EARLIER_DEFAULTS = ("dct-qim",)


def _registry() -> Registry[Watermark]:
    watermarks: Registry[Watermark] = Registry("watermark", PREFERENCE)
    for name, factory in (("dct-qim", _classical), ("dct-qim-low", _classical_low), ("learned", _learned)):
        watermarks.register(name, factory)
    return watermarks


WATERMARKS = _registry()


def load_watermark(name: str | None = None) -> Watermark:
    """The named watermark, or the best available one. A watermark whose weights are not (yet)
    the shipped default (``experimental``: the learned one until it reaches the bars) loads only
    by name, never as the best available."""
    return WATERMARKS.get(name or WATERMARKS.default())


def is_experimental(watermark: Watermark) -> bool:
    """Whether ``watermark``'s weights are not (yet) the shipped default."""
    return bool(getattr(watermark, "experimental", False))


def available_watermarks(experimental: bool = False) -> list[str]:
    """The watermarks that load; those whose weights are not the shipped default only if ``experimental``."""
    return WATERMARKS.available(experimental)
