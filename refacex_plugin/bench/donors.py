"""Donor leakage: how often an anonymised face is recognised as one of the people it was built from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics
from .originals import central_face


def donor_paths(donor_id: str, bank, data: Path) -> list[Path]:
    """The source images behind a face's ``donor_id`` ("12+440": bank choice indices, mirrored ones
    past the bank's length; a bank source may name several people joined by "|")."""
    out = []
    for index in donor_id.split("+"):
        for name in bank.source(int(index)).split("|"):
            person = Path(name).stem.rsplit("_", 1)[0]
            out.append(Path(data) / person / Path(name).name)
    return out


def donor_match_rates(
    anon_embeddings: dict[str, np.ndarray], donor_ids: list[str | None], bank, data: Path, recognizers, calib: dict, detector
) -> dict[str, float | None]:
    """Per recogniser, the fraction of anonymised faces that match any of their own donors at the
    recogniser's calibrated threshold (None where no donor image could be found)."""
    from ..image_io import read_image

    cache: dict[Path, dict[str, np.ndarray] | None] = {}

    def embed(path: Path):
        if path not in cache:
            cache[path] = None
            if path.is_file():
                rgb = read_image(path).rgb
                det = detector(rgb)
                c = central_face(det, *rgb.shape[:2]) if len(det) else None
                if c is not None:
                    cache[path] = {r.name: r.embed(rgb, [r.geometry(rgb, det.boxes[c], det.landmarks[c])])[0] for r in recognizers}
        return cache[path]

    out: dict[str, float | None] = {}
    hits = {r.name: [] for r in recognizers}
    for i, donor_id in enumerate(donor_ids):
        if not donor_id:
            continue
        embs = [e for e in (embed(p) for p in donor_paths(donor_id, bank, data)) if e is not None]
        if not embs:
            continue
        for r in recognizers:
            sims = metrics.paired_similarity(
                np.stack([e[r.name] for e in embs]), np.repeat(anon_embeddings[r.name][i][None], len(embs), 0), r.metric
            )
            hits[r.name].append(bool((sims >= calib[r.name]["threshold"]).any()))
    for r in recognizers:
        out[r.name] = float(np.mean(hits[r.name])) if hits[r.name] else None
    return out
