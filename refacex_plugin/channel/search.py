"""Carrying payload bits in whole images: embed in each face, read back after re-detection.

The watermark is embedded in the frame the *decoder* will see: the anonymised image is
re-detected and each face is aligned from those landmarks (not the original face's), so the
anonymiser's effect on landmark positions does not become an alignment error at read time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..binding import bound_sealer
from ..detection import Detections, FaceDetector
from ..geometry import (
    AlignConfig,
    alignment_matrices,
    canonical_template,
    extract_crops,
    face_footprints,
    frame_offset,
    invert_affine,
    paste_residuals,
    perturb_about,
    perturbations_about,
    translate_after,
    translate_before,
)
from ..watermark import SearchableWatermark, Watermark


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between landmark centroids: ``(N, 5, 2) x (M, 5, 2) -> (N, M)``."""
    return np.linalg.norm(a.mean(1)[:, None] - b.mean(1)[None], axis=-1)


def match_faces(wanted: np.ndarray, found: Detections, tolerance: float = 0.25) -> list[int | None]:
    """For each wanted face (``(N, 5, 2)`` landmarks), the index of the re-detected face whose
    landmark centroid lies within ``tolerance`` x inter-ocular distance, else None."""
    if len(found) == 0 or len(wanted) == 0:
        return [None] * len(wanted)
    dist = _centre_distance(wanted, found.landmarks)
    iod = eye_distances(wanted)
    out = []
    for i in range(len(wanted)):
        j = int(np.argmin(dist[i]))
        out.append(j if dist[i, j] <= tolerance * max(iod[i], 1.0) else None)
    return out


#: Faces whose eyes lie closer than this many image pixels (as detected) are not read, and the
#: embedder does not call a mark in one ``embedded``: a mark does not survive in so small a face
#: (``python research/watermark_min_face.py --faces 15 --eyes 8,10,12``: of 15 LFW faces
#: shrunk to 8 px between the eyes 2 were detected, and neither opened; at 10 and 12 px all 15 were
#: detected and none opened even unchanged), while a search that finds no mark costs a reader
#: 2-5 s of fallbacks, most of ``refacex extract``'s time on an image with a small background
#: face. Skipping a face only removes readings, so it cannot open a payload that was not there.
MIN_READ_EYES = 10.0


def eye_distances(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 5, 2)`` landmarks -> ``(N,)`` distances between the two eyes, in their pixels."""
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    return np.linalg.norm(landmarks[:, 0] - landmarks[:, 1], axis=-1)


@dataclass
class EmbedResult:
    """``image``: the watermarked image; ``status`` per face: ``embedded`` (re-detected in the
    marked image and read back there as a reader would, with at most the error correction's ``t``
    wrong bits) or ``embedded-unverified`` (not re-detected, re-detected too far from its mark for
    a searching reader, read back with more wrong bits, for a bound payload its binding hash
    not recomputed there, or too small for a reader to read: :data:`MIN_READ_EYES`);
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
    max_rounds: int = 3,
    accept_errors: int = 0,
    seal: Callable[[np.ndarray], tuple[list[np.ndarray], list[bytes]]] | None = None,
) -> EmbedResult:
    """Embed ``channel_bits[i]`` in face ``i`` (``landmarks (N, 5, 2)``) of an anonymised image.

    A reader re-detects the faces of the *marked* image. With a watermark the reader searches
    for (``extract_shifted``: dct-qim), it registers the mark's own frame from there, provided
    the re-detection starts the search close enough (:data:`SEARCH_START`); the mark itself can
    move a weakly detected (e.g. pixelated) face's landmarks further than that. So each round embeds
    (always into the unmarked ``rgb``) in the round's frames, re-detects the marked image, reads
    each face back in its frame, and moves the faces whose re-detection lies too far to that
    re-detected frame for the next round; the round with the fewest unverified faces is kept.

    Other watermarks are read at the re-detected frame itself, and the mark moves the detected
    landmarks a little, so each round embeds (always into the unmarked ``rgb``) in the frame
    re-detected in the previous round's marked image, re-detects the new marked image and reads
    every face there. The round whose worst face reads back with the fewest wrong bits is kept;
    the loop stops early once every face is within ``accept_errors``. Measured with dct-qim
    before its reader searched (80 LFW faces, blurred hosts; worst face's wrong bits of 252,
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
    if isinstance(watermark, SearchableWatermark):
        return _embed_searchable(rgb, landmarks, channel_bits, watermark, detector, align, strength, device, max_rounds, seal)
    # The first round embeds in the given frames. The pipeline passes the faces settled in the
    # unmarked image (:func:`reader_frames`, which it needs for the payload's binding anyway);
    # the shift the mark itself causes only the re-detection of a marked image shows.
    if seal is None:
        bits = np.stack(channel_bits).astype(np.uint8)
        return _embed_rounds(
            rgb, landmarks, landmarks, bits, None, watermark, detector, align, strength, device, max_rounds, accept_errors
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
) -> EmbedResult:
    """Seal ``codes[i]`` under ``key`` bound to face ``i`` (``landmarks (N, 5, 2)`` of the unmarked
    ``rgb``, as detected) in the frame a reader will find it in, and embed it there: what a keyed
    ``anonymise`` writes (:meth:`~refacex_plugin.pipeline.Pipeline.embed_codes`). ``kind`` is a
    :mod:`~refacex_plugin.payload` kind; every binding hash sealed with is appended to ``sealed``
    if given (the embedder may seal again, for the frames its rounds find)."""
    seal = bound_sealer(rgb, list(codes), key, kind, align, sealed=sealed)
    frames = reader_frames(rgb, np.asarray(landmarks, np.float32), detector)
    return embed_in_image(rgb, frames, [None] * len(codes), watermark, detector, align, strength, device, seal=seal)


def _embed_rounds(rgb, landmarks, frames, bits, hashes, watermark, detector, align, strength, device, max_rounds, accept_errors):
    """The verify-and-keep-best rounds of :func:`embed_in_image` for fixed ``bits``. Returns the kept
    round's worst face's errors, its result, the frames a reader finds its faces in, and whether
    any face's binding hash (``hashes``; None: unbound payloads) was not recomputed there."""
    best = None
    for _ in range(max_rounds):
        m = alignment_matrices(frames, align)
        out = _embed_in_frames(rgb, m, bits, watermark, align, strength, device)
        found = detector(out)
        match = match_faces(landmarks, found)
        seen = _settled_matches(out, frames, found, match, detector)
        where = [None if j is None else seen[i] for i, j in enumerate(match)]  # a reader reads at the settled re-detection
        read = _read_errors(out, where, bits, watermark, align, device)
        errors = read if hashes is None else _unless_unbound(read, out, where, hashes, align)
        worst = max(e if e is not None else bits.shape[1] + 1 for e in errors)
        if best is None or worst < best[0]:
            unbound = any(e is None and r is not None for e, r in zip(errors, read))
            readable = eye_distances(frames) >= MIN_READ_EYES
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


#: How far (zoom, turn in degrees, shift in crop pixels) a marked face's re-detection may lie from
#: the frame its mark was embedded in for the embedder to count it as found: within the search's
#: first grid step, leaving its range (+-8 % / 4 deg / 8 px, then finer) room for a distortion's own
#: misplacement. Measured with ``research/embed_rounds.py --images 150 --seed 11 --host
#: pixelate|refacex`` (185 faces, reader at 0.2, one core each; opened unchanged / after JPEG Q75;
#: embedding time; faces called embedded that did not open unchanged): pixelate in one round 73.5 /
#: 57.8 %, 39 ms, 20 of 156 wrong; this start, three rounds 81.6 / 64.3 %, 53 ms, 0 of 139; a looser
#: (6 %, 3 deg, 6 px) 81.6 / 64.9 %, 48 ms, 5 of 153. refacex 85.4 / 76.8 %, 37 ms, 2 of 160; 85.9 /
#: 77.3 %, 45 ms, 0 of 159; the looser start 85.9 / 77.3 %, 39 ms, 0 of 159.
SEARCH_START = (0.04, 2.0, 4.0)


def _correctable() -> int:
    """Wrong channel bits the payload's error correction always repairs."""
    from ..payload import ECC

    return ECC.t


