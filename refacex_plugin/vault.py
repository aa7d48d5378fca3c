"""Exact-recovery vault: original files and face regions, encrypted, in one SQLite file.

Each record holds the rectangle of the original image that anonymisation changed for one face
(PNG-compressed, so lossless) encrypted with AES-256-GCM under a key derived from the secret key
(HKDF, ``refacex/vault/v1``); the record's id, image hash, face index and box are bound as
associated data, so records cannot be swapped or edited undetected. Records are found by the
SHA-256 of the anonymised image's decoded pixels (as written) and the face index, or by the
random record id a payload carries.

Each anonymised file's original bytes (whatever its format, metadata included) are sealed the same
way under the anonymised image's hash, so an unchanged anonymised file gives back the very file it
replaced. Vaults written before originals were kept have face records only; they still restore pixels.

Writes are committed (SQLite ``synchronous=FULL``) before the caller replaces any original. One
:class:`Vault` may be shared by threads (a folder run's workers): its connection is used under a lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from PIL import Image

from .errors import RefacexError
from .keys import key_id

_INFO = b"refacex/vault/v1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    record_id   BLOB PRIMARY KEY,
    image_hash  TEXT NOT NULL,
    face_index  INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    box         TEXT NOT NULL,
    frame       TEXT NOT NULL DEFAULT '',
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created     TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS faces_by_image ON faces (image_hash, face_index);
CREATE TABLE IF NOT EXISTS originals (
    image_hash  TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    format      TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created     TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS originals_by_image ON originals (image_hash);
"""


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


