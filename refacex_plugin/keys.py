"""Secret keys: 256-bit key files (0600, never overwritten) and passphrase keys via scrypt.

A key never appears in logs, records or outputs; only its short :func:`key_id` does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from .errors import KeyFileError

KEY_BYTES = 32
_HEADER = "refacex-key-v1"
_MAX_KEY_FILE_BYTES = 1024  # a key file is 60 bytes


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> str:
    """Public 8-hex-digit identifier of a key (an HMAC, so it reveals nothing of the key)."""
    return hmac.new(key, b"refacex key id v1", hashlib.sha256).hexdigest()[:8]


def key_from_passphrase(passphrase: str, salt: bytes = b"refacex-passphrase-v1") -> bytes:
    """Derive a key from a passphrase with scrypt (n=2^15, r=8, p=1)."""
    if len(passphrase) < 12:
        raise KeyFileError("passphrase too short (at least 12 characters)")
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=2**15, r=8, p=1, maxmem=64 * 2**20, dklen=KEY_BYTES)


def write_key_file(path: str | os.PathLike, key: bytes | None = None) -> str:
    """Create ``path`` holding a new (or the given) key with 0600 permissions; never overwrites.

    Returns the key id.
    """
    key = generate_key() if key is None else key
    if len(key) != KEY_BYTES:
        raise KeyFileError("a key is 32 bytes")
    path = Path(path)
    text = f"{_HEADER}\n{base64.b64encode(key).decode()}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create ({exc.strerror})") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)
    return key_id(key)


def read_key_file(path: str | os.PathLike) -> bytes:
    """Read a key file written by :func:`write_key_file`; refuses group/world-readable files.

    The format is checked before the permissions, so a file that is no key at all is called that
    instead of drawing advice to chmod it.
    """
    path = Path(path)
    try:
        st = path.stat()
        if st.st_size > _MAX_KEY_FILE_BYTES:  # never read a large file given by mistake
            raise KeyFileError(f"{path}: not a refacex key file")
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({getattr(exc, 'strerror', None) or 'not a key file'})") from None
    lines = text.split()
    if len(lines) != 2 or lines[0] != _HEADER:
        raise KeyFileError(f"{path}: not a refacex key file")
    try:
        key = base64.b64decode(lines[1], validate=True)
    except ValueError:
        raise KeyFileError(f"{path}: corrupt key file") from None
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path}: corrupt key file (wrong length)")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: key file is readable by others; run chmod 600 on it")
    return key
