"""File-level operations shared by the CLI, the FiftyOne plugin and the Label Studio backend.

``anonymise_file``: read -> anonymise -> encode -> (vault commit) -> atomic write, in that order,
so an original is never replaced before its recovery record is safely stored.
``recover_file``: restore the original face regions of an anonymised file from the vault: by
the image's pixel hash when it is unchanged, else through the vault references its faces'
payloads carry (after re-encoding, resizing or cropping).

With a key and a vault every face carries a payload of kind ``KIND_VAULT_REF``: a random
record id, sealed with the key, that finds the face's original region in the vault.
"""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import payload as P
from .ecc import bits_to_bytes, bytes_to_bits
from .errors import ModelNotAvailableError, RefacexError
from .image_io import atomic_write_bytes, encode_image, output_format, output_path, pil_to_rgb, read_image
from .pipeline import FaceRecord, Pipeline
from .vault import FaceRegion, Vault, pixel_hash, restore, restore_into


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
    image, regions, frames, record_ids = result.image, list(result.regions), [None] * len(result.faces), None
    if pipe.has_key and result.faces:
        landmarks = np.asarray([f.landmarks for f in result.faces], np.float32)
        if vault is not None:  # exact recovery: each face carries its vault record's id
            record_ids = [secrets.token_bytes(P.code_bits(P.KIND_VAULT_REF) // 8) for _ in result.faces]
            emb = pipe.embed_codes(image, landmarks, [bytes_to_bits(r) for r in record_ids], P.KIND_VAULT_REF)
        elif result.codes is not None:  # learned recovery: each face carries its recovery code
            emb = pipe.embed_codes(image, landmarks, result.codes, P.KIND_RECOVERY_CODE)
        else:
            raise ModelNotAvailableError(f"method {pipe.method!r} is irreversible: a key needs a vault (--vault) or the refacex method")
        image, frames = emb.image, list(emb.frames)
        regions = [_union(a, b) for a, b in zip(regions, emb.regions)]
        for face, status, errors in zip(result.faces, emb.status, emb.bit_errors):
            face.payload, face.payload_bit_errors = status, errors
    data = encode_image(image, out_fmt, quality, img.alpha)
    stored = 0
    if vault is not None and result.faces:
        h, w = img.rgb.shape[:2]
        keep = [i for i, box in enumerate(regions) if box is not None]
        records = [
            FaceRegion(regions[i], img.rgb[regions[i][1] : regions[i][3], regions[i][0] : regions[i][2]].copy(),
                       (h, w) if frames[i] is not None else None, frames[i])
            for i in keep
        ]
        ids = [record_ids[i] for i in keep] if record_ids is not None else None
        stored = len(vault.put(pixel_hash(decode_bytes(data)), records, ids))
    atomic_write_bytes(dst, data)
    return FileResult(src, dst, result.faces, stored, size=img.rgb.shape[:2])


def _union(a, b):
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def recover_file(src: Path, dst: Path, vault: Vault | None, pipe: Pipeline | None = None, fmt: str | None = None, quality: int = 95) -> FileResult:
    """Restore the original face regions of an anonymised file from ``vault`` into ``dst``.

    Unchanged files are found by their pixel hash and restored bit-exactly (the whole image when
    the anonymised file was written losslessly). Otherwise, given ``pipe`` (its detector and
    watermark, and the vault's key), each face's payload is read and its vault record restored
    where the face is now: bit-exact face pixels over a re-encoded background, or warped into a
    resized or cropped image. Nothing is written unless at least one face was restored.
    """
    src, dst = Path(src), Path(dst)
    img = read_image(src)
    out_fmt = output_format(img.format, fmt)
    dst = output_path(dst, out_fmt)
    if dst.exists() and dst.resolve() == src.resolve():
        raise RefacexError(f"{src}: output would overwrite the input")
    if vault is None:  # learned recovery from the payloads' codes
        if pipe is None:
            raise RefacexError("recovery needs a vault or a pipeline with the recovery network")
        rec = pipe.recover_image(img.rgb)
        if not rec.restored:
            why = "; ".join(sorted({w for _, w in rec.failed})) or "no face found"
            raise RefacexError(f"{src}: not restored: {why}")
        atomic_write_bytes(dst, encode_image(rec.image, out_fmt, quality if out_fmt != "JPEG" else max(quality, 95), img.alpha))
        return FileResult(src, dst, [], len(rec.restored))
    regions = vault.get(pixel_hash(img.rgb))
    if regions:
        original = restore(img.rgb, regions)
    elif pipe is None:
        raise RefacexError(f"{src}: no vault record for this image (not anonymised with this vault, or changed since)")
    else:
        original, regions = img.rgb, []
        found = pipe.read_payloads(img.rgb)
        for face in found:
            if face.authenticated and face.payload.kind == P.KIND_VAULT_REF:
                record = vault.get_record(bits_to_bytes(face.payload.code))
                if record is not None:
                    original = restore_into(original, record, face.frame)
                    regions.append(record)
        if not regions:
            why = ("no face found" if not found else
                   "its faces are too small to carry a payload" if all(f.too_small for f in found) else
                   "no payload found" if not any(f.found for f in found) else
                   "no payload authenticates with this key" if not any(f.authenticated for f in found) else
                   "its payloads' records are not in this vault")
            raise RefacexError(f"{src}: not restored: {why}")
    # Lossless output for restored originals unless the user asks otherwise.
    atomic_write_bytes(dst, encode_image(original, out_fmt, quality if out_fmt != "JPEG" else max(quality, 95), img.alpha))
    return FileResult(src, dst, [], len(regions))
