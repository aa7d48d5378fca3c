import math

import numpy as np
import pytest
import torch
from conftest import DEVICES

from refacex_plugin.detection import load_detector
from refacex_plugin.geometry import (
    AlignConfig,
    alignment_matrices,
    canonical_template,
    estimate_similarity,
    extract_crops,
    face_mask,
    invert_affine,
    paste_crops,
    warp_affine,
    warp_mask_to_image,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_similarity_recovers_a_known_transform(dtype):
    g = torch.Generator().manual_seed(0)
    src = (torch.rand(4, 5, 2, generator=g, dtype=dtype) * 200).to(dtype)
    angle, scale = torch.tensor([0.1, -0.5, 1.0, 2.5]), torch.tensor([0.5, 1.0, 2.0, 0.8])
    rot = torch.stack(
        [torch.stack([scale * angle.cos(), -scale * angle.sin()], -1), torch.stack([scale * angle.sin(), scale * angle.cos()], -1)], -2
    )
    t = torch.tensor([[3.0, -4.0], [10.0, 0.0], [-7.0, 2.0], [0.0, 0.0]])
    dst = (src.float() @ rot.transpose(1, 2)) + t[:, None]
    m = estimate_similarity(src, dst)
    assert m.shape == (4, 2, 3)
    torch.testing.assert_close(m[:, :, :2], rot, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(m[:, :, 2], t, atol=1e-3, rtol=1e-3)
    full = invert_affine(m)
    back = (dst - full[:, None, :, 2]) @ torch.linalg.inv(rot).transpose(1, 2) * 0 + (
        dst @ full[:, :, :2].transpose(1, 2) + full[:, None, :, 2]
    )
    torch.testing.assert_close(back, src.float(), atol=1e-3, rtol=1e-3)


def test_template_is_centred_and_scaled():
    cfg = AlignConfig(size=256, zoom=0.75)
    tpl = canonical_template(cfg)
    assert tpl.shape == (5, 2)
    assert abs(tpl[:, 0].mean().item() - 128) < 3
    eye_dist = (tpl[1] - tpl[0]).norm().item()
    assert math.isclose(eye_dist, 35.24 / 112 * 0.75 * 256, rel_tol=0.01)


def test_mask_is_zero_outside_one_inside_and_smooth():
    cfg = AlignConfig(size=128)
    m = face_mask(cfg, batch=2)
    assert m.shape == (2, 1, 128, 128)
    assert m[0, 0, 0, 0] == 0 and m[0, 0, -1, -1] == 0
    c = canonical_template(cfg)[2].round().long()
    assert m[0, 0, c[1], c[0]] == 1
    assert ((m >= 0) & (m <= 1)).all()
    assert m[0, 0].diff(dim=1).abs().max() < 0.25  # feathered, no hard edge


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [128, 256])
def test_round_trip_with_identity_anonymiser(device, size, group_rgb):
    """Crop -> paste back unchanged: only interpolation error inside the mask, nothing outside."""
    cfg = AlignConfig(size=size)
    det = load_detector("centerface")(group_rgb)
    m = alignment_matrices(det.landmarks, cfg)
    crops = extract_crops(group_rgb, m, cfg, device)
    assert crops.shape == (6, 3, size, size) and crops.device.type == device
    out = paste_crops(group_rgb, crops, m, cfg)
    mask = warp_mask_to_image(m, cfg, *group_rgb.shape[:2])
    diff = np.abs(out.astype(int) - group_rgb.astype(int))
    assert diff[mask == 0].max() == 0
    inside = mask > 0.5
    assert inside.sum() > 6 * 2000
    assert diff[inside].mean() < 3.0, diff[inside].mean()


def test_crops_are_aligned_to_the_template(group_rgb):
    cfg = AlignConfig(size=256)
    det = load_detector("centerface")(group_rgb)
    m = alignment_matrices(det.landmarks, cfg)
    pts = torch.cat([torch.as_tensor(det.landmarks), torch.ones(len(det), 5, 1)], -1) @ m.transpose(1, 2)
    err = (pts - canonical_template(cfg)).norm(dim=-1).mean(1)
    assert (err < 0.1 * 256 / 4).all()  # residual of a 5-point similarity fit is small


def test_face_outside_the_image_is_handled(example_rgb):
    cfg = AlignConfig(size=128)
    lm = np.array([[[-300, -300], [-260, -300], [-280, -280], [-295, -260], [-265, -260]]], np.float32)
    m = alignment_matrices(lm, cfg)
    crops = extract_crops(example_rgb, m, cfg)
    out = paste_crops(example_rgb, crops, m, cfg)
    assert np.array_equal(out, example_rgb)


def test_huge_image_only_touches_the_face_region(example_rgb):
    big = np.zeros((6000, 8000, 3), np.uint8)
    big[3000:3250, 5000:5250] = example_rgb
    cfg = AlignConfig()
    det = load_detector("centerface")(big)
    assert len(det) == 1
    m = alignment_matrices(det.landmarks, cfg)
    crops = extract_crops(big, m, cfg)
    out = paste_crops(big, 1 - crops, m, cfg)
    changed = np.argwhere((out != big).any(-1))
    assert changed[:, 0].min() >= 3000 and changed[:, 0].max() < 3250
    assert changed[:, 1].min() >= 5000 and changed[:, 1].max() < 5250


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_warp_affine_matches_kornia(dtype, padding):
    """Our lean warp samples where kornia's ``warp_affine(align_corners=True)`` does."""
    from kornia.geometry.transform import warp_affine as kornia_warp_affine

    g = torch.Generator().manual_seed(0)
    src = torch.rand(3, 2, 37, 53, generator=g, dtype=dtype)
    m = torch.tensor(
        [[[1.3, 0.2, -10.0], [-0.15, 1.25, 5.5]], [[0.7, 0.0, 2.0], [0.0, 0.7, -1.0]], [[0.9, -0.3, 4.37], [0.3, 0.9, 0.0]]], dtype=dtype
    )
    ours = warp_affine(src, m, (29, 41), padding_mode=padding)
    theirs = kornia_warp_affine(src, m, (29, 41), mode="bilinear", padding_mode=padding, align_corners=True)
    assert ours.dtype == dtype and ours.shape == (3, 2, 29, 41)
    torch.testing.assert_close(ours, theirs, atol=1e-4 if dtype == torch.float32 else 1e-10, rtol=0)


def test_extract_crops_shares_one_region_between_overlapping_crops():
    """A search's crops around one face, warped from their shared region at once, equal the same
    crops extracted one by one (and a far-away face still gets its own region)."""
    from refacex_plugin.geometry import perturb_about

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    cfg = AlignConfig()
    lm = np.array([[[100, 120], [140, 118], [122, 145], [105, 170], [138, 168]]], np.float32)
    m = alignment_matrices(lm, cfg)
    around = torch.cat([perturb_about(m, s, a, cfg.size / 2) for s, a in [(1.0, 0.0), (1.05, 2.0), (0.95, -3.0)]])
    far = alignment_matrices(lm + np.float32([250, 80]), cfg)
    for ms in (around, torch.cat([around, far])):
        for luma in (False, True):
            together = extract_crops(rgb, ms, cfg, luma=luma)
            alone = torch.cat([extract_crops(rgb, ms[i : i + 1], cfg, luma=luma) for i in range(len(ms))])
            torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)  # float rounding of the grid


