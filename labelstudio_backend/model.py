"""The Label Studio ML backend class: detect faces (core pipeline), answer in Label Studio's format."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from label_studio_ml.model import LabelStudioMLBase

from refacex_plugin import __version__
from refacex_plugin.detection import load_detector
from refacex_plugin.errors import RefacexError
from refacex_plugin.image_io import atomic_write_bytes, encode_image
from refacex_plugin.pipeline import Pipeline

from .config import Control, parse_label_config
from .images import ResolverSettings, resolve_image

logger = logging.getLogger(__name__)
MODEL_VERSION = f"refacex-{__version__}"


def _request_label_config() -> str | None:
    """Label Studio sends the project's config with every /predict; the v2 model cache may hold an
    older project's, so prefer the request's."""
    try:
        from flask import has_request_context, request

        if has_request_context() and request.is_json:
            return (request.get_json(silent=True) or {}).get("label_config")
    except Exception:  # not inside Flask
        pass
    return None


def face_results(controls: list[Control], faces, height: int, width: int) -> list[dict]:
    """Label Studio result items for the detected faces (percent coordinates)."""
    out = []
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = f.box
        for c in controls:
            common = {
                "from_name": c.from_name,
                "to_name": c.to_name,
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "score": f.score,
            }
            if c.kind == "rectanglelabels":
                value = {
                    "x": 100 * x0 / width,
                    "y": 100 * y0 / height,
                    "width": 100 * (x1 - x0) / width,
                    "height": 100 * (y1 - y0) / height,
                    "rotation": 0,
                }
                label = c.face_label()
                if label:
                    value["rectanglelabels"] = [label]
                out.append({"id": f"face{i}-{c.from_name}", "type": "rectanglelabels", "value": value, **common})
            else:
                for k, ((x, y), label) in enumerate(zip(f.landmarks, c.landmark_labels())):
                    value = {"x": 100 * x / width, "y": 100 * y / height, "width": 0.6}
                    if label:
                        value["keypointlabels"] = [label]
                    out.append({"id": f"face{i}-{c.from_name}-{k}", "type": "keypointlabels", "value": value, **common})
    return out


class RefacexFaceBackend(LabelStudioMLBase):
    """Pre-annotates faces; with ``REFACEX_LS_ANONYMIZE=1`` also writes the anonymised image to
    ``REFACEX_LS_STORAGE`` (under ``LOCAL_FILES_DOCUMENT_ROOT``) and returns its reference."""

    _pipelines: dict[str | None, Pipeline] = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.detector = load_detector()

    def predict(self, tasks, **kwargs):
        """Settings come from the environment at each call (see README: Label Studio)."""
        controls = parse_label_config(_request_label_config() or self.label_config or "")
        settings = ResolverSettings.from_env(self.hostname, self.access_token)
        pipeline = None
        if os.environ.get("REFACEX_LS_ANONYMIZE", "").lower() in ("1", "true", "yes"):
            method = os.environ.get("REFACEX_LS_METHOD") or None
            pipeline = self._pipelines.setdefault(method, Pipeline(method=method))
        return [self._predict_one(task, controls, settings, pipeline) for task in tasks]

    def _predict_one(self, task: dict, controls: list[Control], settings: ResolverSettings, pipeline: Pipeline | None) -> dict:
        data = task.get("data") or {}
        key = controls[0].data_key
        try:
            rgb = resolve_image(data.get(key), settings)
        except RefacexError as exc:
            logger.warning("task %s: %s", task.get("id"), exc)
            return {"result": [], "score": 0.0, "model_version": MODEL_VERSION, "error": str(exc)}
        h, w = rgb.shape[:2]
        prediction = {"model_version": MODEL_VERSION}
        if pipeline is not None:
            result = pipeline.anonymise_image(rgb)
            faces = result.faces
            prediction["anonymized_image"] = self._store(result.image, task, settings)
        else:
            from refacex_plugin.pipeline import FaceRecord

            det = self.detector(rgb)
            faces = [
                FaceRecord(i, [float(v) for v in det.boxes[i]], float(det.scores[i]), det.landmarks[i].tolist(), "none")
                for i in range(len(det))
            ]
        prediction["result"] = face_results(controls, faces, h, w)
        prediction["score"] = float(sum(f.score for f in faces) / len(faces)) if faces else 0.0
        return prediction

    @staticmethod
    def _store(rgb, task: dict, settings: ResolverSettings) -> str | None:
        root, storage = settings.document_root, os.environ.get("REFACEX_LS_STORAGE")
        if not (storage and root):
            return None
        name = hashlib.sha256(f"{task.get('id')}|{task.get('data')}".encode()).hexdigest()[:20] + ".jpg"
        dst = Path(storage) / name
        atomic_write_bytes(dst, encode_image(rgb, "JPEG", 92))
        rel = dst.resolve().relative_to(Path(root).resolve())
        return f"/data/local-files/?d={rel}"

    def fit(self, tasks, workdir=None, **kwargs):
        """No training from annotations yet: acknowledge the event without changing the model."""
        return {"model_version": MODEL_VERSION, "trained": False, "reason": "refacex does not train from annotations"}
