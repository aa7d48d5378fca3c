"""Face geometry: 5-point similarity alignment to a canonical crop, the face mask, and paste-back.

Pure tensor functions (shapes in docstrings) plus two numpy-facing helpers that work on a region
of interest only, so a 100-megapixel photo costs no more than the faces in it.

Landmark order everywhere: eye with the smaller x, the other eye, nose tip, mouth corner with the
smaller x, the other mouth corner (the ArcFace convention, "as seen in the image").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: ArcFace 5-point template for a 112x112 crop (x, y).
ARCFACE_TEMPLATE_112 = torch.tensor(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

# Face ellipse in ArcFace-112 units: centre, semi-axes. It covers brows to chin and cheek to cheek;
# the hairline and ears lie outside (a donor method may extend it).
_FACE_CENTRE_112 = (56.0, 66.0)
_FACE_AXES_112 = (44.0, 58.0)


@dataclass(frozen=True)
class AlignConfig:
    """Canonical crop: ``size`` pixels square; ``zoom`` < 1 leaves margin around the ArcFace face box
    (0.75 keeps forehead and some hair); ``feather`` is the soft mask edge as a fraction of the radius."""

    size: int = 256
    zoom: float = 0.75
    feather: float = 0.2

    def __post_init__(self) -> None:
        if self.size < 128:
            raise ValueError("crop size must be at least 128 px")
        if not 0.3 <= self.zoom <= 1.5:
            raise ValueError("zoom must be in [0.3, 1.5]")


def canonical_template(cfg: AlignConfig) -> torch.Tensor:
    """Landmark positions in the canonical crop. Returns ``(5, 2)`` float32."""
    unit = ARCFACE_TEMPLATE_112 / 112.0
    return ((unit - 0.5) * cfg.zoom + 0.5) * cfg.size


def estimate_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991).

    Args:
        src: ``(B, N, 2)`` points.
        dst: ``(B, N, 2)`` or ``(N, 2)`` target points.

    Returns:
        ``(B, 2, 3)`` matrices ``M`` with ``dst ~ M @ [src; 1]``.
    """
    src = src.double()
    dst = dst.double().expand_as(src)
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    xs, xd = src - mu_s, dst - mu_d
    # For 2-D similarity the closed form is a + ib = sum(conj(xs) * xd) / sum(|xs|^2).
    denom = (xs**2).sum(dim=(1, 2)).clamp_min(1e-12)
    a = (xs[..., 0] * xd[..., 0] + xs[..., 1] * xd[..., 1]).sum(1) / denom
    b = (xs[..., 0] * xd[..., 1] - xs[..., 1] * xd[..., 0]).sum(1) / denom
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    t = mu_d.squeeze(1) - (rot @ mu_s.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], dim=-1).float()


