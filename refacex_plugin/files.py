"""File-level operations shared by the CLI, the FiftyOne plugin and the Label Studio backend.

``anonymise_file``: read -> anonymise -> encode -> (vault commit) -> atomic write, in that order,
so an original is never replaced before its recovery record is safely stored.
``recover_file``: restore the original face regions of an anonymised file from the vault.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import RefacexError
from .image_io import atomic_write_bytes, encode_image, output_format, output_path, pil_to_rgb, read_image
from .pipeline import FaceRecord, Pipeline
from .vault import FaceRegion, Vault, pixel_hash, restore


@dataclass
class FileResult:
    src: Path
    dst: Path
    faces: list[FaceRecord] = field(default_factory=list)
    vault_records: int = 0
    skipped: bool = False  # already anonymised into the vault: nothing done
    size: tuple[int, int] = (0, 0)  # (height, width) of the upright image


def decode_bytes(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return pil_to_rgb(im)[0]


def anonymise_file(
    pipe: Pipeline,
    src: Path,
    dst: Path,
    fmt: str | None = None,
    quality: int = 95,
    vault: Vault | None = None,
    in_place: bool = False,
) -> FileResult:
    """Anonymise one image file into ``dst`` (``src`` itself when ``in_place``)."""
    src, dst = Path(src), Path(dst)
    img = read_image(src)
    out_fmt = output_format(img.format, fmt)
    if in_place:
        if out_fmt != img.format:
            raise RefacexError(f"{src}: cannot rewrite a {img.format} file in place; use -o")
        dst = src
    else:
        dst = output_path(dst, out_fmt)
        if dst.exists() and dst.resolve() == src.resolve():
            raise RefacexError(f"{src}: output would overwrite the input; use --in-place to mean that")
    if vault is not None and vault.has(pixel_hash(img.rgb)):
        return FileResult(src, dst, [], 0, skipped=True)  # a re-run never anonymises twice
    result = pipe.anonymise_image(img.rgb)
    data = encode_image(result.image, out_fmt, quality, img.alpha)
    stored = 0
    if vault is not None and result.faces:
        regions = [
            FaceRegion(box, img.rgb[box[1] : box[3], box[0] : box[2]].copy()) for box in result.regions if box is not None
        ]
        stored = len(vault.put(pixel_hash(decode_bytes(data)), regions))
    atomic_write_bytes(dst, data)
    return FileResult(src, dst, result.faces, stored, size=img.rgb.shape[:2])


def recover_file(src: Path, dst: Path, vault: Vault, fmt: str | None = None, quality: int = 95) -> FileResult:
    """Restore the original face regions of an anonymised file from ``vault`` into ``dst``.

    Bit-exact for the face regions; the whole image is bit-exact when the anonymised file was
    written losslessly (PNG/WebP-lossless) or never re-encoded since.
    """
    src, dst = Path(src), Path(dst)
    img = read_image(src)
    regions = vault.get(pixel_hash(img.rgb))
    if not regions:
        raise RefacexError(f"{src}: no vault record for this image (not anonymised with this vault, or re-encoded since)")
    out_fmt = output_format(img.format, fmt)
    dst = output_path(dst, out_fmt)
    if dst.exists() and dst.resolve() == src.resolve():
        raise RefacexError(f"{src}: output would overwrite the input")
    original = restore(img.rgb, regions)
    # Lossless output for restored originals unless the user asks otherwise.
    atomic_write_bytes(dst, encode_image(original, out_fmt, quality if out_fmt != "JPEG" else max(quality, 95), img.alpha))
    return FileResult(src, dst, [], len(regions))
