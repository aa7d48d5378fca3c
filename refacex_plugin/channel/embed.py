"""Embedding payload bits in whole images, in the frame the *decoder* will see.

The anonymised image is re-detected and each face aligned from those landmarks (not the original
face's), so the anonymiser's effect on landmark positions does not become an alignment error at
read time; each round reads its own output back as a reader would, and the best round is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..binding import bound_sealer
from ..detection import FaceDetector
from ..geometry import AlignConfig, alignment_matrices, extract_crops, face_footprints, frame_offset, paste_residuals
from ..watermark import SearchableWatermark, Watermark
from .config import EmbedConfig
from .faces import eye_distances, match_faces, reader_frames, settled_matches
from .search import face_logits


@dataclass
class EmbedResult:
    """``image``: the watermarked image; ``status`` per face: ``embedded`` (re-detected in the
    marked image and read back there as a reader would, with at most the error correction's ``t``
    wrong bits) or ``embedded-unverified`` (not re-detected, re-detected too far from its mark for
    a searching reader, read back with more wrong bits, for a bound payload its binding hash
    not recomputed there, or too small for a reader to read: :attr:`~refacex_plugin.channel.ReaderConfig.min_read_eyes`);
    ``regions``: per face, the rectangle outside which nothing changed; ``frames``: per face, the
    ``(5, 2)`` landmarks it was embedded in; ``bit_errors``: per face, the channel bits read back
    wrong from the marked image (before error correction; None when not re-detected); ``bits``:
    the channel bits embedded."""

    image: np.ndarray
    status: list[str]
    regions: list[tuple[int, int, int, int] | None]
    frames: np.ndarray
    bit_errors: list[int | None] = field(default_factory=list)
    bits: np.ndarray | None = None  # (N, channel bits) what was embedded


def embed_in_image(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    channel_bits: list[np.ndarray],
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    strength: float = 1.0,
    device: str | torch.device = "cpu",
    max_rounds: int | None = None,
    accept_errors: int = 0,
    seal: Callable[[np.ndarray], tuple[list[np.ndarray], list[bytes]]] | None = None,
    *,
    config: EmbedConfig = EmbedConfig(),
) -> EmbedResult:
    """Embed ``channel_bits[i]`` in face ``i`` (``landmarks (N, 5, 2)``) of an anonymised image
    ``rgb (H, W, 3)``, in at most ``max_rounds`` rounds (default :attr:`~EmbedConfig.max_rounds`).

    A reader re-detects the faces of the *marked* image. With a watermark the reader searches
    for (:class:`~refacex_plugin.watermark.SearchableWatermark`: dct-qim), it registers the mark's own frame from there, provided
    the re-detection starts the search close enough (:attr:`~EmbedConfig.search_start`); the mark itself can
    move a weakly detected (e.g. pixelated) face's landmarks further than that. So each round embeds
    (always into the unmarked ``rgb``) in the round's frames, re-detects the marked image, reads
    each face back in its frame, and moves the faces whose re-detection lies too far to that
    re-detected frame for the next round; the round with the fewest unverified faces is kept.

    Other watermarks are read at the re-detected frame itself, and the mark moves the detected
    landmarks a little, so each round embeds (always into the unmarked ``rgb``) in the frame
    re-detected in the previous round's marked image, re-detects the new marked image and reads
    every face there. The round whose worst face reads back with the fewest wrong bits is kept;
    the loop stops early once every face is within ``accept_errors``. Measured with dct-qim
    read without a search (80 LFW faces, blurred hosts; worst face's wrong bits of 252,
    median): starting from the given frames, two rounds leave ~45, three ~3; starting from a
    re-detection of the unmarked image three rounds leave ~1. Further rounds oscillate rather than
    converge, hence verify-and-keep-best.

    A face is ``embedded`` when the marked image's re-detection finds it (within the search's
    start for a searching reader) and it reads back there with no more wrong bits than the error
    correction repairs; else ``embedded-unverified``.

    ``seal``: for bound payloads (:mod:`~refacex_plugin.binding`), a function of the round's frames
    ``(N, 5, 2)`` returning each face's channel bits and binding hash, both taken in those frames
    (``channel_bits`` then only gives the count). A face whose hash, recomputed in the marked
    image where a reader reads it, is not among the reader's candidates counts as unread.
    """
    if len(channel_bits) == 0:
        return EmbedResult(rgb.copy(), [], [], np.zeros((0, 5, 2), np.float32), [])
    landmarks = np.asarray(landmarks, np.float32)
    max_rounds = config.max_rounds if max_rounds is None else max_rounds
    if isinstance(watermark, SearchableWatermark):
        return _embed_searchable(rgb, landmarks, channel_bits, watermark, detector, align, strength, device, max_rounds, seal, config)
    # The first round embeds in the given frames. The pipeline passes the faces settled in the
    # unmarked image (:func:`~refacex_plugin.channel.reader_frames`, which it needs for the payload's binding anyway);
    # the shift the mark itself causes only the re-detection of a marked image shows.
    if seal is None:
        bits = np.stack(channel_bits).astype(np.uint8)
        return _embed_rounds(
            rgb, landmarks, landmarks, bits, None, watermark, detector, align, strength, device, max_rounds, accept_errors, config
        )[1]
    # Bound payloads: the rounds need fixed bits to settle (the mark moves the re-detected
    # landmarks, differently for other bits), so the binding is taken once; only if a reader
    # would not recompute it is the payload sealed again, for the frames the reader found.
    frames, best = landmarks, None
    for _ in range(2):
        sealed, hashes = seal(frames)
        worst, result, seen, unbound = _embed_rounds(
            rgb,
            landmarks,
            frames,
            np.stack(sealed).astype(np.uint8),
            hashes,
            watermark,
            detector,
            align,
            strength,
            device,
            max_rounds,
            accept_errors,
            config,
        )
        if best is None or worst < best[0]:
            best = (worst, result)
        if not unbound:
            break
        frames = seen
    return best[1]


def embed_codes(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    codes: list[np.ndarray],
    key: bytes,
    kind: int,
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    strength: float = 1.0,
    device: str | torch.device = "cpu",
    sealed: list[bytes] | None = None,
    *,
    config: EmbedConfig = EmbedConfig(),
) -> EmbedResult:
    """Seal ``codes[i]`` under ``key`` bound to face ``i`` (``landmarks (N, 5, 2)`` of the unmarked
    ``rgb``, as detected) in the frame a reader will find it in, and embed it there: what a keyed
    ``anonymise`` writes (:meth:`~refacex_plugin.writer.Embedder.embed`). ``kind`` is a
    :mod:`~refacex_plugin.payload` kind; every binding hash sealed with is appended to ``sealed``
    if given (the embedder may seal again, for the frames its rounds find)."""
    seal = bound_sealer(rgb, list(codes), key, kind, align, sealed=sealed)
    frames = reader_frames(rgb, np.asarray(landmarks, np.float32), detector)
    return embed_in_image(rgb, frames, [None] * len(codes), watermark, detector, align, strength, device, seal=seal, config=config)


def _embed_rounds(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    frames: np.ndarray,
    bits: np.ndarray,
    hashes: list[bytes] | None,
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig,
    strength: float,
    device,
    max_rounds: int,
    accept_errors: int,
    config: EmbedConfig,
) -> tuple[int, EmbedResult, np.ndarray, bool]:
    """The verify-and-keep-best rounds of :func:`embed_in_image` for fixed ``bits (N, channel
    bits)``, from ``frames (N, 5, 2)`` (the faces wanted: ``landmarks (N, 5, 2)``). Returns the kept
    round's worst face's errors, its result, the frames ``(N, 5, 2)`` a reader finds its faces in,
    and whether any face's binding hash (``hashes``; None: unbound payloads) was not recomputed there."""
    best = None
    for _ in range(max_rounds):
        m = alignment_matrices(frames, align)
        out = _embed_in_frames(rgb, m, bits, watermark, align, strength, device)
        found = detector(out)
        match = match_faces(landmarks, found)
        seen = settled_matches(out, frames, found, match, detector)
        where = [None if j is None else seen[i] for i, j in enumerate(match)]  # a reader reads at the settled re-detection
        read = _read_errors(out, where, bits, watermark, align, device)
        errors = read if hashes is None else _unless_unbound(read, out, where, hashes, align)
        worst = max(e if e is not None else bits.shape[1] + 1 for e in errors)
        if best is None or worst < best[0]:
            unbound = any(e is None and r is not None for e, r in zip(errors, read))
            readable = eye_distances(frames) >= config.reader.min_read_eyes
            status = [
                "embedded" if e is not None and e <= _correctable() and readable[i] else "embedded-unverified" for i, e in enumerate(errors)
            ]
            best = (
                worst,
                EmbedResult(out, status, face_footprints(m, align, *rgb.shape[:2]), frames.astype(np.float32), errors, bits),
                seen,
                unbound,
            )
        if worst <= accept_errors:
            break
        frames = seen
    return best


