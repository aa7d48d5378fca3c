"""Settled landmarks: a face's landmarks as a detector places them in its own small aligned crop.

A detector places a face's landmarks differently at different image sizes: CenterFace's
re-detection of a face after a half-size resize lies a median 3.1 % in zoom and 4.4 crop pixels
(90th percentiles 6.8 % / 10.8 px, 3.9 deg) from its detection in the image before, after a x1.5
upscale 4.4 % / 4.2 px (7.7 % / 8.2 px, 3.7 deg): beyond the reader's local search for its mark
(measured below).
The detector sees the face at another size, with other pixels, and its landmark regression is
biased by both. A watermark is embedded in one frame and read after such changes, so its embedder
and reader need a frame that does not depend on the image's size.

:func:`settled_landmarks` re-detects each face in a small crop aligned on its landmarks
(:data:`SETTLE_CROP`: smaller than the face is in a half-size copy, and low-passed to it), maps
the result back and moves part way there (:data:`SETTLE_DAMPING`), until a round moves it less
than :data:`SETTLE_TOLERANCE` (at most :data:`SETTLE_ROUNDS` rounds).
What the detector then sees is the same small, low-passed, aligned face whether the image was
resized, re-encoded or not, so it places the landmarks the same way; its landmarks are a vote of
the cells around the heat peak (:meth:`~refacex_plugin.detection.CenterFaceDetector.centred_landmarks`),
which move smoothly where a single cell's jump.

Measured (``python research/watermark_sync.py --misplacement --host blur --faces 40 --seed 3``: 40
LFW images blurred by the ``blur`` anonymiser, CenterFace at the reader's threshold; offset
between the landmarks found in the image and in a distorted copy, mapped back; median / 90th
percentile of zoom, turn in degrees, shift in crop pixels of the 256-pixel crop): re-detection vs
settled, resize x0.5 3.1 % / 6.8 %, 0.8 / 3.9 deg, 4.4 / 10.8 px vs 0.2 % / 0.5 %, 0.1 / 0.4 deg,
0.3 / 0.7 px; x1.5 4.4 % / 7.7 %, 1.6 / 3.7 deg, 4.2 / 8.2 px vs 0.1 % / 0.5 %, 0.1 / 0.4 deg, 0.2
/ 0.6 px; noise 0.02 8.3 % / 4.5 deg / 11.1 px vs 0.9 % / 0.6 deg / 1.2 px (90th percentiles);
JPEG Q50, WebP Q80, blur sigma 1, 10 % crop: settled within 1.8 % / 1.4 deg / 1.8 px at the 90th
percentile, re-detected up to 4.6 % / 2.7 deg / 7.1 px; brightness +20 % is the one row where
settling does not help (1.0 % / 0.9 deg / 2.7 px vs 2.3 % / 0.5 deg / 1.6 px). Without the vote
(the best cell alone) and without damping it does not settle: settling the same image again
moved it 4.0 % / 1.1 deg / 4.6 px at the 90th percentile (an ad hoc variant, not kept),
0.4 % / 0.3 deg / 0.8 px with them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .detection import Detections, FaceDetector
from .geometry import AlignConfig, canonical_template

#: The crop a face settles in: (side in pixels, zoom of :class:`~refacex_plugin.geometry.AlignConfig`).
#: An LFW face (1.5 crop pixels of the 256-pixel, 0.75-zoom crop per image pixel) is sampled at
#: 0.375 crop pixels per image pixel, 0.75 after a half-size resize: still below what the resized
#: image holds.
SETTLE_CROP = (96, 0.5)
#: Rounds of re-detection at most, and the fraction of the way to each round's re-detection taken.
SETTLE_ROUNDS = 8
SETTLE_DAMPING = 0.5
#: A face has settled when a round moves none of its landmarks more than this many pixels of the
#: settling crop (0.08 pixels of the 256-pixel, 0.75-zoom crop the watermark is read in; the
#: reader's finest search step is 0.125). From a raw detection most faces take all eight rounds
#: (7.5 on average over 31 settles, profiled while embedding 15 LFW images).
SETTLE_TOLERANCE = 0.02
#: Cells a side of the heat peak whose landmarks are averaged (weighted by heat).
SETTLE_VOTE = 2


def settled_landmarks(rgb: np.ndarray, landmarks: np.ndarray, detector: FaceDetector, rounds: int = SETTLE_ROUNDS) -> np.ndarray:
    """Each face's landmarks ``(N, 5, 2)`` settled in its own aligned crop (module docstring), in
    at most ``rounds`` rounds; a face the crop loses keeps the landmarks of the round before."""
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    return np.stack([_settle(rgb, lm, detector, rounds) for lm in landmarks]) if len(landmarks) else landmarks


def _settle(rgb: np.ndarray, lm: np.ndarray, detector: FaceDetector, rounds: int) -> np.ndarray:
    lm = lm.astype(np.float64)
    for _ in range(rounds):
        m = _crop_matrix(lm)
        found = _centred(detector, _low_passed_crop(rgb, m))
        if found is None:
            break
        here = lm @ m[:, :2].T + m[:, 2]  # in the crop's pixels
        step = SETTLE_DAMPING * (found.astype(np.float64) - here)
        inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
        lm = (here + step) @ inv[:, :2].T + inv[:, 2]
        if np.abs(step).max() <= SETTLE_TOLERANCE:
            break
    return lm.astype(np.float32)


def _crop_matrix(lm: np.ndarray) -> np.ndarray:
    """Image-to-crop ``(2, 3)`` similarity of :data:`SETTLE_CROP` for one face's ``(5, 2)``
    landmarks (:func:`~refacex_plugin.geometry.estimate_similarity`'s closed form, in numpy: a
    round's other work is a few milliseconds)."""
    side, zoom = SETTLE_CROP
    dst = canonical_template(AlignConfig(size=256, zoom=zoom)).double().numpy() * (side / 256)
    src = np.asarray(lm, np.float64)
    xs, xd = src - src.mean(0), dst - dst.mean(0)
    denom = max(float((xs**2).sum()), 1e-12)
    a = float((xs[:, 0] * xd[:, 0] + xs[:, 1] * xd[:, 1]).sum()) / denom
    b = float((xs[:, 0] * xd[:, 1] - xs[:, 1] * xd[:, 0]).sum()) / denom
    rot = np.array([[a, -b], [b, a]])
    return np.concatenate([rot, (dst.mean(0) - rot @ src.mean(0))[:, None]], 1)


def _low_passed_crop(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The ``SETTLE_CROP[0]``-square crop ``m`` maps ``rgb`` to, low-passed to the crop's sampling
    (a gaussian of ``0.5 sqrt(1 / s^2 - 1)`` image pixels at ``s`` crop pixels per image pixel;
    a region more than four times the crop's resolution is first shrunk by area)."""
    side = SETTLE_CROP[0]
    h, w = rgb.shape[:2]
    s = math.sqrt(abs(np.linalg.det(m[:, :2])))
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0, 1], [side, 0, 1], [0, side, 1], [side, side, 1]], np.float64) @ inv.T
    pad = int(math.ceil(3 / s)) + 2
    x0, y0 = max(int(corners[:, 0].min()) - pad, 0), max(int(corners[:, 1].min()) - pad, 0)
    x1, y1 = min(int(corners[:, 0].max()) + pad, w), min(int(corners[:, 1].max()) + pad, h)
    if x1 <= x0 or y1 <= y0:  # the crop lies outside the image: replicate its nearest border
        x0, y0, x1, y1 = 0, 0, w, h
    region = rgb[y0:y1, x0:x1]
    m = m.copy()
    m[:, 2] += m[:, 0] * x0 + m[:, 1] * y0  # region pixels -> crop
    if s < 0.25:
        f = 4 * s
        rh, rw = region.shape[:2]
        size = (max(int(round(rw * f)), 1), max(int(round(rh * f)), 1))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        fx, fy = size[0] / rw, size[1] / rh  # small pixel p was region point (p + 0.5) / f - 0.5
        m[:, 2] += m[:, 0] * (0.5 / fx - 0.5) + m[:, 1] * (0.5 / fy - 0.5)
        m[:, 0] /= fx
        m[:, 1] /= fy
        s = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if s < 1:
        region = cv2.GaussianBlur(region, (0, 0), 0.5 * math.sqrt(1 / s**2 - 1))
    return cv2.warpAffine(np.ascontiguousarray(region), m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _centred(detector: FaceDetector, crop: np.ndarray) -> np.ndarray | None:
    """The landmarks ``(5, 2)`` of the face at ``crop``'s centre: the detector's vote where it has
    one (CenterFace), else its detection nearest the centre."""
    if hasattr(detector, "centred_landmarks"):
        return detector.centred_landmarks(crop, vote=SETTLE_VOTE)
    found: Detections = detector(crop)
    if len(found) == 0:
        return None
    centre = np.array(crop.shape[1::-1], np.float32) / 2
    return found.landmarks[int(np.argmin(np.linalg.norm(found.landmarks.mean(1) - centre, axis=1)))]
