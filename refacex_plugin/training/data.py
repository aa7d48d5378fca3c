"""Aligned face crops for training, prepared once from an identity-labelled folder and cached."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..detection import load_detector
from ..geometry import AlignConfig, alignment_matrices, extract_crops
from ..bench.originals import central_face
from ..image_io import read_image


def identity_split(name: str, val_fraction: float = 0.1) -> str:
    """Stable train/val assignment of an identity by the hash of its name."""
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def prepare_crops(data: Path, split: str, limit: int, res: int = 128, seed: int = 0, cache_dir: Path | None = None,
                  progress: bool = True) -> torch.Tensor:
    """``(N, 3, res, res) uint8`` crops of the central face of images whose identity is in ``split``."""
    files = sorted(p for p in Path(data).glob("*/*.jpg") if identity_split(p.parent.name) == split)
    files = random.Random(seed).sample(files, min(limit, len(files)))
    key = hashlib.sha256(f"{data.resolve()}|{split}|{limit}|{res}|{seed}|{len(files)}".encode()).hexdigest()[:16]
    cache = (cache_dir or Path.home() / ".cache" / "refacex" / "train") / f"crops-{key}.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    det = load_detector()
    align = AlignConfig()
    out = []
    for f in tqdm(files, desc=f"crops ({split})", disable=not progress, file=sys.stderr):
        rgb = read_image(f).rgb
        d = det(rgb)
        if len(d) == 0:
            continue
        i = central_face(d, *rgb.shape[:2])
        if i is None:
            continue
        crop = extract_crops(rgb, alignment_matrices(d.landmarks[i : i + 1], align), align)
        crop = F.interpolate(crop, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        out.append((crop[0] * 255).round().to(torch.uint8))
    crops = torch.stack(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(crops, cache)
    return crops
