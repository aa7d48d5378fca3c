"""The use cases every front end runs: anonymise a file, recover one, read its payloads.

The CLI, the FiftyOne plugin and the Label Studio backend describe a run with one
:class:`Settings`, open a :class:`Session` on it and call :func:`anonymise_file`,
:func:`recover_file` and :func:`read_payloads`, so the key and vault policy (:func:`validate`)
is the same whichever front end is used::

    from refacex_plugin import api

    settings = api.Settings.load(key_file="admin.key", vault="faces.vault", method="pixelate")
    with api.Session(settings) as session:
        api.anonymise_file(session, "photo.jpg", "out/photo.jpg")

The work itself is :mod:`~refacex_plugin.files`', :class:`~refacex_plugin.writer.FaceWriter`'s and
:class:`~refacex_plugin.reader.FaceReader`'s; this layer only decides what may run, builds the
writer or the reader and opens the vault once.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import files
from .detection import DEFAULT_DETECTOR, DetectorConfig
from .errors import RefacexError
from .keys import read_key_file

#: What a :class:`Session` is for: ``anonymise`` files, ``recover`` originals, ``read`` payloads.
USES = ("anonymise", "recover", "read")
DONOR_POLICIES = ("random", "consistent")

VAULT_NEEDS_KEY = "a vault needs a key (its records are encrypted with it)"
RECOVERY_NEEDS_KEY = "recovery needs a key"


@dataclass(frozen=True)
class Settings:
    """One run's settings. ``key`` (the secret key's bytes) never appears in the repr.

    Args:
        method: anonymisation method; None: the best available.
        vault: vault file for exact recovery (needs ``key``).
        donors: donor bank file, or a folder of consenting donors' photos (None: the shipped bank).
        seed: without a key, makes the donor choice (and so the output) reproducible; with a key
            the key does that, and without either each run draws a secret of its own.
    """

    method: str | None = None
    strength: float = 1.0
    key: bytes | None = field(default=None, repr=False)
    vault: str | os.PathLike | None = field(default=None, repr=False)  # a MongoDB URI may hold a password
    watermark: str | None = None
    watermark_strength: float = 1.0
    donor_policy: str = "random"
    donors: str | os.PathLike | None = None
    keep_landmarks: bool = False
    seed: int | None = None
    detector: str = DEFAULT_DETECTOR
    threshold: float = DetectorConfig.threshold
    min_face: int = DetectorConfig.min_size
    device: str = "cpu"

    @classmethod
    def load(cls, key_file: str | os.PathLike | None = None, **fields) -> Settings:
        """Settings with the key read from ``key_file`` (when given); empty strings count as unset."""
        fields = {k: v for k, v in fields.items() if v != ""}
        return cls(key=read_key_file(key_file) if key_file else None, **fields)


def validate(settings: Settings, use: str = "anonymise") -> str | None:
    """Refuse settings that cannot do what ``use`` asks, with one line; the one place the key and
    vault policy lives. Returns the method anonymising will use (None for the other uses).

    The policy: a vault without a key is refused (its records are sealed with the key); recovery
    needs a key; to anonymise, the method must exist, and a key without a vault is refused for an
    irreversible method, whose payloads would point at nothing (only a reversible method's payload
    carries a recovery code).
    """
    if use not in USES:
        raise ValueError(f"use must be one of {', '.join(USES)}")
    if settings.vault and settings.key is None:
        raise RefacexError(VAULT_NEEDS_KEY)
    if use == "recover" and settings.key is None:
        raise RefacexError(RECOVERY_NEEDS_KEY)
    if use != "anonymise":
        return None
    if settings.donor_policy not in DONOR_POLICIES:
        raise RefacexError(f"unknown donor policy {settings.donor_policy!r} (choose from {', '.join(DONOR_POLICIES)})")
    from .anonymisers import BASELINES, default_method, get_anonymiser, known_methods

    method = settings.method or default_method()
    if method not in known_methods():
        raise RefacexError(f"unknown method {method!r} (choose from {', '.join(known_methods())})")
    if settings.donors and method in BASELINES:
        raise RefacexError(f"method {method!r} uses no donors: --donors needs the refacex (or generator) method")
    if settings.keep_landmarks and method != "generator":
        raise RefacexError(f"--keep-landmarks moves a drawn face's features; method {method!r} keeps the face's own layout or draws none")
    if settings.strength > 1.0 and method == "refacex":
        raise RefacexError("method 'refacex': --strength above 1 has no further effect (the identity push is at its measured maximum)")
    if settings.seed is not None and method in BASELINES:
        raise RefacexError(f"method {method!r} draws nothing at random: --seed applies to the refacex (or generator) method")
    if settings.seed is not None and settings.key is not None:
        raise RefacexError("give --seed or --key-file, not both: with a key, the key makes the donor choice reproducible")
    if settings.key is not None and not settings.vault and not get_anonymiser(method).reversible:
        raise RefacexError(irreversible_message(method))
    return method


def irreversible_message(method: str) -> str:
    """Why a key without a vault is refused for ``method`` (what every front end says)."""
    return f"method {method!r} is irreversible: with a key, give a vault for exact recovery, or use --method generator"


_BUILT: dict = {}  # (settings without the vault, use) -> writer or reader, for sessions that reuse models
_BUILT_LOCK = threading.Lock()


class Session:
    """The writer or reader and the vault for one :class:`Settings`, validated, built and opened once.

    Args:
        use: ``anonymise`` (the vault is created if missing), ``recover`` (it must exist; without a
            watermark only unchanged files, found by their pixel hash, can be restored) or ``read``.
        reuse_models: take the writer or reader from a process-wide cache of those built for
            equal settings (a server answering many requests); the vault is still this session's own.

    Attributes:
        method: the method anonymising uses (None for the other uses).
        writer: the :class:`~refacex_plugin.writer.FaceWriter` (``anonymise`` only).
        reader: the :class:`~refacex_plugin.reader.FaceReader` (``recover`` and ``read``; None when
            recovering without a watermark).
        vault: the open vault (:func:`~refacex_plugin.vault.open_vault`: a SQLite file, or a
            MongoDB database for a ``mongodb://`` URI), or None.
        warnings: one-line warnings a front end should show (experimental weights).
        notes: what this session cannot do that its use usually can (recovery without a watermark).
    """

    def __init__(self, settings: Settings, use: str = "anonymise", reuse_models: bool = False):
        from .vault import open_vault

        self.settings, self.use = settings, use
        self.method = validate(settings, use)
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.vault = None
        self.writer = None
        self.reader = None
        if settings.vault:
            self.vault = open_vault(settings.vault, settings.key, create=use == "anonymise")
        try:
            try:
                built = self._build(reuse_models)
                if use == "anonymise":
                    self.writer = built
                else:
                    self.reader = built
            except RefacexError:
                if use != "recover" or self.vault is None:
                    raise
                self.notes.append("no watermark available; only unchanged images can be restored")
            self._warn_experimental()
        except BaseException:
            self.close()
            raise

    def _build(self, reuse: bool):
        if not reuse:
            return _build(self.settings, self.use, self.method)
        with _BUILT_LOCK:
            cache_key = (replace(self.settings, vault=None), self.use)
            if cache_key not in _BUILT:
                _BUILT[cache_key] = _build(self.settings, self.use, self.method)
            return _BUILT[cache_key]

    def _warn_experimental(self) -> None:
        from .anonymisers import is_experimental as method_experimental
        from .watermark import is_experimental as watermark_experimental

        if self.use == "anonymise" and method_experimental(self.method):
            self.warnings.append(
                f"method {self.method!r} is experimental (its weights have not reached the bars; see the README's status table)"
            )
        watermark = self.writer.embedder.watermark if self.writer is not None and self.writer.has_key else None
        if self.reader is not None:
            watermark = self.reader.watermark
        if watermark is not None:
            if watermark_experimental(watermark):
                self.warnings.append(
                    f"watermark {watermark.name!r} is experimental (its weights have not reached the bars; see docs/payload.md)"
                )

    @property
    def reversible(self) -> bool:
        """Whether anonymised files can be restored exactly (their originals are in the vault)."""
        return self.vault is not None

    def close(self) -> None:
        if self.vault is not None:
            self.vault.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        from .vault import describe

        vault = f", vault={describe(self.settings.vault)!r}" if self.settings.vault else ""  # a URI's password never shown
        return f"Session({self.settings!r}{vault}, use={self.use!r})"


def _build(s: Settings, use: str, method: str | None):
    """The writer (``anonymise``) or the reader (the other uses) for ``s``."""
    detector_config = DetectorConfig(threshold=s.threshold, min_size=s.min_face)
    if use != "anonymise":
        from .reader import make_reader

        return make_reader(s.key, watermark=s.watermark, detector=s.detector, detector_config=detector_config, device=s.device)
    from .writer import make_writer

    return make_writer(
        method,
        detector=s.detector,
        detector_config=detector_config,
        strength=s.strength,
        key=s.key,
        watermark=s.watermark,
        watermark_strength=s.watermark_strength,
        donor_policy=s.donor_policy,
        donor_bank=load_donor_bank(s.donors, method) if s.donors else None,
        keep_landmarks=s.keep_landmarks,
        donor_seed=s.seed,
        device=s.device,
    )


def load_donor_bank(path: str | os.PathLike, method: str | None):
    """A donor bank file, or one built from a folder of donor photos (for the generator: its identity vectors)."""
    from .batch import iter_jobs

    if Path(path).is_file():
        from .composite import DonorBank

        return DonorBank.load(path)
    photos = [j.src for j in iter_jobs([path], None, True)]
    if method == "generator":
        from .generator.donors import DonorBank as IdentityBank

        return IdentityBank.from_images(photos)
    from .composite import build_bank, collect_faces

    return build_bank(collect_faces(photos), origin=f"donor photos in {path}")


def _needs(session: Session, use: str) -> None:
    if session.use != use:
        raise ValueError(f"this session was opened to {session.use}, not to {use}")


def anonymise_file(
    session: Session,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    fmt: str | None = None,
    quality: int = 95,
    in_place: bool = False,
) -> files.FileResult:
    """Anonymise one file into ``dst`` (:func:`refacex_plugin.files.anonymise_file`), its
    originals into the session's vault and, with a key, a payload into each face."""
    _needs(session, "anonymise")
    return files.anonymise_file(session.writer, Path(src), Path(dst), fmt, quality, session.vault, in_place)


def recover_file(
    session: Session,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    fmt: str | None = None,
    quality: int = 95,
    in_place: bool = False,
) -> files.FileResult:
    """Restore an anonymised file's original (:func:`refacex_plugin.files.recover_file`): from
    the session's vault, or approximately from its payloads' recovery codes without one."""
    _needs(session, "recover")
    return files.recover_file(Path(src), Path(dst), session.vault, session.reader, fmt, quality, in_place)


def read_payloads(session: Session, image: str | os.PathLike | np.ndarray, keys: list[bytes] | tuple = ()) -> list:
    """Per face of ``image`` (a file or an RGB array), what its payload says
    (:meth:`refacex_plugin.reader.FaceReader.read_payloads`), authenticated with ``keys`` or the
    session's key. Report them with ``to_dict``, which leaves the code out."""
    if session.reader is None:
        raise RefacexError("no watermark available to read payloads with")
    if not isinstance(image, np.ndarray):
        from .image_io import read_image

        image = read_image(image).rgb
    return session.reader.read_payloads(image, list(keys))
