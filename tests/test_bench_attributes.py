"""The bench's attributes measurement (refacex_plugin/bench/attributes.py): the summaries on known
inputs, the report, and one real face through the estimator."""

import numpy as np
import pytest

from refacex_plugin.bench import attributes as BA

# (female prob, age years, L*, ITA): a woman of 30 with lighter skin, a man of 45 with darker skin,
# a boy of 8 (lighter), a woman of 70 whose skin could not be measured
ORIG = np.array(
    [
        [0.9, 30.0, 65.0, 40.0],
        [0.1, 45.0, 40.0, -10.0],
        [0.2, 8.0, 70.0, 50.0],
        [0.8, 70.0, np.nan, np.nan],
    ]
)


def test_unchanged_attributes_are_all_kept():
    s = BA.summarise(ORIG, ORIG.copy())
    for g in ("all", "women", "men", "lighter", "darker"):
        q = s[g]
        assert q["gender_kept"] == 1.0 and q["age_band_kept"] == 1.0, (g, q)
        assert q["age_error_years"] == 0.0 and q["fallback_faces"] == 0
    assert s["all"]["lightness_moved"] == 0.0 and s["all"]["lightness_shift"] == 0.0
    assert s["all"]["lightness_faces"] == 3  # the unmeasured skin is left out, not a 0 shift
    assert [s[g]["faces"] for g in BA.GROUPS] == [4, 2, 2, 1, 0, 1, 1, 1, 2, 1]
    assert s["age 13-19"]["gender_kept"] is None and s["age 13-19"]["age_error_years"] is None  # an empty group


def test_flipped_gender_shifted_age_and_darkened_skin():
    anon = ORIG.copy()
    anon[:, 0] = 1 - anon[:, 0]  # every gender flipped
    anon[:, 1] += [5.0, 20.0, 2.0, -3.0]  # 30->35 same band, 45->65 crosses 60, 8->10, 70->67
    anon[:, 2] += [-12.0, 4.0, -2.0, 0.0]  # one face moves by more than 10 L*
    s = BA.summarise(ORIG, anon)
    assert s["all"]["gender_kept"] == 0.0 and s["women"]["gender_kept"] == 0.0 and s["men"]["gender_kept"] == 0.0
    assert s["all"]["age_band_kept"] == pytest.approx(0.75)
    assert s["age 40-59"]["age_band_kept"] == 0.0 and s["age 20-39"]["age_band_kept"] == 1.0
    assert s["all"]["age_error_years"] == pytest.approx((5 + 20 + 2 + 3) / 4)
    assert s["all"]["lightness_moved"] == pytest.approx(1 / 3)
    assert s["all"]["lightness_shift"] == pytest.approx((-12 + 4 - 2) / 3)
    assert s["lighter"]["lightness_shift"] == pytest.approx(-7.0) and s["darker"]["lightness_shift"] == pytest.approx(4.0)


def test_a_fallback_face_is_not_kept_and_left_out_of_the_means():
    anon = ORIG.copy()
    anon[1, 1] += 30.0  # the fallback face's own (mosaic) readings must not count
    anon[1, 2] -= 30.0
    fb = np.array([False, True, False, False])
    q = BA.summarise(ORIG, anon, fb)
    assert q["all"]["fallback_faces"] == 1 and q["men"]["fallback_faces"] == 1 and q["women"]["fallback_faces"] == 0
    assert q["all"]["gender_kept"] == 0.75 and q["all"]["age_band_kept"] == 0.75  # kept by the others, not by it
    assert q["darker"]["gender_kept"] == 0.0 and q["darker"]["age_band_kept"] == 0.0
    assert q["all"]["age_error_years"] == 0.0 and q["all"]["lightness_shift"] == 0.0 and q["all"]["lightness_moved"] == 0.0
    assert q["darker"]["age_error_years"] is None and q["darker"]["lightness_faces"] == 0


