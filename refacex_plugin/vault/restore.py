"""Putting original face regions back into an image: where they were, or where the face is now."""

from __future__ import annotations

import numpy as np

from .core import FaceRegion, VaultError


def restore(rgb: np.ndarray, regions: list[FaceRegion]) -> np.ndarray:
    """Paste original regions back into a copy of ``rgb``."""
    out = rgb.copy()
    for r in regions:
        x0, y0, x1, y1 = r.box
        if y1 > out.shape[0] or x1 > out.shape[1]:
            raise VaultError("vault record does not fit this image (was it resized?)")
        out[y0:y1, x0:x1] = r.pixels
    return out


def restore_into(rgb: np.ndarray, region: FaceRegion, landmarks: np.ndarray) -> np.ndarray:
    """Paste one original region into a copy of ``rgb`` where its face is now.

    ``landmarks (5, 2)``: the face's frame in ``rgb`` (the reader's registered frame of the mark,
    which the record stores as it was embedded, or a re-detection). The region is warped by the
    similarity from its stored frame to ``landmarks``; when the image kept its size and that
    similarity moves no corner of the region by 2 px or more (re-encoded only), it goes back
    pixel for pixel instead.
    """
    import cv2

    from ..geometry import estimate_similarity

    if region.landmarks is None:
        raise VaultError("vault record has no frame to place it in a changed image")
    import torch

    h, w = rgb.shape[:2]
    m = estimate_similarity(
        torch.as_tensor(region.landmarks[None], dtype=torch.float64), torch.as_tensor(np.asarray(landmarks, np.float64)[None])
    )[0].numpy()
    x0, y0, x1, y1 = region.box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64)
    if tuple(region.image_size) == (h, w) and np.abs(corners @ m.T - corners[:, :2]).max() < 2.0:
        return restore(rgb, [region])  # the frame moved less than 2 px anywhere on the region
    m = m @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)  # region pixels -> rgb
    warped = cv2.warpAffine(region.pixels, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.ones(region.pixels.shape[:2], np.float32), m, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8))[..., None]
    return (rgb * (1 - inside) + warped * inside).round().clip(0, 255).astype(np.uint8)
