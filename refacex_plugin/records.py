"""What the writer and the reader report, per image and per face."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .errors import RefacexError


@dataclass
class FaceRecord:
    """What the writer did to one face. Coordinates are pixels of the upright input image."""

    index: int
    box: list[float]
    score: float
    landmarks: list[list[float]]
    method: str
    donor_id: str | None = None
    notes: list[str] = field(default_factory=list)  # what the method could not keep (e.g. glasses removed)
    fallback: str | None = None  # why this face got the method's fallback (a mosaic) instead of its result
    payload: str = "none"  # none | embedded | embedded-unverified
    payload_bit_errors: int | None = None  # channel bits read back wrong right after embedding (before encoding)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageResult:
    """``image``: the new ``(H, W, 3) uint8`` image; ``regions``: per face, the rectangle
    ``(x0, y0, x1, y1)`` outside which no pixel changed (None for a face outside the image)."""

    image: np.ndarray
    faces: list[FaceRecord] = field(default_factory=list)
    regions: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    codes: list[np.ndarray] | None = None  # per face, the recovery code (reversible methods, with a key)
    unconfirmed: int = 0  # doubtful detections no second detector confirmed as faces: left as they were
    landmarks: np.ndarray | None = None  # (N, 5, 2) float32: the faces' 5 points as detected (the records round them)


@dataclass
class RecoveryResult:
    """``image``: the image with every face that could be restored restored; ``restored``: face
    indices restored; ``failed``: ``(face index, reason)`` for the others."""

    image: np.ndarray
    restored: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu; refuse cuda when absent."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RefacexError("--device cuda requested but no CUDA device is available")
    return torch.device(device)
