"""The writer: detect -> align -> anonymise -> paste back, then (with a key) embed -> paste.

:class:`FaceWriter` is DeepPrivacy2's shape on one image: a detector finds the faces, each is
cut out as an aligned crop, an :class:`~refacex_plugin.anonymised.Anonymiser` changes who is in
it and the crop is pasted back under the face mask, so pixels outside the masks stay
byte-identical. An :class:`Embedder` then seals a payload per face with the key and hides it in
the face for a :class:`~refacex_plugin.reader.FaceReader` to find. :func:`make_writer` builds both
from names.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from .anonymised import Anonymiser
from .anonymisers import default_method, get_anonymiser
from .detection import DEFAULT_DETECTOR, Detections, DetectorConfig, FaceDetector, load_detector, reader_config
from .errors import RefacexError
from .geometry import AlignConfig, alignment_matrices, extract_crops, face_footprints, face_mask, paste_crops, warp_mask_to_image
from .image_io import as_rgb_array
from .records import FaceRecord, ImageResult, resolve_device
from .watermark import Watermark


@dataclass
class Embedder:
    """Seals each face's code with ``key`` and hides it in the face with ``watermark``, in the
    frame ``reader`` (the reading detector) will find the face in. ``strength``: the watermark's
    invisibility/robustness dial (1.0 = the shipped, benchmarked setting)."""

    key: bytes = field(repr=False)
    watermark: Watermark
    reader: FaceDetector
    align: AlignConfig = AlignConfig()
    strength: float = 1.0
    device: torch.device = torch.device("cpu")

    def __post_init__(self):
        if not self.watermark.variable_strength and self.strength != 1.0:
            raise RefacexError(f"watermark {self.watermark.name!r} has a fixed strength: leave --watermark-strength at 1")

    def embed(self, image: np.ndarray, landmarks: np.ndarray, codes: list[np.ndarray], kind: int):
        """Embed one payload per face.

        Args:
            image: ``(H, W, 3) uint8`` RGB, the anonymised image.
            landmarks: ``(N, 5, 2)`` the faces, as :meth:`FaceWriter.anonymise_image` reported them.
            codes: per face, ``(CODE_BITS,)`` 0/1 for a recovery code or ``(REF_BITS,)`` for a vault reference.
            kind: :data:`~refacex_plugin.payload.KIND_RECOVERY_CODE` or ``KIND_VAULT_REF``.

        Returns:
            :class:`~refacex_plugin.channel.EmbedResult` (image, per-face status, changed regions
            and the frames a reader will find the faces in).
        """
        from .channel import embed_codes

        return embed_codes(
            as_rgb_array(image), landmarks, codes, self.key, kind, self.watermark, self.reader, self.align, self.strength, self.device
        )

    def survives(self, embedded, encoded: np.ndarray) -> bool:
        """Whether every payload that read back in ``embedded`` (an :class:`EmbedResult`) still does
        in ``encoded`` (the image as the written file decodes): no face has more wrong channel bits
        than the error correction repairs. Read where it was embedded: a few ms a face, where a
        searching reader would take seconds."""
        from . import payload
        from .channel import face_logits

        keep = [i for i, status in enumerate(embedded.status) if status == "embedded"]
        if not keep:
            return True
        m = alignment_matrices(np.asarray(embedded.frames)[keep], self.align)
        bits = np.asarray(embedded.bits)[keep]
        wrong = [
            ((face_logits(rgb, m, self.watermark, self.align, self.device, sync=False)[0] > 0) != bits).sum(axis=1)
            for rgb in (embedded.image, encoded)
        ]
        return not bool((wrong[1] > np.maximum(wrong[0], payload.ECC.t)).any())


#: Detections scored from here up to the detector's threshold count as faces when dlib's 68-point
#: fit on their aligned crop lands where the detector's 5 points say the features are
#: (:func:`~refacex_plugin.composite.fallback.fit_error`): a bystander half in view or out of focus
#: scores low, and leaving a real face untouched is the worse error. On 400 LFW photos, 42
#: detections scored 0.3-0.5, about half of them partial or blurred real faces (checked by eye); 40
#: passed the fit. The composite gives such faces its mosaic (``CompositeConfig.min_score``).
CONFIRM_FROM = 0.3


class FaceConfirmer:
    """Is there a face where an aligned crop says? dlib's 68 points must fit the crop's 5."""

    def __init__(self) -> None:
        from .composite.mesh import CropLandmarks

        self._landmarks = CropLandmarks()

    def __call__(self, crop: np.ndarray) -> bool:
        """``crop (S, S, 3) uint8`` aligned on a candidate face -> whether its landmarks fit."""
        from .composite.config import CompositeConfig
        from .composite.fallback import fit_error

        return fit_error(self._landmarks(crop), AlignConfig(size=crop.shape[0])) <= CompositeConfig.max_fit_error


class FaceWriter:
    """Anonymises every face of an image, and with an :class:`Embedder`, marks it.

    Args:
        anonymiser: what changes each aligned crop (already holding its donor policy).
        detector: finds the faces.
        align: canonical crop configuration.
        strength: privacy/utility dial passed to the anonymiser.
        embedder: seals and hides payloads (None: no key, nothing embedded).
        keep_landmarks: move a drawn face's features onto the original's 68 landmarks afterwards
            (for anonymisers with ``warp_to_landmarks``; :mod:`~refacex_plugin.landmarks`).
        confident: detections scored below this (the detector may return them down to its own
            threshold) are kept only when a :class:`FaceConfirmer` finds a face in their crop;
            None keeps every detection.
        device: where the crops are computed.
    """

    def __init__(
        self,
        anonymiser: Anonymiser,
        detector: FaceDetector,
        *,
        align: AlignConfig = AlignConfig(),
        strength: float = 1.0,
        embedder: Embedder | None = None,
        keep_landmarks: bool = False,
        device: torch.device = torch.device("cpu"),
        confident: float | None = None,
    ):
        self.anonymiser = anonymiser
        self.confident = confident
        self._confirmer = FaceConfirmer() if confident is not None else None  # loads the 68-point model (~1.5 s)
        self.detector = detector
        self.align = align
        self.strength = strength
        self.embedder = embedder
        self.device = device
        self.keep_landmarks = keep_landmarks and getattr(anonymiser, "warp_to_landmarks", False)
        self._mask = face_mask(align, 1, device)
        self._landmarks68 = None
        self._loading = threading.Lock()  # a folder run's threads share a writer; the 68-point model loads once

    @property
    def method(self) -> str:
        return self.anonymiser.name

    @property
    def has_key(self) -> bool:
        return self.embedder is not None

    def __repr__(self) -> str:  # never shows the key
        return f"FaceWriter(method={self.method!r}, detector={self.detector.name!r}, crop={self.align.size}, key={self.has_key})"

    def detect(self, image: np.ndarray | Image.Image) -> Detections:
        return self.detector(as_rgb_array(image))

    def anonymise_image(self, image: np.ndarray | Image.Image, detections: Detections | None = None) -> ImageResult:
        """Anonymise every face of one image; pixels outside the face masks are left byte-identical.
        With an embedder and a reversible method, each face's recovery code comes back in ``codes``."""
        rgb = as_rgb_array(image)
        det = self.detector(rgb) if detections is None else detections
        m = alignment_matrices(det.landmarks, self.align) if len(det) else None
        crops = extract_crops(rgb, m, self.align, self.device) if len(det) else None
        unconfirmed = 0
        if self._confirmer is not None and len(det) and (det.scores < self.confident).any():
            keep = np.array([s >= self.confident or self._confirmer(self._uint8(c)) for s, c in zip(det.scores, crops)])
            unconfirmed = int((~keep).sum())
            det, m, crops = det.select(keep), m[torch.from_numpy(keep)], crops[torch.from_numpy(keep)]
        if len(det) == 0:
            return ImageResult(rgb.copy(), [], unconfirmed=unconfirmed)
        with torch.inference_mode():
            codes = list(self.anonymiser.codes(crops)) if self.embedder is not None and self.anonymiser.reversible else None
            made = self.anonymiser.anonymise(crops, self.strength, torch.as_tensor(det.scores, dtype=torch.float32))
        mask = self._mask.expand(len(det), -1, -1, -1)
        if made.masks is not None:
            mask = torch.minimum(mask, made.masks)
        out = paste_crops(rgb, made.crops, m, self.align, mask)
        if self.keep_landmarks:
            out = self._keep_landmarks(rgb, out, det, m)
        faces = [
            FaceRecord(
                index=i,
                box=[round(float(v), 2) for v in det.boxes[i]],
                score=round(float(det.scores[i]), 4),
                landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in det.landmarks[i]],
                method=self.method,
                donor_id="+".join(map(str, made.donors[i])) or None,
                notes=made.notes[i],
                fallback=made.fallbacks[i],
            )
            for i in range(len(det))
        ]
        return ImageResult(out, faces, face_footprints(m, self.align, *rgb.shape[:2]), codes, unconfirmed, det.landmarks.astype(np.float32))

    @staticmethod
    def _uint8(crop: torch.Tensor) -> np.ndarray:
        return np.round(crop.detach().cpu().permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    def _keep_landmarks(self, rgb: np.ndarray, out: np.ndarray, det: Detections, m: torch.Tensor) -> np.ndarray:
        from .landmarks import Landmarks68, keep_landmarks

        with self._loading:
            if self._landmarks68 is None:
                self._landmarks68 = Landmarks68()
        h, w = rgb.shape[:2]
        masks = [warp_mask_to_image(m[i : i + 1], self.align, h, w) for i in range(len(det))]
        return keep_landmarks(rgb, out, det.boxes, masks, face_footprints(m, self.align, h, w), self._landmarks68)

    def embed_codes(self, image: np.ndarray, landmarks: np.ndarray, codes: list[np.ndarray], kind: int):
        """:meth:`Embedder.embed` with this writer's embedder; an error without a key."""
        if self.embedder is None:
            raise RefacexError("embedding a payload needs a key")
        return self.embedder.embed(image, landmarks, codes, kind)


def make_writer(
    method: str | None = None,
    *,
    detector: str | FaceDetector = DEFAULT_DETECTOR,
    detector_config: DetectorConfig = DetectorConfig(),
    align: AlignConfig = AlignConfig(),
    strength: float = 1.0,
    key: bytes | None = None,
    watermark: str | None = None,
    watermark_strength: float = 1.0,
    donor_policy: str = "random",
    donor_bank=None,
    donor_seed: int | None = None,
    keep_landmarks: bool = False,
    device: str | None = "cpu",
) -> FaceWriter:
    """A :class:`FaceWriter` from names: the method (default: the best available), the detector,
    and with a ``key`` an :class:`Embedder` with the named (or default) watermark.

    ``donor_policy``: ``random`` per face, or ``consistent`` (one person, one donor set; keyed by
    ``key`` when given). ``donor_bank``: donors (e.g. consenting real people) instead of the
    method's shipped bank. ``donor_seed`` seeds the ``random`` draw (benchmarks repeat exactly);
    None draws afresh. The key is never shown or logged.
    """
    anonymiser = get_anonymiser(method or default_method()).with_donors(donor_bank, donor_policy, key, donor_seed)
    # below the threshold asked for, down to CONFIRM_FROM, faces that a second detector confirms
    confident = detector_config.threshold if isinstance(detector, str) and detector_config.threshold > CONFIRM_FROM else None
    found = (
        load_detector(detector, replace(detector_config, threshold=CONFIRM_FROM) if confident else detector_config)
        if isinstance(detector, str)
        else detector
    )
    torch_device = resolve_device(device)
    embedder = None
    if key is not None:
        from .watermark import load_watermark

        # payloads are embedded for a reader that looks down to a lower score (anonymised faces are harder to detect)
        reader = load_detector(detector, reader_config(detector_config)) if isinstance(detector, str) else detector
        embedder = Embedder(key, load_watermark(watermark), reader, align, watermark_strength, torch_device)
    return FaceWriter(
        anonymiser,
        found,
        align=align,
        strength=strength,
        embedder=embedder,
        keep_landmarks=keep_landmarks,
        device=torch_device,
        confident=confident,
    )
