"""Model zoo: named, hashed weights in ``models/`` described by ``models/manifest.json``.

Each manifest entry gives the file, its sha256, the command that trained it, the data, and the
measured metrics. Weights are loaded only when their hash matches (CompressAI's zoo shape).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import ModelNotAvailableError


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
