"""Which face is which, and where a reader will look for its mark: matching re-detections to the
faces wanted, the size below which a face is not read, and the frames (five landmarks) a face is
embedded and read in."""

from __future__ import annotations

import numpy as np
import torch

from ..detection import Detections, FaceDetector
from ..geometry import AlignConfig, canonical_template, invert_affine


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between landmark centroids: ``(N, 5, 2) x (M, 5, 2) -> (N, M)``."""
    return np.linalg.norm(a.mean(1)[:, None] - b.mean(1)[None], axis=-1)


def match_faces(wanted: np.ndarray, found: Detections, tolerance: float = 0.25) -> list[int | None]:
    """For each wanted face (``(N, 5, 2)`` landmarks), the index of the re-detected face whose
    landmark centroid lies within ``tolerance`` x inter-ocular distance, else None."""
    if len(found) == 0 or len(wanted) == 0:
        return [None] * len(wanted)
    dist = _centre_distance(wanted, found.landmarks)
    iod = eye_distances(wanted)
    out = []
    for i in range(len(wanted)):
        j = int(np.argmin(dist[i]))
        out.append(j if dist[i, j] <= tolerance * max(iod[i], 1.0) else None)
    return out


def eye_distances(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 5, 2)`` landmarks -> ``(N,)`` distances between the two eyes, in their pixels."""
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    return np.linalg.norm(landmarks[:, 0] - landmarks[:, 1], axis=-1)


def reader_frames(rgb: np.ndarray, landmarks: np.ndarray, detector: FaceDetector) -> np.ndarray:
    """Where a reader will find each face (``(N, 5, 2)`` given landmarks): the face settled in
    ``rgb`` (:func:`~refacex_plugin.registration.settled_landmarks`), which a reader's re-detection
    of the marked image settles to as well.

    Settled from the given landmarks, not from a re-detection of ``rgb``: settling converges to
    nearly one point from starts pixels apart, so the detection of the whole image only cost time.
    Measured (an ad hoc A/B, 60 LFW images per host, one core; faces opened by a
    key-holding reader unchanged / after JPEG Q75 / a half-size resize, embedding time per face):
    blur-anonymised, 71 faces, re-detected 56 / 55 / 53, 53 ms, settled from the given landmarks
    58 / 56 / 54, 45 ms; refacex-anonymised, 74 faces, 70 / 68 / 65, 58 ms vs 71 / 68 / 65, 51 ms."""
    from ..registration import settled_landmarks

    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    return settled_landmarks(rgb, landmarks, detector) if len(landmarks) else landmarks


def _matched_frames(previous: np.ndarray, found: Detections, match: list[int | None]) -> np.ndarray:
    """``(N, 5, 2)``: each face's re-detection (``found.landmarks[match[i]]``), or ``previous[i]`` where none matched."""
    return np.stack([found.landmarks[j] if j is not None else previous[i] for i, j in enumerate(match)]).astype(np.float32)


def settled_matches(
    rgb: np.ndarray,
    previous: np.ndarray,
    found: Detections,
    match: list[int | None],
    detector: FaceDetector,
    rounds_from_previous: int | None = None,
) -> np.ndarray:
    """``(N, 5, 2)``: each face's re-detection in ``rgb`` (``found.landmarks[match[i]]``), settled
    (:func:`~refacex_plugin.registration.settled_landmarks`); a face not re-detected keeps its
    ``previous (N, 5, 2)`` frame.

    With ``rounds_from_previous`` (the embedder's check of a marked image: does a reader's start
    lie near the mark?), a re-detected face settles from its ``previous`` frame (a settled one,
    where it was marked) for that many rounds instead
    (:attr:`~refacex_plugin.channel.EmbedConfig.check_rounds`)."""
    from ..registration import settled_landmarks

    frames = _matched_frames(previous, found, match)
    seen = [i for i, j in enumerate(match) if j is not None]
    if seen:
        if rounds_from_previous is None:
            frames[seen] = settled_landmarks(rgb, frames[seen], detector)
        else:
            frames[seen] = settled_landmarks(rgb, previous[seen], detector, rounds_from_previous)
    return frames


def frame_landmarks(m: torch.Tensor, align: AlignConfig) -> np.ndarray:
    """The five landmarks ``(B, 5, 2)`` whose alignment is ``m (B, 2, 3)``."""
    inv = invert_affine(m)
    return (canonical_template(align).to(inv) @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]).numpy().astype(np.float32)
