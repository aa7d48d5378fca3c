"""What the default's faces promise: the face's own kind of person, its own skin, sunglasses and
grayscale kept, a mosaic (never a composite) where the bank cannot stand in, and reproducible
output with a key or a seed."""

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refacex_plugin.attributes import AttributeEstimator, Attributes, skin_mask, skin_tone
from refacex_plugin.cli import main
from refacex_plugin.composite import CompositeAnonymiser, shipped_bank
from refacex_plugin.composite.mesh import CropLandmarks
from refacex_plugin.detection import load_detector
from refacex_plugin.geometry import AlignConfig, alignment_matrices, extract_crops
from refacex_plugin.image_io import read_image
from refacex_plugin.writer import make_writer


def _crop_u8(rgb, landmarks):
    crop = extract_crops(rgb, alignment_matrices(landmarks, AlignConfig()), AlignConfig())[0]
    return np.round(crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _judged(rgb, out):
    """The estimator on the same face, cut at the original's detection, before and after."""
    det = load_detector()(rgb)
    marks, est = CropLandmarks(), AttributeEstimator()
    crops = [_crop_u8(x, det.landmarks[:1]) for x in (rgb, out)]
    return est([(c, marks(c)) for c in crops])


def test_a_womans_face_stays_a_womans_and_keeps_its_skin_tone(example_rgb):
    out = make_writer("refacex", donor_seed=0).anonymise_image(example_rgb)
    assert out.faces[0].fallback is None
    before, after = _judged(example_rgb, out.image)
    assert before.gender == after.gender == "female"
    assert abs(after.lightness - before.lightness) < 5  # CIE L* of the bare skin: a darker face stays dark


def test_donors_share_the_faces_gender_and_age_band():
    bank = shipped_bank()
    chooser = CompositeAnonymiser(bank).with_donors(seed=0).chooser
    for person in (Attributes(0.95, 30.0, 55.0, 10.0), Attributes(0.02, 65.0, 70.0, 40.0)):
        fit, reason = chooser.eligible(person)
        assert reason is None and fit.sum() >= 3
        kinds = np.concatenate([bank.attributes, bank.attributes])[fit]
        assert np.all((kinds[:, 0] >= 0.5) == (person.female >= 0.5))
        assert np.all(np.abs(kinds[:, 1] - person.age) <= 20)


def test_a_child_gets_no_adult_donor():
    chooser = CompositeAnonymiser(shipped_bank()).with_donors(seed=0).chooser
    fit, reason = chooser.eligible(Attributes(0.6, 4.0, 60.0, 20.0))
    assert reason is not None and "no fitting donor" in reason


def test_a_doubtful_detection_gets_the_mosaic_never_a_composite(example_rgb):
    det = load_detector()(example_rgb)
    crops = extract_crops(example_rgb, alignment_matrices(det.landmarks[:1], AlignConfig()), AlignConfig())
    anon = CompositeAnonymiser(shipped_bank()).with_donors(seed=0)
    made = anon.anonymise(crops, 1.0, torch.tensor([0.55]))
    assert made.fallbacks[0].startswith("detection too doubtful") and made.donors[0] == []
    # a mosaic: the face is a few flat blocks, where a composite has thousands of colours
    face = made.crops[0, :, 80:200, 80:180].permute(1, 2, 0).reshape(-1, 3)
    assert len(torch.unique(face, dim=0)) <= 40
    composite = anon.anonymise(crops, 1.0, torch.tensor([0.95]))
    assert (
        composite.fallbacks[0] is None
        and len(torch.unique(composite.crops[0, :, 80:200, 80:180].permute(1, 2, 0).reshape(-1, 3), dim=0)) > 1000
    )


def test_a_head_turned_beyond_the_donors_gets_the_mosaic(lfw):
    rgb = read_image(lfw / "David_Caraway" / "David_Caraway_0002.jpg").rgb
    res = make_writer("refacex", donor_seed=0).anonymise_image(rgb)
    assert res.faces and res.faces[0].fallback and "turned" in res.faces[0].fallback
    assert res.faces[0].donor_id is None and "fallback" in res.faces[0].notes[0]


def test_a_grayscale_photo_gets_a_grayscale_face(example_rgb):
    grey = np.repeat((example_rgb.astype(np.float32) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)[..., None], 3, 2)
    res = make_writer("refacex", donor_seed=0).anonymise_image(grey)
    assert res.faces[0].fallback is None and np.any(res.image != grey)
    assert np.array_equal(res.image[..., 0], res.image[..., 1]) and np.array_equal(res.image[..., 1], res.image[..., 2])


def test_sunglasses_are_kept(lfw):
    rgb = read_image(lfw / "Michelangelo_Antonioni" / "Michelangelo_Antonioni_0001.jpg").rgb
    res = make_writer("refacex", donor_seed=0).anonymise_image(rgb)
    face = res.faces[0]
    assert face.fallback is None and "sunglasses kept" in face.notes
    # the lenses' centres are the original's pixels; the rest of the face is not
    lm = np.asarray(face.landmarks)
    for x, y in np.round(lm[:2]).astype(int):
        assert np.abs(res.image[y - 3 : y + 4, x - 3 : x + 4].astype(int) - rgb[y - 3 : y + 4, x - 3 : x + 4]).max() <= 2
    mx, my = np.round(lm[3:].mean(0)).astype(int)
    assert np.abs(res.image[my - 4 : my + 5, mx - 8 : mx + 9].astype(int) - rgb[my - 4 : my + 5, mx - 8 : mx + 9]).mean() > 5


def test_skin_tone_reads_bare_skin_only(example_rgb):
    crop = _crop_u8(example_rgb, load_detector()(example_rgb).landmarks[:1])
    mesh = CropLandmarks()(crop)
    mask = skin_mask(crop.shape[:2], mesh)
    assert 2000 < mask.sum() < 20000
    for idx in (range(36, 42), range(42, 48), range(48, 60)):  # no eye or lip pixel
        x, y = np.round(mesh[list(idx)].mean(0)).astype(int)
        assert not mask[y, x]
    lightness, ita = skin_tone(crop, mask)
    assert 25 < lightness < 70 and -60 < ita < 50


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_input_with_a_seed_or_a_key_gives_the_same_bytes(tmp_path, example_image):
    run = lambda out, *extra: CliRunner().invoke(main, ["anonymise", str(example_image), "-o", str(tmp_path / out), *extra])  # noqa: E731
    for name in ("s1", "s2"):
        assert run(name, "--seed", "5").exit_code == 0
    assert _sha(tmp_path / "s1" / example_image.name) == _sha(tmp_path / "s2" / example_image.name)
    assert run("s3", "--seed", "6").exit_code == 0
    assert _sha(tmp_path / "s3" / example_image.name) != _sha(tmp_path / "s1" / example_image.name)
    key = tmp_path / "k.key"
    assert CliRunner().invoke(main, ["keygen", "-o", str(key)]).exit_code == 0
    for name in ("k1", "k2"):
        res = run(name, "--key-file", str(key), "--vault", str(tmp_path / f"{name}.vault"), "--records", str(tmp_path / f"{name}.jsonl"))
        assert res.exit_code == 0, res.output
    donors = [json.loads((tmp_path / f"{n}.jsonl").read_text())["faces"][0]["donor_id"] for n in ("k1", "k2")]
    assert donors[0] == donors[1]
    # without a key or a seed each run draws its own secret
    assert run("r1").exit_code == 0 and run("r2").exit_code == 0
    assert _sha(tmp_path / "r1" / example_image.name) != _sha(tmp_path / "r2" / example_image.name)


@pytest.mark.parametrize(
    "extra, said",
    [(["--method", "blur", "--seed", "1"], "draws nothing at random"), (["--seed", "1", "--key-file", "KEY"], "not both")],
)
def test_a_seed_that_does_not_apply_is_refused(tmp_path, example_image, extra, said):
    key = tmp_path / "k.key"
    CliRunner().invoke(main, ["keygen", "-o", str(key)])
    extra = [str(key) if e == "KEY" else e for e in extra]
    res = CliRunner().invoke(main, ["anonymise", str(example_image), "-o", str(tmp_path / "o"), *extra])
    assert res.exit_code != 0 and said in res.output


def test_donors_info_reports_coverage_per_group():
    res = CliRunner().invoke(main, ["donors", "info"])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("| female") or line.startswith("| male")]
    assert len(rows) == 10
    total = sum(int(r.split("|")[3]) for r in rows)
    assert total == len(shipped_bank())
