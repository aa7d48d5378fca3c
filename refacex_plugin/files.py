"""File-level operations shared by the CLI, the FiftyOne plugin and the Label Studio backend.

``anonymise_file``: read -> anonymise -> encode -> (vault commit) -> atomic write, in that order,
so an original is never replaced before its recovery record is safely stored.
``recover_file``: restore the original face regions of an anonymised file from the vault: by
the image's pixel hash when it is unchanged, else through the vault references its faces'
payloads carry (after re-encoding, resizing or cropping).

With a key and a vault every face carries a payload of kind ``KIND_VAULT_REF``: a random
record id, sealed with the key, that finds the face's original region in the vault. The vault
also keeps the original file's bytes, so recovering an unchanged file gives back that very file.

A JPEG written as JPEG is edited in the DCT domain (:mod:`~refacex_plugin.jpeg_blocks`): only the
MCUs the faces touch are re-encoded, with the file's own tables; every other pixel is kept.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import payload
from .ecc import bits_to_bytes, bytes_to_bits
from .errors import RefacexError
from .image_io import FORMAT_SUFFIXES, LoadedImage, atomic_write_bytes, encode_image, output_format, output_path, pil_to_rgb, read_image
from .jpeg_blocks import BlockEdit, rewrite_changed_blocks
from .reader import FaceReader
from .records import FaceRecord
from .vault import FaceRegion, pixel_hash, restore, restore_into
from .vault.core import VaultBase
from .writer import FaceWriter


@dataclass
class FileResult:
    src: Path
    dst: Path
    faces: list[FaceRecord] = field(default_factory=list)
    vault_records: int = 0
    skipped: bool = False  # already anonymised into the vault: nothing done
    size: tuple[int, int] = (0, 0)  # (height, width) of the upright image
    notes: list[str] = field(default_factory=list)  # what the output lost or how it was written (16-bit kept in 8, ...)
    jpeg_blocks: BlockEdit | None = None  # a JPEG edited in the DCT domain: the MCUs rewritten (its data left empty)
    original: bool = False  # recover: the original file was written back byte for byte
    unconfirmed: int = 0  # anonymise: doubtful detections not confirmed as faces, left as they were


def decode_bytes(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return pil_to_rgb(im)[0]


def check_replaceable(path: Path) -> None:
    """Refuse to replace ``path`` in place when its permissions say it must not be written.

    The atomic rename that replaces a file needs only its folder's write permission, so a
    read-only file would silently be replaced; its mode is asked instead (root included).
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise RefacexError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise RefacexError(f"{path}: read-only file (mode {stat.S_IMODE(mode):o}); left unchanged")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise RefacexError(f"{path}: its folder is not writable; left unchanged")


def _plain_decode(data: bytes) -> np.ndarray | None:
    """The file's pixels as decoded, without orientation or colour conversion (None if not RGB)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy() if im.mode == "RGB" else None


def _encode(raw: bytes, img: LoadedImage, image: np.ndarray, fmt: str, quality: int) -> tuple[bytes, BlockEdit | None, list[str]]:
    """Encode the anonymised ``image``: a JPEG in the DCT domain when its block grid and colours
    are the decoded image's, anything else whole. Returns the bytes, the block edit and notes."""
    notes = []
    if img.bits > 8:
        notes.append(f"{img.bits}-bit {img.format} written with 8 bits per channel")
    if img.format == "JPEG" and fmt == "JPEG":
        before = img.rgb if img.as_stored else _plain_decode(raw)
        # EXIF-rotated, ICC-converted, grayscale or CMYK JPEGs decode to other pixels than the
        # file's block grid holds: those are re-encoded whole.
        if before is not None and before.shape == img.rgb.shape and np.array_equal(before, img.rgb):
            edit = rewrite_changed_blocks(raw, before, image)
            if edit is not None:
                return edit.data, replace(edit, data=b""), notes
        notes.append(f"JPEG re-encoded whole at quality {quality} (rotated, colour-managed, grayscale or CMYK source)")
    return encode_image(image, fmt, quality, img.alpha), None, notes


