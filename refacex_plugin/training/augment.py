"""Differentiable distortions for training: what an image meets after it leaves our hands, and the
alignment error of re-detecting its face. All take and return ``(B, 3, H, W)`` in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..baselines import gaussian_blur
from ..geometry import LUMA, warp_affine


def jitter(x: torch.Tensor, max_shift: float, max_rot_deg: float, max_scale: float, g: torch.Generator) -> torch.Tensor:
    """Random small similarity transforms about the centre (re-detection and re-alignment error)."""
    b, _, h, w = x.shape
    u = lambda: torch.rand(b, generator=g) * 2 - 1  # noqa: E731
    ang = u() * math.radians(max_rot_deg)
    sc = 1 + u() * max_scale
    tx, ty = u() * max_shift, u() * max_shift
    cos, sin = sc * torch.cos(ang), sc * torch.sin(ang)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    m = torch.stack(
        [
            torch.stack([cos, -sin, cx - cos * cx + sin * cy + tx], -1),
            torch.stack([sin, cos, cy - sin * cx - cos * cy + ty], -1),
        ],
        1,
    ).to(x)
    return warp_affine(x, m, (h, w), padding_mode="border")


def resample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Down- (or up-) sample and back: a resize, or pasting into an image at another scale."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, antialias=factor < 1)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


_Y_TABLE = torch.tensor(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    dtype=torch.float32,
)
_C_TABLE = torch.tensor(
    [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 6 + [99] * 32,
    dtype=torch.float32,
)


def _dct_basis() -> torch.Tensor:
    """``(64, 1, 8, 8)`` orthonormal 2-D DCT-II filters."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * k[None] + 1) * k[:, None] / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return torch.einsum("ux,vy->uvxy", d, d).reshape(64, 1, 8, 8).float()


_BASIS = _dct_basis()


def _quality_scale(q: torch.Tensor) -> torch.Tensor:
    """IJG quality (1-100) -> quantisation table multiplier."""
    q = q.clamp(1, 100)
    return torch.where(q < 50, 50.0 / q, (200.0 - 2.0 * q) / 100.0)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Differentiable JPEG: YCbCr, 4:2:0 chroma, 8x8 DCT, IJG tables scaled by ``quality (B,)``,
    rounding as ``round(v) + (v - round(v))^3`` (exact value, useful gradient). ``H, W`` multiples of 16."""
    b, _, h, w = x.shape
    rgb = x.clamp(0, 1) * 255
    r, g_, bl = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = 0.299 * r + 0.587 * g_ + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g_ + 0.5 * bl
    cr = 0.5 * r - 0.418688 * g_ - 0.081312 * bl
    cb, cr = F.avg_pool2d(cb, 2), F.avg_pool2d(cr, 2)
    scale = _quality_scale(quality.to(x)).view(b, 1, 1, 1)
    basis = _BASIS.to(x)

    def codec(ch: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        qt = (table.to(x).view(1, 64, 1, 1) * scale).floor().clamp(min=1)
        coef = F.conv2d(ch - (128 if ch is y else 0), basis, stride=8) / qt
        coef = (torch.round(coef) + (coef - torch.round(coef)) ** 3) * qt
        return F.conv_transpose2d(coef, basis, stride=8) + (128 if ch is y else 0)

    y = codec(y, _Y_TABLE)
    cb = F.interpolate(codec(cb, _C_TABLE), size=(h, w), mode="bilinear", align_corners=False)
    cr = F.interpolate(codec(cr, _C_TABLE), size=(h, w), mode="bilinear", align_corners=False)
    out = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1) / 255
    return out.clamp(0, 1)


def saturate(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale ``x``'s colourfulness about its luma by ``factor (B,)`` (the benchmark's saturation:
    :func:`refacex_plugin.distortions.saturation`)."""
    grey = (x * torch.tensor(LUMA).to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return grey + factor.to(x).view(-1, 1, 1, 1) * (x - grey)


def colour(x: torch.Tensor, g: torch.Generator, amount: float = 0.25) -> torch.Tensor:
    b = x.shape[0]
    u = lambda: (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1).to(x)  # noqa: E731
    x = x * (1 + amount * u())  # brightness
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + amount * u()) + mean  # contrast
    x = saturate(x.clamp(0, 1), (1 + 1.3 * amount * u()).flatten())
    return x.clamp(0, 1)


def noise(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    return (x + torch.randn(x.shape, generator=g).to(x) * sigma).clamp(0, 1)


def random_distortion(x: torch.Tensor, g: torch.Generator, level: float = 1.0, geometric: bool = True) -> torch.Tensor:
    """One pipeline of random distortions whose severity scales with ``level`` in [0, 1];
    ``geometric=False`` leaves out the alignment jitter (pixels stay where they are)."""
    b = x.shape[0]
    if geometric:
        x = jitter(x, 3.0 * level, 3.0 * level, 0.05 * level, g)
    r = torch.rand(6, generator=g)
    if r[0] < 0.5 * level:
        x = resample(x, float(1 - 0.55 * level * torch.rand(1, generator=g)))
    if r[1] < 0.3 * level:
        x = gaussian_blur(x, float(0.4 + 0.8 * level * torch.rand(1, generator=g)))
    if r[2] < 0.5 * level:
        x = colour(x, g, 0.25 * level)
    if r[3] < 0.3 * level:
        x = noise(x, 0.025 * level * float(torch.rand(1, generator=g)), g)
    if r[4] < 0.7 * level:
        q = 95 - (95 - 45) * level * torch.rand(b, generator=g)
        x = jpeg(x, q)
    return x
