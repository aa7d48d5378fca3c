"""Real-world distortions an anonymised image meets after it leaves our hands.

Each takes and returns an ``(H, W, 3) uint8`` RGB array. JPEG and WebP go through Pillow's real
encoders (libjpeg / libwebp), never a differentiable stand-in. Used by ``refacex bench robustness``
and the recovery benchmark; training uses the differentiable counterparts in
:mod:`refacex_plugin.training.augment`.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image


def jpeg(rgb: np.ndarray, quality: int, times: int = 1) -> np.ndarray:
    for _ in range(times):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
        rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return rgb


def webp(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "WEBP", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (max(int(round(w * factor)), 1), max(int(round(h * factor)), 1)), interpolation=interp)


def border_crop(rgb: np.ndarray, fraction: float) -> np.ndarray:
    """Remove ``fraction`` of the width and height, half from each side."""
    h, w = rgb.shape[:2]
    dy, dx = int(round(h * fraction / 2)), int(round(w * fraction / 2))
    return np.ascontiguousarray(rgb[dy : h - dy, dx : w - dx])


def brightness(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * factor, 0, 255).round().astype(np.uint8)


def contrast(rgb: np.ndarray, factor: float) -> np.ndarray:
    x = rgb.astype(np.float32)
    mean = x.mean()
    return np.clip((x - mean) * factor + mean, 0, 255).round().astype(np.uint8)


def saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    x = rgb.astype(np.float32)
    gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return np.clip((x - gray) * factor + gray, 0, 255).round().astype(np.uint8)


def gaussian_noise(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive noise with standard deviation ``sigma`` in [0, 1] units."""
    noise = np.random.default_rng(seed).normal(0.0, sigma * 255.0, rgb.shape)
    return np.clip(rgb.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


#: The benchmark's distortion rows, in report order.
DISTORTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "jpeg_q90": lambda x: jpeg(x, 90),
    "jpeg_q75": lambda x: jpeg(x, 75),
    "jpeg_q50": lambda x: jpeg(x, 50),
    "jpeg_q75_x5": lambda x: jpeg(x, 75, times=5),
    "webp_q80": lambda x: webp(x, 80),
    "resize_0.5": lambda x: resize(x, 0.5),
    "resize_1.5": lambda x: resize(x, 1.5),
    "crop_10pct": lambda x: border_crop(x, 0.10),
    "brightness_+20": lambda x: brightness(x, 1.2),
    "brightness_-20": lambda x: brightness(x, 0.8),
    "contrast_+20": lambda x: contrast(x, 1.2),
    "contrast_-20": lambda x: contrast(x, 0.8),
    "saturation_+30": lambda x: saturation(x, 1.3),
    "saturation_-30": lambda x: saturation(x, 0.7),
    "noise_0.02": lambda x: gaussian_noise(x, 0.02),
    "blur_1": lambda x: gaussian_blur(x, 1.0),
    # what a shared photo meets: shrunk or cropped, then saved again as JPEG
    "resize_0.5+jpeg_q75": lambda x: jpeg(resize(x, 0.5), 75),
    "crop_10+jpeg_q75": lambda x: jpeg(border_crop(x, 0.10), 75),
}