def test_the_report_says_the_figures_are_self_judged():
    from refacex_plugin.bench.report import attributes_markdown

    fb = np.array([False, True, False, False])
    res = {
        "attributes": {
            "faces": 4,
            "images_sampled": 5,
            "images_without_central_face": 1,
            "original_groups": {g: int(m.sum()) for g, m in BA.group_masks(ORIG).items()},
            "original_skin_unmeasured": 1,
            "reference": {"what": BA.REFERENCE, "groups": BA.summarise(ORIG, ORIG)},
        },
        "methods": {"refacex": {"attributes": {"faces": 4, "fallback_faces": 1, "groups": BA.summarise(ORIG, ORIG, fb)}}},
    }
    text = "\n".join(attributes_markdown(res))
    assert "Self-judged" in text and "upper bound" in text
    assert "Fallback faces: 1 of 4 (counted as not kept" in text
    assert "| all | 4 | 75.0 % (" in text and "| darker | 1 | 0.0 % (" in text


def test_a_real_face_keeps_its_attributes_in_a_mirror(example_rgb):
    """The estimator on a real face (the crop cut at the face's five points): the same face twice is
    kept exactly; its mirror image (the report's reference) keeps gender and age band, near in L*."""
    from refacex_plugin.detection import central_face, load_detector

    det = load_detector()(example_rgb)
    c = central_face(det, *example_rgb.shape[:2])
    judge = BA._Judge()
    a = judge(example_rgb, det.landmarks[c])
    assert a[0] >= 0.5 and 15 <= a[1] < 45 and np.isfinite(a[2])  # Serena Williams, aged 20-odd
    same = BA.kept_figures(a[None], judge(example_rgb, det.landmarks[c])[None])
    assert same["gender_kept"] == 1.0 and same["age_error_years"] == 0.0 and same["lightness_shift"] == 0.0
    mirrored = judge(example_rgb, det.landmarks[c], mirror=True)
    assert not np.array_equal(mirrored, a)  # really another input
    q = BA.kept_figures(a[None], mirrored[None])
    assert q["gender_kept"] == 1.0 and q["age_error_years"] < 8 and abs(q["lightness_shift"]) < 3


def test_measure_attributes_counts_the_writers_fallback_faces(monkeypatch):
    """The judged face is the detections' face ``c``, and its record's ``fallback`` marks it (fakes: no models)."""
    from types import SimpleNamespace

    import refacex_plugin.image_io as io
    import refacex_plugin.writer as W

    class Judge:
        def __call__(self, rgb, landmarks5, mirror=False):
            return ORIG[int(rgb[0, 0, 0])] if not rgb[0, 0, 1] else ORIG[int(rgb[0, 0, 0])] + [0.0, 25.0, 0.0, 0.0]

    class Writer:  # face 1 of each image is the judged one; it falls back in image 2 (the darker man)
        def anonymise_image(self, rgb, det):
            out = rgb.copy()
            out[0, 0, 1] = 1  # anonymised: every age read 25 years older
            k = int(rgb[0, 0, 0])
            faces = [SimpleNamespace(fallback="other face"), SimpleNamespace(fallback="too small" if k == 1 else None)]
            return SimpleNamespace(image=out, faces=faces)

    monkeypatch.setattr(BA, "_Judge", Judge)
    monkeypatch.setattr(io, "read_image", lambda f: SimpleNamespace(rgb=np.full((4, 4, 3), (int(f), 0, 0), np.uint8)))  # red: which face
    monkeypatch.setattr(W, "make_writer", lambda *a, **k: Writer())
    det = SimpleNamespace(landmarks=np.zeros((2, 5, 2)))
    shared, per = BA.measure_attributes(["fake"], ["0", "1", "2", "3"], [(det, 1)] * 4, progress=False)
    assert shared["faces"] == 4 and shared["original_groups"]["darker"] == 1 and shared["original_skin_unmeasured"] == 1
    a = per["fake"]
    assert a["faces"] == 4 and a["fallback_faces"] == 1 and a["groups"]["darker"]["fallback_faces"] == 1
    g = a["groups"]["all"]
    assert g["gender_kept"] == 0.75 and g["age_error_years"] == pytest.approx(25.0)  # the fallback face left out
    assert g["age_band_kept"] == 0.25  # 30->55 and 8->33 change band, 70->95 stays 60+, the fallback is not kept
