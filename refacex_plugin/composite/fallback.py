"""When the composite must not draw a face, and what it draws instead.

Each face is checked before any donor is chosen; a face that fails gets a coarse mosaic over the
whole face mask - never an adult face on a child, a frontal face on a profile, or a face on hair -
and its record says why (``fallback``). The limits below are where the donor bank and the
landmark model stop being trustworthy, measured on the 3,306 LFW faces the bank was built from.
"""

from __future__ import annotations

import numpy as np
import torch

from ..baselines import pixelate_faces
from ..geometry import AlignConfig, canonical_template
from .config import CompositeConfig
from .mesh import pose_expression


def fit_error(mesh: np.ndarray, align: AlignConfig = AlignConfig()) -> float:
    """How far ``mesh (78, 2)``'s eyes, nose tip and mouth corners are from the canonical 5 points
    the crop was aligned to, in eye distances."""
    template = canonical_template(align).numpy()
    five = np.stack([mesh[36:42].mean(0), mesh[42:48].mean(0), mesh[30], mesh[48], mesh[54]])
    eye = float(np.linalg.norm(template[1] - template[0]))
    return float(np.linalg.norm(five - template, axis=1).mean() / eye)


def refusal(mesh: np.ndarray, crop_size: int, score: float | None = None, config: CompositeConfig = CompositeConfig()) -> str | None:
    """Why a face meshed as ``mesh`` (detected with ``score``) must not get a composite, or None."""
    if score is not None and score < config.min_score:
        return f"detection too doubtful for a face ({score:.2f} < {config.min_score})"
    if fit_error(mesh, AlignConfig(size=crop_size)) > config.max_fit_error:
        return "landmarks do not fit the detection (not a face, or heavily occluded)"
    if abs(float(pose_expression(mesh)[0])) > config.max_yaw:
        return "head turned beyond the donors' poses"
    return None


def mosaic(crop: torch.Tensor, strength: float = 1.0, blocks: int = CompositeConfig.fallback_blocks) -> torch.Tensor:
    """``crop (1, 3, S, S)`` as a coarse mosaic of ``blocks`` across: what a face that gets no composite shows."""
    return pixelate_faces(crop, 16 / blocks * max(strength, 1.0))
