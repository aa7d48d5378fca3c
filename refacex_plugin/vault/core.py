"""What every vault backend shares: the records, their sealing, and the vault API built on them.

Each face record holds the rectangle of the original image that anonymisation changed for one face
(PNG-compressed, so lossless) encrypted with AES-256-GCM under a key derived from the secret key
(HKDF, ``refacex/vault/v1``); the record's id, image hash, face index and box are bound as
associated data, so records cannot be swapped or edited undetected. Records are found by the
SHA-256 of the anonymised image's decoded pixels (as written) and the face index, or by the
random record id a payload carries.

Each anonymised file's original bytes (whatever its format, metadata included) are sealed the same
way under the anonymised image's hash, so an unchanged anonymised file gives back the very file it
replaced. Vaults written before originals were kept have face records only; they still restore pixels.

A backend (:mod:`.sqlite`, :mod:`.mongo`) stores and finds sealed records; sealing, opening and
the choice among duplicates are :class:`VaultBase`'s, so both backends hold the very same bytes
and a vault copies between them sealed (:mod:`.copy`).
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from PIL import Image

from ..errors import RefacexError
from ..keys import key_id

_INFO = b"refacex/vault/v1"


class VaultError(RefacexError):
    """The vault is unreadable, or a record fails authentication (wrong key or tampering)."""


def pixel_hash(rgb: np.ndarray) -> str:
    """SHA-256 of an ``(H, W, 3) uint8`` image's shape and pixels (metadata-independent)."""
    h = hashlib.sha256(f"{rgb.shape}".encode())
    h.update(np.ascontiguousarray(rgb, np.uint8).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class FaceRegion:
    """A rectangle ``box = (x0, y0, x1, y1)`` of original pixels ``(y1 - y0, x1 - x0, 3) uint8``.

    ``frame`` (optional) places it when the image was resized or cropped since: the anonymised
    image's ``(height, width)`` and the face's 5 landmarks in it, where a payload reader will
    re-detect it.
    """

    box: tuple[int, int, int, int]
    pixels: np.ndarray
    image_size: tuple[int, int] | None = None
    landmarks: np.ndarray | None = None

    def frame_text(self) -> str:
        if self.image_size is None or self.landmarks is None:
            return ""
        return json.dumps({"size": list(self.image_size), "landmarks": np.round(self.landmarks, 2).tolist()})


@dataclass(frozen=True)
class Original:
    """An anonymised file's original: its bytes, PIL format name and how many face records it has."""

    data: bytes
    format: str
    faces: int


@dataclass(frozen=True)
class SealedFace:
    """One face record as a backend stores it (``box`` and ``frame`` as text, as bound in the AAD).
    ``created``: when it was first written (UTC; None: now), which orders duplicates."""

    record_id: bytes
    image_hash: str
    face_index: int
    key_id: str
    box: str
    frame: str
    nonce: bytes
    ciphertext: bytes
    created: datetime | None = None


@dataclass(frozen=True)
class SealedOriginal:
    """One original file as a backend stores it."""

    image_hash: str
    key_id: str
    format: str
    nonce: bytes
    ciphertext: bytes
    created: datetime | None = None


def _vault_key(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, np.uint8), "RGB").save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _original_aad(image_hash: str, fmt: str) -> bytes:
    return b"|".join([_INFO, b"original", image_hash.encode(), fmt.encode()])


def _aad(record_id: bytes, image_hash: str, face_index: int, box: str, frame: str) -> bytes:
    return b"|".join([_INFO, record_id, image_hash.encode(), str(face_index).encode(), box.encode(), frame.encode()])