class Vault:
    """``with Vault(path, key) as v: ids = v.put(image_hash, regions)``; ``v.get(image_hash)``."""

    def __init__(self, path: str | os.PathLike, key: bytes, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise VaultError(f"{self.path}: no such vault")
        if not self.path.parent.is_dir():
            raise VaultError(f"{self.path}: the folder {self.path.parent} does not exist; create it (somewhere safe) first")
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise VaultError(f"{self.path}: not a refacex vault ({exc})") from None
        if create:
            os.chmod(self.path, 0o600)
        self._aes = AESGCM(_vault_key(key))
        self.key_id = key_id(key)
        self._lock = threading.Lock()  # one statement or transaction on the connection at a time

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def put(
        self,
        image_hash: str,
        regions: list[FaceRegion],
        record_ids: list[bytes] | None = None,
        original: bytes | None = None,
        original_format: str = "",
    ) -> list[bytes]:
        """Store one image's face regions, and the original file's bytes when given, in one
        committed transaction; returns the regions' record ids (``record_ids``, when given: the
        ids the image's payloads carry, ``payload.REF_BITS / 8`` bytes; vaults written before
        payload version 3 hold 16-byte ids, still found).

        Args:
            image_hash: :func:`pixel_hash` of the anonymised image as written.
            original: the original file, byte for byte; ``original_format``: its PIL format name.
        """
        if record_ids is not None and len(record_ids) != len(regions):
            raise ValueError("one record id per region")
        ids = []
        rows = []
        for i, region in enumerate(regions):
            rid = record_ids[i] if record_ids is not None else secrets.token_bytes(8)  # as payload.REF_BITS / 8
            box = ",".join(str(int(v)) for v in region.box)
            frame = region.frame_text()
            nonce = secrets.token_bytes(12)
            ct = self._aes.encrypt(nonce, _png(region.pixels), _aad(rid, image_hash, i, box, frame))
            rows.append((rid, image_hash, i, self.key_id, box, frame, nonce, ct))
            ids.append(rid)
        if original is not None:
            nonce = secrets.token_bytes(12)
            sealed = (
                image_hash,
                self.key_id,
                original_format,
                nonce,
                self._aes.encrypt(nonce, original, _original_aad(image_hash, original_format)),
            )
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT INTO faces (record_id, image_hash, face_index, key_id, box, frame, nonce, ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if original is not None:
                    self.db.execute("INSERT INTO originals (image_hash, key_id, format, nonce, ciphertext) VALUES (?, ?, ?, ?, ?)", sealed)
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self.db.execute("ROLLBACK") if self.db.in_transaction else None
                raise VaultError(f"{self.path}: cannot write ({exc})") from None
        return ids

    def _decrypt(self, row) -> FaceRegion:
        rid, image_hash, idx, box, frame, nonce, ct = row
        try:
            png = self._aes.decrypt(nonce, ct, _aad(rid, image_hash, idx, box, frame))
        except InvalidTag:
            raise VaultError(f"{self.path}: record fails authentication (wrong key or tampered vault)") from None
        with Image.open(io.BytesIO(png)) as im:
            pixels = np.asarray(im.convert("RGB")).copy()
        x0, y0, x1, y1 = (int(v) for v in box.split(","))
        if not frame:
            return FaceRegion((x0, y0, x1, y1), pixels)
        f = json.loads(frame)
        return FaceRegion((x0, y0, x1, y1), pixels, tuple(f["size"]), np.asarray(f["landmarks"], np.float32))

    def get(self, image_hash: str) -> list[FaceRegion]:
        """All face regions stored for an anonymised image, in face order (empty if none)."""
        rows = self._query(
            "SELECT record_id, image_hash, face_index, box, frame, nonce, ciphertext FROM faces WHERE image_hash = ? ORDER BY face_index, created",
            (image_hash,),
        )
        seen, out = set(), []
        for row in rows:
            if row[2] in seen:
                continue
            seen.add(row[2])
            out.append(self._decrypt(row))
        return out

    def get_original(self, image_hash: str) -> Original | None:
        """The original file an anonymised image (by :func:`pixel_hash`) replaced, or None
        (never stored: written by a vault without originals, or not anonymised into this one)."""
        rows = self._query(
            "SELECT image_hash, format, nonce, ciphertext FROM originals WHERE image_hash = ? ORDER BY created LIMIT 1", (image_hash,)
        )
        if not rows:
            return None
        _, fmt, nonce, ct = rows[0]
        try:
            data = self._aes.decrypt(nonce, ct, _original_aad(image_hash, fmt))
        except InvalidTag:
            raise VaultError(f"{self.path}: original fails authentication (wrong key or tampered vault)") from None
        faces = self._query("SELECT COUNT(DISTINCT face_index) FROM faces WHERE image_hash = ?", (image_hash,))[0][0]
        return Original(data, fmt, faces)

    def has(self, image_hash: str) -> bool:
        """Whether an image with these pixels was anonymised into this vault (no key needed)."""
        return bool(
            self._query(
                "SELECT 1 FROM faces WHERE image_hash = ? UNION ALL SELECT 1 FROM originals WHERE image_hash = ? LIMIT 1",
                (image_hash, image_hash),
            )
        )

    def get_record(self, record_id: bytes) -> FaceRegion | None:
        rows = self._query(
            "SELECT record_id, image_hash, face_index, box, frame, nonce, ciphertext FROM faces WHERE record_id = ?", (record_id,)
        )
        return self._decrypt(rows[0]) if rows else None

    def __len__(self) -> int:
        return self._query("SELECT COUNT(*) FROM faces")[0][0]


def restore(rgb: np.ndarray, regions: list[FaceRegion]) -> np.ndarray:
    """Paste original regions back into a copy of ``rgb``."""
    out = rgb.copy()
    for r in regions:
        x0, y0, x1, y1 = r.box
        if y1 > out.shape[0] or x1 > out.shape[1]:
            raise VaultError("vault record does not fit this image (was it resized?)")
        out[y0:y1, x0:x1] = r.pixels
    return out


def restore_into(rgb: np.ndarray, region: FaceRegion, landmarks: np.ndarray) -> np.ndarray:
    """Paste one original region into a copy of ``rgb`` where its face is now.

    ``landmarks (5, 2)``: the face's frame in ``rgb`` (the reader's registered frame of the mark,
    which the record stores as it was embedded, or a re-detection). The region is warped by the
    similarity from its stored frame to ``landmarks``; when the image kept its size and that
    similarity moves no corner of the region by 2 px or more (re-encoded only), it goes back
    pixel for pixel instead.
    """
    import cv2

    from .geometry import estimate_similarity

    if region.landmarks is None:
        raise VaultError("vault record has no frame to place it in a changed image")
    import torch

    h, w = rgb.shape[:2]
    m = estimate_similarity(
        torch.as_tensor(region.landmarks[None], dtype=torch.float64), torch.as_tensor(np.asarray(landmarks, np.float64)[None])
    )[0].numpy()
    x0, y0, x1, y1 = region.box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64)
    if tuple(region.image_size) == (h, w) and np.abs(corners @ m.T - corners[:, :2]).max() < 2.0:
        return restore(rgb, [region])  # the frame moved less than 2 px anywhere on the region
    m = m @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)  # region pixels -> rgb
    warped = cv2.warpAffine(region.pixels, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.ones(region.pixels.shape[:2], np.float32), m, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8))[..., None]
    return (rgb * (1 - inside) + warped * inside).round().clip(0, 255).astype(np.uint8)
