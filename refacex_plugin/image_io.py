"""Image reading and writing that users can trust.

* read: EXIF orientation applied; grayscale, palette, RGBA, 16-bit, CMYK and ICC-tagged inputs
  converted to 8-bit sRGB RGB (alpha kept aside); corrupt, truncated, empty and non-image files
  raise :class:`ImageReadError` with a one-line message.
* write: only pixels are written - no EXIF (nor its thumbnail), XMP, IPTC, ICC or text chunks -
  through a temporary file that is fsynced and atomically renamed over the destination.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, ImageWriteError, RefacexError

#: Largest image (in pixels) we agree to decode; larger files are refused, not silently cropped.
MAX_PIXELS = 200_000_000

#: File suffixes picked up when a folder is given as input.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

#: Formats we write, keyed by PIL format name, with their canonical suffix.
WRITE_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_SUFFIX_TO_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
#: Suffixes a file of each readable format may keep (the first is the one given to a renamed file).
FORMAT_SUFFIXES = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "WEBP": (".webp",), "TIFF": (".tif", ".tiff"), "BMP": (".bmp",)}


@dataclass
class LoadedImage:
    """Decoded image: ``rgb`` is ``(H, W, 3) uint8`` in sRGB, upright; ``alpha`` is ``(H, W) uint8``
    or ``None``; ``format`` is the PIL format name of the source file (e.g. ``"JPEG"``); ``bits``:
    the source's bits per sample (16 for a 16-bit PNG or TIFF, which ``rgb`` holds in 8);
    ``as_stored``: ``rgb`` is the file's pixels exactly as decoded (RGB, no EXIF rotation, no colour
    profile converted), so a block-wise JPEG edit can start from it without decoding again."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str
    source_mode: str
    bits: int = 8
    as_stored: bool = False


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth or float array to 8-bit."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        return np.clip(np.round(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    if arr.dtype.kind == "f":
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _source_bits(img: Image.Image) -> int:
    """Bits per sample of an opened (not yet loaded) image. PIL reads 16-bit RGB(A) PNGs and TIFFs
    as 8-bit ``RGB``, so the decoder's raw mode is asked, not only the image mode."""
    if img.mode in ("I", "F"):
        return 32
    if img.mode.startswith("I;16"):
        return 16
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if isinstance(tile, tuple) else getattr(tile, "args", None)
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and ";16" in raw:
            return 16
    return 8


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert an ICC-tagged RGB image to sRGB (best effort; untagged images are left alone)."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode != "RGB":
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img


def pil_to_rgb(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert any PIL image to ``(rgb uint8 HxWx3, alpha uint8 HxW | None)``."""
    mode = img.mode
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2).copy(), None
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(img.getchannel("A")).copy()
        if alpha.min() == 255:
            alpha = None
    if mode == "CMYK":
        img = img.convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")
    else:
        img = _to_srgb(img)
    return np.asarray(img, dtype=np.uint8).copy(), alpha


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, data: bytes | None = None) -> LoadedImage:
    """Read an image file into an upright 8-bit sRGB array (``data``: the file's bytes, when the
    caller has read them already: they are decoded instead of reading the file again).

    Raises:
        ImageReadError: the file is missing, empty, truncated, corrupt, not an image, or larger
            than ``max_pixels``.
    """
    path = Path(path)
    name = str(path)
    if data is None:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageReadError(f"{name}: cannot read ({exc.strerror or exc})") from None
        if path.is_dir():
            raise ImageReadError(f"{name}: is a folder (use --recursive)")
    else:
        size = len(data)
    if size == 0:
        raise ImageReadError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                if img.width * img.height > max_pixels:
                    raise ImageReadError(f"{name}: image too large ({img.width}x{img.height} > {max_pixels:,} pixels)")
                fmt = img.format or "PNG"
                source_mode = img.mode
                bits = _source_bits(img)
                img.load()
                as_stored = source_mode == "RGB" and img.getexif().get(0x0112, 1) in (0, 1) and not img.info.get("icc_profile")
                img = ImageOps.exif_transpose(img)
                rgb, alpha = pil_to_rgb(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(f"{name}: image too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in msg.lower():
            msg = "truncated file"
        raise ImageReadError(f"{name}: corrupt image ({msg})") from None
    return LoadedImage(rgb=rgb, alpha=alpha, format=fmt, source_mode=source_mode, bits=bits, as_stored=as_stored)


def output_format(source_format: str, requested: str | None = None) -> str:
    """PIL format to write: the requested one, else the source's if writable, else PNG."""
    if requested:
        fmt = {"JPG": "JPEG"}.get(requested.upper(), requested.upper())
        if fmt not in WRITE_FORMATS:
            raise ValueError(f"unsupported output format {requested!r} (jpeg, png, webp)")
        return fmt
    return source_format if source_format in WRITE_FORMATS else "PNG"


def output_path(path: Path, fmt: str) -> Path:
    """Keep ``path``'s name; change its suffix only when it does not fit ``fmt``."""
    if _SUFFIX_TO_FORMAT.get(path.suffix.lower()) == fmt:
        return path
    return path.with_suffix(WRITE_FORMATS[fmt])


def encode_image(rgb: np.ndarray, fmt: str, quality: int = 95, alpha: np.ndarray | None = None) -> bytes:
    """Encode pixels only (no metadata of any kind) to ``fmt`` bytes."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    if alpha is not None and fmt in ("PNG", "WEBP"):
        img.putalpha(Image.fromarray(np.ascontiguousarray(alpha, dtype=np.uint8), "L"))
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=quality, method=4)
    elif fmt == "PNG":
        img.save(buf, "PNG", compress_level=6)
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    return buf.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    The bytes go to a temporary file in the same folder, which is fsynced and renamed over
    ``path``; the folder is fsynced after the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".refacex-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            try:
                os.chmod(tmp, path.stat().st_mode & 0o777)
            except OSError:
                pass
        else:
            os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    fmt: str = "PNG",
    quality: int = 95,
    alpha: np.ndarray | None = None,
) -> None:
    """Encode ``rgb`` (``(H, W, 3) uint8``) without metadata and write it atomically."""
    atomic_write_bytes(path, encode_image(rgb, fmt, quality, alpha))


def as_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """A PIL image or an ``(H, W)``/``(H, W, 3|4) uint8`` array as a contiguous ``(H, W, 3) uint8`` RGB array."""
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)[0]
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise RefacexError(f"expected an (H, W, 3) uint8 RGB array, got {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr[:, :, :3])
