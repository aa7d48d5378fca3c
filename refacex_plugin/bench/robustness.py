"""Payload robustness: exact decode and bit accuracy of each watermark under real distortions.

Hosts are the faces users mark: the images anonymised by the default method
(:func:`~refacex_plugin.anonymisers.default_method`). Each face gets a fresh random code sealed with a
random key and bound to the face (the real payload format: encryption, tag over the face's hash,
BCH), embedded as :meth:`~refacex_plugin.writer.Embedder.embed` does; a row's exact-decode rate is the
share of faces whose code comes back authenticated and identical after the distortion,
re-detection and re-alignment.
"""

from __future__ import annotations

import random

import numpy as np

from .. import ecc
from .. import payload as payload_format
from ..binding import candidate_hashes, face_signatures
from ..channel import embed_codes, match_faces, payload_opener, read_marks
from ..detection import DEFAULT_DETECTOR, load_detector, reader_config
from ..distortions import DISTORTIONS
from ..geometry import AlignConfig, alignment_matrices, warp_mask_to_image
from ..image_io import read_image
from ..keys import generate_key
from .metrics import psnr
from .originals import central_face
from .progress import progress as _progress

#: Marked faces (full mode, quick mode), each read after every distortion row, and unmarked images
#: read for the false-detection count. A quick run reads 19 rows of 10 faces and 20 unmarked
#: images, its share of a quick run's few minutes; its rates are coarse (one face is 10 %), the
#: full run's are the figures.
FACES = {False: 500, True: 10}
FALSE_DETECT_IMAGES = {False: 10_000, True: 20}


def evaluate_watermark(
    name: str,
    files: list,
    host_method: str | None,
    seed: int = 0,
    false_detect_files: list | None = None,
    progress: bool = True,
    payload: str = "recovery-code",
) -> dict:
    from ..watermark import load_watermark
    from ..writer import make_writer

    wm = load_watermark(name)
    det = load_detector(DEFAULT_DETECTOR)  # chooses the host faces
    reader = load_detector(DEFAULT_DETECTOR, reader_config())  # what the embedder and a reader detect
    align = AlignConfig()
    writer = make_writer(host_method) if host_method else None
    rng = np.random.default_rng(seed)
    kind = next(k for k, n in payload_format.KIND_NAMES.items() if n == payload)
    code_bits = payload_format.code_bits(kind)
    exact = {k: [] for k in DISTORTIONS}
    bit_acc = {k: [] for k in DISTORTIONS}
    errors = {k: [] for k in DISTORTIONS}  # hard-decision error vectors, for the ECC comparison
    margins = {k: [] for k in DISTORTIONS}  # reliabilities signed by rightness, for its soft decoding
    binding_misses = {k: 0 for k in DISTORTIONS}
    face_psnr, image_psnr = [], []
    skipped = 0
    for f in _progress(files, f"robustness {name} ({len(DISTORTIONS)} rows an image)", progress):
        rgb = read_image(f).rgb
        host = writer.anonymise_image(rgb).image if writer else rgb
        d = det(host)
        c = central_face(d, *host.shape[:2])
        if c is None:
            skipped += 1
            continue
        key = generate_key()
        code = rng.integers(0, 2, code_bits).astype(np.uint8)
        hashes: list[bytes] = []  # every binding sealed for (the embedder may seal again)
        emb = embed_codes(host, d.landmarks[c : c + 1], [code], key, kind, wm, reader, align, sealed=hashes)
        marked, channel = emb.image, emb.bits[0]
        writer_hash = payload_format.open_payload(payload_format.bits_to_logits(channel), key, bindings=hashes).binding
        mask = warp_mask_to_image(alignment_matrices(d.landmarks[c : c + 1], align), align, *host.shape[:2])
        face_psnr.append(psnr(marked, host, (mask > 0.5).astype(np.uint8)))
        image_psnr.append(psnr(marked, host))
        for k, fn in DISTORTIONS.items():
            read = read_central_face(fn(marked), key, wm, reader, align)
            if read is None:
                exact[k].append(False)
                bit_acc[k].append(0.5)
                continue
            logits, opened = read
            wrong = (logits > 0).astype(np.uint8) != channel
            errors[k].append(wrong)
            margins[k].append(np.abs(logits) * np.where(wrong, -1.0, 1.0))
            bit_acc[k].append(float(1 - wrong.mean()))
            exact[k].append(opened is not None and bool(np.array_equal(opened.code, code)))
            if opened is None and payload_format.open_payload(logits, key, bindings=[writer_hash]) is not None:
                binding_misses[k] += 1  # the channel delivered; the reader did not recompute the hash
    out = {
        "available": True,
        "watermark": name,
        "host": host_method or "original faces",
        "faces": len(face_psnr),
        "skipped_no_face": skipped,
        "channel_bits": payload_format.CHANNEL_BITS,
        "payload": payload,
        "code_bits": code_bits,
        "face_psnr_db": float(np.mean(face_psnr)) if face_psnr else None,
        "image_psnr_db": float(np.mean(image_psnr)) if image_psnr else None,
        "exact_decode_rate": {k: float(np.mean(v)) if v else None for k, v in exact.items()},
        # reads the channel delivered but the reader's binding candidates missed (lost to the binding)
        "binding_misses": binding_misses,
        "bit_accuracy": {k: float(np.mean(v)) if v else None for k, v in bit_acc.items()},
        "ecc_comparison": ecc_comparison(errors, margins),
    }
    if false_detect_files:
        out.update(false_detections(wm, false_detect_files, progress))
    return out


