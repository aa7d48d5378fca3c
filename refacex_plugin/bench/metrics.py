"""Metrics that can be checked by hand. Pure numpy functions."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..detection import box_iou as box_iou  # the core matches faces by it; the bench scores with the same

#: PSNR reported for identical signals (JSON has no infinity).
PSNR_IDENTICAL = 100.0


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, peak: float = 255.0) -> float:
    """PSNR in dB of ``a`` vs ``b`` (same shape, ``(H, W[, C])``), optionally over ``mask > 0`` pixels only.
    Identical inputs give :data:`PSNR_IDENTICAL`."""
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if mask is not None:
        sel = mask > 0
        if d.ndim == 3:
            d = d[sel]
        else:
            d = d[sel]
        if d.size == 0:
            return float("nan")
    mse = float(d.mean())
    return PSNR_IDENTICAL if mse == 0 else min(10.0 * math.log10(peak**2 / mse), PSNR_IDENTICAL)


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004, gaussian window) of two ``(H, W[, C])`` uint8 images,
    averaged over channels. Returns ``(H, W)``."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), sigma, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    out = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        out.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return np.mean(out, axis=0)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    m = ssim_map(a, b)
    if mask is None:
        return float(m.mean())
    sel = mask > 0
    return float(m[sel].mean()) if sel.any() else float("nan")


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities of rows: ``(N, D) x (M, D) -> (N, M)``."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return a @ b.T


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of ``(N, D)`` and ``(N, D)``: ``(N,)``."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(1)


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``rate`` observed over ``n`` trials (95 % for ``z = 1.96``).

    It stays inside [0, 1] and is honest for the few-percent rates the attack bars are about
    (0 of 300 -> (0, 1.3 %); 22 of 300 -> (4.9 %, 10.9 %)). Returns ``(low, high)``."""
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(max(rate * (1 - rate), 0.0) / n + z2 / (4 * n * n))
    return max(min(centre - half, rate), 0.0), min(max(centre + half, rate), 1.0)  # rounding: never exclude the rate


def threshold_at_far(impostor_scores: np.ndarray, far: float) -> float:
    """Smallest similarity threshold whose false-accept rate over ``impostor_scores`` is <= ``far``
    (a pair matches when its score is >= the threshold)."""
    s = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
    k = int(math.floor(far * len(s)))  # this many impostors may pass
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def similarity_matrix(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """``(N, D) x (M, D) -> (N, M)`` similarities: cosine, or minus the euclidean distance."""
    if metric == "cosine":
        return cosine_matrix(a, b)
    if metric == "euclidean":
        d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
        return -np.sqrt(np.clip(d2, 0, None))
    raise ValueError(f"unknown metric {metric!r}")


def paired_similarity(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Row-wise similarity of ``(N, D)`` and ``(N, D)``: ``(N,)``."""
    if metric == "cosine":
        return paired_cosine(a, b)
    if metric == "euclidean":
        return -np.linalg.norm(a - b, axis=1)
    raise ValueError(f"unknown metric {metric!r}")


def impostor_scores(emb: np.ndarray, labels: np.ndarray, metric: str = "cosine", max_pairs: int = 5_000_000, seed: int = 0) -> np.ndarray:
    """Similarities of different-identity pairs among rows of ``emb`` (all pairs, or a seeded sample)."""
    n = len(emb)
    if n * (n - 1) // 2 <= max_pairs:
        sim = similarity_matrix(emb, emb, metric)
        iu = np.triu_indices(n, 1)
        s, same = sim[iu], labels[iu[0]] == labels[iu[1]]
        return s[~same]
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
    keep = labels[i] != labels[j]
    return paired_similarity(emb[i[keep]], emb[j[keep]], metric)


def best_threshold_accuracy(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Verification accuracy at the best threshold: ``(accuracy, threshold)``."""
    order = np.argsort(scores)
    s, y = scores[order], same[order].astype(bool)
    # predict "same" for scores >= s[k]: correct = negatives below k + positives from k.
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    pos_from = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = neg_below + pos_from
    k = int(np.argmax(correct))
    thr = float(s[k]) if k < len(s) else float(s[-1] + 1e-6)
    return float(correct[k] / len(s)), thr


def rank_k(
    probe: np.ndarray, gallery: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray, ks=(1, 5), metric: str = "cosine"
) -> dict[int, float]:
    """Closed-set identification: fraction of probes whose true identity is among the ``k`` most
    similar gallery entries."""
    sim = similarity_matrix(probe, gallery, metric)
    order = np.argsort(-sim, axis=1)[:, : max(ks)]
    hits = gallery_labels[order] == probe_labels[:, None]
    return {k: float(hits[:, :k].any(1).mean()) for k in ks}


def nme(pred: np.ndarray, ref: np.ndarray) -> float:
    """68-point landmark error normalised by the inter-ocular (outer eye corner) distance of ``ref``.
    ``pred``, ``ref``: ``(68, 2)``."""
    iod = np.linalg.norm(ref[36] - ref[45])
    return float(np.linalg.norm(pred - ref, axis=1).mean() / max(iod, 1e-6))


def nme5(pred: np.ndarray, ref: np.ndarray) -> float:
    """5-point landmark error (eyes, nose tip, mouth corners) normalised by the distance between the
    eye centres of ``ref``. ``pred``, ``ref``: ``(5, 2)``."""
    iod = np.linalg.norm(ref[0] - ref[1])
    return float(np.linalg.norm(pred - ref, axis=1).mean() / max(iod, 1e-6))


# Generic 3-D face for the six points nose tip 30, chin 8, eye corners 36/45, mouth corners 48/54,
# in camera axes (x right, y down, z away from the camera), so a frontal face has zero rotation.
_MODEL_3D = np.array(
    [[0.0, 0.0, 0.0], [0.0, 330.0, 65.0], [-225.0, -170.0, 135.0], [225.0, -170.0, 135.0], [-150.0, 150.0, 125.0], [150.0, 150.0, 125.0]]
)
_POSE_IDX = [30, 8, 36, 45, 48, 54]


def head_pose(pts68: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Yaw, pitch, roll in degrees from 68 landmarks (solvePnP with a generic face and a pinhole
    camera whose focal length is the image width)."""
    h, w = image_size
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL_3D, pts68[_POSE_IDX].astype(np.float64), cam, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    r, _ = cv2.Rodrigues(rvec)
    sy = math.hypot(r[0, 0], r[1, 0])
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    yaw = math.degrees(math.atan2(-r[2, 0], sy))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return np.array([yaw, pitch, roll])


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute angular differences in degrees, wrapped to [0, 180]."""
    d = np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)
    return d
