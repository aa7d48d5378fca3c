"""The backend's settings: which controls of a Label Studio labeling config want face boxes and
landmarks, and how anonymisation runs (from the environment)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from refacex_plugin.errors import RefacexError

#: Landmark label names we recognise (case-insensitive), in refacex's landmark order.
LANDMARK_NAMES = (
    ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"),
    ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right"),
)


class LabelConfigError(ValueError):
    """The labeling config has nothing refacex can pre-annotate."""


@dataclass
class Control:
    kind: str  # "rectanglelabels" | "keypointlabels"
    from_name: str
    to_name: str
    data_key: str  # task data key of the image, e.g. "image" for value="$image"
    labels: list[str] = field(default_factory=list)

    def face_label(self) -> str | None:
        for lab in self.labels:
            if lab.lower() in ("face", "faces", "head"):
                return lab
        return self.labels[0] if self.labels else None

    def landmark_labels(self) -> list[str | None]:
        """Label for each of the 5 landmarks: named ones when the config has them, else one label."""
        lower = {lab.lower(): lab for lab in self.labels}
        for names in LANDMARK_NAMES:
            if all(n in lower for n in names):
                return [lower[n] for n in names]
        return [self.face_label()] * 5


def parse_label_config(xml: str) -> list[Control]:
    """Controls (RectangleLabels / KeyPointLabels) that label an Image. Raises :class:`LabelConfigError`."""
    if not xml or not xml.strip():
        raise LabelConfigError("empty labeling config")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"labeling config is not valid XML ({exc})") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag.lower() == "image"}
    controls = []
    for el in root.iter():
        kind = el.tag.lower()
        if kind not in ("rectanglelabels", "keypointlabels"):
            continue
        to_name = el.get("toName") or el.get("toname") or ""
        if to_name not in images:
            continue
        labels = [lab.get("value") for lab in el.iter() if lab.tag.lower() == "label" and lab.get("value")]
        controls.append(Control(kind, el.get("name", ""), to_name, images[to_name].lstrip("$"), labels))
    if not controls:
        raise LabelConfigError(
            "the labeling config has no RectangleLabels or KeyPointLabels on an Image: "
            "refacex pre-annotates face boxes and 5 face landmarks"
        )
    return controls


class BackendConfigError(RefacexError):
    """The backend's environment asks for something it cannot do: it refuses to start (and, should
    the environment change under a running backend, answers /predict with a 500) with one line."""


# The use-case layer speaks the CLI's words; the backend is configured by its environment.
_CLI_WORDS = (("--method", "REFACEX_LS_METHOD"), ("--key-file", "REFACEX_KEY_FILE"), ("--vault", "REFACEX_VAULT"))


def check_settings(env=os.environ):
    """:func:`anonymise_settings`, refused before any request when they cannot work: the key and
    vault policy of every front end (:func:`refacex_plugin.api.validate` decides), an unreadable
    key file, a vault or storage the backend could not use. Raises :class:`BackendConfigError`
    with one line naming the environment variables to change; returns the settings (None when the
    backend only pre-annotates)."""
    from refacex_plugin.api import VAULT_NEEDS_KEY, irreversible_message, validate

    try:
        settings = anonymise_settings(env)
    except RefacexError as exc:  # the key file
        raise BackendConfigError(f"REFACEX_KEY_FILE: {exc}") from None
    if settings is None:
        return None
    try:
        validate(settings)
    except RefacexError as exc:
        from refacex_plugin.anonymisers import default_method

        said, wanted = str(exc), settings.method or default_method()
        if said == irreversible_message(wanted):
            raise BackendConfigError(
                f"REFACEX_KEY_FILE is set without REFACEX_VAULT, and method {wanted!r} is irreversible (its payloads would "
                "point at nothing): set REFACEX_VAULT for exact recovery, or REFACEX_LS_METHOD=generator, or unset REFACEX_KEY_FILE"
            ) from None
        if said == VAULT_NEEDS_KEY:
            raise BackendConfigError(f"REFACEX_VAULT is set without REFACEX_KEY_FILE: {said}") from None
        for cli, var in _CLI_WORDS:
            said = said.replace(cli, var)
        raise BackendConfigError(f"REFACEX_LS_METHOD: {said}" if said.startswith("unknown method") else said) from None
    storage, root = env.get("REFACEX_LS_STORAGE"), env.get("LOCAL_FILES_DOCUMENT_ROOT")
    if settings.vault and not (storage and root):
        raise BackendConfigError(
            "REFACEX_VAULT needs REFACEX_LS_STORAGE and LOCAL_FILES_DOCUMENT_ROOT: the vault would keep originals of media never written"
        )
    if storage and root and not Path(storage).resolve().is_relative_to(Path(root).resolve()):
        raise BackendConfigError(
            f"REFACEX_LS_STORAGE ({storage}) is not under LOCAL_FILES_DOCUMENT_ROOT ({root}): Label Studio could not open the media written there"
        )
    return settings


def anonymise_settings(env=os.environ):
    """The :class:`refacex_plugin.api.Settings` the backend anonymises with, or None when
    ``REFACEX_LS_ANONYMIZE`` is off (then it only pre-annotates).

    ``REFACEX_LS_METHOD`` names the method; ``REFACEX_KEY_FILE`` (a key file made by ``refacex
    keygen``) and ``REFACEX_VAULT`` (a vault file) are the FiftyOne plugin's secrets of the same
    names: with both, every face of the written media carries a sealed vault reference and its
    original is kept in the vault. :func:`check_settings` validates them, by the same policy as
    the CLI's and FiftyOne's, when the app is created and at each /predict.
    """
    if env.get("REFACEX_LS_ANONYMIZE", "").lower() not in ("1", "true", "yes"):
        return None
    from refacex_plugin.api import Settings

    return Settings.load(
        env.get("REFACEX_KEY_FILE") or None, method=env.get("REFACEX_LS_METHOD") or None, vault=env.get("REFACEX_VAULT") or None
    )