@pytest.mark.parametrize("luma", [False, True])
def test_extract_crops_window_samples_only_that_part(luma):
    """A window of the crop (what a searching reader reads) holds the whole crop's pixels there,
    also where the crop runs off the image, and zeros elsewhere."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (240, 260, 3), dtype=np.uint8)
    cfg = AlignConfig()
    lm = np.array(
        [[[20, 60], [60, 58], [42, 85], [25, 110], [58, 108]], [[150, 90], [190, 92], [170, 115], [152, 140], [188, 141]]], np.float32
    )  # the first runs off the image's left edge
    m = alignment_matrices(lm, cfg)
    y0, y1, x0, x1 = 56, 240, 40, 200
    whole = extract_crops(rgb, m, cfg, luma=luma)
    part = extract_crops(rgb, m, cfg, luma=luma, window=(y0, y1, x0, x1))
    assert part.shape == whole.shape
    torch.testing.assert_close(part[..., y0:y1, x0:x1], whole[..., y0:y1, x0:x1], atol=1e-4, rtol=0)
    outside = part.clone()
    outside[..., y0:y1, x0:x1] = 0
    assert outside.abs().max() == 0


def test_perturbations_about_compose_a_turn_a_zoom_and_a_shift():
    from refacex_plugin.geometry import perturb_about, perturbations_about, translate_after

    cfg = AlignConfig()
    m = alignment_matrices(np.array([[[100, 120], [140, 118], [122, 145], [105, 170], [138, 168]]], np.float32), cfg)
    moves = [(1.04, 2.0, -0.5, 0.25), (0.96, -1.0, 0.0, -0.125), (1.0, 0.0, 3.0, 0.0)]
    one_by_one = torch.cat([translate_after(perturb_about(m, s, a, cfg.size / 2), dx, dy) for s, a, dx, dy in moves])
    torch.testing.assert_close(perturbations_about(m, moves, cfg.size / 2), one_by_one, atol=1e-5, rtol=0)


def test_frame_offset_measures_zoom_turn_and_shift():
    from refacex_plugin.geometry import frame_offset, perturb_about, translate_after

    cfg = AlignConfig()
    m = alignment_matrices(np.array([[[100, 120], [140, 118], [122, 145], [105, 170], [138, 168]]], np.float32), cfg)
    moved = translate_after(perturb_about(m, 1.05, -3.0, cfg.size / 2), 2.0, -4.5)
    zoom, turn, shift = frame_offset(m, moved, cfg.size / 2)[0]
    assert zoom == pytest.approx(0.05, abs=1e-6) and turn == pytest.approx(3.0, abs=1e-5) and shift == pytest.approx(4.5, abs=1e-4)
    assert np.allclose(frame_offset(m, m, cfg.size / 2), 0, atol=1e-6)
