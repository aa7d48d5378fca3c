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
from .geometry import AlignConfig, alignment_matrices, extract_crops, face_footprints, paste_residuals
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
    """``image``: the watermarked image; ``status`` per face: ``embedded`` (in the frame the
    decoder will re-detect) or ``embedded-unverified`` (the face was not re-detected; embedded
    in the given frame); ``regions``: per face, the rectangle outside which nothing changed;
    ``frames``: per face, the ``(5, 2)`` landmarks it was embedded in."""

    image: np.ndarray
    status: list[str]
    regions: list[tuple[int, int, int, int] | None]
    frames: np.ndarray


def embed_in_image(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    channel_bits: list[np.ndarray],
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    strength: float = 1.0,
    device: str | torch.device = "cpu",
    max_rounds: int = 4,
    settle_px: float = 0.02,
) -> EmbedResult:
    """Embed ``channel_bits[i]`` in face ``i`` (``landmarks (N, 5, 2)``) of an anonymised image,
    at the fixed point of re-detection (at most ``max_rounds`` embeddings; stops when the faces
    re-detected in the marked image moved less than ``settle_px``)."""
    if len(channel_bits) == 0:
        return EmbedResult(rgb.copy(), [], [], np.zeros((0, 5, 2), np.float32))
    landmarks = np.asarray(landmarks, np.float32)
    bits, frames, out = None, None, rgb
    for _ in range(max_rounds):
        # Embed in the frame the decoder will find; the watermark itself moves the detection a
        # little, so re-detect and re-embed (from the unmarked image) until the frame stands still.
        found = detector(out)
        match = match_faces(landmarks, found)
        new = np.stack([found.landmarks[j] if j is not None else landmarks[i] for i, j in enumerate(match)]).astype(np.float32)
        if frames is not None and np.abs(new - frames).max() < settle_px:
            break
        frames = new
        m = alignment_matrices(frames, align)
        crops = extract_crops(rgb, m, align, device)
        if bits is None:
            bits = torch.as_tensor(np.stack(channel_bits), dtype=crops.dtype, device=crops.device)
        with torch.inference_mode():
            residual = watermark.embed(crops, bits, strength) - crops
        out = paste_residuals(rgb, residual, m, align)
    status = ["embedded" if j is not None else "embedded-unverified" for j in match]
    return EmbedResult(out, status, face_footprints(m, align, *rgb.shape[:2]), frames.astype(np.float32))


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


@dataclass
class FacePayload:
    """What one re-detected face carries.

    ``found``: the channel bits error-correct to a valid codeword (an unmarked face does so with
    probability about 2^-16); ``authenticated``: they also open under one of the given keys.
    ``payload`` is the opened :class:`~refacex_plugin.payload.Payload` (secret: never print its code).
    """

    index: int
    box: list[float]
    landmarks: np.ndarray
    found: bool
    authenticated: bool
    payload: object | None = None
    bit_errors: int | None = None  # channel bits corrected, when authenticated

    def to_dict(self) -> dict:
        from .payload import KIND_RECOVERY_CODE, KIND_VAULT_REF

        p = self.payload
        return {
            "face": self.index,
            "box": [round(float(v), 1) for v in self.box],
            "payload_found": self.found,
            "authenticated": self.authenticated,
            "key_id": getattr(p, "key_id", None),
            "version": getattr(p, "version", None),
            "kind": {KIND_RECOVERY_CODE: "recovery-code", KIND_VAULT_REF: "vault-ref"}.get(getattr(p, "kind", None)),
            "bit_errors": self.bit_errors,
        }


def read_payloads(rgb: np.ndarray, keys: list[bytes], watermark: Watermark, detector: FaceDetector, align: AlignConfig = AlignConfig(), device="cpu") -> list[FacePayload]:
    """Detect every face of ``rgb``, read its channel bits and open them with ``keys``."""
    from . import payload as P

    det, logits = read_from_image(rgb, watermark, detector, align, device)
    out = []
    for i in range(len(det)):
        opened = P.open_payload(logits[i], keys) if keys else None
        errors = None
        if opened is not None:
            errors = int(((logits[i] > 0).astype(np.uint8) != P.seal(opened.code, _key_for(opened, keys), opened.kind)).sum())
        found = opened is not None or P.ECC.decode_hard((logits[i] > 0).astype(np.uint8)) is not None
        out.append(FacePayload(i, det.boxes[i].tolist(), det.landmarks[i], found, opened is not None, opened, errors))
    return out


def _key_for(opened, keys: list[bytes]) -> bytes:
    from .keys import key_id

    return next(k for k in keys if key_id(k) == opened.key_id)
