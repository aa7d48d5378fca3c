"""Which part of a face's landmark layout is identity, and which is pose and expression.

A linear model fitted on the donor bank: a mesh aligned to the mean (similarity) is its mean
plus ``basis @ (f - f_mean)`` - what the pose and expression features ``f``
(:func:`~refacex_plugin.composite.mesh.pose_expression`) explain - plus a residual, which is the
person's own layout (eye spacing and shape, nose length, mouth width, brow arch). Moving a face's
residual toward a donor's changes who it looks like while its pose and expression stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mesh import FEATURE_GROUPS, pose_expression, similarity_to

#: Points an identity push may move: brows, nose, eyes and mouth (jaw and forehead meet the context).
INNER = np.array([i for group in FEATURE_GROUPS.values() for i in group])


@dataclass
class ShapeModel:
    """``mean (78, 2)``, ``feature_mean (5,)``, ``basis (5, 156)``."""

    mean: np.ndarray
    feature_mean: np.ndarray
    basis: np.ndarray

    @classmethod
    def fit(cls, shapes: np.ndarray, mean: np.ndarray) -> ShapeModel:
        """Least squares over ``shapes (N, 78, 2)`` already aligned to ``mean``."""
        feats = np.stack([pose_expression(s) for s in shapes]).astype(np.float64)
        fm = feats.mean(0)
        resid = (shapes - mean).reshape(len(shapes), -1).astype(np.float64)
        basis = np.linalg.lstsq(feats - fm, resid - resid.mean(0), rcond=None)[0]
        return cls(mean.astype(np.float32), fm.astype(np.float32), basis.astype(np.float32))

    def explained(self, features: np.ndarray) -> np.ndarray:
        """The mesh displacement ``(78, 2)`` that pose and expression ``features (5,)`` account for."""
        return ((features - self.feature_mean) @ self.basis).reshape(-1, 2)

    def push(self, target: np.ndarray, donor: np.ndarray, amount: float) -> np.ndarray:
        """``target (78, 2)`` (crop pixels) with its inner points' identity residual moved ``amount`` of
        the way to ``donor``'s; pose, expression, jaw and forehead stay the target's."""
        if amount == 0:
            return target.copy()
        t_al = similarity_to(target, self.mean)
        d_al = similarity_to(donor, self.mean)
        delta = d_al - t_al - (self.explained(pose_expression(d_al)) - self.explained(pose_expression(t_al)))
        moved = t_al.copy()
        moved[INNER] += amount * delta[INNER]
        # back to the crop: the similarity that takes the aligned target onto the target itself
        back = similarity_to(
            np.concatenate([t_al, moved]), np.concatenate([target, target]), np.r_[np.ones(len(t_al)), np.zeros(len(t_al))]
        )
        return keep_openness(back[len(t_al) :], target).astype(np.float32)


#: (upper lid or lip points, the lower ones facing them) whose gap is the expression.
OPENINGS = (([61, 62, 63], [67, 66, 65]), ([37, 38], [41, 40]), ([43, 44], [47, 46]))


def keep_openness(moved: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Give ``moved``'s mouth and eyes the target's opening (gap over eye distance), each gap
    opened or closed symmetrically about its own middle: the linear model explains most of it,
    not an open laugh's or a blink's extremes."""
    out = moved.astype(np.float64).copy()
    eye_dist = lambda p: np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0))  # noqa: E731
    scale = eye_dist(moved) / max(eye_dist(target), 1e-6)
    for upper, lower in OPENINGS:
        gap_target = (target[lower] - target[upper]) * scale
        middle = (out[upper] + out[lower]) / 2
        out[upper] = middle - gap_target / 2
        out[lower] = middle + gap_target / 2
    return out