def _embed_searchable(rgb, landmarks, channel_bits, watermark, detector, align, strength, device, max_rounds, seal) -> EmbedResult:
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
        seen = _settled_matches(out, frames, found, match, detector, align)
        near = (frame_offset(m, alignment_matrices(seen, align), align.size / 2) <= np.asarray(SEARCH_START)).all(1)
        where = [None if j is None else frames[i] for i, j in enumerate(match)]  # the search registers the mark's frame
        read = _read_errors(out, where, bits, watermark, align, device)
        errors = read if hashes is None else _unless_unbound(read, out, where, hashes, align)
        readable = eye_distances(frames) >= MIN_READ_EYES
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


#: The reader's search for the mark around each re-detected face, for watermarks that can read at
#: many translations at once (``extract_shifted``): a coarse-to-fine search over zooms, turns
#: (degrees) and shifts (crop pixels) of the aligned crop; the most confident reading of each
#: stage is the next one's centre. Stages: (zoom step, turn step, points a side, shift step,
#: shift radius); whole-pixel shifts are read at once, fractional ones resample the crop.
#: Re-detection by CenterFace misplaces the crop of a refacex face by up to a zoom of 6 %, a turn
#: of 2-5 deg and a shift of 4.5 crop pixels (90th percentiles over resize x0.5 / x1.5, 10 % crop
#: and noise; 30 LFW faces), while dct-qim's carriers repeat every 8-16 crop pixels; and a
#: registration 0.25-0.7 px off still cost 8-36 of its 252 bits (9 of 40 faces, no distortion),
#: hence the sub-pixel stages, down to an eighth of a pixel and of a degree (after JPEG Q50 a
#: registration 0.1-0.3 px off cost up to 28 bits more than the mark's own frame: an ad hoc
#: check of 15 faces).
SYNC_STAGES = (
    (0.04, 2.0, 2, 2, 8),
    (0.02, 1.0, 1, 1, 2),
    (0.01, 0.5, 1, 1, 1),
    (0.0, 0.0, 0, 0.5, 0.5),
    (0.005, 0.25, 1, 0, 0),
    (0.0, 0.0, 0, 0.25, 0.25),
    (0.0025, 0.125, 1, 0, 0),
    (0.0, 0.0, 0, 0.125, 0.125),
)
#: The search's first, wide stage; the local search around the re-detection starts after it.
WIDE_STAGES = 1
#: Contrast gains tried after the first stage (coarse), and around the best after the last (fine):
#: brightness and contrast changes of +-20 % scale the carriers' coefficients as much.
SYNC_GAINS = ((0.8, 0.9, 1.0, 1.1, 1.2), (-0.04, -0.02, 0.0, 0.02, 0.04))
#: Low-pass falloffs (blur, down-scaling and lossy codecs scale a higher-frequency carrier more:
#: the watermark's ``carrier_gains``) tried at the search's last stage: coarse, each with
#: :data:`SYNC_FALLOFF_GAINS`, then around the one taken, with the fine gains.
SYNC_FALLOFFS = ((1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5), (-0.02, -0.01, 0.0, 0.01, 0.02))
#: Tried at the search's last stage only (the frame is found as before), and taken only if it
#: reads this much more confidently than the best gain alone: fitted to JPEG's or WebP's noise, a
#: falloff gained 0-2 % in confidence and moved as many faces' readings away from the mark as
#: towards it; after a blur it gained 8-20 % and took wrong bits away (30 LFW originals read in
#: their marks' own frames, an ad hoc script). Measured with ``python
#: research/reader_fallbacks.py --fallback falloff --host none|refacex --images 100 --rows
#: jpeg_q50,webp_q80,resize_0.5,blur_1,...`` (the same marked images read with / without):
#: original faces x0.5 16 / 11, blur 9 / 5, JPEG Q50 70 / 70, WebP 76 / 75, brightness -20 %
#: 100 / 100, contrast +20 % 97 / 97; refacex-anonymised faces x0.5 53 / 45, blur 42 / 35, Q50
#: 33 / 33, WebP 36 / 36, unchanged 100 / 100.
FALLOFF_MARGIN = 1.05
#: Watermarks with ``gains_first`` (carriers that read nothing at a wrong gain: ``dct-qim-low``'s
#: two lowest, the largest coefficients of a face) have a search's first stage read every coarse
#: gain at once, if the stage reads at most this many crops x shifts (the local search's first
#: stage, 225; not the wide one's 2,025).
GAINS_FIRST_READINGS = 400
#: Gains tried with each falloff, relative to the gain found without one (a falloff lowers the
#: lowest carriers' factor too).
SYNC_FALLOFF_GAINS = (1.0, 1.05, 1.1)


