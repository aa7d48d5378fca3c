"""Estimating clipped channel values from the unclipped ones (:mod:`refacex_plugin.clipping`)."""

import numpy as np
import pytest

from refacex_plugin.clipping import estimate_clipped


def _skin(h=64, w=64, seed=0):
    """A smooth skin-like gradient (red the brightest channel) with a fine texture in every
    channel alike, as a luminance watermark adds it: ``(H, W, 3) float32``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 150 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    texture = 6 * np.sign(np.sin(xx * 1.3) * np.sin(yy * 0.9))  # same in every channel
    return np.stack([base + 40, base, base - 30], -1) + texture[..., None]


@pytest.mark.parametrize("direction", ["brighter", "darker"])
def test_clipped_channel_is_estimated_from_the_unclipped_ones(direction):
    true = _skin() * 1.25 if direction == "brighter" else (_skin() - 175.0) * 1.6 + 100.0
    clipped = np.clip(true, 0, 255).round().astype(np.uint8)
    bound = 255 if direction == "brighter" else 0
    partial = (clipped == bound).any(-1) & ~(clipped == bound).all(-1)
    assert partial.mean() > 0.1  # the test image clips some channels of many pixels
    est = estimate_clipped(clipped)
    assert est is not None and est.dtype == np.float32
    where = (clipped == bound) & partial[..., None]
    before = np.abs(clipped[where].astype(np.float32) - true[where]).mean()
    after = np.abs(est[where] - true[where]).mean()
    assert after < 0.25 * before, (before, after)
    # unclipped values are untouched, and an estimate never re-enters the range it clipped out of
    np.testing.assert_array_equal(est[clipped != bound], clipped[clipped != bound].astype(np.float32))
    assert (est[where] >= 255).all() if direction == "brighter" else (est[where] <= 0).all()


def test_nothing_partially_clipped_gives_none():
    img = np.full((16, 16, 3), 128, np.uint8)
    img[:4, :4] = 255  # white in every channel: nothing to estimate it from
    img[4:8, :4] = 0
    assert estimate_clipped(img) is None