def _invert_affine64(m: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` affines inverted in float64 (on the CPU)."""
    m = m.detach().cpu().double()
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    # the closed form of [A | t]^-1 = [A^-1 | -A^-1 t]: torch.linalg.inv of the 3x3 took 0.4 ms a
    # call, 9 % of a reader's time (profile of 10 marked LFW images)
    rot = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[:, None, None]
    return torch.cat([rot, -(rot @ m[:, :, 2:])], dim=2)


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Invert ``(B, 2, 3)`` affine matrices."""
    return _invert_affine64(m).float()


def warp_affine(
    src: torch.Tensor, m: torch.Tensor, dsize: tuple[int, int], mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """``src (B, C, H, W)`` warped by the pixel-coordinate affines ``m (B, 2, 3)`` (source to
    destination) into ``(B, C, h, w)`` for ``dsize = (h, w)``: ``out[y, x] = src[m^-1 (x, y)]``,
    sampled with pixel centres at integer coordinates (``align_corners=True``).

    The same result as ``kornia.geometry.transform.warp_affine(..., align_corners=True)`` (within
    float rounding), without its per-call normalisation machinery: one broadcast grid and one
    ``grid_sample``.
    """
    b, _, h_in, w_in = src.shape
    h, w = dsize
    inv = _invert_affine64(m)  # destination pixel -> source pixel
    # the source's normalised coordinates (align_corners=True: u = 2 x / (W - 1) - 1) of every
    # destination pixel, built by broadcasting (F.affine_grid took 0.68 ms for a 256x256 grid on
    # one core, longer than the grid_sample itself, 0.37 ms)
    scale = torch.tensor([2.0 / max(w_in - 1, 1e-14), 2.0 / max(h_in - 1, 1e-14)], dtype=torch.float64)
    a = inv[:, :2] * scale.view(1, 2, 1)
    a[:, :, 2] -= 1.0
    a = a.to(device=src.device, dtype=src.dtype)  # (B, 2, 3): destination pixel -> source normalised
    xs = torch.arange(w, device=src.device, dtype=src.dtype).view(1, 1, w)
    ys = torch.arange(h, device=src.device, dtype=src.dtype).view(1, h, 1)
    grid = torch.empty(b, h, w, 2, device=src.device, dtype=src.dtype)
    for k in (0, 1):  # written in place: building and stacking two planes cost 2.4x as much (81 crops: 50 vs 21 ms)
        torch.add(a[:, k, 0, None, None] * xs + a[:, k, 1, None, None] * ys, a[:, k, 2, None, None], out=grid[..., k])
    return F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def translate_after(m: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """``T(dx, dy) o M`` for ``(B, 2, 3)`` affines: shift their output."""
    out = m.clone()
    out[:, 0, 2] += dx
    out[:, 1, 2] += dy
    return out


def translate_before(m: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """``M o T(dx, dy)`` for ``(B, 2, 3)`` affines: shift their input."""
    out = m.clone()
    out[:, :, 2] += m[:, :, 0] * dx + m[:, :, 1] * dy
    return out


def perturb_about(m: torch.Tensor, scale: float, angle_deg: float, centre: float) -> torch.Tensor:
    """``P o M`` for ``(B, 2, 3)`` affines, ``P`` a rotation by ``angle_deg`` and scaling by ``scale``
    about the output point ``(centre, centre)``: the same crop, slightly zoomed and turned."""
    return perturbations_about(m, [(scale, angle_deg, 0.0, 0.0)], centre)


def perturbations_about(m: torch.Tensor, moves, centre: float) -> torch.Tensor:
    """Many perturbations of one ``(1, 2, 3)`` affine at once: for each ``(scale, angle_deg, dx,
    dy)`` of ``moves``, ``T(dx, dy) o P o M`` (:func:`perturb_about`, then :func:`translate_after`).
    Returns ``(len(moves), 2, 3)`` (or, for one move of ``(B, 2, 3)`` affines, ``(B, 2, 3)``)."""
    mv = torch.as_tensor(moves, dtype=torch.float64).reshape(-1, 4)
    a = torch.deg2rad(mv[:, 1])
    cos, sin = torch.cos(a) * mv[:, 0], torch.sin(a) * mv[:, 0]
    r = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2).to(m)  # (K, 2, 2)
    c = torch.full((2,), float(centre), dtype=m.dtype, device=m.device)
    rot = r @ m[:, :, :2]  # (K, 2, 2), or (B, 2, 2) for one move of B affines
    t = ((m[:, :, 2] - c)[:, None, :] @ r.transpose(-1, -2))[:, 0] + c + mv[:, 2:].to(m)
    return torch.cat([rot, t[..., None]], -1)


def frame_offset(m_from: torch.Tensor, m_to: torch.Tensor, centre: float) -> np.ndarray:
    """How far apart two alignments of the same faces are, in the crop: ``(B, 3)`` rows of zoom
    (``|scale - 1|``), turn (degrees) and the largest shift of the crop centre ``(centre,
    centre)`` (crop pixels), for ``(B, 2, 3)`` image-to-crop affines."""
    inv, b = _invert_affine64(m_from), m_to.detach().cpu().double()
    r = b[:, :, :2] @ inv[:, :, :2]  # crop (from) -> crop (to)
    t = (b[:, :, :2] @ inv[:, :, 2:]).squeeze(-1) + b[:, :, 2]
    c = torch.full((2,), float(centre), dtype=torch.float64)
    zoom = (torch.linalg.det(r).abs().sqrt() - 1).abs()
    turn = torch.rad2deg(torch.atan2(r[:, 1, 0], r[:, 0, 0])).abs()
    shift = ((r @ c) + t - c).abs().amax(-1)
    return torch.stack([zoom, turn, shift], -1).numpy()


def face_mask(cfg: AlignConfig, batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """Feathered elliptical face mask in canonical crop coordinates.

    Exactly 0 outside the ellipse, exactly 1 well inside, a smoothstep ramp of width
    ``cfg.feather`` (fraction of the radius) at the edge. Returns ``(B, 1, S, S)`` float32.
    """
    s = cfg.size
    cx, cy = (((torch.tensor(_FACE_CENTRE_112) / 112.0) - 0.5) * cfg.zoom + 0.5) * s
    ax, ay = torch.tensor(_FACE_AXES_112) / 112.0 * cfg.zoom * s
    ys, xs = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    r = torch.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2)
    t = ((1.0 - r) / cfg.feather).clamp(0.0, 1.0)
    m = t * t * (3.0 - 2.0 * t)
    return m.to(device).expand(batch, 1, s, s).contiguous()


# --------------------------------------------------------------------------- numpy-facing helpers


def _footprint(m_crop2img: np.ndarray, size: int | tuple[int, int], height: int, width: int) -> tuple[int, int, int, int] | None:
    """Integer ROI ``(x0, y0, x1, y1)`` covering the crop (``size`` square, or ``(h, w)``) mapped
    into the image, or None."""
    ch, cw = (size, size) if isinstance(size, int) else size
    corners = np.array([[0, 0, 1], [cw - 1, 0, 1], [0, ch - 1, 1], [cw - 1, ch - 1, 1]], dtype=np.float64)
    pts = corners @ m_crop2img.T
    x0 = max(int(math.floor(pts[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(pts[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(pts[:, 0].max())) + 2, width)
    y1 = min(int(math.ceil(pts[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def alignment_matrices(landmarks: np.ndarray, cfg: AlignConfig) -> torch.Tensor:
    """Image-to-crop similarity transforms for ``(N, 5, 2)`` landmarks. Returns ``(N, 2, 3)``."""
    pts = torch.as_tensor(np.asarray(landmarks, dtype=np.float32)).reshape(-1, 5, 2)
    return estimate_similarity(pts, canonical_template(cfg))


#: ITU-R BT.601 luma weights (what JPEG and the watermarks call luminance).
LUMA = (0.299, 0.587, 0.114)


def extract_crops(
    rgb: np.ndarray,
    m_img2crop: torch.Tensor,
    cfg: AlignConfig,
    device: str | torch.device = "cpu",
    luma: bool | tuple[float, float, float] = False,
    window: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Aligned face crops from an ``(H, W, 3) uint8`` image.

    Only the region the crops cover is converted to float (crops that overlap, such as a search's
    around one face, share one region and one warp). Returns ``(N, 3, S, S)`` in [0, 1],
    or with ``luma`` their luminance ``(N, 1, S, S)`` (warped from a grey region: a third of the work;
    ``luma`` may also give the grey's ``(r, g, b)`` weights instead of :data:`LUMA`'s).
    ``window``: ``(y0, y1, x0, x1)`` crop pixels: only those are sampled, the rest of each crop is 0
    (for a reader that reads part of the crop: a search's hundreds of crops cost that part's share).
    """
    s = cfg.size
    if m_img2crop.shape[0] == 0:
        return torch.empty(0, 1 if luma else 3, s, s, device=device)
    if window is None:
        return _warp_crops(rgb, m_img2crop, (s, s), device, luma)
    y0, y1, x0, x1 = window
    part = _warp_crops(rgb, translate_after(m_img2crop, -float(x0), -float(y0)), (y1 - y0, x1 - x0), device, luma)
    full = torch.zeros(part.shape[0], part.shape[1], s, s, dtype=part.dtype, device=part.device)
    full[:, :, y0:y1, x0:x1] = part
    return full


def _warp_crops(rgb: np.ndarray, m_img2out: torch.Tensor, out_hw: tuple[int, int], device, luma) -> torch.Tensor:
    """:func:`extract_crops`'s warp into ``(N, C, *out_hw)`` outputs."""
    h, w = rgb.shape[:2]
    inv = invert_affine(m_img2out).numpy().astype(np.float64)
    rois = [_footprint(inv[i], out_hw, h, w) or (0, 0, w, h) for i in range(len(inv))]  # outside: replicate the border
    union = (min(r[0] for r in rois), min(r[1] for r in rois), max(r[2] for r in rois), max(r[3] for r in rois))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    if area(union) <= 2 * max(area(r) for r in rois):
        groups = [(union, list(range(len(rois))))]  # crops of one face (e.g. a search around it): one warp
    else:
        groups = [(r, [i]) for i, r in enumerate(rois)]
    crops = [None] * len(rois)
    for (x0, y0, x1, y1), members in groups:
        region = rgb[y0:y1, x0:x1]
        region = region if region.flags.c_contiguous and region.flags.writeable else np.array(region)  # torch wants it writable
        patch = torch.from_numpy(region).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        if luma:
            patch = (patch * patch.new_tensor(LUMA if luma is True else luma).view(1, 3, 1, 1)).sum(1, keepdim=True)
        m = translate_before(m_img2out[members], float(x0), float(y0)).to(device)  # roi -> output
        warped = warp_affine(patch.expand(len(members), -1, -1, -1), m, out_hw, padding_mode="border")
        if len(groups) == 1:
            return warped  # one warp made every crop, in order (a search's hundreds: no copy)
        for i, crop in zip(members, warped):
            crops[i] = crop
    return torch.stack(crops)


def paste_crops(
    rgb: np.ndarray,
    crops: torch.Tensor,
    m_img2crop: torch.Tensor,
    cfg: AlignConfig,
    mask: torch.Tensor | None = None,
) -> np.ndarray:
    """Paste edited crops back into a copy of ``rgb`` through the feathered face mask.

    Pixels where the warped mask is 0 keep their exact original bytes. Faces are composited in
    order, so a later face wins where masks overlap.

    Args:
        rgb: ``(H, W, 3) uint8`` original image.
        crops: ``(N, 3, S, S)`` edited crops in [0, 1].
        m_img2crop: ``(N, 2, 3)`` the affines the crops were extracted with.
        mask: ``(N, 1, S, S)`` blend masks; default :func:`face_mask`.

    Returns:
        ``(H, W, 3) uint8`` new image.
    """
    out = rgb.copy()
    n = crops.shape[0]
    if n == 0:
        return out
    h, w = rgb.shape[:2]
    s = cfg.size
    device = crops.device
    if mask is None:
        mask = face_mask(cfg, n, device)
    m_crop2img = invert_affine(m_img2crop.cpu())
    inv64 = m_crop2img.numpy().astype(np.float64)
    for i in range(n):
        roi = _footprint(inv64[i], s, h, w)
        if roi is None:
            continue
        x0, y0, x1, y1 = roi
        m = translate_after(m_crop2img[i : i + 1], -float(x0), -float(y0)).to(device)  # crop -> roi
        src = torch.cat([crops[i : i + 1].clamp(0, 1), mask[i : i + 1].to(crops)], dim=1)
        warped = warp_affine(src, m, (y1 - y0, x1 - x0), padding_mode="zeros")
        face, alpha = warped[0, :3], warped[0, 3:4]
        base = torch.from_numpy(np.ascontiguousarray(out[y0:y1, x0:x1])).to(device).permute(2, 0, 1).float()
        blended = base + alpha * (face * 255.0 - base)
        blended = torch.where(alpha > 0, blended.round().clamp(0, 255), base)
        out[y0:y1, x0:x1] = blended.permute(1, 2, 0).to(torch.uint8).cpu().numpy()
    return out


def pool_to(crops: torch.Tensor, res: int) -> torch.Tensor:
    """Crops ``(B, C, S, S)`` at a network's working resolution ``res`` (area pooling when ``S``
    is a multiple of it, else antialiased bilinear)."""
    s = crops.shape[-1]
    if s == res:
        return crops
    if s % res == 0:
        return F.avg_pool2d(crops, s // res)
    return F.interpolate(crops, size=(res, res), mode="bilinear", align_corners=False, antialias=True)


def paste_residuals(
    rgb: np.ndarray, residuals: torch.Tensor, m_img2crop: torch.Tensor, cfg: AlignConfig, window: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Add crop-space residuals (e.g. a watermark) to a copy of ``rgb``, warped into the image.

    Unlike :func:`paste_crops` the image is not resampled: only the residual is, so pixels where
    it warps to zero keep their exact bytes and the rest change by the residual alone.

    Args:
        rgb: ``(H, W, 3) uint8``; residuals: ``(N, 3, S, S)`` in [0, 1] units;
        m_img2crop: ``(N, 2, 3)`` the affines the crops were extracted with.
        window: ``(y0, y1, x0, x1)`` crop pixels outside which the residuals are 0: only that part
            is warped (the same result, for that part's share of the work).
    """
    out = rgb.copy()
    h, w = rgb.shape[:2]
    wy0, wy1, wx0, wx1 = window or (0, cfg.size, 0, cfg.size)
    residuals = residuals[..., wy0:wy1, wx0:wx1]
    m_crop2img = invert_affine(translate_after(m_img2crop.cpu(), -float(wx0), -float(wy0)))  # window -> image
    inv64 = m_crop2img.numpy().astype(np.float64)
    for i in range(residuals.shape[0]):
        roi = _footprint(inv64[i], (wy1 - wy0, wx1 - wx0), h, w)
        if roi is None:
            continue
        x0, y0, x1, y1 = roi
        m = translate_after(m_crop2img[i : i + 1], -float(x0), -float(y0)).to(residuals.device)
        warped = warp_affine(residuals[i : i + 1].float(), m, (y1 - y0, x1 - x0), padding_mode="zeros")
        base = torch.from_numpy(np.ascontiguousarray(out[y0:y1, x0:x1])).to(residuals.device).permute(2, 0, 1).float()
        new = (base + warped[0] * 255.0).round().clamp(0, 255)
        out[y0:y1, x0:x1] = new.permute(1, 2, 0).to(torch.uint8).cpu().numpy()
    return out


def face_footprints(m_img2crop: torch.Tensor, cfg: AlignConfig, height: int, width: int) -> list[tuple[int, int, int, int] | None]:
    """Per face, the image rectangle ``(x0, y0, x1, y1)`` that :func:`paste_crops` may change."""
    inv = invert_affine(m_img2crop.cpu()).numpy().astype(np.float64)
    return [_footprint(inv[i], cfg.size, height, width) for i in range(len(inv))]


def warp_mask_to_image(m_img2crop: torch.Tensor, cfg: AlignConfig, height: int, width: int) -> np.ndarray:
    """Union of the faces' blend masks in image coordinates: ``(H, W) float32`` in [0, 1]."""
    out = np.zeros((height, width), dtype=np.float32)
    n = m_img2crop.shape[0]
    if n == 0:
        return out
    mask = face_mask(cfg, n)
    m_crop2img = invert_affine(m_img2crop.cpu())
    inv64 = m_crop2img.numpy().astype(np.float64)
    for i in range(n):
        roi = _footprint(inv64[i], cfg.size, height, width)
        if roi is None:
            continue
        x0, y0, x1, y1 = roi
        m = translate_after(m_crop2img[i : i + 1], -float(x0), -float(y0))
        warped = warp_affine(mask[i : i + 1], m, (y1 - y0, x1 - x0), padding_mode="zeros")
        out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], warped[0, 0].numpy())
    return out
