"""A vault in MongoDB, for several machines writing one vault: ``mongodb://HOST:PORT/DBNAME``.

The same records, sealed the same way, as the SQLite vault (:mod:`.core`), in the database the
URI names (which must hold nothing else):

- ``vault_images``: one document per :meth:`~.core.VaultBase.put`, holding that image's face
  records and its original. A single document is written atomically even on a standalone server
  (no transaction needed), with write concern ``majority`` and journaled (``j``), so ``put``
  returns only once the whole image is durable, and a writer killed mid-put leaves the image
  either complete or absent. Indexes: the image hash, and a unique one on the face record ids
  (payload look-ups stay fast; an id is never stored twice).
- ``vault_blobs`` (GridFS): ciphertexts too large for a document (one is at most 16 MB): they are
  written first and only referenced by the image's document, which stays the one commit point
  (a writer killed between the two leaves an unreferenced blob, never a half record).
- ``vault_meta``: the format marker, so a database that is not a vault is refused.

Access control is the server's (users and roles, TLS): the vault's records are encrypted with the
key, but anyone who can write the database can delete them. A password in the URI is never
printed: messages name the vault by :func:`redact_uri`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from .core import _INFO, SealedFace, SealedOriginal, VaultBase, VaultError, utc_now

SCHEMES = ("mongodb://", "mongodb+srv://")
IMAGES, BLOBS, META = "vault_images", "vault_blobs", "vault_meta"
FORMAT = _INFO.decode()
#: Ciphertext bytes one image's document holds inline at most (the rest go to GridFS; a BSON
#: document is at most 16 MiB, and the records' fields and BSON framing take some of that).
INLINE_LIMIT = 15 * 2**20
_SELECTION_TIMEOUT_MS = 10_000  # how long to look for the server, unless the URI says


def is_mongo_uri(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(SCHEMES)


def redact_uri(uri: str) -> str:
    """``uri`` with its password (and any ``...password=`` option) replaced by ``***``."""
    scheme = next((s for s in SCHEMES if uri.startswith(s)), "")
    rest = uri[len(scheme) :]
    head, sep, query = rest.partition("?")
    at = head.rfind("@")
    if at >= 0:
        user, colon, _ = head[:at].partition(":")
        head = f"{user}{':***' if colon else ''}@{head[at + 1 :]}"
    if query:
        query = re.sub(r"(?i)([^&=]*password[^&=]*=)[^&]*", r"\1***", query)
    return scheme + head + sep + query


class MongoVault(VaultBase):
    """A vault in the MongoDB database ``uri`` names: ``with MongoVault(uri, key) as v: ...``.

    Args:
        create: make the vault in that database when it has none (the database must then be
            empty of anything else); otherwise a missing vault is refused.
        inline_limit: ciphertext bytes kept in an image's document (more goes to GridFS).
    """

    def __init__(self, uri: str, key: bytes, create: bool = True, inline_limit: int = INLINE_LIMIT):
        try:
            import gridfs
            import pymongo
            from pymongo.errors import ConfigurationError, PyMongoError
            from pymongo.write_concern import WriteConcern
        except ImportError:
            raise VaultError("a MongoDB vault needs pymongo: pip install pymongo") from None
        self.location = redact_uri(uri)
        self.inline_limit = inline_limit
        self._secrets = _passwords(uri)
        options = {"tz_aware": True, "appname": "refacex"}
        if "serverselectiontimeoutms" not in uri.lower():
            options["serverSelectionTimeoutMS"] = _SELECTION_TIMEOUT_MS
        try:
            self.client = pymongo.MongoClient(uri, **options)
        except (ConfigurationError, PyMongoError, ValueError) as exc:
            raise VaultError(f"{self.location}: not a usable MongoDB URI ({self._clean(exc)})") from None
        try:
            try:
                name = self.client.get_default_database().name
            except ConfigurationError:
                raise VaultError(f"{self.location}: name the vault's database in the URI (mongodb://HOST:PORT/DBNAME)") from None
            durable = WriteConcern(w="majority", j=True)  # committed on a majority and journaled before put returns
            self.db = self.client.get_database(name, write_concern=durable)
            with self._errors("cannot open"):
                self._open(name, create)
            self.images = self.db[IMAGES]
            self.blobs = gridfs.GridFSBucket(self.db, bucket_name=BLOBS)
        except BaseException:
            self.client.close()
            raise
        super().__init__(key)

    def _open(self, name: str, create: bool) -> None:
        meta = self.db[META].find_one({"_id": "vault"})
        if meta is None:
            if not create:
                raise VaultError(f"{self.location}: no such vault (database {name!r} holds none)")
            ours = {IMAGES, META, f"{BLOBS}.files", f"{BLOBS}.chunks"}
            other = sorted(c for c in self.db.list_collection_names() if c not in ours and not c.startswith("system."))
            if other:
                raise VaultError(
                    f"{self.location}: database {name!r} holds other collections ({', '.join(other[:3])}"
                    f"{', ...' if len(other) > 3 else ''}): not a refacex vault; name a database of its own"
                )
        elif meta.get("format") != FORMAT:
            raise VaultError(f"{self.location}: not a refacex vault of this version (format {meta.get('format')!r})")
        if create:  # idempotent: every writer makes sure the indexes exist before it writes
            images = self.db[IMAGES]
            images.create_index("image_hash", name="by_image")
            images.create_index("faces.rid", name="by_record_id", unique=True, partialFilterExpression={"faces.rid": {"$exists": True}})
            self.db[META].update_one({"_id": "vault"}, {"$setOnInsert": {"format": FORMAT, "created": utc_now()}}, upsert=True)

    def _clean(self, exc: BaseException) -> str:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        text = re.sub(r" \(configured timeouts: [^)]*\)", "", text).split(", Timeout: ")[0]  # the reason, not pymongo's topology dump
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _errors(self, what: str):
        from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

        try:
            yield
        except DuplicateKeyError:
            raise VaultError(f"{self.location}: {what} (a record id is already in the vault)") from None
        except OperationFailure as exc:
            why = "authentication failed or not allowed" if exc.code in (13, 18) else self._clean(exc)
            raise VaultError(f"{self.location}: {what} ({why})") from None
        except PyMongoError as exc:
            raise VaultError(f"{self.location}: {what} ({self._clean(exc)})") from None

    def close(self) -> None:
        self.client.close()

    # -- storage -----------------------------------------------------------------------------

    def _store(self, image_hash: str, faces: list[SealedFace], originals: list[SealedOriginal]) -> None:
        from bson import ObjectId

        now = utc_now()
        face_docs = [
            {
                "rid": f.record_id,
                "i": f.face_index,
                "key": f.key_id,
                "box": f.box,
                "frame": f.frame,
                "nonce": f.nonce,
                "ct": f.ciphertext,
                "t": f.created or now,
            }
            for f in faces
        ]
        original_docs = [
            {"key": o.key_id, "format": o.format, "nonce": o.nonce, "ct": o.ciphertext, "t": o.created or now} for o in originals
        ]
        uploaded = []
        with self._errors("cannot write"):
            try:
                entries = sorted(face_docs + original_docs, key=lambda e: len(e["ct"]), reverse=True)
                inline = sum(len(e["ct"]) for e in entries)
                for e in entries:  # the largest ciphertexts go to GridFS until the rest fits one document
                    if inline <= self.inline_limit:
                        break
                    inline -= len(e["ct"])
                    e["blob"] = self.blobs.upload_from_stream(image_hash, e.pop("ct"), metadata={"image_hash": image_hash})
                    uploaded.append(e["blob"])
                doc = {"_id": ObjectId(), "image_hash": image_hash, "created": now, "faces": face_docs, "originals": original_docs}
                self.images.insert_one(doc)  # the commit: one document, all of this image's records
            except BaseException:
                for blob in uploaded:  # not referenced by anything; a killed writer leaves them behind, harmlessly
                    try:
                        self.blobs.delete(blob)
                    except Exception:
                        pass
                raise

    def _ciphertext(self, entry: dict) -> bytes:
        if "ct" in entry:
            return entry["ct"]
        from gridfs.errors import NoFile

        with self._errors("cannot read"):
            try:
                return self.blobs.open_download_stream(entry["blob"]).read()
            except NoFile:
                pass
        raise VaultError(f"{self.location}: a record's ciphertext is missing (tampered vault)")

    def _sealed_face(self, image_hash: str, e: dict) -> SealedFace:
        return SealedFace(e["rid"], image_hash, e["i"], e["key"], e["box"], e["frame"], e["nonce"], self._ciphertext(e), e["t"])

    def _docs(self, image_hash: str, field: str) -> list[tuple]:
        """``(entry, doc id, position)`` of every ``field`` entry the image's documents hold."""
        with self._errors("cannot read"):
            docs = list(self.images.find({"image_hash": image_hash}, {field: 1}))
        return [(e, d["_id"], n) for d in docs for n, e in enumerate(d.get(field, []))]

    def _faces(self, image_hash: str) -> list[SealedFace]:
        entries = sorted(self._docs(image_hash, "faces"), key=lambda x: (x[0]["i"], x[0]["t"], x[1], x[2]))
        return [self._sealed_face(image_hash, e) for e, _, _ in entries]

    def _face(self, record_id: bytes) -> SealedFace | None:
        with self._errors("cannot read"):
            doc = self.images.find_one({"faces.rid": record_id}, {"image_hash": 1, "faces.$": 1})
        return self._sealed_face(doc["image_hash"], doc["faces"][0]) if doc else None

    def _originals(self, image_hash: str) -> list[SealedOriginal]:
        entries = sorted(self._docs(image_hash, "originals"), key=lambda x: (x[0]["t"], x[1], x[2]))
        return [SealedOriginal(image_hash, e["key"], e["format"], e["nonce"], self._ciphertext(e), e["t"]) for e, _, _ in entries]

    def has(self, image_hash: str) -> bool:
        with self._errors("cannot read"):
            return self.images.find_one({"image_hash": image_hash}, {"_id": 1}) is not None

    def __len__(self) -> int:
        with self._errors("cannot read"):
            rows = list(self.images.aggregate([{"$group": {"_id": None, "n": {"$sum": {"$size": "$faces"}}}}]))
        return rows[0]["n"] if rows else 0

    def image_hashes(self) -> Iterator[str]:
        last = None
        with self._errors("cannot read"):
            for doc in self.images.find({}, {"image_hash": 1, "_id": 0}).sort("image_hash", 1):
                if doc["image_hash"] != last:
                    last = doc["image_hash"]
                    yield last

    def known_record_ids(self, record_ids: list[bytes]) -> set[bytes]:
        wanted, found = set(record_ids), set()
        with self._errors("cannot read"):
            for start in range(0, len(record_ids), 1000):
                for doc in self.images.find({"faces.rid": {"$in": record_ids[start : start + 1000]}}, {"faces.rid": 1}):
                    found.update(f["rid"] for f in doc["faces"] if f["rid"] in wanted)
        return found


def _passwords(uri: str) -> list[str]:
    """The URI's password as written and percent-decoded, and any ``...password=`` option's
    value (to keep them out of error messages)."""
    from urllib.parse import unquote

    rest = uri.split("://", 1)[-1]
    head, _, query = rest.partition("?")
    at = head.rfind("@")
    found = [head[:at].partition(":")[2]] if at >= 0 else []
    found += re.findall(r"(?i)[^&=]*password[^&=]*=([^&]*)", query)
    return sorted({v for s in found if s for v in (s, unquote(s))}, key=len, reverse=True)
