"""Image-level pipeline: detect -> align -> operators -> paste back (DeepPrivacy2's shape).

``Pipeline.anonymise_image(rgb)`` takes an ``(H, W, 3) uint8`` RGB array (or a PIL image) and
returns the new image plus one :class:`FaceRecord` per face.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from . import operators
from .anonymisers import default_method, get_anonymiser
from .detection import DEFAULT_DETECTOR, Detections, DetectorConfig, FaceDetector, load_detector, reader_config
from .errors import ModelNotAvailableError, RefacexError
from .geometry import AlignConfig, alignment_matrices, extract_crops, face_footprints, face_mask, paste_crops, warp_mask_to_image


@dataclass
class FaceRecord:
    """What the pipeline did to one face. Coordinates are pixels of the upright input image."""

    index: int
    box: list[float]
    score: float
    landmarks: list[list[float]]
    method: str
    donor_id: str | None = None
    notes: list[str] = field(default_factory=list)  # what the method could not keep (e.g. glasses removed)
    payload: str = "none"  # none | embedded | embedded-unverified
    payload_bit_errors: int | None = None  # channel bits read back wrong right after embedding (before encoding)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageResult:
    """``image``: the new ``(H, W, 3) uint8`` image; ``regions``: per face, the rectangle
    ``(x0, y0, x1, y1)`` outside which no pixel changed (None for a face outside the image)."""

    image: np.ndarray
    faces: list[FaceRecord] = field(default_factory=list)
    regions: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    codes: list[np.ndarray] | None = None  # per face, the recovery code (reversible methods, with a key)


@dataclass
class RecoveryResult:
    """``image``: the image with every face that could be restored restored; ``restored``: face
    indices restored; ``failed``: ``(face index, reason)`` for the others."""

    image: np.ndarray
    restored: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu; refuse cuda when absent."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RefacexError("--device cuda requested but no CUDA device is available")
    return torch.device(device)


def as_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        from .image_io import pil_to_rgb

        return pil_to_rgb(image)[0]
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise RefacexError(f"expected an (H, W, 3) uint8 RGB array, got {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr[:, :, :3])


class Pipeline:
    """Detector + alignment + one anonymisation method (+ recovery channel once available).

    Args:
        method: anonymisation method name; default the best available.
        detector: detector name (``centerface`` or ``dlib``) or a detector object.
        detector_config: thresholds for the detector. Payloads are embedded for, and read by,
            ``self.reader``: the same detector taking candidates down to
            :data:`~refacex_plugin.detection.READER_THRESHOLD` (a detector object serves as both).
        align: canonical crop configuration.
        strength: privacy/utility dial passed to the method.
        key: secret key bytes: seal payloads with it (:meth:`embed_codes`). Never shown or logged.
        watermark: watermark name (default: the best available); loaded when first needed.
        watermark_strength: invisibility/robustness dial of the watermark (1.0 = the shipped,
            benchmarked setting; residual RMS scales with it).
        donor_policy: for donor-driven methods: ``random`` per face, or ``consistent`` (the same
            person gets the same donor in this pipeline's run; keyed by ``key`` when given).
        donor_bank: a :class:`~refacex_plugin.anonymiser.donors.DonorBank` (e.g. of consenting real
            donors) instead of the method's shipped synthetic identities.
        device: ``cpu``, ``cuda`` or ``auto``.
        donor_seed: seeds the ``random`` policy's donor draw (the benchmarks pass theirs so a run
            repeats exactly); None draws afresh each run.
        keep_landmarks: for methods that draw a new face (``refacex``), move its features onto the
            original's 68 landmarks afterwards (:mod:`~refacex_plugin.landmarks`): a utility dial
            that costs privacy (measured: MobileFaceNet matches 4.0 % of warped faces, keyless
            recovery 4.0 %), so off by default.
    """

    def __init__(
        self,
        method: str | None = None,
        detector: str | FaceDetector = DEFAULT_DETECTOR,
        detector_config: DetectorConfig = DetectorConfig(),
        align: AlignConfig = AlignConfig(),
        strength: float = 1.0,
        key: bytes | None = None,
        watermark: str | None = None,
        watermark_strength: float = 1.0,
        donor_policy: str = "random",
        donor_bank=None,
        device: str | None = "cpu",
        donor_seed: int | None = None,
        keep_landmarks: bool = False,
    ):
        self.method = method or default_method()
        self.anonymiser = get_anonymiser(self.method)
        self.detector = load_detector(detector, detector_config) if isinstance(detector, str) else detector
        # payloads are looked for down to a lower score (anonymised faces are harder to detect)
        self.reader = load_detector(detector, reader_config(detector_config)) if isinstance(detector, str) else detector
        self.align = align
        self.strength = strength
        self.device = resolve_device(device)
        self._key = key
        self._watermark_name = watermark
        self._watermark = None
        self._loading = threading.Lock()  # threads share a pipeline (a folder run's workers); models load once
        self.watermark_strength = watermark_strength
        self.donors = None
        if hasattr(self.anonymiser, "with_donors"):  # donor composites choose their donors per face, keyed
            self.anonymiser = self.anonymiser.with_donors(donor_bank, donor_policy, key, donor_seed)
            donor_bank = None
        bank = donor_bank if donor_bank is not None else getattr(self.anonymiser, "bank", None)
        if bank is not None and not hasattr(self.anonymiser, "with_donors"):
            from .anonymiser.donors import DonorAssigner

            self.donors = DonorAssigner(bank, donor_policy, key, seed=donor_seed)
        if key is not None:
            # Fail early (closed) when no watermark can carry the payload, or not at this strength.
            if not getattr(self.watermark, "variable_strength", True) and watermark_strength != 1.0:
                raise RefacexError(f"watermark {self.watermark.name!r} has a fixed strength: leave --watermark-strength at 1")
        self._mask = face_mask(align, 1, self.device)
        self._landmarks68 = None
        self.keep_landmarks = keep_landmarks and getattr(self.anonymiser, "warp_to_landmarks", False)

    def __repr__(self) -> str:  # never shows the key
        return f"Pipeline(method={self.method!r}, detector={self.detector.name!r}, crop={self.align.size}, device={self.device})"

    def detect(self, image) -> Detections:
        return self.detector(as_rgb_array(image))

    def anonymise_image(self, image, detections: Detections | None = None) -> ImageResult:
        """Anonymise every face of one image; pixels outside the face masks are left byte-identical."""
        rgb = as_rgb_array(image)
        det = self.detector(rgb) if detections is None else detections
        if len(det) == 0:
            return ImageResult(rgb.copy(), [])
        m = alignment_matrices(det.landmarks, self.align)
        crops = extract_crops(rgb, m, self.align, self.device)
        donors, codes = None, None
        with torch.inference_mode():
            if self.donors is not None:
                ids = self.anonymiser.identities(crops) if self.donors.policy == "consistent" else np.zeros((len(crops), 128), np.float32)
                donors = self.donors.vectors(ids).to(crops)
            if self._key is not None and getattr(self.anonymiser, "reversible", False):
                codes = list(self.anonymiser.codes(crops))
            mask, donor_ids, notes = self._mask.expand(len(det), -1, -1, -1), [None] * len(det), [[] for _ in range(len(det))]
            if hasattr(self.anonymiser, "anonymise"):  # composites say where they changed the crop
                composites = self.anonymiser.anonymise(crops, self.strength)
                new, mask = composites.crops, torch.minimum(mask, composites.masks)
                donor_ids = ["+".join(map(str, d)) for d in composites.donors]
                notes = composites.notes
            else:
                new = operators.anonymise(crops, donors, self.method, self.strength)
        out = paste_crops(rgb, new, m, self.align, mask)
        if self.keep_landmarks:
            out = self._keep_landmarks(rgb, out, det, m)
        faces = [
            FaceRecord(
                index=i,
                box=[round(float(v), 2) for v in det.boxes[i]],
                score=round(float(det.scores[i]), 4),
                landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in det.landmarks[i]],
                method=self.method,
                donor_id=donor_ids[i],
                notes=notes[i],
            )
            for i in range(len(det))
        ]
        return ImageResult(out, faces, face_footprints(m, self.align, *rgb.shape[:2]), codes)

    def _keep_landmarks(self, rgb: np.ndarray, out: np.ndarray, det: Detections, m: torch.Tensor) -> np.ndarray:
        """Move each drawn face's features onto the original's 68 landmarks (:mod:`~refacex_plugin.landmarks`)."""
        from .landmarks import Landmarks68, keep_landmarks

        with self._loading:
            if self._landmarks68 is None:
                self._landmarks68 = Landmarks68()
        h, w = rgb.shape[:2]
        masks = [warp_mask_to_image(m[i : i + 1], self.align, h, w) for i in range(len(det))]
        return keep_landmarks(rgb, out, det.boxes, masks, face_footprints(m, self.align, h, w), self._landmarks68)

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def watermark(self):
        with self._loading:
            if self._watermark is None:
                from .watermark import load_watermark

                self._watermark = load_watermark(self._watermark_name)
            return self._watermark

    def embed_codes(self, image, landmarks: np.ndarray, codes: list[np.ndarray], kind: int):
        """Seal each face's code with the key and embed it in that face.

        Args:
            landmarks: ``(N, 5, 2)`` the faces, as :meth:`anonymise_image` reported them.
            codes: per face, ``(CODE_BITS,)`` 0/1 for a recovery code or ``(REF_BITS,)`` for a vault reference.
            kind: :data:`~refacex_plugin.payload.KIND_RECOVERY_CODE` or ``KIND_VAULT_REF``.

        Returns:
            :class:`~refacex_plugin.channel.EmbedResult` (image, per-face status, changed regions
            and the frames a reader will find the faces in).
        """
        from .channel import embed_codes

        if self._key is None:
            raise RefacexError("embedding a payload needs a key")
        return embed_codes(
            as_rgb_array(image),
            landmarks,
            codes,
            self._key,
            kind,
            self.watermark,
            self.reader,
            self.align,
            self.watermark_strength,
            self.device,
        )

    def recover_image(self, image) -> RecoveryResult:
        """Restore every face whose payload authenticates under the key and holds a learned
        recovery code, with the recovery network (vault references are :func:`files.recover_file`'s)."""
        from . import payload

        rgb = as_rgb_array(image)
        result = RecoveryResult(rgb.copy())
        faces = self.read_payloads(rgb)
        ok = [f for f in faces if f.authenticated and f.payload.kind == payload.KIND_RECOVERY_CODE]
        for f in faces:
            if f not in ok:
                why = (
                    "face too small to carry a payload"
                    if f.too_small
                    else "no payload"
                    if not f.found
                    else "payload does not authenticate with this key"
                    if not f.authenticated
                    else "payload is a vault reference (use --vault)"
                )
                result.failed.append((f.index, why))
        if ok:
            m = alignment_matrices(np.stack([f.landmarks for f in ok]), self.align)
            crops = extract_crops(rgb, m, self.align, self.device)
            with torch.inference_mode():
                rec = operators.recover(crops, np.stack([f.payload.code for f in ok]))
            result.image = paste_crops(rgb, rec, m, self.align, self._mask.expand(len(ok), -1, -1, -1))
            result.restored = [f.index for f in ok]
        return result

    def read_payloads(self, image, keys: list[bytes] = ()) -> list:
        """Per detected face, a :class:`~refacex_plugin.channel.FacePayload`: whether a payload is
        there and whether it authenticates under one of ``keys`` (the pipeline's key if none given).
        A pipeline whose watermark was not named also reads faces the default finds nothing in with
        each of :data:`~refacex_plugin.watermark.EARLIER_DEFAULTS` (marks written before the default
        changed; an unmarked face costs a second, local search (:data:`~refacex_plugin.channel.EARLIER_READ_BUDGET`),
        a face the default found a payload in is not read again)."""
        from .channel import EARLIER_READ_BUDGET, read_payloads
        from .watermark import EARLIER_DEFAULTS, load_watermark

        rgb = as_rgb_array(image)
        keys = list(keys) or ([self._key] if self._key is not None else [])
        faces = read_payloads(rgb, keys, self.watermark, self.reader, self.align, self.device)
        if self._watermark_name is not None:
            return faces
        # no watermark named: faces the default finds nothing in may carry the mark of a file written
        # while another watermark was the default
        for name in EARLIER_DEFAULTS:
            missing = [f.index for f in faces if not f.found and not f.too_small]
            if not missing or name == self.watermark.name:
                continue
            try:
                earlier = load_watermark(name)
            except ModelNotAvailableError:
                continue
            again = {
                a.index: a
                for a in read_payloads(rgb, keys, earlier, self.reader, self.align, self.device, only=missing, budget=EARLIER_READ_BUDGET)
                if a.found
            }
            faces = [again.get(f.index, f) for f in faces]
        return faces