def _correctable() -> int:
    """Wrong channel bits the payload's error correction always repairs."""
    from ..payload import ECC

    return ECC.t


def _embed_searchable(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    channel_bits: list[np.ndarray],
    watermark: SearchableWatermark,
    detector: FaceDetector,
    align: AlignConfig,
    strength: float,
    device,
    max_rounds: int,
    seal: Callable[[np.ndarray], tuple[list[np.ndarray], list[bytes]]] | None,
    config: EmbedConfig,
) -> EmbedResult:
    """The rounds of :func:`embed_in_image` for a watermark its reader searches for."""
    frames, best = landmarks, None
    for _ in range(max_rounds):
        if seal is None:
            bits, hashes = np.stack(channel_bits).astype(np.uint8), None
        else:
            sealed, hashes = seal(frames)
            bits = np.stack(sealed).astype(np.uint8)
        m = alignment_matrices(frames, align)
        out = _embed_in_frames(rgb, m, bits, watermark, align, strength, device)
        found = detector(out)
        match = match_faces(frames, found)
        seen = settled_matches(out, frames, found, match, detector, rounds_from_previous=config.check_rounds)
        near = (frame_offset(m, alignment_matrices(seen, align), align.size / 2) <= np.asarray(config.search_start)).all(1)
        where = [None if j is None else frames[i] for i, j in enumerate(match)]  # the search registers the mark's frame
        read = _read_errors(out, where, bits, watermark, align, device)
        errors = read if hashes is None else _unless_unbound(read, out, where, hashes, align)
        readable = eye_distances(frames) >= config.reader.min_read_eyes
        verified = [e is not None and e <= _correctable() and bool(near[i]) and bool(readable[i]) for i, e in enumerate(errors)]
        score = (verified.count(False), max([e for e, v in zip(errors, verified) if v], default=0))
        if best is None or score < best[0]:
            best = (
                score,
                EmbedResult(
                    out,
                    ["embedded" if v else "embedded-unverified" for v in verified],
                    face_footprints(m, align, *rgb.shape[:2]),
                    frames.astype(np.float32),
                    errors,
                    bits,
                ),
            )
        far = np.array([j is not None and not near[i] for i, j in enumerate(match)])
        if not far.any():
            break
        frames = np.where(far[:, None, None], seen, frames).astype(np.float32)
    return best[1]


