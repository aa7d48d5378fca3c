"""Everything measured once on the original images, cached on disk.

For each image: every detected face (for the pipeline), the face of interest (the best detection
covering the image centre, where LFW puts the labelled person), its 68 landmarks and head pose,
and, for each recogniser, its alignment geometry and embedding. A second method or a re-run only
pays for the anonymised side.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detection import Detections, FaceDetector, central_face
from ..image_io import read_image
from ..landmarks import Landmarks68
from .metrics import head_pose
from .progress import progress as _progress
from .recognizers import Recognizer

CACHE_VERSION = 2


@dataclass
class Originals:
    """Arrays indexed like ``paths``. ``ok[i]`` is False where no face covered the centre."""

    paths: list[str]
    ok: np.ndarray  # (N,) bool
    box: np.ndarray  # (N, 4)
    landmarks: np.ndarray  # (N, 5, 2)
    pts68: np.ndarray  # (N, 68, 2)
    pose: np.ndarray  # (N, 3) yaw, pitch, roll
    det_offsets: np.ndarray  # (N + 1,) into the flat detection arrays
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_landmarks: np.ndarray
    geometry: dict[str, np.ndarray]  # recogniser -> (N, 5, 2)
    embedding: dict[str, np.ndarray]  # recogniser -> (N, D)

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def detections(self, i: int) -> Detections:
        a, b = self.det_offsets[i], self.det_offsets[i + 1]
        return Detections(self.det_boxes[a:b], self.det_scores[a:b], self.det_landmarks[a:b])


def _cache_key(paths: list[Path], detector: FaceDetector, recognizers: list[Recognizer]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, detector.name, [r.name for r in recognizers]]).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:24]


def measure_originals(
    paths: list[Path], detector: FaceDetector, recognizers: list[Recognizer], cache_dir: Path | None = None, progress: bool = True
) -> Originals:
    key = _cache_key(paths, detector, recognizers)
    cache = cache_dir / f"originals-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        names = [r.name for r in recognizers]
        return Originals(
            paths=list(z["paths"]),
            ok=z["ok"],
            box=z["box"],
            landmarks=z["landmarks"],
            pts68=z["pts68"],
            pose=z["pose"],
            det_offsets=z["det_offsets"],
            det_boxes=z["det_boxes"],
            det_scores=z["det_scores"],
            det_landmarks=z["det_landmarks"],
            geometry={n: z[f"geometry_{i}"] for i, n in enumerate(names)},
            embedding={n: z[f"embedding_{i}"] for i, n in enumerate(names)},
        )
    lm68 = Landmarks68()
    n = len(paths)
    ok = np.zeros(n, bool)
    box, lms = np.zeros((n, 4), np.float32), np.zeros((n, 5, 2), np.float32)
    pts68, pose = np.zeros((n, 68, 2), np.float32), np.zeros((n, 3), np.float32)
    offsets, dboxes, dscores, dlms = [0], [], [], []
    geometry = {r.name: np.zeros((n, 5, 2), np.float32) for r in recognizers}
    embedding: dict[str, list] = {r.name: [None] * n for r in recognizers}
    for i, p in enumerate(_progress(paths, "originals", progress)):
        rgb = read_image(p).rgb
        det = detector(rgb)
        dboxes.append(det.boxes)
        dscores.append(det.scores)
        dlms.append(det.landmarks)
        offsets.append(offsets[-1] + len(det))
        c = central_face(det, *rgb.shape[:2])
        if c is None:
            continue
        ok[i] = True
        box[i], lms[i] = det.boxes[c], det.landmarks[c]
        pts68[i] = lm68(rgb, box[i])
        pose[i] = head_pose(pts68[i], rgb.shape[:2])
        for r in recognizers:
            g = r.geometry(rgb, box[i], lms[i])
            geometry[r.name][i] = g
            embedding[r.name][i] = r.embed(rgb, [g])[0]
    emb = {}
    for name, rows in embedding.items():
        dim = next((len(v) for v in rows if v is not None), 128)
        emb[name] = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in rows]).astype(np.float32)
    out = Originals(
        paths=[str(p) for p in paths],
        ok=ok,
        box=box,
        landmarks=lms,
        pts68=pts68,
        pose=pose,
        det_offsets=np.asarray(offsets, np.int64),
        det_boxes=np.concatenate(dboxes) if dboxes else np.zeros((0, 4), np.float32),
        det_scores=np.concatenate(dscores) if dscores else np.zeros((0,), np.float32),
        det_landmarks=np.concatenate(dlms) if dlms else np.zeros((0, 5, 2), np.float32),
        geometry=geometry,
        embedding=emb,
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"geometry_{i}": out.geometry[r.name] for i, r in enumerate(recognizers)}
        arrays.update({f"embedding_{i}": out.embedding[r.name] for i, r in enumerate(recognizers)})
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            paths=np.array(out.paths),
            ok=ok,
            box=box,
            landmarks=lms,
            pts68=pts68,
            pose=pose,
            det_offsets=out.det_offsets,
            det_boxes=out.det_boxes,
            det_scores=out.det_scores,
            det_landmarks=out.det_landmarks,
            **arrays,
        )
        tmp.replace(cache)
    return out
