import random

import numpy as np
import pytest

from refacex_plugin import distortions as D
from refacex_plugin.bench.originals import central_face
from refacex_plugin.detection import load_detector, reader_config
from refacex_plugin.geometry import AlignConfig, alignment_matrices, frame_offset
from refacex_plugin.image_io import read_image
from refacex_plugin.registration import _crop_matrix, _low_passed_crop, settled_landmarks

#: (scale, border fraction cropped) of the geometric distortions: a point p of the original lies at
#: (p + 0.5) * scale - 0.5 - crop in the distorted image.
GEOMETRY = {"resize_0.5": (0.5, 0.0), "resize_1.5": (1.5, 0.0), "jpeg_q50": (1.0, 0.0), "crop_10pct": (1.0, 0.05)}


def _offsets(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cfg = AlignConfig()
    return frame_offset(alignment_matrices(a, cfg), alignment_matrices(b, cfg), cfg.size / 2)


@pytest.mark.parametrize("row", list(GEOMETRY))
def test_settled_landmarks_agree_across_a_distortion_where_re_detections_do_not(lfw, row):
    """20 LFW faces and a distorted copy of each: the settled landmarks of the copy, mapped back,
    lie within 1.5 % in zoom, 1 deg and 2 crop px of the original's settled landmarks (measured:
    20 of 20 in every row; raw re-detections 2 / 0 / 12 / 3), and nearer in shift than the raw
    re-detection for most faces (measured 20 / 20 / 16 / 18)."""
    det = load_detector(cfg=reader_config())
    files = random.Random(5).sample(sorted(lfw.glob("*/*.jpg")), 20)
    scale, crop = GEOMETRY[row]
    close, nearer, n = 0, 0, 0
    for f in files:
        rgb = read_image(f).rgb
        found = det(rgb)
        c = central_face(found, *rgb.shape[:2])
        x = D.DISTORTIONS[row](rgb)
        again = det(x)
        j = central_face(again, *x.shape[:2]) if len(again) else None
        if c is None or j is None:
            continue
        at = np.array([round(rgb.shape[1] * crop), round(rgb.shape[0] * crop)], np.float32)
        back = lambda lm, at=at: ((lm + 0.5) / scale - 0.5 + at).astype(np.float32)  # noqa: E731
        raw = _offsets(found.landmarks[c : c + 1], back(again.landmarks[j : j + 1]))[0]
        settled = _offsets(
            settled_landmarks(rgb, found.landmarks[c : c + 1], det), back(settled_landmarks(x, again.landmarks[j : j + 1], det))
        )[0]
        n += 1
        close += bool((settled <= np.array([0.015, 1.0, 2.0])).all())
        nearer += bool(settled[2] <= raw[2])
    assert n >= 19
    assert close >= n - 2, (close, n)
    assert nearer >= 3 * n // 4, (nearer, n)


def test_centred_landmarks_without_a_vote_are_the_detection_at_the_centre(example_rgb):
    """With no vote (one cell) the centred landmarks are the best cell's: the detector's own."""
    det = load_detector()
    lm = det(example_rgb).landmarks[:1]
    crop = _low_passed_crop(example_rgb, _crop_matrix(lm[0].astype(np.float64)))
    assert crop.shape == (96, 96, 3)
    found = det(crop)
    np.testing.assert_allclose(det.centred_landmarks(crop, vote=0), found.landmarks[0], atol=1e-3)
    voted = det.centred_landmarks(crop, vote=2)
    assert np.abs(voted - found.landmarks[0]).max() < 3.0  # a vote near the cell, not elsewhere


def test_a_face_the_crop_loses_keeps_its_landmarks(example_rgb):
    """Landmarks over a blank image find no face in their crop and come back unchanged; an
    empty list stays empty."""
    det = load_detector()
    lm = det(example_rgb).landmarks[:1]
    blank = np.full_like(example_rgb, 127)
    np.testing.assert_array_equal(settled_landmarks(blank, lm, det), lm)
    assert settled_landmarks(example_rgb, np.zeros((0, 5, 2), np.float32), det).shape == (0, 5, 2)


def test_settling_works_with_a_detector_without_a_vote(example_rgb):
    """The dlib detector (no heat map) settles through its nearest detection."""
    pytest.importorskip("dlib")
    det = load_detector("dlib")
    lm = det(example_rgb).landmarks[:1]
    settled = settled_landmarks(example_rgb, lm, det)
    assert settled.shape == (1, 5, 2)
    assert _offsets(lm, settled)[0, 2] < 20  # the same face
