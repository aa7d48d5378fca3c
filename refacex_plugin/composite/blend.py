"""Tone and texture: how donor pixels take on the face's lighting, skin and grain, and blend in.

Colour is matched on bare skin only (:func:`~refacex_plugin.attributes.skin_mask`): eyes, brows,
lips and beard are darker or redder than skin, so a fit over the whole face would lighten dark
faces and darken light ones. Only a plane per Lab channel crosses from the face (three numbers a
channel), so no low frequencies of the original are copied.
"""

from __future__ import annotations

import cv2
import numpy as np


def _plane_fit(values: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Least-squares ``c0 + c1 x + c2 y`` per channel of ``values (n, C)``: ``(3, C)``."""
    a = np.stack([np.ones_like(xs), xs, ys], 1)
    return np.linalg.lstsq(a, values, rcond=None)[0]


def _samples(region: np.ndarray, limit: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(region)
    step = max(1, len(xs) // limit)  # a plane is fitted as well from a few thousand pixels
    return ys[::step], xs[::step]


def match_colour(donor: np.ndarray, target: np.ndarray, donor_skin: np.ndarray, target_skin: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Give ``donor (H, W, 3) uint8`` the target's lighting and skin tone.

    Per Lab channel: the plane fitted over the ``face (H, W) bool`` region (the light falling
    across it) is swapped for the target's, the lightness spread matched (within 0.7-1.4x), and a
    constant then makes the donor's bare skin (``donor_skin``) average what the target's
    (``target_skin``) does: the face keeps its own skin tone by construction, whatever the
    donors' eyes, brows and beards weigh in the plane.
    """
    (yf, xf), (yd, xd), (yt, xt) = _samples(face), _samples(donor_skin), _samples(target_skin)
    if len(xf) < 50:
        return donor
    s = float(max(donor.shape[:2]))
    lab_d = cv2.cvtColor(donor, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_t = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    xn, yn = xf / s - 0.5, yf / s - 0.5
    pd, pt = _plane_fit(lab_d[yf, xf], xn, yn), _plane_fit(lab_t[yf, xf], xn, yn)
    gy, gx = np.mgrid[0 : donor.shape[0], 0 : donor.shape[1]].astype(np.float32) / s - 0.5
    basis = np.stack([np.ones_like(gx), gx, gy], -1)
    residual = lab_d - basis @ pd.astype(np.float32)
    std_d = residual[yf, xf, 0].std()
    std_t = (lab_t[yf, xf, 0] - (basis @ pt.astype(np.float32))[yf, xf, 0]).std()
    residual[..., 0] *= float(np.clip(std_t / max(std_d, 1e-6), 0.7, 1.4))
    out = residual + basis @ pt.astype(np.float32)
    if len(xd) >= 50 and len(xt) >= 50:
        out += np.median(lab_t[yt, xt], 0) - np.median(out[yd, xd], 0)
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def multiband_blend(front: np.ndarray, back: np.ndarray, mask: np.ndarray, levels: int) -> np.ndarray:
    """Laplacian-pyramid blend (Burt & Adelson 1983): fine detail switches at the mask's edge,
    broad shading over a wider band. ``front, back (S, S, 3) float32``, ``mask (S, S)`` in [0, 1]."""
    gf, gb, gm = [front], [back], [mask]
    for _ in range(levels):
        gf.append(cv2.pyrDown(gf[-1]))
        gb.append(cv2.pyrDown(gb[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    out = gf[-1] * gm[-1][..., None] + gb[-1] * (1 - gm[-1][..., None])
    for i in range(levels - 1, -1, -1):
        size = gf[i].shape[1::-1]
        lf = gf[i] - cv2.pyrUp(gf[i + 1], dstsize=size)
        lb = gb[i] - cv2.pyrUp(gb[i + 1], dstsize=size)
        out = cv2.pyrUp(out, dstsize=size) + lf * gm[i][..., None] + lb * (1 - gm[i][..., None])
    return out


def detail(grey: np.ndarray, region: np.ndarray) -> float:
    """Fine detail of ``grey (H, W) float32`` over ``region``: the spread of what a 1-px Gaussian
    takes away (sharpness and grain together)."""
    if region.sum() < 50:
        return 0.0
    return float((grey - cv2.GaussianBlur(grey, (0, 0), 1.0))[region].std())


def match_detail(
    face: np.ndarray, original: np.ndarray, region: np.ndarray, rng: np.random.Generator, sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
) -> np.ndarray:
    """``face (H, W, 3) float32`` given ``original``'s detail over ``region`` (its skin): blurred
    when the donors are sharper (an out-of-focus or small face), given luminance grain when they
    are softer (donor textures are upsampled for large faces). ``sigmas``: the blurs tried, in
    order (:attr:`~.config.CompositeConfig.soften_sigmas`). The grain is random, never the original's."""
    grey = lambda im: cv2.cvtColor(np.clip(im, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY)  # noqa: E731
    want, have = detail(grey(original.astype(np.float32)), region), detail(grey(face), region)
    if have > want * 1.15:
        for sigma in sigmas:
            soft = cv2.GaussianBlur(face, (0, 0), sigma)
            if detail(grey(soft), region) <= want * 1.1:
                return soft
        return soft
    if have < want * 0.85:
        # what a 1-px blur removes from white noise of unit spread is 0.87 of it
        amount = np.sqrt(max(want**2 - have**2, 0.0)) / 0.87
        noise = rng.normal(0.0, amount, face.shape[:2]).astype(np.float32)
        return face + noise[..., None]
    return face