def utc_now() -> datetime:
    """Now, to the second (what SQLite's ``datetime('now')`` keeps, so both backends order alike)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


class VaultBase:
    """The vault API over a backend's storage of sealed records.

    ``with open_vault(spec, key) as v: ids = v.put(image_hash, regions)``; ``v.get(image_hash)``.
    A backend implements the ``_store``, ``_faces``, ``_face``, ``_originals``, ``has``,
    ``__len__``, ``image_hashes``, ``known_record_ids``, ``known_originals`` and ``close``
    methods below and sets ``location`` (where the vault is, safe to print: never a password).
    One vault may be shared by threads (a folder run's workers).
    """

    location: str = ""

    def __init__(self, key: bytes):
        self._aes = AESGCM(_vault_key(key))
        self.key_id = key_id(key)

    # -- the API ---------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def put(
        self,
        image_hash: str,
        regions: list[FaceRegion],
        record_ids: list[bytes] | None = None,
        original: bytes | None = None,
        original_format: str = "",
    ) -> list[bytes]:
        """Store one image's face regions, and the original file's bytes when given, in one
        durable commit (all or nothing); returns the regions' record ids (``record_ids``, when
        given: the ids the image's payloads carry, ``payload.REF_BITS / 8`` bytes; vaults written
        before payload version 3 hold 16-byte ids, still found).

        Args:
            image_hash: :func:`pixel_hash` of the anonymised image as written.
            original: the original file, byte for byte; ``original_format``: its PIL format name.
        """
        if record_ids is not None and len(record_ids) != len(regions):
            raise ValueError("one record id per region")
        faces = []
        for i, region in enumerate(regions):
            rid = record_ids[i] if record_ids is not None else secrets.token_bytes(8)  # as payload.REF_BITS / 8
            box = ",".join(str(int(v)) for v in region.box)
            frame = region.frame_text()
            nonce = secrets.token_bytes(12)
            ct = self._aes.encrypt(nonce, _png(region.pixels), _aad(rid, image_hash, i, box, frame))
            faces.append(SealedFace(rid, image_hash, i, self.key_id, box, frame, nonce, ct))
        originals = []
        if original is not None:
            nonce = secrets.token_bytes(12)
            ct = self._aes.encrypt(nonce, original, _original_aad(image_hash, original_format))
            originals.append(SealedOriginal(image_hash, self.key_id, original_format, nonce, ct))
        if faces or originals:
            self._store(image_hash, faces, originals)
        return [f.record_id for f in faces]

    def get(self, image_hash: str) -> list[FaceRegion]:
        """All face regions stored for an anonymised image, in face order (empty if none); of
        records with the same face index, the first written."""
        seen, out = set(), []
        for face in self._faces(image_hash):
            if face.face_index in seen:
                continue
            seen.add(face.face_index)
            out.append(self.open_face(face))
        return out

    def get_original(self, image_hash: str) -> Original | None:
        """The original file an anonymised image (by :func:`pixel_hash`) replaced, or None
        (never stored: written by a vault without originals, or not anonymised into this one)."""
        originals = self._originals(image_hash)
        if not originals:
            return None
        first = originals[0]
        data = self.open_original(first)
        return Original(data, first.format, len({f.face_index for f in self._faces(image_hash)}))

    def get_record(self, record_id: bytes) -> FaceRegion | None:
        face = self._face(record_id)
        return self.open_face(face) if face is not None else None

    def sealed(self, image_hash: str) -> tuple[list[SealedFace], list[SealedOriginal]]:
        """Every record stored for an image, as stored (for copying a vault)."""
        return self._faces(image_hash), self._originals(image_hash)

    def store_sealed(self, image_hash: str, faces: list[SealedFace], originals: list[SealedOriginal]) -> None:
        """Store records sealed elsewhere under the same key, as they are, in one commit."""
        if faces or originals:
            self._store(image_hash, faces, originals)

    # -- sealing ---------------------------------------------------------------------------

    def open_face(self, face: SealedFace) -> FaceRegion:
        """Decrypt and authenticate one face record."""
        try:
            png = self._aes.decrypt(
                face.nonce, face.ciphertext, _aad(face.record_id, face.image_hash, face.face_index, face.box, face.frame)
            )
        except InvalidTag:
            raise VaultError(f"{self.location}: record fails authentication (wrong key or tampered vault)") from None
        with Image.open(io.BytesIO(png)) as im:
            pixels = np.asarray(im.convert("RGB")).copy()
        x0, y0, x1, y1 = (int(v) for v in face.box.split(","))
        if not face.frame:
            return FaceRegion((x0, y0, x1, y1), pixels)
        f = json.loads(face.frame)
        return FaceRegion((x0, y0, x1, y1), pixels, tuple(f["size"]), np.asarray(f["landmarks"], np.float32))

    def open_original(self, original: SealedOriginal) -> bytes:
        """Decrypt and authenticate one original file."""
        try:
            return self._aes.decrypt(original.nonce, original.ciphertext, _original_aad(original.image_hash, original.format))
        except InvalidTag:
            raise VaultError(f"{self.location}: original fails authentication (wrong key or tampered vault)") from None

    # -- what a backend provides -----------------------------------------------------------

    def _store(self, image_hash: str, faces: list[SealedFace], originals: list[SealedOriginal]) -> None:
        """Write these records in one durable commit, all or nothing; a record id already
        stored is a :class:`VaultError` (and nothing is written)."""
        raise NotImplementedError

    def _faces(self, image_hash: str) -> list[SealedFace]:
        """The image's face records ordered by face index, then first written first."""
        raise NotImplementedError

    def _face(self, record_id: bytes) -> SealedFace | None:
        raise NotImplementedError

    def _originals(self, image_hash: str) -> list[SealedOriginal]:
        """The image's originals, first written first."""
        raise NotImplementedError

    def has(self, image_hash: str) -> bool:
        """Whether an image with these pixels was anonymised into this vault (no key needed)."""
        raise NotImplementedError

    def __len__(self) -> int:
        """How many face records the vault holds."""
        raise NotImplementedError

    def image_hashes(self) -> Iterator[str]:
        """Every image hash the vault holds records for, each once, in ascending order."""
        raise NotImplementedError

    def known_record_ids(self, record_ids: list[bytes]) -> set[bytes]:
        """Which of these face record ids the vault holds."""
        raise NotImplementedError

    def known_originals(self, image_hash: str) -> set[bytes]:
        """The nonces of the originals stored for an image (a sealed original's identity)."""
        return {o.nonce for o in self._originals(image_hash)}

    def close(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"
