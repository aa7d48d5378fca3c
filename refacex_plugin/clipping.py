"""Estimating what clipping took from an image: the values a brightness or contrast change pushed
past 0 or 255 in some channels but not all.

A watermark that lives in luminance loses its mark where a channel clips: luminance there no
longer moves with the mark. But the colour *differences* between channels are smooth across a
face, and a mark added equally to every channel cancels in them; so a clipped channel is the
unclipped one plus the difference between them, interpolated from the neighbouring pixels where
neither clipped (a normalised Gaussian average), and the mark comes back with the unclipped
channel. Pixels clipped in every channel are left as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Channels tried as the reference for a clipped one, in order (green carries most of luminance).
_REFERENCES = (1, 2, 0)


def estimate_clipped(rgb: np.ndarray, sigmas: tuple[float, ...] = (3.0, 12.0, 48.0)) -> np.ndarray | None:
    """``rgb (H, W, 3) uint8`` -> ``(H, W, 3) float32`` with every channel value at 0 or 255 whose
    pixel has an unclipped channel replaced by an estimate (at least 255, at most 0: what clipped
    cannot have been inside the range), or None when nothing is clipped that way.

    ``sigmas``: the spreads, in pixels, of the neighbourhoods the colour difference is taken from,
    narrowest first; a pixel deep inside a clipped area takes it from a wider one.
    """
    x = rgb.astype(np.float32)
    high, low = rgb == 255, rgb == 0
    clipped = high | low
    partial = clipped & ~clipped.all(-1, keepdims=True)
    if not partial.any():
        return None
    out = x.copy()
    for c in range(3):
        need = partial[..., c]
        for ref in (r for r in _REFERENCES if r != c):
            both = ~clipped[..., c] & ~clipped[..., ref]
            for sigma in sigmas:
                if not need.any():
                    break
                weight = cv2.GaussianBlur(both.astype(np.float32), (0, 0), sigma)
                diff = cv2.GaussianBlur(np.where(both, x[..., c] - x[..., ref], 0.0).astype(np.float32), (0, 0), sigma)
                use = need & ~clipped[..., ref] & (weight > 0.02)
                est = x[..., ref][use] + diff[use] / weight[use]
                out[..., c][use] = np.where(high[..., c][use], np.maximum(est, 255.0), np.minimum(est, 0.0))
                need = need & ~use
    return out