def _embed_in_frames(
    rgb: np.ndarray, m: torch.Tensor, bits: np.ndarray, watermark: Watermark, align: AlignConfig, strength: float, device
) -> np.ndarray:
    """``bits (N, channel bits)`` embedded in the faces of ``rgb (H, W, 3)`` aligned by ``m (N, 2,
    3)``, pasted back: ``(H, W, 3)``. ``watermark.embed_passes`` times (each pass re-embeds into the
    marked image: pasting and reading a crop resamples it twice and rounds it to 8 bits, which
    moves some of a quantiser's coefficients off its lattice; a pass puts them back)."""
    out, window = rgb, watermark.carrier_window
    for _ in range(watermark.embed_passes):
        crops = extract_crops(out, m, align, device, window=window)
        with torch.inference_mode():
            residual = watermark.embed(crops, torch.as_tensor(bits, dtype=crops.dtype, device=crops.device), strength) - crops
        out = paste_residuals(out, residual, m, align, window)
    return out


def _unless_unbound(
    errors: list[int | None], rgb: np.ndarray, where: list[np.ndarray | None], hashes: list[bytes], align: AlignConfig
) -> list[int | None]:
    """``errors``, with None for faces whose binding hash a reader of ``rgb`` would not recompute
    (``where``: per face, the ``(5, 2)`` frame a reader reads it in; None: not found)."""
    from ..binding import candidate_hashes, face_signatures

    seen = [i for i, w in enumerate(where) if w is not None]
    if not seen:
        return list(errors)
    signatures = dict(zip(seen, face_signatures(rgb, np.stack([where[i] for i in seen]), align)))
    return [None if i in signatures and hashes[i] not in candidate_hashes(signatures[i]) else e for i, e in enumerate(errors)]


def _read_errors(
    rgb: np.ndarray, where: list[np.ndarray | None], bits: np.ndarray, watermark: Watermark, align: AlignConfig, device
) -> list[int | None]:
    """Per face, the bits of ``bits (N, channel bits)`` read wrong in ``rgb`` at ``where[i]``, the
    ``(5, 2)`` frame a reader reads it in (None: not found)."""
    seen = [i for i, w in enumerate(where) if w is not None]
    if not seen:
        return [None] * len(where)
    logits, _ = face_logits(rgb, alignment_matrices(np.stack([where[i] for i in seen]), align), watermark, align, device, sync=False)
    errors: list[int | None] = [None] * len(where)
    for i, row in zip(seen, (logits > 0).astype(np.uint8)):
        errors[i] = int((row != bits[i]).sum())
    return errors
