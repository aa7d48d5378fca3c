"""Resolving task image references safely.

Accepted: ``/data/local-files/?d=...`` (under ``LOCAL_FILES_DOCUMENT_ROOT``), ``/data/upload/...``
(downloaded from the Label Studio host with its token), http(s) URLs on the Label Studio host or
an explicitly allowed host, plain paths and ``file://`` URLs under an allowed root, and
``data:`` URIs. Anything else is refused before a byte is fetched (no server-side request
forgery through task data); downloads and decoded images are capped.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from refacex_plugin.errors import RefacexError
from refacex_plugin.image_io import pil_to_rgb


class ImageRefError(RefacexError):
    """A task image reference that is refused or cannot be read."""


@dataclass
class ResolverSettings:
    label_studio_url: str = ""
    api_key: str = ""
    document_root: str | None = None
    allowed_roots: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    max_bytes: int = 30 * 2**20
    max_pixels: int = 50_000_000
    timeout_s: float = 20.0

    @classmethod
    def from_env(cls, hostname: str = "", access_token: str = "") -> ResolverSettings:
        env = os.environ
        split = lambda v: [x for x in (v or "").split(",") if x]  # noqa: E731
        return cls(
            label_studio_url=(env.get("LABEL_STUDIO_URL") or env.get("LABEL_STUDIO_HOST") or hostname or "").rstrip("/"),
            api_key=env.get("LABEL_STUDIO_API_KEY") or access_token or "",
            document_root=env.get("LOCAL_FILES_DOCUMENT_ROOT") or None,
            allowed_roots=split(env.get("REFACEX_LS_ALLOWED_ROOTS")),
            allowed_hosts=split(env.get("REFACEX_LS_ALLOWED_HOSTS")),
            max_bytes=int(env.get("REFACEX_LS_MAX_BYTES", 30 * 2**20)),
            max_pixels=int(env.get("REFACEX_LS_MAX_PIXELS", 50_000_000)),
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise ImageRefError(f"refused redirect to {newurl}")


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urllib.parse.urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme)
    return p.scheme, (p.hostname or "").lower(), port


def _decode(data: bytes, ref: str, s: ResolverSettings) -> np.ndarray:
    if len(data) > s.max_bytes:
        raise ImageRefError(f"{ref[:80]}: image larger than {s.max_bytes} bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > s.max_pixels:
                raise ImageRefError(f"{ref[:80]}: image too large ({im.width}x{im.height})")
            from PIL import ImageOps

            im.load()
            return pil_to_rgb(ImageOps.exif_transpose(im))[0]
    except ImageRefError:
        raise
    except Exception as exc:
        raise ImageRefError(f"{ref[:80]}: not a readable image ({type(exc).__name__})") from None


def _local(path: Path, roots: list[str], ref: str, s: ResolverSettings) -> bytes:
    real = path.resolve()
    if not any(real.is_relative_to(Path(r).resolve()) for r in roots if r):
        raise ImageRefError(f"{ref[:80]}: path outside the allowed roots")
    if not real.is_file():
        raise ImageRefError(f"{ref[:80]}: no such file")
    if real.stat().st_size > s.max_bytes:
        raise ImageRefError(f"{ref[:80]}: image larger than {s.max_bytes} bytes")
    return real.read_bytes()


def _download(url: str, ref: str, s: ResolverSettings, token: bool) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "refacex-labelstudio"})
    if token and s.api_key:
        req.add_header("Authorization", f"Token {s.api_key}")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=s.timeout_s) as resp:
            data = resp.read(s.max_bytes + 1)
    except ImageRefError:
        raise
    except Exception as exc:
        raise ImageRefError(f"{ref[:80]}: download failed ({exc})") from None
    return data


def resolve_image(ref: str, s: ResolverSettings) -> np.ndarray:
    """The ``(H, W, 3) uint8`` RGB image a task reference points to, or :class:`ImageRefError`."""
    data = _fetch(ref, s)
    return _decode(data, _name(ref), s)


def resolve_image_bytes(ref: str, s: ResolverSettings) -> bytes:
    """The file a task reference points to, as it is (checked to decode within the caps), or
    :class:`ImageRefError`: what the vault keeps as the original."""
    data = _fetch(ref, s)
    _decode(data, _name(ref), s)
    return data


def _name(ref: str) -> str:
    """How errors name a reference (a data URI by its kind, not its payload)."""
    return "data URI" if ref.startswith("data:") else ref


def _fetch(ref: str, s: ResolverSettings) -> bytes:
    """The bytes behind a task reference, refused before a byte is fetched where it must be."""
    if not isinstance(ref, str) or not ref:
        raise ImageRefError("task has no image reference")
    if ref.startswith("data:"):
        head, _, payload = ref.partition(",")
        if ";base64" not in head or not head[5:].startswith("image/"):
            raise ImageRefError("data URI is not a base64 image")
        if len(payload) > s.max_bytes * 4 // 3 + 4:
            raise ImageRefError(f"data URI image larger than {s.max_bytes} bytes")
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise ImageRefError("data URI is not valid base64") from None
    parsed = urllib.parse.urlsplit(ref)
    path = parsed.path
    if path.startswith("/data/local-files/") or ref.startswith("/data/local-files"):
        d = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
        if not s.document_root:
            raise ImageRefError("local-files reference but LOCAL_FILES_DOCUMENT_ROOT is not set")
        return _local(Path(s.document_root) / d, [s.document_root], ref, s)
    if path.startswith("/data/upload/") and parsed.scheme in ("", "http", "https"):
        if not s.label_studio_url:
            raise ImageRefError("upload reference but LABEL_STUDIO_URL is not set")
        if parsed.scheme and _origin(ref) != _origin(s.label_studio_url):
            raise ImageRefError(f"{ref[:80]}: refused host (not the Label Studio host)")
        return _download(s.label_studio_url + path, ref, s, token=True)
    if parsed.scheme in ("http", "https"):
        origin = _origin(ref)
        if s.label_studio_url and origin == _origin(s.label_studio_url):
            return _download(ref, ref, s, token=True)
        if origin[1] in [h.lower() for h in s.allowed_hosts]:
            return _download(ref, ref, s, token=False)
        raise ImageRefError(f"{ref[:80]}: refused host {origin[1]!r} (allow it with REFACEX_LS_ALLOWED_HOSTS)")
    if parsed.scheme == "file":
        return _local(Path(urllib.parse.unquote(parsed.path)), [s.document_root or "", *s.allowed_roots], ref, s)
    if parsed.scheme == "":
        return _local(Path(ref), [s.document_root or "", *s.allowed_roots], ref, s)
    raise ImageRefError(f"{ref[:80]}: unsupported reference scheme {parsed.scheme!r}")
