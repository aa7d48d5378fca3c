"""What covers a face: sunglasses (kept: they hide the eyes anyway), clear glasses and hair or a
hat on the forehead (replaced by donor skin, and said so)."""

from __future__ import annotations

import cv2
import numpy as np

from ..attributes import skin_mask
from ..face68 import LEFT_EYE, RIGHT_EYE
from .bank import _region_masks, donor_quality
from .config import CompositeConfig


def _hull(shape, pts, grow: float = 0.0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    centre = pts.mean(0)
    pts = centre + (pts - centre) * (1 + grow)
    cv2.fillPoly(m, [cv2.convexHull(np.round(pts).astype(np.int32))], 1)
    return m > 0


def sunglasses(crop: np.ndarray, mesh: np.ndarray, config: CompositeConfig = CompositeConfig()) -> np.ndarray | None:
    """Where dark lenses cover the eyes of ``crop (S, S, 3) uint8`` (meshed by ``mesh (78, 2)``):
    an ``(S, S) bool`` mask of the lenses and frame, or None when the eyes are not covered."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    skin = skin_mask(crop.shape[:2], mesh)
    if skin.sum() < 50:
        return None
    skin_l = float(np.median(grey[skin]))
    brows = _hull(crop.shape[:2], mesh[17:27])
    for idx in (RIGHT_EYE, LEFT_EYE):
        eye, inner = _hull(crop.shape[:2], mesh[list(idx)], 0.1), _hull(crop.shape[:2], mesh[list(idx)], 0.15)
        ring = _hull(crop.shape[:2], mesh[list(idx)], 0.9) & ~inner & ~brows
        if not eye.any() or not ring.any():
            return None
        if (
            np.median(grey[ring]) > config.sunglasses_ring_to_skin * skin_l
            or np.percentile(grey[eye], 90) > config.sunglasses_eye_to_skin * skin_l
        ):
            return None
    eyes = [_hull(crop.shape[:2], mesh[list(idx)], 0.3) for idx in (RIGHT_EYE, LEFT_EYE)]
    # the lenses: everything markedly darker than skin between the brows and the nose's middle
    eye_dist = float(np.linalg.norm(mesh[42:48].mean(0) - mesh[36:42].mean(0)))
    x0, x1 = mesh[[0, 16], 0]
    y0, y1 = mesh[17:27, 1].min() - 0.15 * eye_dist, mesh[29, 1] + 0.1 * eye_dist
    box = np.zeros(crop.shape[:2], bool)
    box[int(max(y0, 0)) : int(y1), int(max(x0, 0)) : int(x1)] = True
    dark = (grey < 0.75 * skin_l) & box
    dark = cv2.morphologyEx(dark.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    n, labels = cv2.connectedComponents(dark)
    keep = np.zeros(crop.shape[:2], bool)
    for i in range(1, n):
        part = labels == i
        if any((part & e).any() for e in eyes):
            keep |= part
    keep |= eyes[0] | eyes[1]
    k = max(3, int(0.06 * eye_dist)) | 1
    return cv2.dilate(keep.astype(np.uint8), np.ones((k, k), np.uint8)) > 0


def occlusion_notes(crop: np.ndarray, mesh: np.ndarray, kept_sunglasses: bool, config: CompositeConfig = CompositeConfig()) -> list[str]:
    """What covers this face and what became of it: sunglasses kept, or clear glasses and a
    covered forehead replaced by donor eyes and skin (the bank's screening scores on the face)."""
    if kept_sunglasses:
        return ["sunglasses kept"]
    masks = _region_masks(mesh, crop.shape[0])
    if not all(m.any() for m in masks.values()):
        return []
    forehead, glasses = donor_quality(crop, masks)
    notes = []
    if glasses > config.eyewear_note_score:
        notes.append("eyewear likely: replaced by donor eyes")
    if forehead > config.forehead_note_score:
        notes.append("forehead likely covered (hair or hat): replaced by donor skin")
    return notes
