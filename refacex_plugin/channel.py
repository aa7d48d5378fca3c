"""Carrying payload bits in whole images: embed in each face, read back after re-detection.

The watermark is embedded in the frame the *decoder* will see: the anonymised image is
re-detected and each face is aligned from those landmarks (not the original face's), so the
anonymiser's effect on landmark positions does not become an alignment error at read time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .detection import Detections, FaceDetector
from .geometry import AlignConfig, alignment_matrices, extract_crops, paste_crops
from .watermark import Watermark


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between landmark centroids: ``(N, 5, 2) x (M, 5, 2) -> (N, M)``."""
    return np.linalg.norm(a.mean(1)[:, None] - b.mean(1)[None], axis=-1)


def match_faces(wanted: np.ndarray, found: Detections, tolerance: float = 0.25) -> list[int | None]:
    """For each wanted face (``(N, 5, 2)`` landmarks), the index of the re-detected face whose
    landmark centroid lies within ``tolerance`` x inter-ocular distance, else None."""
    if len(found) == 0 or len(wanted) == 0:
        return [None] * len(wanted)
    dist = _centre_distance(wanted, found.landmarks)
    iod = np.linalg.norm(wanted[:, 0] - wanted[:, 1], axis=-1)
    out = []
    for i in range(len(wanted)):
        j = int(np.argmin(dist[i]))
        out.append(j if dist[i, j] <= tolerance * max(iod[i], 1.0) else None)
    return out


@dataclass
class EmbedResult:
    image: np.ndarray
    status: list[str]  # per face: "embedded" (decoder frame) or "embedded-unverified" (original frame)


def embed_in_image(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    channel_bits: list[np.ndarray],
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    strength: float = 1.0,
    device: str | torch.device = "cpu",
) -> EmbedResult:
    """Embed ``channel_bits[i]`` in face ``i`` (``landmarks (N, 5, 2)``) of an anonymised image."""
    if len(channel_bits) == 0:
        return EmbedResult(rgb.copy(), [])
    found = detector(rgb)
    match = match_faces(np.asarray(landmarks, np.float32), found)
    frames = np.stack([found.landmarks[j] if j is not None else landmarks[i] for i, j in enumerate(match)])
    m = alignment_matrices(frames, align)
    crops = extract_crops(rgb, m, align, device)
    bits = torch.as_tensor(np.stack(channel_bits), dtype=crops.dtype, device=crops.device)
    with torch.inference_mode():
        marked = watermark.embed(crops, bits, strength)
    out = paste_crops(rgb, marked, m, align)
    return EmbedResult(out, ["embedded" if j is not None else "embedded-unverified" for j in match])


def read_from_image(
    rgb: np.ndarray, watermark: Watermark, detector: FaceDetector, align: AlignConfig = AlignConfig(), device="cpu"
) -> tuple[Detections, np.ndarray]:
    """Detect every face and read its channel-bit logits: ``(detections, logits (N, bits))``."""
    det = detector(rgb)
    if len(det) == 0:
        return det, np.zeros((0, watermark.bits), np.float32)
    crops = extract_crops(rgb, alignment_matrices(det.landmarks, align), align, device)
    with torch.inference_mode():
        logits = watermark.extract(crops)
    return det, logits.float().cpu().numpy()
