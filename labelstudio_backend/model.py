"""The Label Studio ML backend class: detect faces (core pipeline), answer in Label Studio's format."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from label_studio_ml.model import LabelStudioMLBase

from refacex_plugin import __version__, api
from refacex_plugin.detection import load_detector
from refacex_plugin.errors import RefacexError
from refacex_plugin.records import FaceRecord

from .config import Control, check_settings, parse_label_config
from .images import ResolverSettings, resolve_image, resolve_image_bytes

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
    ``REFACEX_LS_STORAGE`` (under ``LOCAL_FILES_DOCUMENT_ROOT``) and returns its reference, through
    :func:`refacex_plugin.api.anonymise_file` (with ``REFACEX_KEY_FILE`` and ``REFACEX_VAULT``:
    payloads in its faces, originals in the vault; :func:`.config.check_settings`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.detector = load_detector()

    def predict(self, tasks, **kwargs):
        """Settings come from the environment at each call (see README: Label Studio)."""
        controls = parse_label_config(_request_label_config() or self.label_config or "")
        settings = ResolverSettings.from_env(self.hostname, self.access_token)
        # checked when the app was created; again here, for the whole request, should the environment have changed
        anonymise = check_settings()
        if anonymise is None:
            return [self._predict_one(task, controls, settings, None) for task in tasks]
        with api.Session(anonymise, reuse_models=True) as session:
            for line in session.warnings:
                logger.warning(line)
            return [self._predict_one(task, controls, settings, session) for task in tasks]

    def _predict_one(self, task: dict, controls: list[Control], settings: ResolverSettings, session: api.Session | None) -> dict:
        data = task.get("data") or {}
        key = controls[0].data_key
        prediction = {"model_version": MODEL_VERSION}
        try:
            if session is None:
                rgb = resolve_image(data.get(key), settings)
                faces, (h, w) = self._detect(rgb), rgb.shape[:2]
            else:
                faces, (h, w), prediction["anonymized_image"] = self._anonymise(
                    resolve_image_bytes(data.get(key), settings), task, settings, session
                )
        except RefacexError as exc:
            logger.warning("task %s: %s", task.get("id"), exc)
            return {"result": [], "score": 0.0, "model_version": MODEL_VERSION, "error": str(exc)}
        prediction["result"] = face_results(controls, faces, h, w)
        prediction["score"] = float(sum(f.score for f in faces) / len(faces)) if faces else 0.0
        return prediction

    def _detect(self, rgb) -> list[FaceRecord]:
        det = self.detector(rgb)
        return [
            FaceRecord(i, [float(v) for v in det.boxes[i]], float(det.scores[i]), det.landmarks[i].tolist(), "none")
            for i in range(len(det))
        ]

    def _anonymise(self, image: bytes, task: dict, settings: ResolverSettings, session: api.Session):
        """Anonymise the task's image file into REFACEX_LS_STORAGE: its faces, (height, width)
        and the written media's reference (None when no storage is configured)."""
        root, storage = settings.document_root, os.environ.get("REFACEX_LS_STORAGE")
        name = hashlib.sha256(f"{task.get('id')}|{task.get('data')}".encode()).hexdigest()[:20] + ".jpg"
        with tempfile.TemporaryDirectory(prefix="refacex-ls-") as tmp:
            src = Path(tmp) / "task-image"  # the file as fetched: the vault keeps these very bytes
            src.write_bytes(image)
            stored = bool(storage and root)
            res = api.anonymise_file(session, src, (Path(storage) if stored else Path(tmp)) / name, fmt="jpeg", quality=92)
            if res.skipped:  # already anonymised into this vault: pre-annotate it, write nothing
                from refacex_plugin.image_io import read_image

                rgb = read_image(src).rgb
                return self._detect(rgb), rgb.shape[:2], None
        if not stored:
            return res.faces, res.size, None
        rel = res.dst.resolve().relative_to(Path(root).resolve())
        return res.faces, res.size, f"/data/local-files/?d={rel}"

    def fit(self, tasks, workdir=None, **kwargs):
        """No training from annotations yet: acknowledge the event without changing the model."""
        return {"model_version": MODEL_VERSION, "trained": False, "reason": "refacex does not train from annotations"}
