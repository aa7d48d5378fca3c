"""Dense face geometry for donor composites: dlib's 68 points plus a forehead row, and the
piecewise-affine warp between two such meshes.

Coordinates are pixels of one aligned crop (``AlignConfig``). The 68-point model is dlib's
(trained on iBUG 300-W, whose annotations are for non-commercial use: see the README).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..face68 import BROWS, JAW, LEFT_BROW, LEFT_EYE, MOUTH, NOSE, RIGHT_BROW, RIGHT_EYE
from ..zoo import shape_predictor_68

#: The features whose place and size carry identity (dlib 68-point groups, :mod:`~refacex_plugin.face68`).
FEATURE_GROUPS = {  # identity-bearing layout lives in where these sit and how big they are
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "nose": NOSE,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "mouth": MOUTH,
}
#: Forehead points: the brows lifted along the chin-to-brow axis by this fraction of that distance.
FOREHEAD_LIFT = 0.32
N_POINTS = 78

#: Where dlib's frontal detector puts the face box in the canonical crop, as fractions of its side
#: (mean over 40 LFW faces aligned by CenterFace's 5 points; std ~0.04): the 68-point predictor is
#: run in this box instead of re-detecting each crop.
CROP_FACE_BOX = (0.195, 0.292, 0.787, 0.887)


class CropLandmarks:
    """dlib's 68-point predictor (:func:`~refacex_plugin.zoo.shape_predictor_68`, shared by the
    process) on aligned crops: the box is fixed by the alignment."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = shape_predictor_68()

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """``crop (S, S, 3) uint8`` -> ``(78, 2) float32`` mesh points (68 + 10 forehead)."""
        s = crop.shape[0]
        box = self._dlib.rectangle(*[int(round(v * s)) for v in CROP_FACE_BOX])
        pts = np.array([[p.x, p.y] for p in self._predictor(np.ascontiguousarray(crop), box).parts()], np.float32)
        return with_forehead(pts)


#: Point ``i`` of a mirrored face is point ``MIRROR[i]`` of the face.
MIRROR = np.array(
    [
        *range(16, -1, -1),
        *range(26, 21, -1),
        *range(21, 16, -1),
        27,
        28,
        29,
        30,
        *range(35, 30, -1),
        45,
        44,
        43,
        42,
        47,
        46,
        39,
        38,
        37,
        36,
        41,
        40,
        *range(54, 47, -1),
        *range(59, 54, -1),
        *range(64, 59, -1),
        67,
        66,
        65,
        *range(77, 72, -1),
        *range(72, 67, -1),
    ]
)


def mirror(points: np.ndarray, width: float) -> np.ndarray:
    """``(78, 2)`` mesh of the horizontally flipped image of side ``width`` (points renumbered)."""
    out = points[MIRROR].copy()
    out[:, 0] = width - 1 - out[:, 0]
    return out


def with_forehead(pts68: np.ndarray) -> np.ndarray:
    """``(68, 2)`` -> ``(78, 2)``: adds the brows lifted toward the hairline."""
    brow_mid = pts68[BROWS].mean(0)
    up = brow_mid - pts68[8]
    lifted = pts68[BROWS] + FOREHEAD_LIFT * up
    return np.concatenate([pts68, lifted]).astype(np.float32)


def hull_indices() -> np.ndarray:
    """Outline of the mesh, in order: jaw left to right, then the forehead right to left."""
    return np.array([*JAW, *range(77, 67, -1)])


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles ``(T, 3)`` int of ``points (N, 2)`` (fit once on a mean shape)."""
    from scipy.spatial import Delaunay

    return Delaunay(points.astype(np.float64)).simplices.astype(np.int32)


def _affine_rows(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per triangle, the affine map taking ``dst`` corners to ``src`` corners: ``(T, 2, 3)``."""
    ones = np.ones((*dst.shape[:2], 1))
    a = np.concatenate([dst, ones], -1)  # (T, 3, 3)
    b = src  # (T, 3, 2)
    return np.linalg.solve(a, b).transpose(0, 2, 1)  # (T, 2, 3)


