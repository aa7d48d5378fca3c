"""What a reader tries on a face its local search did not open: each fallback undoes one kind of
distortion (a resize, a blur, clipped brightness, a codec's shift off the search's grid) and
searches again. :data:`FALLBACKS` names them; :attr:`~refacex_plugin.channel.ReaderConfig.fallbacks`
picks which run, in which order.

Each fallback takes the faces ``todo`` (indices into the image's detections) with their readings
so far (``logits (N, bits)`` in frames ``m (N, 2, 3)``), writes a reading its per-face ``accept``
takes into ``logits`` and ``m`` in place, and returns the faces still left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..detection import Detections, FaceDetector
from ..geometry import AlignConfig, alignment_matrices, face_footprints, frame_offset, translate_before
from ..watermark import SearchableWatermark
from .config import ReaderConfig
from .faces import frame_landmarks, match_faces
from .opening import Accept, face_accept, is_codeword, is_spent
from .search import beam, polish, refine, wide_search


def _search_rescaled(
    rgb: np.ndarray,
    det: Detections,
    todo: list[int],
    logits: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    detector: FaceDetector,
    align: AlignConfig,
    device,
    accept: Accept | Sequence[Accept] = is_codeword,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> list[int]:
    """For the faces ``todo`` of ``det`` (their readings ``logits (N, bits)``, in frames ``m (N, 2,
    3)``, none accepted), re-detect ``rgb`` at each of :attr:`~ReaderConfig.rescaled_starts` and search locally
    from the face's re-detection there; the first reading ``accept``-ed replaces the reading in place.
    Returns the faces still without a codeword."""
    import cv2

    todo = list(todo)
    h, w = rgb.shape[:2]
    for s in config.rescaled_starts:
        if not [i for i in todo if not is_spent(face_accept(accept, i))]:
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
            if j is None or is_spent(face_accept(accept, i)):
                continue
            read = refine(rgb, alignment_matrices(back[j : j + 1], align), watermark, align, device, config.local_stages, config=config)
            if face_accept(accept, i)(read[0], read[1]):
                logits[i], m[i] = read[0], read[1][0]
                todo.remove(i)
    return todo


def _search_unclipped(
    rgb: np.ndarray,
    todo: list[int],
    logits: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    accept: Accept | Sequence[Accept] = is_codeword,
    *,
    config: ReaderConfig = ReaderConfig(),
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
        start = translate_before(m[i : i + 1], float(x0), float(y0))
        read = refine(patch, start, watermark, align, device, config.local_stages, config=config)
        return read[0], translate_before(read[1], -float(x0), -float(y0))

    h, w = rgb.shape[:2]
    left = []
    for i in todo:
        read = None if is_spent(face_accept(accept, i)) else unclipped_reading(i)
        if read is not None and face_accept(accept, i)(read[0], read[1]):
            logits[i], m[i] = read[0], read[1][0]
        else:
            left.append(i)
    return left


def _scaled_up(region: np.ndarray, factor: float) -> np.ndarray:
    """``region (H, W, C)`` enlarged by ``factor`` (cubic), or as it is if ``factor <= 1``."""
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
    rgb: np.ndarray,
    todo: list[int],
    logits: np.ndarray,
    m: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    detector: FaceDetector | None = None,
    accept: Accept | Sequence[Accept] = is_codeword,
    own: bool = True,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> list[int]:
    """For the faces ``todo`` (readings ``logits (N, bits)`` in frames ``m (N, 2, 3)``, no codeword
    yet), search again in the face's region deblurred (:func:`~refacex_plugin.deblurring.wiener_deblur`)
    at each of :attr:`~ReaderConfig.deblur_sigmas`, the region first scaled up to
    :attr:`~ReaderConfig.deblur_scale` where the face is smaller: locally, polished, from the
    reading's frame, then from the face's re-detections in the region enlarged to each of
    :attr:`~ReaderConfig.deblur_detect_scales` (with ``detector``; one detection at a time, only
    while no start has opened the face, and only starts not within :attr:`~ReaderConfig.same_start`
    of an earlier one); the first reading ``accept``-ed replaces the reading in place.
    Returns the faces still without a codeword. Without ``own``, the re-detections' starts only
    (the reading's own frame was searched before).

    Why: a blur or a down-scaling mixes each carrier block with its neighbours; the search's gains
    and falloffs scale carriers but cannot unmix them, a deconvolution does (module docstring of
    :mod:`~refacex_plugin.deblurring`). The re-detections: after a half-size resize the half-size
    image's re-detection often lies beyond a local search's reach of the mark, in zoom or turn more
    than in shift; a re-detection with the face enlarged lies nearer, nearest at the scale the
    embedder saw it at (:attr:`~ReaderConfig.deblur_detect_scales`)."""
    h, w = rgb.shape[:2]
    left = []
    for i in todo:
        roi = face_footprints(m[i : i + 1], align, h, w)[0]
        accept_i = face_accept(accept, i)
        if roi is None or is_spent(accept_i):
            left.append(i)
            continue
        x0, y0 = max(roi[0] - 16, 0), max(roi[1] - 16, 0)  # room to search
        x1, y1 = min(roi[2] + 16, w), min(roi[3] + 16, h)
        crop_scale = float(torch.det(m[i, :, :2].double()).abs().sqrt())  # crop pixels per image pixel
        region = _scaled_up(rgb[y0:y1, x0:x1], crop_scale / config.deblur_scale)
        ux, uy = region.shape[1] / (x1 - x0), region.shape[0] / (y1 - y0)
        # region pixel p was sampled at image point (p + 0.5) / u - 0.5 + (x0, y0) (OpenCV's convention)
        start = _before_axes(m[i : i + 1], 1 / ux, 1 / uy, x0 + 0.5 / ux - 0.5, y0 + 0.5 / uy - 0.5)
        starts = [start]
        if detector is not None:
            found = _redetections(rgb[y0:y1, x0:x1], m[i : i + 1] @ _shift(x0, y0), crop_scale, detector, align, config=config)
            starts = _distinct([start], ((lm + 0.5) * np.array([ux, uy], np.float32) - 0.5 for lm in found), align, config=config)
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
            lambda lg, mr, acc=accept_i, to=in_image: acc(lg, to(mr)),
            lambda acc=accept_i: is_spent(acc),
            config=config,
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


def _redetections(
    region: np.ndarray,
    m: torch.Tensor,
    crop_scale: float,
    detector: FaceDetector,
    align: AlignConfig,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> Iterator[np.ndarray]:
    """The face read in frame ``m (1, 2, 3)`` of ``region (H, W, 3)`` (``crop_scale`` crop pixels
    per region pixel) re-detected with the region enlarged to each of
    :attr:`~ReaderConfig.deblur_detect_scales` crop pixels per pixel (never shrunk: a scale the
    face already exceeds reads the region as it is; each size once), lazily: yields its five
    landmarks ``(1, 5, 2)`` in ``region``'s pixels."""
    where = frame_landmarks(m, align)
    h, w = region.shape[:2]
    sizes = set()
    for scale in config.deblur_detect_scales:
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


def _distinct(
    starts: list[torch.Tensor], landmarks: Iterable[np.ndarray], align: AlignConfig, *, config: ReaderConfig = ReaderConfig()
) -> Iterator[torch.Tensor]:
    """``starts`` (``(1, 2, 3)`` frames), then the alignment of each of ``landmarks`` (``(1, 5, 2)``,
    consumed lazily) not within :attr:`~ReaderConfig.same_start` of an earlier start."""
    kept = list(starts)
    yield from kept
    for lm in landmarks:
        m = alignment_matrices(lm, align)
        if all((frame_offset(k, m, align.size / 2)[0] > np.asarray(config.same_start)).any() for k in kept):
            kept.append(m)
            yield m


def _first_codeword(
    region: np.ndarray,
    starts: Iterable[torch.Tensor],
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    accept: Accept = is_codeword,
    spent: Callable[[], bool] = lambda: False,
    *,
    config: ReaderConfig = ReaderConfig(),
) -> tuple[np.ndarray, torch.Tensor, tuple] | None:
    """The first reading of ``region (H, W, 3)`` that ``accept`` takes (frames in ``region``'s
    pixels; as :func:`~refacex_plugin.channel.search.refine` returns it): from each of ``starts``
    (``(1, 2, 3)`` frames, an iterable consumed lazily, in order) the region deblurred at each of
    :attr:`~ReaderConfig.deblur_sigmas` (in order), searched locally and polished; None if none
    is, or once ``spent()``."""
    from ..deblurring import wiener_deblur

    sharp = {}
    for start in starts:
        for sigma in config.deblur_sigmas:
            if spent():
                return None
            if sigma not in sharp:
                sharp[sigma] = wiener_deblur(region, sigma)
            read = refine(sharp[sigma], start, watermark, align, device, config.local_stages, config=config)
            if accept(read[0], read[1]):
                return read
            if spent():
                return None
            read = polish(sharp[sigma], start, watermark, align, device, read[2], config=config)
            if accept(read[0], read[1]):
                return read
    return None


def _search_beam(
    rgb: np.ndarray,
    todo: list[int],
    logits: np.ndarray,
    m: torch.Tensor,
    start: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    accept: Accept | Sequence[Accept],
    *,
    config: ReaderConfig = ReaderConfig(),
) -> list[int]:
    """For the faces ``todo``, :func:`~refacex_plugin.channel.search.beam` around their start
    (``start (N, 2, 3)``, the settled re-detection); a reading ``accept``-ed replaces the reading
    (``logits (N, bits)``, ``m (N, 2, 3)``) in place. Returns the faces left."""
    left = []
    for i in todo:
        read = beam(rgb, start[i : i + 1], watermark, align, device, face_accept(accept, i), config=config)
        if read is None:
            left.append(i)
        else:
            logits[i], m[i] = read[0], read[1][0]
    return left


def _search_wide(
    rgb: np.ndarray,
    todo: list[int],
    logits: np.ndarray,
    m: torch.Tensor,
    start: torch.Tensor,
    watermark: SearchableWatermark,
    align: AlignConfig,
    device,
    accept: Accept | Sequence[Accept],
    *,
    config: ReaderConfig = ReaderConfig(),
) -> list[int]:
    """For the faces ``todo``, :func:`~refacex_plugin.channel.search.wide_search` from their start
    (``start (N, 2, 3)``); its reading replaces the reading (``logits (N, bits)``, ``m (N, 2, 3)``)
    in place if ``accept``-ed or more confident. Returns the faces left."""
    left = []
    for i in todo:
        *read, taken = wide_search(rgb, start[i : i + 1], watermark, align, device, face_accept(accept, i), config=config)
        if taken or float(np.abs(read[0]).mean()) > float(np.abs(logits[i]).mean()):
            logits[i], m[i] = read[0], read[1][0]
        if not taken:
            left.append(i)
    return left


#: ``(rgb, det, todo, logits, m, start, watermark, detector, align, device, accepts, config) -> todo
#: left``: ``det`` the image's detections, ``start (N, 2, 3)`` their settled re-detections'
#: frames, ``accepts`` one ``accept`` per face (:class:`~refacex_plugin.channel.ReadingBudget`).
Fallback = Callable[..., list[int]]

#: The fallbacks by name, for :attr:`~refacex_plugin.channel.ReaderConfig.fallbacks` (whose
#: comment says why they run in its order). ``deblurred`` searches the deblurred region from the
#: reading's own frame, ``deblurred_redetected`` from the face's re-detections in it.
FALLBACKS: dict[str, Fallback] = {
    "deblurred": lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc, config: _search_deblurred(
        rgb, todo, logits, m, wm, align, device, None, acc, config=config
    ),
    "rescaled": lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc, config: _search_rescaled(
        rgb, det, todo, logits, m, wm, detector, align, device, acc, config=config
    ),
    "unclipped": lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc, config: _search_unclipped(
        rgb, todo, logits, m, wm, align, device, acc, config=config
    ),
    "beam": lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc, config: _search_beam(
        rgb, todo, logits, m, start, wm, align, device, acc, config=config
    ),
    "wide": lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc, config: _search_wide(
        rgb, todo, logits, m, start, wm, align, device, acc, config=config
    ),
    "deblurred_redetected": lambda rgb, det, todo, logits, m, start, wm, detector, align, device, acc, config: _search_deblurred(
        rgb, todo, logits, m, wm, align, device, detector, acc, own=False, config=config
    ),
}
