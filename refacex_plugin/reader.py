"""The reader: detect -> read each face's mark -> open its payload with the keys -> recover.

:class:`FaceReader` finds the payloads an :class:`~refacex_plugin.writer.Embedder` hid, after the
image went through the world (re-encoding, resizing, cropping), and authenticates them. Exact
recovery from a vault is :func:`refacex_plugin.files.recover_file`'s (a payload names the vault
record); :meth:`FaceReader.recover_image` is the approximate one, from a recovery code carried in
the face itself (the ``generator`` method only).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .detection import DEFAULT_DETECTOR, DetectorConfig, FaceDetector, load_detector, reader_config
from .geometry import AlignConfig, alignment_matrices, extract_crops, face_mask, paste_crops
from .image_io import as_rgb_array
from .records import RecoveryResult, resolve_device
from .watermark import Watermark


class FaceReader:
    """Reads and opens the payloads of every face of an image.

    Args:
        detector: finds the faces (take candidates down to
            :data:`~refacex_plugin.detection.READER_THRESHOLD`: anonymised faces score lower).
        watermark: the watermark the payloads were hidden with.
        earlier: watermarks also tried, with a small search budget, on faces ``watermark`` finds
            no payload in (marks written while another watermark was the default).
        keys: the secret keys payloads are opened with (never shown or logged).
        align: canonical crop configuration (the writer's).
        device: where the crops are computed.
    """

    def __init__(
        self,
        detector: FaceDetector,
        watermark: Watermark,
        *,
        earlier: tuple[Watermark, ...] = (),
        keys: list[bytes] | tuple = (),
        align: AlignConfig = AlignConfig(),
        device: torch.device = torch.device("cpu"),
    ):
        self.detector = detector
        self.watermark = watermark
        self.earlier = tuple(w for w in earlier if w.name != watermark.name)
        self._keys = list(keys)
        self.align = align
        self.device = device

    @property
    def has_key(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:  # never shows a key
        return f"FaceReader(watermark={self.watermark.name!r}, detector={self.detector.name!r}, keys={len(self._keys)})"

    def read_payloads(self, image: np.ndarray | Image.Image, keys: list[bytes] | tuple = ()) -> list:
        """Per detected face, a :class:`~refacex_plugin.channel.FacePayload`: whether a payload is
        there and whether it authenticates under one of ``keys`` (this reader's if none given)."""
        from .channel import EARLIER_READ_BUDGET, read_payloads

        rgb, keys = as_rgb_array(image), list(keys) or self._keys
        faces = read_payloads(rgb, keys, self.watermark, self.detector, self.align, self.device)
        for watermark in self.earlier:
            missing = [f.index for f in faces if not f.found and not f.too_small]
            if not missing:
                break
            again = read_payloads(rgb, keys, watermark, self.detector, self.align, self.device, only=missing, budget=EARLIER_READ_BUDGET)
            found = {f.index: f for f in again if f.found}
            faces = [found.get(f.index, f) for f in faces]
        return faces

    def recover_image(self, image: np.ndarray | Image.Image) -> RecoveryResult:
        """Restore, approximately, every face whose payload authenticates and holds a recovery code,
        with the recovery network (vault references are :func:`~refacex_plugin.files.recover_file`'s)."""
        from . import operators, payload

        rgb = as_rgb_array(image)
        result = RecoveryResult(rgb.copy())
        faces = self.read_payloads(rgb)
        ok = [f for f in faces if f.authenticated and f.payload.kind == payload.KIND_RECOVERY_CODE]
        for f in faces:
            if f not in ok:
                result.failed.append((f.index, _why_not(f)))
        if ok:
            m = alignment_matrices(np.stack([f.landmarks for f in ok]), self.align)
            crops = extract_crops(rgb, m, self.align, self.device)
            with torch.inference_mode():
                restored = operators.recover(crops, np.stack([f.payload.code for f in ok]))
            mask = face_mask(self.align, 1, self.device).expand(len(ok), -1, -1, -1)
            result.image = paste_crops(rgb, restored, m, self.align, mask)
            result.restored = [f.index for f in ok]
        return result


def _why_not(face) -> str:
    if face.too_small:
        return "face too small to carry a payload"
    if not face.found:
        return "no payload"
    if not face.authenticated:
        return "payload does not authenticate with this key"
    return "payload is a vault reference (use --vault)"


def make_reader(
    key: bytes | None = None,
    *,
    watermark: str | None = None,
    detector: str | FaceDetector = DEFAULT_DETECTOR,
    detector_config: DetectorConfig = DetectorConfig(),
    align: AlignConfig = AlignConfig(),
    device: str | None = "cpu",
) -> FaceReader:
    """A :class:`FaceReader` from names: the named watermark, or the default and the earlier
    defaults (:data:`~refacex_plugin.watermark.EARLIER_DEFAULTS`) that load; the detector taking
    candidates down to :func:`~refacex_plugin.detection.reader_config`'s threshold."""
    from .errors import ModelNotAvailableError
    from .watermark import EARLIER_DEFAULTS, load_watermark

    earlier = []
    for name in () if watermark else EARLIER_DEFAULTS:
        try:
            earlier.append(load_watermark(name))
        except ModelNotAvailableError:
            continue
    found = load_detector(detector, reader_config(detector_config)) if isinstance(detector, str) else detector
    keys = [key] if key is not None else []
    return FaceReader(found, load_watermark(watermark), earlier=tuple(earlier), keys=keys, align=align, device=resolve_device(device))
