"""The embedded vault: every record in one SQLite file (the default; a plain path names it).

Writes are committed (SQLite ``synchronous=FULL``) before the caller replaces any original. One
:class:`Vault` may be shared by threads (a folder run's workers): its connection is used under a
lock. One SQLite file serves one machine: several machines share a MongoDB vault (:mod:`.mongo`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from .core import SealedFace, SealedOriginal, VaultBase, VaultError

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

_TIME = "%Y-%m-%d %H:%M:%S"  # SQLite's datetime('now'), in UTC
_FACE_COLUMNS = "record_id, image_hash, face_index, key_id, box, frame, nonce, ciphertext, created"
_ORIGINAL_COLUMNS = "image_hash, key_id, format, nonce, ciphertext, created"


def _time(text: str) -> datetime:
    return datetime.strptime(text, _TIME).replace(tzinfo=timezone.utc)


def _text(when: datetime | None) -> str | None:
    return when.astimezone(timezone.utc).strftime(_TIME) if when is not None else None


class Vault(VaultBase):
    """A vault in one SQLite file: ``with Vault(path, key) as v: ids = v.put(image_hash, regions)``."""

    def __init__(self, path: str | os.PathLike, key: bytes, create: bool = True):
        self.path = Path(path)
        self.location = str(self.path)
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
        super().__init__(key)
        self._lock = threading.Lock()  # one statement or transaction on the connection at a time

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _store(self, image_hash: str, faces: list[SealedFace], originals: list[SealedOriginal]) -> None:
        face_rows = [
            (f.record_id, f.image_hash, f.face_index, f.key_id, f.box, f.frame, f.nonce, f.ciphertext, _text(f.created)) for f in faces
        ]
        original_rows = [(o.image_hash, o.key_id, o.format, o.nonce, o.ciphertext, _text(o.created)) for o in originals]
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    f"INSERT INTO faces ({_FACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, COALESCE(?, datetime('now')))", face_rows
                )
                self.db.executemany(
                    f"INSERT INTO originals ({_ORIGINAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, COALESCE(?, datetime('now')))", original_rows
                )
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self.db.execute("ROLLBACK") if self.db.in_transaction else None
                raise VaultError(f"{self.path}: cannot write ({exc})") from None

    @staticmethod
    def _face_of(row) -> SealedFace:
        return SealedFace(*row[:8], created=_time(row[8]))

    def _faces(self, image_hash: str) -> list[SealedFace]:
        rows = self._query(f"SELECT {_FACE_COLUMNS} FROM faces WHERE image_hash = ? ORDER BY face_index, created", (image_hash,))
        return [self._face_of(r) for r in rows]

    def _face(self, record_id: bytes) -> SealedFace | None:
        rows = self._query(f"SELECT {_FACE_COLUMNS} FROM faces WHERE record_id = ?", (record_id,))
        return self._face_of(rows[0]) if rows else None

    def _originals(self, image_hash: str) -> list[SealedOriginal]:
        rows = self._query(f"SELECT {_ORIGINAL_COLUMNS} FROM originals WHERE image_hash = ? ORDER BY created", (image_hash,))
        return [SealedOriginal(*r[:5], created=_time(r[5])) for r in rows]

    def has(self, image_hash: str) -> bool:
        return bool(
            self._query(
                "SELECT 1 FROM faces WHERE image_hash = ? UNION ALL SELECT 1 FROM originals WHERE image_hash = ? LIMIT 1",
                (image_hash, image_hash),
            )
        )

    def __len__(self) -> int:
        return self._query("SELECT COUNT(*) FROM faces")[0][0]

    def image_hashes(self) -> Iterator[str]:
        rows = self._query("SELECT image_hash FROM faces UNION SELECT image_hash FROM originals ORDER BY image_hash")
        return iter([r[0] for r in rows])

    def known_record_ids(self, record_ids: list[bytes]) -> set[bytes]:
        found = set()
        for start in range(0, len(record_ids), 500):  # within SQLite's bound-parameter limit
            chunk = record_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found.update(r[0] for r in self._query(f"SELECT record_id FROM faces WHERE record_id IN ({marks})", tuple(chunk)))
        return found