def face_logits(
    rgb: np.ndarray,
    m_img2crop: torch.Tensor,
    watermark: Watermark,
    align: AlignConfig = AlignConfig(),
    device="cpu",
    sync: bool = True,
    accept: Accept | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Read the channel-bit logits of the faces aligned by ``m_img2crop (N, 2, 3)``.

    With ``sync`` (and a watermark that supports it) each face's crop is searched for the mark
    (:data:`SYNC_STAGES`) until a reading is ``accept``-ed (default: a codeword, :func:`is_codeword`).
    Returns ``logits (N, bits)`` and the transforms they were read in ``(N, 2, 3)``."""
    if m_img2crop.shape[0] == 0:
        return np.zeros((0, watermark.bits), np.float32), m_img2crop
    if not sync or not isinstance(watermark, SearchableWatermark):
        crops = extract_crops(rgb, m_img2crop, align, device, window=watermark.carrier_window)
        with torch.inference_mode():
            return watermark.extract(crops).float().cpu().numpy(), m_img2crop
    accept = accept or is_codeword
    found = [_search(rgb, m_img2crop[i : i + 1], watermark, align, device, accept) for i in range(m_img2crop.shape[0])]
    return np.stack([f[0] for f in found]), torch.cat([f[1] for f in found])


def _search(rgb, m, watermark, align, device, accept: Accept, fallbacks: bool = True) -> tuple[np.ndarray, torch.Tensor, tuple]:
    """Where one face's mark lies (``m (1, 2, 3)``: its re-detection): ``(logits (bits,),
    transform (1, 2, 3), its parameters)`` (:func:`_refine`).

    First a local search around the re-detection (:data:`SYNC_STAGES` after the wide ones), whose
    reading is kept if ``accept`` takes it (:func:`is_codeword`: its hard bits are a codeword of the
    payload's error correction, which needs no key, random bits are one with odds under 2^-18; or
    :func:`payload_opener`: that, or it opens under a key); else the whole search, wide stages first, and of the
    two the codeword, or failing one, the more confident reading. Between the two, the local search
    again from the most confident points of a finer grid (:data:`SEARCH_BEAM`). Why both: after a strong
    distortion (JPEG Q50, WebP) the wide stage's coarse grid holds no point close enough to read
    the weakened mark, and its most confident point is a chance one that the finer stages cannot
    leave; the re-detection itself lies within 0.3-3 px of the mark there (measured on 15 LFW faces
    after JPEG Q50: the mark read in its own frame was 0.32-0.44 confident, the wide search's
    reading 0.26-0.28, 8-38 vs 117-146 wrong bits).
    A reading that is no codeword is polished (:func:`_polish`) before the next try.
    Without ``fallbacks``, the local search and its polish only (:func:`read_marks` runs the
    beam and the wide search later, among its other fallbacks, within the face's
    :class:`ReadingBudget`). An ``accept`` that is a :class:`ReadingBudget` ends the search once spent."""

    def codeword(read):
        return accept(read[0], read[1])

    local = _refine(rgb, m, watermark, align, device, SYNC_STAGES[WIDE_STAGES:])
    if codeword(local) or _spent(accept):
        return local
    local = _polish(rgb, m, watermark, align, device, local[2])
    if codeword(local) or not fallbacks:
        return local
    read = _beam(rgb, m, watermark, align, device, accept)
    if read is not None:
        return read
    wide = _wide(rgb, m, watermark, align, device, accept)
    return wide if wide[3] else max((local, wide[:3]), key=lambda read: float(np.abs(read[0]).mean()))


def _beam(rgb, m, watermark, align, device, accept: Accept):
    """The first reading ``accept`` takes from the beam's starts around ``m (1, 2, 3)`` (each
    refined, then polished), or None."""
    for start in _beam_starts(rgb, m, watermark, align, device):
        if _spent(accept):
            return None
        read = _refine(rgb, start, watermark, align, device, SYNC_STAGES[BEAM_FROM_STAGE:])
        if accept(read[0], read[1]):
            return read
        if _spent(accept):
            return None
        read = _polish(rgb, start, watermark, align, device, read[2])
        if accept(read[0], read[1]):
            return read
    return None


def _wide(rgb, m, watermark, align, device, accept: Accept):
    """The whole search from ``m (1, 2, 3)``, wide stages first, then polished: the reading and
    whether ``accept`` took it."""
    wide = _refine(rgb, m, watermark, align, device, SYNC_STAGES)
    if accept(wide[0], wide[1]):
        return (*wide, True)
    if _spent(accept):
        return (*wide, False)
    wide = _polish(rgb, m, watermark, align, device, wide[2])
    return (*wide, bool(accept(wide[0], wide[1])))


#: How far the search's shifts can move a reading, summed over :data:`SYNC_STAGES` (crop pixels),
#: plus bilinear sampling's pixel: a searching reader samples its watermark's ``carrier_window`` widened by this.
SEARCH_REACH = int(math.ceil(sum(stage[4] for stage in SYNC_STAGES))) + 1


def _search_window(watermark: Watermark, size: int) -> tuple[int, int, int, int] | None:
    """The part of each crop the search reads (None: whole crops)."""
    win = watermark.carrier_window
    if win is None:
        return None
    y0, y1, x0, x1 = win
    r = SEARCH_REACH
    return max(y0 - r, 0), min(y1 + r, size), max(x0 - r, 0), min(x1 + r, size)


def _refine(rgb, m, watermark, align, device, stages) -> tuple[np.ndarray, torch.Tensor, tuple]:
    """The most confident reading of one face over ``stages`` (each centred on the last's best)
    and :data:`SYNC_GAINS` (coarse after the first stage, fine after the last, where
    :data:`SYNC_FALLOFFS` are also tried): ``(logits (bits,), transform (1, 2, 3), (scale, turn,
    dx, dy, gain, falloff))``, the transform being ``translate_after(perturb_about(m, scale,
    turn), -dx, -dy)``."""
    scale, angle, shift, frac, gain, falloff = 1.0, 0.0, (0, 0), (0.0, 0.0), 1.0, 1.0
    centre = align.size / 2
    for stage, spec in enumerate(stages):
        # a gains-first watermark's first stage reads the frame at every coarse gain at once (its
        # carriers read nothing at a wrong gain); otherwise at the gain found so far
        every_gain = stage == 0 and watermark.gains_first and _stage_readings(spec) <= GAINS_FIRST_READINGS
        tried = SYNC_GAINS[0] if every_gain else (gain,)
        grid, shifts, crops, logits = _read_stage(
            rgb, m, watermark, align, device, spec, (scale, angle, shift, frac), [watermark.carrier_gains(k, falloff) for k in tried]
        )
        conf = logits.float().abs().mean(-1)
        g, t, k = np.unravel_index(int(conf.argmax()), conf.shape)
        gain = tried[k]
        (scale, angle, frac), shift, best = grid[g], tuple(shifts[t].tolist()), logits[g, t, k]
        if stage in (0, len(stages) - 1):  # the contrast gain: coarse after the first stage, fine after the last
            pairs = [(k, 1.0) for k in SYNC_GAINS[0]] if stage == 0 else [(gain + k, 1.0) for k in SYNC_GAINS[1]]
            n_plain = len(pairs)
            if stage == len(stages) - 1:  # and a low-pass falloff, if one reads clearly better
                pairs += [(gain * k, f) for f in SYNC_FALLOFFS[0][1:] for k in SYNC_FALLOFF_GAINS]
            gains = torch.stack([watermark.carrier_gains(k, f) for k, f in pairs])
            with torch.inference_mode():
                by_gain = watermark.extract_shifted(crops[g : g + 1], shifts[t : t + 1], gains)[0, 0]  # (P, bits)
            conf = by_gain.float().abs().mean(-1)
            k = int(conf.argmax())
            plain = int(conf[:n_plain].argmax())
            k = k if float(conf[k]) > FALLOFF_MARGIN * float(conf[plain]) else plain
            if pairs[k][1] != 1.0:  # refine the falloff taken
                gain, falloff = pairs[k]
                pairs = [(gain + a, falloff + b) for b in SYNC_FALLOFFS[1] for a in SYNC_GAINS[1]]
                gains = torch.stack([watermark.carrier_gains(a, b) for a, b in pairs])
                with torch.inference_mode():
                    by_gain = watermark.extract_shifted(crops[g : g + 1], shifts[t : t + 1], gains)[0, 0]
                k = int(by_gain.float().abs().mean(-1).argmax())
            (gain, falloff), best = pairs[k], by_gain[k]
    params = (scale, angle, float(shift[0] + frac[0]), float(shift[1] + frac[1]), float(gain), float(falloff))
    return best.float().cpu().numpy(), _frame(m, params, centre), params


def _stage_readings(spec: tuple) -> int:
    """Crops x shifts one stage of :data:`SYNC_STAGES` reads (per gain)."""
    zoom_step, turn_step, side, shift_step, radius = spec
    n = int(round(2 * radius / shift_step)) + 1 if shift_step else 1
    return (2 * side + 1) ** 2 * n * n


def _read_stage(rgb, m, watermark, align, device, spec: tuple, at: tuple, gains: list[torch.Tensor]):
    """One stage of the search (``spec``: a row of :data:`SYNC_STAGES`) around ``at = (scale, turn,
    whole-pixel shift, fractional shift)`` from ``m (1, 2, 3)``, read at each of ``gains`` (the
    watermark's ``carrier_gains``). Returns ``(grid, shifts, crops, logits)``: the grid's ``(scale,
    turn, fractional shift)`` per crop, the whole-pixel shifts ``(T, 2)`` read from each crop, the
    crops and ``logits (G, T, len(gains), bits)``."""
    zoom_step, turn_step, side, shift_step, radius = spec
    scale, angle, shift, frac = at
    zooms_turns = [(scale + i * zoom_step, angle + j * turn_step) for i in range(-side, side + 1) for j in range(-side, side + 1)]
    steps = torch.arange(-radius, radius + shift_step / 2, shift_step) if shift_step else torch.zeros(1)
    offsets = [(float(x), float(y)) for y in steps for x in steps]
    if shift_step >= 1:  # whole pixels: every shift read from one crop
        grid = [(s, a, frac) for s, a in zooms_turns]
        shifts = torch.tensor([[shift[0] + x, shift[1] + y] for x, y in offsets], dtype=torch.long)
    else:  # fractions of a pixel: one resampled crop each
        grid = [(s, a, (frac[0] + x, frac[1] + y)) for s, a in zooms_turns for x, y in offsets]
        shifts = torch.tensor([shift], dtype=torch.long)
    ms = perturbations_about(m, [(s, a, -f[0], -f[1]) for s, a, f in grid], align.size / 2)
    crops = extract_crops(rgb, ms, align, device, luma=True, window=_search_window(watermark, align.size))
    with torch.inference_mode():
        logits = watermark.extract_shifted(crops, shifts, torch.stack(gains))  # (G, T, P, bits)
    return grid, shifts, crops, logits


#: A face the local search did not open is searched again from the most confident points of a finer
#: grid around its re-detection (:func:`_beam_starts`), up to this many: :data:`BEAM_GRID`.
#: The mark's confidence peak is narrow: after WebP Q80 (10 LFW faces the reader lost, read at
#: their marks' own frames, an ad hoc script) its mean confidence fell from 0.51-0.60
#: there to 0.45-0.50 half a crop pixel away, 0.46-0.51 at 1 % in zoom and 0.47-0.52 at half a
#: degree, while the local search's first stage (steps of 1 px, 2 %, 1 deg) peaked at 0.44-0.51
#: by chance; so the greedy search took a chance point, and its runners-up were chance points too.
#: A beam of the first stage's 2nd-5th points opened only 2 more of 60 WebP faces. The bench's
#: 300 faces after WebP Q80 (fixed seeded keys, an ad hoc A/B, both with
#: :func:`payload_opener`): of the 13 faces that beam lost, this grid's top 4 / 8
#: opened 4 / 5; its cost, ~0.3 s a face without a codeword.
SEARCH_BEAM = 8
#: The beam's grid around the re-detection: (zoom step, turn step in degrees, points a side, shift
#: step and radius in crop pixels): zooms within +-2 %, turns within +-1 deg at half the local
#: search's first steps, shifts within +-2 px at half-pixel steps (four resampled crops a zoom and
#: turn, each read at every whole-pixel shift). Each start is refined from the search's
#: half-pixel stage on (:data:`BEAM_FROM_STAGE`).
BEAM_GRID = (0.01, 0.5, 2, 0.5, 2)
BEAM_FROM_STAGE = 3


def _beam_starts(rgb, m, watermark, align, device) -> list[torch.Tensor]:
    """The frames ``(1, 2, 3)`` of the :data:`SEARCH_BEAM` most confident points of
    :data:`BEAM_GRID` around ``m (1, 2, 3)`` (each read at every coarse gain), most confident first."""
    zoom_step, turn_step, side, shift_step, radius = BEAM_GRID
    fractions = np.arange(0.0, 1.0, shift_step)
    grid = [
        (1.0 + i * zoom_step, j * turn_step, (float(fx), float(fy)))
        for i in range(-side, side + 1)
        for j in range(-side, side + 1)
        for fy in fractions
        for fx in fractions
    ]
    steps = range(-int(radius), int(radius) + 1)
    shifts = torch.tensor([[x, y] for y in steps for x in steps], dtype=torch.long)
    ms = perturbations_about(m, [(s, a, -f[0], -f[1]) for s, a, f in grid], align.size / 2)
    crops = extract_crops(rgb, ms, align, device, luma=True, window=_search_window(watermark, align.size))
    with torch.inference_mode():
        logits = watermark.extract_shifted(crops, shifts, torch.stack([watermark.carrier_gains(k, 1.0) for k in SYNC_GAINS[0]]))
    conf = logits.float().abs().mean(-1).amax(-1).flatten()  # (G * T,)
    starts = []
    for idx in torch.argsort(conf, descending=True)[:SEARCH_BEAM].tolist():
        (s, a, f), t = grid[idx // len(shifts)], shifts[idx % len(shifts)].tolist()
        starts.append(_frame(m, (s, a, t[0] + f[0], t[1] + f[1]), align.size / 2))
    return starts


def _frame(m: torch.Tensor, params: tuple, centre: float) -> torch.Tensor:
    """The transform a reading's ``(scale, turn, dx, dy, gain, falloff)`` stand for, from the re-detection ``m``."""
    scale, angle, dx, dy = params[:4]
    return translate_after(perturb_about(m, scale, angle, centre), -float(dx), -float(dy))


#: :func:`_polish`'s first steps in (scale, turn in degrees, dx, dy in crop pixels, gain,
#: falloff): the finest of :data:`SYNC_STAGES`, :data:`SYNC_GAINS` and :data:`SYNC_FALLOFFS`;
#: each round halves them.
POLISH_STEPS = (0.0025, 0.125, 0.125, 0.125, 0.01, 0.01)
POLISH_ROUNDS, POLISH_MOVES = 3, 12


def _polish(rgb, m, watermark, align, device, params: tuple) -> tuple[np.ndarray, torch.Tensor, tuple]:
    """Hill-climb a reading's confidence from ``params`` (:func:`_refine`'s): step each of zoom,
    turn, shift, gain and falloff both ways, move to the most confident neighbour while one is better, then
    halve the steps (:data:`POLISH_STEPS`, :data:`POLISH_ROUNDS` rounds of at most
    :data:`POLISH_MOVES` moves). Returns the polished reading, as :func:`_refine` does.

    Why: after JPEG Q50 or WebP the grid's stages often end near the mark but not on it (up to
    0.5 deg, 0.3 px and 1.3 % in zoom away), and that costs up to 49 wrong bits; in its own frame
    the mark is read more confidently than where the stages ended, every time (20 such faces of 60
    LFW originals, 16 of them near, ad hoc). ``python research/watermark_sync.py --decode --host
    none --faces 100 --rows jpeg_q50,webp_q80 --seed 8`` with fixed keys, without / with: reads
    within 21 wrong bits 73 -> 82 % after JPEG Q50 and 68 -> 78 % after WebP (in the mark's own
    frame: 91 / 88 %), recovery codes opened 45 -> 57 % and 42 -> 55 % (measured with hard and
    Chase decoding only, without ordered statistics)."""
    centre = align.size / 2
    window = _search_window(watermark, align.size)
    zero = torch.zeros(1, 2, dtype=torch.long)
    p = list(params)

    def read(crops, gain, falloff):
        with torch.inference_mode():
            return watermark.extract_shifted(crops, zero, watermark.carrier_gains(gain, falloff))[:, 0].float()  # (B, bits)

    crop = extract_crops(rgb, _frame(m, p, centre), align, device, luma=True, window=window)
    best = read(crop, p[4], p[5])[0]
    conf = float(best.abs().mean())
    steps = list(POLISH_STEPS)
    for _ in range(POLISH_ROUNDS):
        for _ in range(POLISH_MOVES):
            moved = [p[:d] + [p[d] + sign * steps[d]] + p[d + 1 :] for d in range(4) for sign in (-1, 1)]
            crops = extract_crops(
                rgb, perturbations_about(m, [(q[0], q[1], -q[2], -q[3]) for q in moved], centre), align, device, luma=True, window=window
            )
            regained = [p[:d] + [p[d] + sign * steps[d]] + p[d + 1 :] for d in ((4, 5) if p[5] != 1.0 else (4,)) for sign in (-1, 1)]
            reads = torch.cat([read(crops, p[4], p[5])] + [read(crop, q[4], q[5]) for q in regained])
            confs = reads.abs().mean(-1)
            k = int(confs.argmax())
            if float(confs[k]) <= conf:
                break
            p, best, conf = (moved + regained)[k], reads[k], float(confs[k])
            crop = crops[k : k + 1] if k < len(moved) else crop
        steps = [v / 2 for v in steps]
    params = tuple(float(v) for v in p)
    return best.cpu().numpy(), _frame(m, params, centre), params


def _embed_in_frames(rgb, m, bits, watermark, align, strength, device) -> np.ndarray:
    """Embed and paste back, ``watermark.embed_passes`` times (each pass re-embeds into the
    marked image: pasting and reading a crop resamples it twice and rounds it to 8 bits, which
    moves some of a quantiser's coefficients off its lattice; a pass puts them back)."""
    out, window = rgb, watermark.carrier_window
    for _ in range(watermark.embed_passes):
        crops = extract_crops(out, m, align, device, window=window)
        with torch.inference_mode():
            residual = watermark.embed(crops, torch.as_tensor(bits, dtype=crops.dtype, device=crops.device), strength) - crops
        out = paste_residuals(out, residual, m, align, window)
    return out


def reader_frames(rgb: np.ndarray, landmarks: np.ndarray, detector: FaceDetector) -> np.ndarray:
    """Where a reader will find each face (``(N, 5, 2)`` given landmarks): the face settled in
    ``rgb`` (:func:`~refacex_plugin.registration.settled_landmarks`), which a reader's re-detection
    of the marked image settles to as well.

    Settled from the given landmarks, not from a re-detection of ``rgb``: settling converges to
    nearly one point from starts pixels apart, so the detection of the whole image only cost time.
    Measured (an ad hoc A/B, 60 LFW images per host, one core; faces opened by a
    key-holding reader unchanged / after JPEG Q75 / a half-size resize, embedding time per face):
    blur-anonymised, 71 faces, re-detected 56 / 55 / 53, 53 ms, settled from the given landmarks
    58 / 56 / 54, 45 ms; refacex-anonymised, 74 faces, 70 / 68 / 65, 58 ms vs 71 / 68 / 65, 51 ms."""
    from ..registration import settled_landmarks

    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    return settled_landmarks(rgb, landmarks, detector) if len(landmarks) else landmarks


def _matched_frames(previous: np.ndarray, found: Detections, match: list[int | None]) -> np.ndarray:
    return np.stack([found.landmarks[j] if j is not None else previous[i] for i, j in enumerate(match)]).astype(np.float32)


def _settled_matches(
    rgb, previous: np.ndarray, found: Detections, match: list[int | None], detector, align: AlignConfig | None = None
) -> np.ndarray:
    """:func:`_matched_frames`, the re-detected faces settled
    (:func:`~refacex_plugin.registration.settled_landmarks`; a face not re-detected keeps ``previous``).
    With ``align`` (the embedder's check of a marked image: does a reader's start lie near the
    mark?), a re-detected face settles from its ``previous`` frame (a settled one, where it was
    marked) for :data:`CHECK_ROUNDS` rounds instead: settling converges to nearly one point from
    starts pixels apart (after a 10 % crop, re-detections 2.9 px apart at the median settle
    within 0.6 px; :mod:`~refacex_plugin.registration`), so a mark that moved the face's
    settled landmarks shows within two rounds. Saves an embedded face ~6 detections of the
    settling crop."""
    from ..registration import settled_landmarks

    frames = _matched_frames(previous, found, match)
    seen = [i for i, j in enumerate(match) if j is not None]
    if seen:
        if align is None:
            frames[seen] = settled_landmarks(rgb, frames[seen], detector)
        else:
            frames[seen] = settled_landmarks(rgb, previous[seen], detector, CHECK_ROUNDS)
    return frames


#: Rounds of settling the embedder's check gives a face from its settled frame (:func:`_settled_matches`).
CHECK_ROUNDS = 2


def _unless_unbound(errors: list[int | None], rgb, where: list[np.ndarray | None], hashes: list[bytes], align) -> list[int | None]:
    """``errors``, with None for faces whose binding hash a reader of ``rgb`` would not recompute
    (``where``: per face, the ``(5, 2)`` frame a reader reads it in; None: not found)."""
    from ..binding import candidate_hashes, face_signatures

    seen = [i for i, w in enumerate(where) if w is not None]
    if not seen:
        return list(errors)
    signatures = dict(zip(seen, face_signatures(rgb, np.stack([where[i] for i in seen]), align)))
    return [None if i in signatures and hashes[i] not in candidate_hashes(signatures[i]) else e for i, e in enumerate(errors)]


def _read_errors(rgb, where: list[np.ndarray | None], bits: np.ndarray, watermark: Watermark, align, device) -> list[int | None]:
    """Per face, the bits read wrong in ``rgb`` at ``where[i]``, the ``(5, 2)`` frame a reader
    reads it in (None: not found)."""
    seen = [i for i, w in enumerate(where) if w is not None]
    if not seen:
        return [None] * len(where)
    logits, _ = face_logits(rgb, alignment_matrices(np.stack([where[i] for i in seen]), align), watermark, align, device, sync=False)
    errors: list[int | None] = [None] * len(where)
    for i, row in zip(seen, (logits > 0).astype(np.uint8)):
        errors[i] = int((row != bits[i]).sum())
    return errors


def read_from_image(
    rgb: np.ndarray, watermark: Watermark, detector: FaceDetector, align: AlignConfig = AlignConfig(), device="cpu"
) -> tuple[Detections, np.ndarray]:
    """Detect every face and read its channel-bit logits (searching for the mark around each
    face, :func:`face_logits`): ``(detections, logits (N, bits))``."""
    det, logits, _ = read_marks(rgb, watermark, detector, align, device)
    return det, logits


#: Image scales at which a reader re-detects the faces whose search found no codeword, to start a
#: local search from each (:func:`_search_rescaled`); 1.0 stands for the re-detection itself,
#: unsettled: the frame files marked without :mod:`~refacex_plugin.registration`'s settling carry
#: their marks in (``test_marks_embedded_in_unsettled_frames_still_open``). For such files these
#: starts answer CenterFace's misplacement after a resize (after x1.5:
#: 3.9 % in zoom, 1.7 deg, 2.2 crop px, medians; ``python research/watermark_sync.py --misplacement
#: --host none --faces 80``): re-detecting at the inverse scale sees the pixels the embedder saw
#: (40 of 40 faces opened after x1.5 vs 34; ``python research/reader_fallbacks.py
#: --fallback rescaled --images 40``: x0.67 / 0.8 / 1.25 / 1.5 / 2: 26 / 38 / 40 / 40 / 39 of 40 vs
#: 25 / 34 / 40 / 37 / 37). Costs unmarked faces a detection and a local search per scale (ad hoc
#: timing, 12 unmarked LFW images: 248 -> 394 ms a read for the two rescaled ones).
RESCALED_STARTS = (1.0, 2 / 3, 1.5)


#: ``accept(logits (bits,), m (1, 2, 3)) -> bool``: whether a reading of a face, taken in frame ``m``
#: (image to crop, in the image's pixels), ends the reader's search for it (:func:`is_codeword`,
#: :func:`payload_opener`).
Accept = Callable[[np.ndarray, torch.Tensor], bool]


#: Readings a reader tries on one face at most (:class:`ReadingBudget`): the local search and its
#: polish, then the fallbacks in :data:`FALLBACKS`' order until one opens the face or the budget is
#: spent. A count, not a clock, so the same image reads the same way on any machine and under any
#: load. Without it every fallback runs to its end on a face with no mark (an unmarked face, or one
#: a distortion erased): ~45 readings, 5-8 s a face on this CPU; and no early sign tells such a face
#: from a marked one a distortion weakened (the local reading's confidence, the confidence of its
#: ones and zeros apart, its peak over the gains: each overlapped between unmarked faces and marked
#: ones the fallbacks opened, 25-40 LFW faces a row, pixelate hosts). 16 readings: the local search
#: and its polish, the deblurring from the reading's frame (4), three rescaled starts, the clipping
#: estimate where something clipped, and the beam's best three starts.
READ_BUDGET = 16


#: Readings a face gets in all once another face of the same image has opened (checked between
#: fallbacks): its local search and polish, no fallback. The fallbacks undo what a distortion did to the whole image, and a face that opened
#: shows the reader copes with it here; a face left beside it is mostly one whose mark did not take
#: (the embedder's ``embedded-unverified``) or a candidate that carries none (the reader detects
#: with a lower threshold than the anonymiser). On 20 LFW images marked by the default method
#: (``refacex``, vault references), read unchanged, every face that did not open sat beside one
#: that did, and the reader without a budget (up to ~48 readings a face) opened none of them
#: either: 23 of 24 embedded faces both ways, 1.98 s an image then.
NEIGHBOUR_BUDGET = 2
#: Readings a face gets with each watermark of :data:`~refacex_plugin.watermark.EARLIER_DEFAULTS`
#: (``Pipeline.read_payloads``) where the default found no mark: the local search and its polish.
#: Every face without a payload (an unmarked one, or one whose mark a distortion erased) pays this
#: on every read, so it stays small; files marked with those watermarks open unchanged or
#: re-encoded at the local search.
EARLIER_READ_BUDGET = 2


class ReadingBudget:
    """One face's ``accept`` (:data:`Accept`) that counts the readings it is asked about: spent
    after ``readings``; remembers whether it took one."""

    def __init__(self, accept: Accept, readings: int = READ_BUDGET):
        self.accept, self.readings, self.left, self.taken = accept, int(readings), int(readings), False

    def __call__(self, logits: np.ndarray, m: torch.Tensor) -> bool:
        self.left -= 1
        self.taken = bool(self.accept(logits, m))
        return self.taken

    @property
    def spent(self) -> bool:
        return self.left <= 0


def _spent(accept) -> bool:
    return bool(getattr(accept, "spent", False))


def _face_accept(accept, i: int):
    """Face ``i``'s ``accept``: one per face (a sequence) or one for all."""
    return accept[i] if isinstance(accept, (list, tuple)) else accept


def is_codeword(logits: np.ndarray, m: torch.Tensor | None = None) -> bool:
    """Whether a reading's hard bits are a codeword of the payload's error correction (needs no key)."""
    from ..payload import correct_channel

    return correct_channel((logits > 0).astype(np.uint8)) is not None


def payload_opener(rgb: np.ndarray, keys: list[bytes], align: AlignConfig = AlignConfig()) -> PayloadOpener:
    """The search's ``accept`` for a reader holding ``keys``: a codeword (:func:`is_codeword`), or a
    reading that soft decoding opens under one of ``keys``, bound to the face as ``rgb`` shows it in
    the reading's frame (as :func:`read_payloads` opens it).

    Why: without a key the search stops only at a hard codeword (at most ``t`` wrong bits), and a
    face it never reads one from gets its most confident reading, which after WebP Q80 or a
    half-size resize is often a chance point; soft decoding opens readings with 11-19 wrong bits.
    Every reading tried is one more chance for unmarked pixels to authenticate: at most
    :data:`READ_BUDGET` readings of a face (:class:`FacePayload`), each ``8 * 1024 * 2^-40 = 2^-27``
    (:func:`~refacex_plugin.payload.open_payload`), at most 2^-23 a face and key. Costs an unmarked
    face ~12 ms a reading (ordered statistics' elimination, mostly)."""
    return PayloadOpener(rgb, keys, align)


class PayloadOpener:
    """:func:`payload_opener`'s ``accept``; remembers what each reading it tried opened to (so
    :func:`read_payloads` does not open a face's last reading again)."""

    def __init__(self, rgb: np.ndarray, keys: list[bytes], align: AlignConfig):
        self.rgb, self.keys, self.align = rgb, keys, align
        self._tried: dict[bytes, object | None] = {}  # logits + frame -> opened payload or None

    def __call__(self, logits: np.ndarray, m: torch.Tensor) -> bool:
        if is_codeword(logits):
            return True
        return self.opened(logits, _frame_landmarks(m, self.align)) is not None

    def opened(self, logits: np.ndarray, frame: np.ndarray):
        """The payload ``logits (bits,)`` open to under the keys, bound to the face in ``frame``
        (its five landmarks ``(1, 5, 2)``), or None; each reading opened once."""
        from .. import payload as P
        from ..binding import candidate_hashes, face_signatures

        seen = logits.tobytes() + np.asarray(frame, np.float32).tobytes()
        if seen not in self._tried:
            bindings = candidate_hashes(face_signatures(self.rgb, np.asarray(frame, np.float32).reshape(1, 5, 2), self.align)[0])
            self._tried[seen] = P.open_payload(logits, self.keys, bindings=bindings)
        return self._tried[seen]


def _frame_landmarks(m: torch.Tensor, align: AlignConfig) -> np.ndarray:
    """The five landmarks ``(B, 5, 2)`` whose alignment is ``m (B, 2, 3)``."""
    inv = invert_affine(m)
    return (canonical_template(align).to(inv) @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]).numpy().astype(np.float32)


def _search_rescaled(
    rgb,
    det: Detections,
    todo: list[int],
    logits: np.ndarray,
    m: torch.Tensor,
    watermark,
    detector,
    align,
    device,
    accept: Accept = is_codeword,
) -> list[int]:
    """For the faces ``todo`` of ``det`` (their readings ``logits (N, bits)``, in frames ``m (N, 2,
    3)``, none accepted), re-detect ``rgb`` at each of :data:`RESCALED_STARTS` and search locally
    from the face's re-detection there; the first reading ``accept``-ed replaces the reading in place.
    Returns the faces still without a codeword."""
    import cv2

    todo = list(todo)
    h, w = rgb.shape[:2]
    for s in RESCALED_STARTS:
        if not [i for i in todo if not _spent(_face_accept(accept, i))]:
            break
        if s == 1.0:
            back, match = det.landmarks, list(todo)
        else:
            size = (max(int(round(w * s)), 1), max(int(round(h * s)), 1))
            if min(size) < 16 or max(size) > 4096:
                continue
            scaled = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            found = detector(scaled)
            if len(found) == 0:
                continue
            back = ((found.landmarks + 0.5) / np.array([size[0] / w, size[1] / h], np.float32) - 0.5).astype(np.float32)
            match = match_faces(det.landmarks[todo], Detections(found.boxes, found.scores, back))
        for i, j in zip(list(todo), match):
            if j is None or _spent(_face_accept(accept, i)):
                continue
            read = _refine(rgb, alignment_matrices(back[j : j + 1], align), watermark, align, device, SYNC_STAGES[WIDE_STAGES:])
            if _face_accept(accept, i)(read[0], read[1]):
                logits[i], m[i] = read[0], read[1][0]
                todo.remove(i)
    return todo


def _search_unclipped(
    rgb, todo: list[int], logits: np.ndarray, m: torch.Tensor, watermark, align, device, accept: Accept = is_codeword
) -> list[int]:
    """For the faces ``todo`` (readings ``logits (N, bits)`` in frames ``m (N, 2, 3)``, no codeword
    yet), search locally again in an estimate of what clipping took from the face's region
    (:func:`~refacex_plugin.clipping.estimate_clipped`: a brightness or contrast change that pushed
    some channels past 0 or 255 took the mark with them there); a reading ``accept``-ed replaces
    the reading in place. Returns the faces still without a codeword."""
    from ..clipping import estimate_clipped

    def unclipped_reading(i):
        roi = face_footprints(m[i : i + 1], align, h, w)[0]
        if roi is None:
            return None
        x0, y0 = max(roi[0] - 16, 0), max(roi[1] - 16, 0)  # room to search
        patch = estimate_clipped(rgb[y0 : min(roi[3] + 16, h), x0 : min(roi[2] + 16, w)])
        if patch is None:
            return None
        read = _refine(patch, translate_before(m[i : i + 1], float(x0), float(y0)), watermark, align, device, SYNC_STAGES[WIDE_STAGES:])
        return read[0], translate_before(read[1], -float(x0), -float(y0))

    h, w = rgb.shape[:2]
    left = []
    for i in todo:
        read = None if _spent(_face_accept(accept, i)) else unclipped_reading(i)
        if read is not None and _face_accept(accept, i)(read[0], read[1]):
            logits[i], m[i] = read[0], read[1][0]
        else:
            left.append(i)
    return left


#: Blurs a reader undoes (:func:`_search_deblurred`), tried in order: gaussian sigmas in pixels of the
#: face's region brought to :data:`DEBLUR_SCALE`. A blur of sigma 1 is best undone at 0.75-1.25, a
#: half-size resize (the region scaled back up) at 0.5-0.75 (20 LFW faces, an ad hoc script).
#: No 1.4: over 60 LFW faces read after x0.5 and after blur sigma 1, every face the
#: fallback opened opened at 0.6 (x0.5) or 1.0 (blur) first, and each sigma costs an unmarked face
#: a local search and a polish per start (~42 ms).
DEBLUR_SIGMAS = (0.6, 1.0)
#: Crop pixels per region pixel at which a reader deblurs: a face smaller than that in the image (a
#: down-scaled one) is scaled up to it first (cubic), the scale of LFW's faces (1.2-2.2, median 1.5).
DEBLUR_SCALE = 1.5


#: Crop pixels per image pixel at which a face without a codeword is re-detected for the deblurred
#: search's further starts, in order (:func:`_search_deblurred`). CenterFace's landmarks move with
#: the scale it sees a face at, and the embedder saw the face at the host's own scale, which a reader
#: does not know. After a half-size resize (30 LFW faces, an ad hoc script), the re-detection
#: in the whole image scaled back up x2 (the embedder's scale) lay a median 0.8 % (90th percentile
#: 2.4 %) in zoom and 0.9 (1.7) crop px from the mark, scaled x3 3.9 % (7.0 %) and 2.1 (5.3) px, in
#: the half-size image 2.5 % (6.1 %) and 2.4 (4.5) px; the local search and polish open a face from a
#: start up to ~4 % in zoom, 2 deg in turn or 3 crop px away, not beyond. Same marked images through
#: the reader (an ad hoc A/B, 60 LFW originals, fixed key), (1.5,) / (1.5, 1.2, 1.9) / these
#: five: x0.5 47 / 53 / 55 opened, blur sigma 1 56 / 59 / 60; refacex-anonymised hosts (40) x0.5
#: 37 / - / 39, blur 40 / - / 40, WebP 32 / - / 32.
DEBLUR_DETECT_SCALES = (1.5, 1.2, 1.9, 1.0, 2.4)


def _scaled_up(region: np.ndarray, factor: float) -> np.ndarray:
    """``region`` enlarged by ``factor`` (cubic), or as it is if ``factor <= 1``."""
    import cv2

    if factor <= 1.0:
        return region
    h, w = region.shape[:2]
    return cv2.resize(region, (int(round(w * factor)), int(round(h * factor))), interpolation=cv2.INTER_CUBIC)


def _before_axes(m: torch.Tensor, sx: float, sy: float, tx: float, ty: float) -> torch.Tensor:
    """``M o A`` for ``(B, 2, 3)`` affines, ``A(x, y) = (sx x + tx, sy y + ty)``."""
    out = m.clone()
    out[:, :, 2] += m[:, :, 0] * tx + m[:, :, 1] * ty
    out[:, :, 0] *= sx
    out[:, :, 1] *= sy
    return out


def _search_deblurred(
    rgb,
    todo: list[int],
    logits: np.ndarray,
    m: torch.Tensor,
    watermark,
    align,
    device,
    detector: FaceDetector | None = None,
    accept: Accept = is_codeword,
    own: bool = True,
) -> list[int]:
    """For the faces ``todo`` (readings ``logits (N, bits)`` in frames ``m (N, 2, 3)``, no codeword
    yet), search again in the face's region deblurred (:func:`~refacex_plugin.deblurring.wiener_deblur`)
    at each of :data:`DEBLUR_SIGMAS`, the region first scaled up to :data:`DEBLUR_SCALE` where the
    face is smaller: locally, polished, from the reading's frame, then from the face's re-detections
    in the region enlarged to each of :data:`DEBLUR_DETECT_SCALES` (with ``detector``; one detection
    at a time, only while no start has opened the face, and only starts not within
    :data:`SAME_START` of an earlier one); the first reading ``accept``-ed replaces the reading in place.
    Returns the faces still without a codeword. Without ``own``, the re-detections' starts only
    (the reading's own frame was searched before).

    Why: a blur or a down-scaling mixes each carrier block with its neighbours; the search's gains
    and falloffs scale carriers but cannot unmix them, a deconvolution does (module docstring of
    :mod:`~refacex_plugin.deblurring`). The re-detections: after a half-size resize the half-size
    image's re-detection often lies beyond a local search's reach of the mark, in zoom or turn more
    than in shift; a re-detection with the face enlarged lies nearer, nearest at the scale the
    embedder saw it at (:data:`DEBLUR_DETECT_SCALES`)."""
    h, w = rgb.shape[:2]
    left = []
    for i in todo:
        roi = face_footprints(m[i : i + 1], align, h, w)[0]
        face_accept = _face_accept(accept, i)
        if roi is None or _spent(face_accept):
            left.append(i)
            continue
        x0, y0 = max(roi[0] - 16, 0), max(roi[1] - 16, 0)  # room to search
        x1, y1 = min(roi[2] + 16, w), min(roi[3] + 16, h)
        crop_scale = float(torch.det(m[i, :, :2].double()).abs().sqrt())  # crop pixels per image pixel
        region = _scaled_up(rgb[y0:y1, x0:x1], crop_scale / DEBLUR_SCALE)
        ux, uy = region.shape[1] / (x1 - x0), region.shape[0] / (y1 - y0)
        # region pixel p was sampled at image point (p + 0.5) / u - 0.5 + (x0, y0) (OpenCV's convention)
        start = _before_axes(m[i : i + 1], 1 / ux, 1 / uy, x0 + 0.5 / ux - 0.5, y0 + 0.5 / uy - 0.5)
        starts = [start]
        if detector is not None:
            found = _redetections(rgb[y0:y1, x0:x1], m[i : i + 1] @ _shift(x0, y0), crop_scale, detector, align)
            starts = _distinct([start], ((lm + 0.5) * np.array([ux, uy], np.float32) - 0.5 for lm in found), align)
            if not own:
                next(starts)

        def in_image(mr, ux=ux, uy=uy, x0=x0, y0=y0):  # a frame of the region as a frame of the image
            return _before_axes(mr, ux, uy, ux * (0.5 - x0) - 0.5, uy * (0.5 - y0) - 0.5)

        read = _first_codeword(
            region,
            starts,
            watermark,
            align,
            device,
            lambda lg, mr, acc=face_accept, to=in_image: acc(lg, to(mr)),
            lambda acc=face_accept: _spent(acc),
        )
        if read is None:
            left.append(i)
        else:
            logits[i], m[i] = read[0], in_image(read[1])[0]
    return left


def _shift(x0: float, y0: float) -> torch.Tensor:
    """``(1, 3, 3)`` homogeneous translation by ``(x0, y0)``: ``m @ _shift(x0, y0)`` reads a region whose
    origin is the image point ``(x0, y0)`` as ``m (1, 2, 3)`` reads the image."""
    t = torch.eye(3, dtype=torch.float32)[None]
    t[0, 0, 2], t[0, 1, 2] = float(x0), float(y0)
    return t


def _redetections(region: np.ndarray, m: torch.Tensor, crop_scale: float, detector: FaceDetector, align: AlignConfig):
    """The face read in frame ``m (1, 2, 3)`` of ``region`` (``crop_scale`` crop pixels per region
    pixel) re-detected with the region enlarged to each of :data:`DEBLUR_DETECT_SCALES` crop pixels
    per pixel (never shrunk: a scale the face already exceeds reads the region as it is; each size
    once), lazily: yields its five landmarks ``(1, 5, 2)`` in ``region``'s pixels."""
    where = _frame_landmarks(m, align)
    h, w = region.shape[:2]
    sizes = set()
    for scale in DEBLUR_DETECT_SCALES:
        seen = _scaled_up(region, crop_scale / scale)
        if seen.shape in sizes:
            continue
        sizes.add(seen.shape)
        found = detector(np.ascontiguousarray(seen))
        if len(found) == 0:
            continue
        back = ((found.landmarks + 0.5) / np.array([seen.shape[1] / w, seen.shape[0] / h], np.float32) - 0.5).astype(np.float32)
        j = match_faces(where, Detections(found.boxes, found.scores, back))[0]
        if j is not None:
            yield back[j : j + 1]


#: Starts nearer than this to an earlier one (zoom, turn in degrees, shift in crop pixels) are not searched again.
SAME_START = (0.005, 0.25, 0.5)


def _distinct(starts: list[torch.Tensor], landmarks, align: AlignConfig):
    """``starts`` (``(1, 2, 3)`` frames), then the alignment of each of ``landmarks`` (``(1, 5, 2)``,
    consumed lazily) not within :data:`SAME_START` of an earlier start."""
    kept = list(starts)
    yield from kept
    for lm in landmarks:
        m = alignment_matrices(lm, align)
        if all((frame_offset(k, m, align.size / 2)[0] > np.asarray(SAME_START)).any() for k in kept):
            kept.append(m)
            yield m


def _first_codeword(region, starts, watermark, align, device, accept: Accept = is_codeword, spent=lambda: False):
    """The first reading of ``region`` that ``accept`` takes (frames in ``region``'s pixels): from
    each of ``starts`` (``(1, 2, 3)`` frames, an iterable consumed lazily, in order) the region
    deblurred at each of :data:`DEBLUR_SIGMAS` (in order), searched locally and polished; None if
    none is, or once ``spent()``."""
    from ..deblurring import wiener_deblur

    sharp = {}
    for start in starts:
        for sigma in DEBLUR_SIGMAS:
            if spent():
                return None
            if sigma not in sharp:
                sharp[sigma] = wiener_deblur(region, sigma)
            read = _refine(sharp[sigma], start, watermark, align, device, SYNC_STAGES[WIDE_STAGES:])
            if accept(read[0], read[1]):
                return read
            if spent():
                return None
            read = _polish(sharp[sigma], start, watermark, align, device, read[2])
            if accept(read[0], read[1]):
                return read
    return None


def read_marks(
    rgb: np.ndarray,
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    device="cpu",
    accept: Accept | None = None,
    detections: Detections | None = None,
    budget: int | None = None,
) -> tuple[Detections, np.ndarray, np.ndarray]:
    """:func:`read_from_image`, plus the frame each face is read in, as the five landmarks whose
    alignment is that frame ``(N, 5, 2)``: where the search registered the mark (the frame it was
    embedded and its payload bound in; sub-pixel placement for pasting a face back), or the
    re-detection for a watermark without a search. Each search ends at a reading ``accept`` takes
    (default :func:`is_codeword`; :func:`payload_opener` for a reader holding keys). A face whose
    local search found none is searched by the :data:`FALLBACKS`, in order, until one opens it or
    its ``budget`` of readings (default :data:`READ_BUDGET`; :data:`NEIGHBOUR_BUDGET` once another
    face of the image has opened) is spent. ``detections``: read these
    faces (``detector``'s, or some of them) instead of detecting ``rgb`` again."""
    from ..registration import settled_landmarks

    det = detector(rgb) if detections is None else detections
    accept = accept or is_codeword
    settled = settled_landmarks(rgb, det.landmarks, detector)
    start = alignment_matrices(settled, align)
    if not isinstance(watermark, SearchableWatermark):
        logits, m = face_logits(rgb, start, watermark, align, device, accept=accept)
        return det, logits, settled
    tallies = [ReadingBudget(accept, READ_BUDGET if budget is None else budget) for _ in range(len(det))]
    logits, m = np.zeros((len(det), watermark.bits), np.float32), start.clone()
    for i in range(len(det)):
        read = _search(rgb, start[i : i + 1], watermark, align, device, tallies[i], fallbacks=False)
        logits[i], m[i] = read[0], read[1][0]
    todo = [i for i in range(len(det)) if not tallies[i].taken]
    for fallback in FALLBACKS:
        if len(todo) < len(det):  # another face of the image opened: see NEIGHBOUR_BUDGET
            for i in todo:
                tallies[i].left = min(tallies[i].left, NEIGHBOUR_BUDGET - (tallies[i].readings - tallies[i].left))
        todo = [i for i in todo if not tallies[i].spent]
        if not todo:
            break
        todo = fallback(rgb, det, todo, logits, m, start, watermark, detector, align, device, tallies)
    return det, logits, _frame_landmarks(m, align)


def _search_beam(rgb, todo, logits, m, start, watermark, align, device, accept) -> list[int]:
    """For the faces ``todo``, :func:`_beam` around their start (``start (N, 2, 3)``, the settled
    re-detection); a reading ``accept``-ed replaces the reading in place. Returns the faces left."""
    left = []
    for i in todo:
        read = _beam(rgb, start[i : i + 1], watermark, align, device, _face_accept(accept, i))
        if read is None:
            left.append(i)
        else:
            logits[i], m[i] = read[0], read[1][0]
    return left


def _search_wide(rgb, todo, logits, m, start, watermark, align, device, accept) -> list[int]:
    """For the faces ``todo``, :func:`_wide` from their start; its reading replaces the reading in
    place if ``accept``-ed or more confident. Returns the faces left."""
    left = []
    for i in todo:
        *read, taken = _wide(rgb, start[i : i + 1], watermark, align, device, _face_accept(accept, i))
        if taken or float(np.abs(read[0]).mean()) > float(np.abs(logits[i]).mean()):
            logits[i], m[i] = read[0], read[1][0]
        if not taken:
            left.append(i)
    return left


#: A face the local search did not open is searched by these, in order, within its
#: :data:`READ_BUDGET`; each ``(rgb, det, todo, logits, m, start, watermark, detector, align, device,
#: accepts) -> todo left``. Likely and cheap first: deblurring from the reading's own frame opens
#: most faces a resize or a blur weakened, in its first readings; re-detections at other scales
#: (an upscale; marks embedded in unsettled frames) and the clipping estimate (brightening; no
#: reading at all where nothing clipped) take a reading or three; the beam opens most of what JPEG
#: or WebP moved off the local search's grid (:data:`SEARCH_BEAM`), from its best starts first;
#: the wide search and the deblurring's further starts (a detection each) come last. Measured on
#: 16 marked LFW images a row (pixelate hosts; resize x0.5, blur sigma 1, WebP Q80), every reader
#: fallback run to its end: of the faces the fallbacks opened, the deblurring opened them in its
#: first 3 readings, the beam in its first 9, the wide search 1.
FALLBACKS = (
    lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc: _search_deblurred(
        rgb, todo, logits, m, wm, align, device, None, acc
    ),
    lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc: _search_rescaled(
        rgb, det, todo, logits, m, wm, detector, align, device, acc
    ),
    lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc: _search_unclipped(
        rgb, todo, logits, m, wm, align, device, acc
    ),
    lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc: _search_beam(
        rgb, todo, logits, m, start, wm, align, device, acc
    ),
    lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc: _search_wide(
        rgb, todo, logits, m, start, wm, align, device, acc
    ),
    lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc: _search_deblurred(
        rgb, todo, logits, m, wm, align, device, detector, acc, own=False
    ),
)


@dataclass
class FacePayload:
    """What one re-detected face carries.

    ``found``: the channel bits error-correct to a valid codeword (an unmarked face does so with
    probability under 2^-12: at most :data:`READ_BUDGET` readings - local, polished, then the
    :data:`FALLBACKS` - of 2^-18 each); ``authenticated``: they also open under one
    of the given keys (a reader holding keys tries each of those readings with them:
    :func:`payload_opener`).
    ``payload`` is the opened :class:`~refacex_plugin.payload.Payload` (secret: never print its code).
    ``frame``: the ``(5, 2)`` landmarks of the frame the face was read in: where the reader's
    search registered the mark (the embedder's frame as it lies in this image), or the
    re-detected ``landmarks`` for a watermark without a search.
    """

    index: int
    box: list[float]
    landmarks: np.ndarray
    found: bool
    authenticated: bool
    payload: object | None = None
    bit_errors: int | None = None  # channel bits corrected, when authenticated
    frame: np.ndarray | None = None  # see above; None only when built by hand
    too_small: bool = False  # not read: eyes closer than MIN_READ_EYES pixels

    def to_dict(self) -> dict:
        from ..payload import KIND_NAMES

        p = self.payload
        return {
            "face": self.index,
            "box": [round(float(v), 1) for v in self.box],
            "payload_found": self.found,
            "authenticated": self.authenticated,
            "key_id": getattr(p, "key_id", None),
            "version": getattr(p, "version", None),
            "kind": KIND_NAMES.get(getattr(p, "kind", None)),
            "bit_errors": self.bit_errors,
            "too_small": self.too_small,
        }


def read_payloads(
    rgb: np.ndarray,
    keys: list[bytes],
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    device="cpu",
    only: Sequence[int] | None = None,
    budget: int | None = None,
) -> list[FacePayload]:
    """Detect every face of ``rgb``, read its channel bits and open them with ``keys`` (the search
    for each face's mark also ends at a reading that opens: :func:`payload_opener`). ``only``:
    read just these of the detected faces (their indices; the list returned holds only them).
    ``budget``: readings a face at most (:data:`READ_BUDGET`).
    A face whose eyes lie under :data:`MIN_READ_EYES` pixels apart is listed, not read
    (``too_small``)."""
    from .. import payload as P

    opener = payload_opener(rgb, keys, align) if keys else None
    found_all = detector(rgb)
    index = np.arange(len(found_all)) if only is None else np.array(sorted(set(only)), dtype=int)
    small = eye_distances(found_all.landmarks[index]) < MIN_READ_EYES
    skipped = [
        FacePayload(int(k), found_all.boxes[k].tolist(), found_all.landmarks[k], False, False, frame=found_all.landmarks[k], too_small=True)
        for k in index[small]
    ]
    index = index[~small]
    if len(index) == 0:
        return skipped
    det, logits, frames = read_marks(rgb, watermark, detector, align, device, opener, found_all.select(index), budget=budget)
    out = []
    for i in range(len(det)):
        opened = opener.opened(logits[i], frames[i : i + 1]) if keys else None  # bound where the embedder bound it
        errors = None
        if opened is not None:
            resealed = P.seal(opened.code, _key_for(opened, keys), opened.kind, opened.binding, opened.version)
            errors = int(((logits[i] > 0).astype(np.uint8) != resealed).sum())
        found = opened is not None or P.correct_channel((logits[i] > 0).astype(np.uint8)) is not None
        out.append(
            FacePayload(int(index[i]), det.boxes[i].tolist(), det.landmarks[i], found, opened is not None, opened, errors, frames[i])
        )
    return sorted(out + skipped, key=lambda f: f.index)


def _key_for(opened, keys: list[bytes]) -> bytes:
    from ..keys import key_id

    return next(k for k in keys if key_id(k) == opened.key_id)