def anonymise_file(
    writer: FaceWriter,
    src: Path,
    dst: Path,
    fmt: str | None = None,
    quality: int = 95,
    vault: VaultBase | None = None,
    in_place: bool = False,
) -> FileResult:
    """Anonymise one image file into ``dst`` (``src`` itself when ``in_place``).

    With a ``vault`` the original file's bytes are sealed in it (with the face regions, in one
    committed transaction) before ``dst`` is written.
    """
    src, dst = Path(src), Path(dst)
    if in_place:
        check_replaceable(src)
    try:
        raw = src.read_bytes() if src.is_file() else None
    except OSError:
        raw = None  # read_image reports why, in one line
    img = read_image(src, data=raw)
    raw = raw or b""
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
    result = writer.anonymise_image(img.rgb)
    image, regions, frames, record_ids, emb = result.image, list(result.regions), [None] * len(result.faces), None, None
    if writer.has_key and result.faces:
        # api.validate admits a key without a vault only for a method whose faces carry recovery codes
        if vault is not None:  # exact recovery: each face carries its vault record's id
            record_ids = [secrets.token_bytes(payload.code_bits(payload.KIND_VAULT_REF) // 8) for _ in result.faces]
            emb = writer.embed_codes(image, result.landmarks, [bytes_to_bits(r) for r in record_ids], payload.KIND_VAULT_REF)
        else:  # learned recovery: each face carries its recovery code
            emb = writer.embed_codes(image, result.landmarks, result.codes, payload.KIND_RECOVERY_CODE)
        image, frames = emb.image, list(emb.frames)
        regions = [_union(a, b) for a, b in zip(regions, emb.regions)]
        for face, status, errors in zip(result.faces, emb.status, emb.bit_errors):
            face.payload, face.payload_bit_errors = status, errors
    data, blocks, notes = _encode(raw, img, image, out_fmt, quality)
    written = decode_bytes(data) if emb is not None or vault is not None else None  # the output, decoded once
    if blocks is not None and emb is not None and not writer.embedder.survives(emb, written):
        # The file's own tables can be coarser than a re-encode at ``quality``: a payload that
        # read back before encoding must read back from the file, so such a file is re-encoded whole.
        data, blocks = encode_image(image, out_fmt, quality, img.alpha), None
        written = decode_bytes(data)
        notes.append(f"JPEG re-encoded whole at quality {quality}: a face's payload did not survive the file's own quantisation tables")
    stored = 0
    if vault is not None:
        h, w = img.rgb.shape[:2]
        keep = [i for i, box in enumerate(regions) if box is not None]
        records = [
            FaceRegion(
                regions[i],
                img.rgb[regions[i][1] : regions[i][3], regions[i][0] : regions[i][2]].copy(),
                (h, w) if frames[i] is not None else None,
                frames[i],
            )
            for i in keep
        ]
        ids = [record_ids[i] for i in keep] if record_ids is not None else None
        stored = len(vault.put(pixel_hash(written), records, ids, original=raw, original_format=img.format))
    atomic_write_bytes(dst, data)
    return FileResult(
        src, dst, result.faces, stored, size=img.rgb.shape[:2], notes=notes, jpeg_blocks=blocks, unconfirmed=result.unconfirmed
    )


def _union(a, b):
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _write_original(src: Path, dst: Path, img: LoadedImage, original, fmt: str | None, quality: int, in_place: bool) -> FileResult:
    """Write an anonymised file's original back: its very bytes, unless ``fmt`` asks for another format."""
    want = output_format(original.format, fmt) if fmt else original.format
    if in_place:
        if original.format != img.format:
            raise RefacexError(
                f"{src}: its original is a {original.format} file; restore it with -o, not in place of this {img.format} file"
            )
        dst = src
    else:
        suffixes = FORMAT_SUFFIXES.get(want, (dst.suffix,))
        dst = dst if dst.suffix.lower() in suffixes else dst.with_suffix(suffixes[0])
        if dst.exists() and dst.resolve() == src.resolve():
            raise RefacexError(f"{src}: output would overwrite the input; use --in-place to mean that")
    if want == original.format:
        data = original.data
    else:  # the one case the original is re-encoded: the user asked for another format
        with Image.open(io.BytesIO(original.data)) as im:
            rgb, alpha = pil_to_rgb(im)
        data = encode_image(rgb, want, quality, alpha)
    atomic_write_bytes(dst, data)
    return FileResult(src, dst, [], original.faces, size=img.rgb.shape[:2], original=want == original.format)


def recover_file(
    src: Path,
    dst: Path,
    vault: VaultBase | None,
    reader: FaceReader | None = None,
    fmt: str | None = None,
    quality: int = 95,
    in_place: bool = False,
) -> FileResult:
    """Restore the original of an anonymised file from ``vault`` into ``dst`` (``src`` when ``in_place``).

    An unchanged file (found by its pixel hash) whose original the vault keeps gets that original
    back byte for byte: same format, same metadata (re-encoded only when ``fmt`` names another
    format). Vaults without originals restore it by its face regions, bit-exactly (the whole
    image when the anonymised file was written losslessly). A changed file, given ``reader`` (its
    detector and watermark, and the vault's key), has each face's payload read and its vault
    record restored where the face is now: bit-exact face pixels over a re-encoded background, or
    warped into a resized or cropped image. Nothing is written unless at least one face was restored.
    """
    src, dst = Path(src), Path(dst)
    if in_place:
        check_replaceable(src)
    img = read_image(src)
    if vault is not None:
        original = vault.get_original(pixel_hash(img.rgb))
        if original is not None:
            return _write_original(src, dst, img, original, fmt, quality, in_place)
    out_fmt = output_format(img.format, fmt)
    if in_place:
        if out_fmt != img.format:
            raise RefacexError(f"{src}: cannot rewrite a {img.format} file in place as {out_fmt}; use -o")
        dst = src
    else:
        dst = output_path(dst, out_fmt)
        if dst.exists() and dst.resolve() == src.resolve():
            raise RefacexError(f"{src}: output would overwrite the input; use --in-place to mean that")
    if vault is None:  # learned recovery from the payloads' codes
        if reader is None:
            raise RefacexError("recovery needs a vault or a reader of the payloads' recovery codes")
        rec = reader.recover_image(img.rgb)
        if not rec.restored:
            why = "; ".join(sorted({w for _, w in rec.failed})) or "no face found"
            raise RefacexError(f"{src}: not restored: {why}")
        atomic_write_bytes(dst, encode_image(rec.image, out_fmt, quality if out_fmt != "JPEG" else max(quality, 95), img.alpha))
        return FileResult(src, dst, [], len(rec.restored))
    regions = vault.get(pixel_hash(img.rgb))
    if regions:
        original = restore(img.rgb, regions)
    elif reader is None:
        raise RefacexError(f"{src}: no vault record for this image (not anonymised with this vault, or changed since)")
    else:
        original, regions = img.rgb, []
        found = reader.read_payloads(img.rgb)
        for face in found:
            if face.authenticated and face.payload.kind == payload.KIND_VAULT_REF:
                record = vault.get_record(bits_to_bytes(face.payload.code))
                if record is not None:
                    original = restore_into(original, record, face.frame)
                    regions.append(record)
        if not regions:
            why = (
                "no face found"
                if not found
                else "its faces are too small to carry a payload"
                if all(f.too_small for f in found)
                else "no payload found"
                if not any(f.found for f in found)
                else "no payload authenticates with this key"
                if not any(f.authenticated for f in found)
                else "its payloads' records are not in this vault"
            )
            raise RefacexError(f"{src}: not restored: {why}")
    # Lossless output for restored originals unless the user asks otherwise.
    atomic_write_bytes(dst, encode_image(original, out_fmt, quality if out_fmt != "JPEG" else max(quality, 95), img.alpha))
    return FileResult(src, dst, [], len(regions))
