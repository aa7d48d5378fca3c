"""The landmark-driven warp that puts a drawn face's features where the original's were."""

import numpy as np
import pytest

from refacex_plugin.image_io import read_image
from refacex_plugin.landmarks import rbf_displacement, warp_features


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_displacement_field_interpolates_its_centres_and_fades_away(dtype):
    rng = np.random.default_rng(0)
    centres = rng.uniform(40, 60, (12, 2)).astype(dtype)
    values = rng.normal(0, 3, (12, 2)).astype(dtype)
    at_centres = rbf_displacement(centres, values, centres, sigma=8.0, ridge=1e-6)
    assert np.abs(at_centres - values).max() < 1e-2
    far = rbf_displacement(centres, values, np.array([[200.0, 200.0]], dtype), sigma=8.0)
    assert np.abs(far).max() < 1e-6


def test_a_feature_moves_from_its_source_to_its_target():
    img = np.zeros((120, 120, 3), np.uint8)
    img[38:43, 38:43] = 255  # a dot at (40, 40)
    box = np.array([20.0, 20.0, 100.0, 100.0])
    out = warp_features(img, np.array([[40.0, 40.0]]), np.array([[46.0, 43.0]]), box, (0, 0, 120, 120))
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(xs.mean() - 46) < 1.0 and abs(ys.mean() - 43) < 1.0


def test_refacex_keeps_the_original_landmarks_and_the_background(lfw):
    """On real faces, with dlib's real 68-point predictor: the warp brings the anonymised face's
    landmarks closer to the original's, and leaves every pixel outside the face masks alone."""
    from refacex_plugin.anonymisers import available_methods
    from refacex_plugin.bench.metrics import nme
    from refacex_plugin.geometry import alignment_matrices, warp_mask_to_image
    from refacex_plugin.landmarks import Landmarks68
    from refacex_plugin.writer import make_writer

    if "generator" not in available_methods():
        pytest.skip("refacex weights not shipped")
    kept, drawn = make_writer("generator", donor_seed=0, keep_landmarks=True), make_writer("generator", donor_seed=0)
    assert kept.keep_landmarks and not drawn.keep_landmarks  # off by default: it costs privacy
    assert not make_writer("blur", keep_landmarks=True).keep_landmarks  # only for methods that draw a face
    lm68 = Landmarks68()
    errors = {"kept": [], "drawn": []}
    for person in ["Aaron_Eckhart", "Serena_Williams", "Colin_Powell", "Tony_Blair", "George_W_Bush"]:
        rgb = read_image(sorted((lfw / person).glob("*.jpg"))[0]).rgb
        det = kept.detect(rgb)
        box = det.boxes[0]
        ref = lm68(rgb, box)
        for name, pipe in (("kept", kept), ("drawn", drawn)):
            out = pipe.anonymise_image(rgb, det).image
            errors[name].append(nme(lm68(out, box), ref))
            if name == "kept":
                outside = warp_mask_to_image(alignment_matrices(det.landmarks, pipe.align), pipe.align, *rgb.shape[:2]) == 0
                assert np.array_equal(out[outside], rgb[outside])
    assert np.mean(errors["kept"]) < 0.75 * np.mean(errors["drawn"])


def test_the_cli_can_leave_the_generators_geometry(lfw, tmp_path):
    """`refacex anonymise --no-keep-landmarks` skips the warp: its face differs from the default's,
    and only the face does (less than half the image)."""
    from click.testing import CliRunner

    from refacex_plugin.anonymisers import available_methods
    from refacex_plugin.cli import main

    if "generator" not in available_methods():
        pytest.skip("refacex weights not shipped")
    src = sorted((lfw / "Colin_Powell").glob("*.jpg"))[0]
    outs = {}
    for flag in ("--keep-landmarks", "--no-keep-landmarks"):
        res = CliRunner().invoke(
            main,
            ["anonymise", str(src), "-o", str(tmp_path / flag), "--method", "generator", "--format", "png", flag],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        outs[flag] = read_image(next((tmp_path / flag).rglob("*.png"))).rgb.astype(int)
    changed = np.abs(outs["--keep-landmarks"] - outs["--no-keep-landmarks"]).max(-1) > 0
    assert 0 < changed.mean() < 0.5
