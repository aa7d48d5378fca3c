"""Exact-recovery vault: original files and face regions, encrypted with the key.

Two backends hold the same sealed records (:mod:`.core`): one SQLite file (:mod:`.sqlite`, the
embedded default, named by a plain path) and a MongoDB database (:mod:`.mongo`, named by a
``mongodb://HOST:PORT/DBNAME`` URI) that several machines write at once. :func:`open_vault` is
the one place that chooses between them; :func:`copy_vault` moves records from one to the other.
Either way ``put`` commits an image's records durably, all or nothing, before the caller replaces
any original.
"""

from __future__ import annotations

import os
import re

from .copy import CopySummary, copy_vault
from .core import FaceRegion, Original, SealedFace, SealedOriginal, VaultBase, VaultError, pixel_hash
from .mongo import MongoVault, is_mongo_uri, redact_uri
from .restore import restore, restore_into
from .sqlite import Vault

__all__ = [
    "CopySummary",
    "FaceRegion",
    "MongoVault",
    "Original",
    "SealedFace",
    "SealedOriginal",
    "Vault",
    "VaultBase",
    "VaultError",
    "copy_vault",
    "describe",
    "open_vault",
    "pixel_hash",
    "restore",
    "restore_into",
]


def open_vault(spec: str | os.PathLike, key: bytes, create: bool = True) -> VaultBase:
    """Open the vault ``spec`` names with ``key``: a ``mongodb://`` (or ``mongodb+srv://``) URI
    naming its database opens a :class:`MongoVault`, anything else is a path to a SQLite
    :class:`Vault`. ``create``: make it when missing (to anonymise); otherwise it must exist."""
    if is_mongo_uri(spec):
        return MongoVault(spec, key, create=create)
    if isinstance(spec, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", spec):
        raise VaultError(f"{describe(spec)}: unknown kind of vault URI (a vault is a file path or a mongodb:// URI)")
    return Vault(spec, key, create=create)


def describe(spec: str | os.PathLike) -> str:
    """How to name the vault ``spec`` in messages: a path as it is, a URI without its password."""
    return redact_uri(spec) if is_mongo_uri(spec) else str(spec).split("://")[0] + ("://..." if "://" in str(spec) else "")