def piecewise_affine_maps(
    src_pts: np.ndarray, dst_pts: np.ndarray, triangles: np.ndarray, size: int, src_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampling maps that move the texture at ``src_pts`` onto ``dst_pts``.

    Triangles folded by the target geometry (turned over under large yaw: hidden) are drawn first
    so the visible ones cover them.

    Args:
        src_pts, dst_pts: ``(N, 2)`` meshes; ``triangles``: ``(T, 3)``.
        size: side of the square output. ``src_scale``: source texture pixels per ``src_pts`` unit.
    Returns:
        ``map_x, map_y`` ``(size, size) float32`` for :func:`cv2.remap` and ``inside (size, size) bool``.
    """
    src_tri = src_pts[triangles].astype(np.float64) * src_scale
    dst_tri = dst_pts[triangles].astype(np.float64)
    cross = lambda t: (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0])  # noqa: E731
    area = cross(dst_tri)
    folded = np.sign(area) != np.sign(cross(src_tri))
    usable = np.abs(area) > 1e-3
    order = [i for i in np.argsort(~folded) if usable[i]]  # folded first
    index = np.full((size, size), -1, np.int32)
    for t in order:
        cv2.fillConvexPoly(index, np.round(dst_tri[t] * 16).astype(np.int32), int(t), lineType=cv2.LINE_8, shift=4)
    affines = np.zeros((len(triangles), 2, 3))
    affines[usable] = _affine_rows(src_tri[usable], dst_tri[usable])  # flat triangles are never drawn
    ys, xs = np.nonzero(index >= 0)
    m = affines[index[ys, xs]]
    map_x = np.full((size, size), -1.0, np.float32)
    map_y = np.full((size, size), -1.0, np.float32)
    map_x[ys, xs] = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    map_y[ys, xs] = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    return map_x, map_y, index >= 0


def similarity_to(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``src (N, 2)`` moved by the least-squares similarity that best lays it on ``dst (N, 2)``."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    ms, md = (w[:, None] * src).sum(0), (w[:, None] * dst).sum(0)
    a, b = src - ms, dst - md
    cov = (w[:, None, None] * b[:, :, None] * a[:, None, :]).sum(0)
    u, sv, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = (sv * np.diag(d)).sum() / max((w * (a**2).sum(1)).sum(), 1e-12)
    return (scale * a @ rot.T + md).astype(np.float32)


def pose_expression(pts: np.ndarray) -> np.ndarray:
    """A few geometry features donors are matched on: ``(5,)`` yaw, pitch, roll proxies, mouth and eye openness.

    All are ratios of landmark distances (scale free): yaw is the nose tip's offset from the eyes'
    midline over the eye distance, pitch the nose length over the eye-to-mouth distance.
    """
    eye_r, eye_l = pts[36:42].mean(0), pts[42:48].mean(0)
    eye_mid, eye_dist = (eye_r + eye_l) / 2, max(float(np.linalg.norm(eye_l - eye_r)), 1e-6)
    across = (eye_l - eye_r) / eye_dist
    down = np.array([-across[1], across[0]])
    mouth = pts[48:68].mean(0)
    yaw = float((pts[30] - eye_mid) @ across) / eye_dist
    pitch = float((pts[30] - eye_mid) @ down) / max(float((mouth - eye_mid) @ down), 1e-6)
    roll = float(np.arctan2(across[1], across[0]))
    mouth_open = float(np.linalg.norm(pts[66] - pts[62])) / eye_dist
    eye_open = float(np.linalg.norm(pts[[37, 38, 43, 44]] - pts[[41, 40, 47, 46]], axis=1).mean()) / eye_dist
    return np.array([yaw, pitch, roll, mouth_open, eye_open], np.float32)