def read_central_face(rgb: np.ndarray, key: bytes, wm, reader, align: AlignConfig = AlignConfig()):
    """Read ``rgb`` as the holder of ``key`` reads it (:func:`~refacex_plugin.channel.read_marks`
    with the key's opener) and open the reading of the face nearest the image's centre: the face a
    benchmark marked, wherever a distortion moved it. Returns ``(logits (CHANNEL_BITS,), payload)``
    (``payload`` None when it does not open, bound to the face as the reader sees it), or None
    when no face is found."""
    found, logits, frames = read_marks(rgb, wm, reader, align, accept=payload_opener(rgb, [key], align))
    j = central_face(found, *rgb.shape[:2]) if len(found) else None
    if j is None:
        return None
    return logits[j], payload_format.open_payload(
        logits[j], key, bindings=candidate_hashes(face_signatures(rgb, frames[j : j + 1], align)[0])
    )


def ecc_comparison(errors: dict[str, list[np.ndarray]], margins: dict[str, list[np.ndarray]] | None = None) -> dict:
    """Which code corrects more of the errors this channel really makes, per distortion row.

    For each read face's hard-decision error vector: decodable by BCH(252, t=10) iff at most 10
    bits are wrong; by the Reed-Solomon alternative (9 parity bytes over the first 248 bits,
    corrects 4 byte errors) iff at most 4 of its 31 bytes hold an error. Scattered errors
    favour BCH, bursts RS. (Exact decode rates above use soft decoding: Chase, then ordered
    statistics, :func:`refacex_plugin.ecc.decode`.)
    ``bch_t21``: the vault reference's code (payload version 3: a 112-bit message, 140 parity
    bits, t = 21), on the same error vectors; ``bch_t21_soft``: the same code decoded as a reader
    does, from ``margins`` (per read, each bit's reliability, negative where it was read wrong):
    a random vault-reference message sent through the same channel, found among the decoder's
    candidates.
    """
    rng = np.random.default_rng(0)
    out = {}
    for k, rows in errors.items():
        if not rows:
            continue
        e = np.stack(rows)
        bch = e.sum(1) <= payload_format.ECC.t
        rs = e[:, :248].reshape(len(e), 31, 8).any(-1).sum(1) <= 4
        short = e.sum(1) <= payload_format.REF_ECC.t
        out[k] = {
            "bch_t10": float(bch.mean()),
            "rs_nsym9": float(rs.mean()),
            "bch_t21": float(short.mean()),
            "mean_bit_errors": float(e.sum(1).mean()),
            "median_bit_errors": float(np.median(e.sum(1))),
        }
        if margins and margins.get(k):
            out[k]["bch_t21_soft"] = float(np.mean([_soft_ref_decodes(m, rng) for m in margins[k]]))
    return out


def false_detections(wm, files: list, progress: bool = True) -> dict:
    """Authenticated payloads read from faces that carry none (must be 0), with a random key per
    image, read as its holder reads (every reading of the search is tried with it:
    :func:`~refacex_plugin.channel.payload_opener`)."""
    faces = authenticated = 0
    for n, opened in unmarked_readings(wm, _progress(files, "false detections", progress)):
        faces, authenticated = faces + n, authenticated + opened
    return {"false_detect_faces": faces, "false_detect_authenticated": authenticated}


def unmarked_readings(wm, files):
    """Per image of ``files`` (unmarked), ``(faces read, faces that authenticated)`` under a fresh random key."""
    det = load_detector(DEFAULT_DETECTOR, reader_config())  # every candidate a reader would try
    align = AlignConfig()
    for f in files:
        rgb = read_image(f).rgb
        key = generate_key()
        found, logits, frames = read_marks(rgb, wm, det, align, accept=payload_opener(rgb, [key], align))
        signatures = face_signatures(rgb, frames, align)
        yield (
            len(logits),
            sum(payload_format.open_payload(row, key, bindings=candidate_hashes(sig)) is not None for row, sig in zip(logits, signatures)),
        )


def _soft_ref_decodes(margin: np.ndarray, rng: np.random.Generator) -> bool:
    """Whether a vault reference's message read through a channel that got ``margin (252,)``
    (reliabilities, negative where wrong) right or wrong comes out of the reader's soft decoding."""
    data = rng.integers(0, 2, payload_format.REF_ECC.data_bits).astype(np.uint8)
    logits = (2.0 * payload_format.REF_ECC.encode(data) - 1.0) * margin
    return ecc.decode(payload_format.REF_ECC, logits, lambda d: True if np.array_equal(d, data) else None) is not None


def sample_files(paths: list, n: int, seed: int) -> list:
    return random.Random(seed).sample(list(paths), min(n, len(paths)))


__all__ = ["evaluate_watermark", "false_detections", "sample_files", "match_faces", "unmarked_readings"]
