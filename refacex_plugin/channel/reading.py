"""Reading a whole image: detect every face, search each for its mark (then the fallbacks, within
the face's budget of readings) and open what it carries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..detection import Detections, FaceDetector
from ..geometry import AlignConfig, alignment_matrices
from ..watermark import SearchableWatermark, Watermark
from .config import ReaderConfig
from .faces import eye_distances, frame_landmarks
from .fallbacks import FALLBACKS
from .opening import Accept, ReadingBudget, is_codeword, payload_opener
from .search import face_logits, search_face


def read_marks(
    rgb: np.ndarray,
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    device="cpu",
    accept: Accept | None = None,
    detections: Detections | None = None,
    budget: int | None = None,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[Detections, np.ndarray, np.ndarray]:
    """:func:`read_from_image`, plus the frame each face is read in, as the five landmarks whose
    alignment is that frame ``(N, 5, 2)``: where the search registered the mark (the frame it was
    embedded and its payload bound in; sub-pixel placement for pasting a face back), or the
    re-detection for a watermark without a search. Each search ends at a reading ``accept`` takes
    (default :func:`~refacex_plugin.channel.is_codeword`;
    :func:`~refacex_plugin.channel.payload_opener` for a reader holding keys). A face whose local
    search found none is searched by the :attr:`~ReaderConfig.fallbacks`, in order, until one
    opens it or its ``budget`` of readings (default :attr:`~ReaderConfig.read_budget`;
    :attr:`~ReaderConfig.neighbour_budget` once another face of the image has opened) is spent.
    ``detections``: read these faces (``detector``'s, or some of them) instead of detecting ``rgb``
    again. Returns ``(detections, logits (N, bits), frames (N, 5, 2))``."""
    from ..registration import settled_landmarks

    unknown = [name for name in config.fallbacks if name not in FALLBACKS]
    if unknown:
        raise ValueError(f"unknown reader fallbacks {unknown} (choose from {', '.join(FALLBACKS)})")
    det = detector(rgb) if detections is None else detections
    accept = accept or is_codeword
    settled = settled_landmarks(rgb, det.landmarks, detector)
    start = alignment_matrices(settled, align)
    if not isinstance(watermark, SearchableWatermark):
        logits, m = face_logits(rgb, start, watermark, align, device, accept=accept, config=config)
        return det, logits, settled
    tallies = [ReadingBudget(accept, config.read_budget if budget is None else budget) for _ in range(len(det))]
    logits, m = np.zeros((len(det), watermark.bits), np.float32), start.clone()
    for i in range(len(det)):
        read = search_face(rgb, start[i : i + 1], watermark, align, device, tallies[i], fallbacks=False, config=config)
        logits[i], m[i] = read[0], read[1][0]
    todo = [i for i in range(len(det)) if not tallies[i].taken]
    for name in config.fallbacks:
        if len(todo) < len(det):  # another face of the image opened: see ReaderConfig.neighbour_budget
            for i in todo:
                tallies[i].left = min(tallies[i].left, config.neighbour_budget - (tallies[i].readings - tallies[i].left))
        todo = [i for i in todo if not tallies[i].spent]
        if not todo:
            break
        todo = FALLBACKS[name](rgb, det, todo, logits, m, start, watermark, detector, align, device, tallies, config)
    return det, logits, frame_landmarks(m, align)


def read_from_image(
    rgb: np.ndarray,
    watermark: Watermark,
    detector: FaceDetector,
    align: AlignConfig = AlignConfig(),
    device="cpu",
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[Detections, np.ndarray]:
    """Detect every face of ``rgb (H, W, 3)`` and read its channel-bit logits (searching for the
    mark around each face, :func:`~refacex_plugin.channel.face_logits`): ``(detections, logits (N, bits))``."""
    det, logits, _ = read_marks(rgb, watermark, detector, align, device, config=config)
    return det, logits


@dataclass
class FacePayload:
    """What one re-detected face carries.

    ``found``: the channel bits error-correct to a valid codeword (an unmarked face does so with
    probability under 2^-12: at most :attr:`~ReaderConfig.read_budget` readings - local, polished,
    then the :attr:`~ReaderConfig.fallbacks` - of 2^-18 each); ``authenticated``: they also open
    under one of the given keys (a reader holding keys tries each of those readings with them:
    :func:`~refacex_plugin.channel.payload_opener`).
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
    too_small: bool = False  # not read: eyes closer than ReaderConfig.min_read_eyes pixels

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
    *,
    config: ReaderConfig = ReaderConfig(),
) -> list[FacePayload]:
    """Detect every face of ``rgb (H, W, 3)``, read its channel bits and open them with ``keys``
    (with :attr:`~ReaderConfig.open_while_searching`, the search for each face's mark also ends at
    a reading that opens: :func:`~refacex_plugin.channel.payload_opener`). ``only``: read just
    these of the detected faces (their indices; the list returned holds only them). ``budget``:
    readings a face at most (:attr:`~ReaderConfig.read_budget`). A face whose eyes lie under
    :attr:`~ReaderConfig.min_read_eyes` pixels apart is listed, not read (``too_small``)."""
    from .. import payload

    opener = payload_opener(rgb, keys, align) if keys else None
    found_all = detector(rgb)
    index = np.arange(len(found_all)) if only is None else np.array(sorted(set(only)), dtype=int)
    small = eye_distances(found_all.landmarks[index]) < config.min_read_eyes
    skipped = [
        FacePayload(int(k), found_all.boxes[k].tolist(), found_all.landmarks[k], False, False, frame=found_all.landmarks[k], too_small=True)
        for k in index[small]
    ]
    index = index[~small]
    if len(index) == 0:
        return skipped
    accept = opener if config.open_while_searching else None
    det, logits, frames = read_marks(rgb, watermark, detector, align, device, accept, found_all.select(index), budget=budget, config=config)
    out = []
    for i in range(len(det)):
        opened = opener.opened(logits[i], frames[i : i + 1]) if keys else None  # bound where the embedder bound it
        errors = None
        if opened is not None:
            resealed = payload.seal(opened.code, _key_for(opened, keys), opened.kind, opened.binding, opened.version)
            errors = int(((logits[i] > 0).astype(np.uint8) != resealed).sum())
        found = opened is not None or payload.correct_channel((logits[i] > 0).astype(np.uint8)) is not None
        out.append(
            FacePayload(int(index[i]), det.boxes[i].tolist(), det.landmarks[i], found, opened is not None, opened, errors, frames[i])
        )
    return sorted(out + skipped, key=lambda f: f.index)


def _key_for(opened, keys: list[bytes]) -> bytes:
    """The one of ``keys`` whose id ``opened`` (a payload) names."""
    from ..keys import key_id

    return next(k for k in keys if key_id(k) == opened.key_id)
