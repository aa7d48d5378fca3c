"""Aligned face crops for training, prepared once from an identity-labelled folder and cached."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..detection import central_face, load_detector
from ..geometry import AlignConfig, alignment_matrices, extract_crops
from ..image_io import read_image


def identity_split(name: str, val_fraction: float = 0.1) -> str:
    """Stable train/val assignment of an identity by the hash of its name."""
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def prepare_crops(
    data: Path, split: str, limit: int, res: int = 128, seed: int = 0, cache_dir: Path | None = None, progress: bool = True
) -> torch.Tensor:
    """``(N, 3, res, res) uint8`` crops of the central face of images whose identity is in ``split``.

    ``data``: an identity-labelled folder (``<Name>/<Name>_NNNN.jpg``), or a crop pack written by
    :func:`write_crop_pack` (``.npz``; its first ``limit`` crops of ``split``)."""
    data = Path(data)
    if data.suffix == ".npz":
        return read_crop_pack(data, split, limit, res)
    if not data.is_dir():
        raise ValueError(f"{data}: expected an identity-labelled folder or a .npz crop pack")
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


def write_crop_pack(path: Path, splits: dict[str, torch.Tensor], quality: int = 90, **meta) -> int:
    """Write ``(N, 3, S, S) uint8`` crops per split as one compressed file (each crop a JPEG at
    ``quality``: 4.7 KB for a 128-px LFW crop at 90, 1.4 grey levels of mean error over 200 crops), for a
    machine without the dataset - the device machine a training run can be carried to. Returns
    the bytes written."""
    import io

    import numpy as np
    from PIL import Image

    arrays: dict[str, np.ndarray] = {}
    for split, crops in splits.items():
        blobs = []
        for c in crops:
            buf = io.BytesIO()
            Image.fromarray(c.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        arrays[f"{split}_bytes"] = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    res = {int(c.shape[-1]) for c in splits.values() if len(c)}
    arrays["meta"] = np.frombuffer(json.dumps({"res": res.pop() if len(res) == 1 else None, "quality": quality, **meta}).encode(), np.uint8)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return Path(path).stat().st_size


def read_crop_pack(path: Path, split: str, limit: int, res: int) -> torch.Tensor:
    """The first ``limit`` crops of ``split`` from a :func:`write_crop_pack` file: ``(N, 3, res, res) uint8``."""
    import io

    import numpy as np
    from PIL import Image

    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta.get("res") != res:
            raise ValueError(f"{path} holds {meta.get('res')}-px crops, not {res}")
        if f"{split}_bytes" not in z:
            raise ValueError(f"{path} holds no {split!r} crops")
        data, offsets = z[f"{split}_bytes"], z[f"{split}_offsets"]
    n = min(limit, len(offsets) - 1)
    crops = [np.asarray(Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")) for i in range(n)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous() if crops else torch.zeros(0, 3, res, res, dtype=torch.uint8)
