import json

import numpy as np
import pytest

from refacex_plugin.bench import metrics as M
from refacex_plugin.bench.dataset import make_split, read_pairs


def test_psnr_and_ssim_by_hand():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert M.psnr(a, a) == M.PSNR_IDENTICAL
    b = a.astype(int)
    b[..., 0] = np.clip(b[..., 0] + 10, 0, 255)
    mse = ((b - a.astype(int)) ** 2).mean()
    assert M.psnr(a, b.astype(np.uint8)) == pytest.approx(10 * np.log10(255**2 / mse))
    mask = np.zeros((32, 48), np.uint8)
    mask[:, :10] = 1
    c = a.copy()
    c[:, 10:] = 0
    assert M.psnr(a, c, mask) == M.PSNR_IDENTICAL
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.ssim(a, c, mask) > M.ssim(a, c)
    assert M.ssim(a, rng.integers(0, 256, a.shape, dtype=np.uint8)) < 0.2


def test_similarities_and_ranks():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(50, 16))
    np.testing.assert_allclose(np.diag(M.cosine_matrix(e, e)), 1.0, atol=1e-9)
    np.testing.assert_allclose(M.paired_similarity(e, e, "euclidean"), 0.0, atol=1e-9)
    labels = np.arange(50)
    for metric in ("cosine", "euclidean"):
        assert M.rank_k(e, e, labels, labels, (1, 5), metric) == {1: 1.0, 5: 1.0}
    shuffled = M.rank_k(e, e, labels, np.roll(labels, 1), (1,))
    assert shuffled[1] == 0.0


def test_threshold_at_far_and_best_accuracy():
    rng = np.random.default_rng(2)
    imp = rng.normal(0, 1, 100_000)
    thr = M.threshold_at_far(imp, 1e-3)
    assert (imp >= thr).mean() <= 1e-3
    assert (imp >= thr - 0.05).mean() > 1e-3 * 0.5
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    acc, t = M.best_threshold_accuracy(scores, np.array([0, 0, 0, 1, 1]))
    assert acc == 1.0 and 0.3 < t <= 0.8
    labels = np.array([0, 0, 1, 1])
    e = np.array([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]])
    imp = M.impostor_scores(e, labels)
    assert len(imp) == 4 and (imp < 0.2).all()


@pytest.mark.parametrize("k, n", [(0, 300), (22, 300), (150, 300), (300, 300), (1, 3)])
def test_wilson_interval_brackets_the_rate_and_matches_the_closed_form(k, n):
    lo, hi = M.wilson_interval(k / n, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    # the interval's ends are the rates whose normal test just accepts k of n: |k/n - p| = z sqrt(p (1 - p) / n)
    for p in (lo, hi):
        if 0.0 < p < 1.0:
            assert abs(abs(k / n - p) - 1.96 * np.sqrt(p * (1 - p) / n)) < 1e-9
    assert M.wilson_interval(22 / 300, 300) == pytest.approx((0.0489, 0.1085), abs=1e-4)


def test_landmark_and_pose_metrics(lfw_sample):
    from refacex_plugin.bench.originals import Landmarks68
    from refacex_plugin.detection import load_detector
    from refacex_plugin.image_io import read_image

    rgb = read_image(lfw_sample[0]).rgb
    box = load_detector()(rgb).boxes[0]
    pts = Landmarks68()(rgb, box)
    assert M.nme(pts, pts) == 0.0
    iod = np.linalg.norm(pts[36] - pts[45])
    assert M.nme(pts + [0.1 * iod, 0], pts) == pytest.approx(0.1, rel=1e-4)
    pose = M.head_pose(pts, rgb.shape[:2])
    assert np.isfinite(pose).all() and (np.abs(pose) < 60).all()
    flipped = pts.copy()
    flipped[:, 0] = rgb.shape[1] - flipped[:, 0]
    flipped = flipped[_MIRROR68]
    assert np.sign(M.head_pose(flipped, rgb.shape[:2])[0]) != np.sign(pose[0]) or abs(pose[0]) < 2
    np.testing.assert_allclose(M.angle_diff(np.array([179.0]), np.array([-179.0])), [2.0])
    assert M.box_iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == pytest.approx(1 / 3)


# iBUG-68 left/right mirror permutation.
_MIRROR68 = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


def test_ecc_comparison_counts_hard_and_soft_corrections():
    """The robustness report's code comparison: 30 wrong bits among 60 weakly read ones are past
    every hard radius (t = 10, t = 21) but not past the reader's soft decoding of a vault reference."""
    from refacex_plugin.bench.robustness import ecc_comparison

    rng = np.random.default_rng(0)
    clean = np.ones(252)
    weak = clean.copy()
    where = rng.choice(252, 60, replace=False)
    weak[where] = 0.05 * np.where(np.arange(60) < 30, -1, 1)
    lost = -clean  # every bit wrong
    margins = [clean, weak, lost]
    out = ecc_comparison({"row": [m < 0 for m in margins]}, {"row": margins})["row"]
    assert out["bch_t10"] == out["bch_t21"] == pytest.approx(1 / 3)
    assert out["bch_t21_soft"] == pytest.approx(2 / 3)
    assert out["median_bit_errors"] == 30


def test_a_strong_blur_defeats_detection(example_rgb):
    from refacex_plugin.bench.originals import central_face
    from refacex_plugin.detection import load_detector
    from refacex_plugin.writer import make_writer

    det = load_detector()
    out = make_writer("blur", strength=4.0).anonymise_image(example_rgb).image
    d = det(out)
    assert central_face(d, *out.shape[:2]) is None or d.scores.max() < 0.6


def test_split_is_seeded_and_disjoint(lfw):
    a = make_split(lfw, seed=3, quick=True, quick_identities=10, quick_distractors=20)
    b = make_split(lfw, seed=3, quick=True, quick_identities=10, quick_distractors=20)
    assert a.gallery == b.gallery and a.probes == b.probes
    assert len(a.gallery) == 30 and len(a.probes) == 10
    assert not set(a.gallery) & set(a.probes)
    assert set(a.probe_labels) <= set(a.gallery_labels)
    pairs = read_pairs(lfw)
    assert len(pairs) > 4000 and sum(s for *_, s in pairs) > 2000


@pytest.mark.slow
def test_dlib_reaches_its_known_lfw_accuracy(lfw):
    """dlib's descriptor is documented at 99.38% on LFW; our alignment must reproduce ~99%."""
    from refacex_plugin.bench.recognizers import load_recognizer
    from refacex_plugin.bench.runner import pairs_accuracy
    from refacex_plugin.detection import load_detector

    res = pairs_accuracy([load_recognizer("dlib")], load_detector(), lfw, limit=200)["dlib"]
    assert res["pairs"] >= 195
    assert res["accuracy"] >= 0.97, res


@pytest.mark.slow
def test_bench_end_to_end_small(lfw, tmp_path):
    from refacex_plugin.bench.report import markdown, plots
    from refacex_plugin.bench.runner import BenchConfig, run

    cfg = BenchConfig(
        data=lfw,
        methods=["blur", "mask"],
        sections=("privacy", "utility", "recovery", "speed"),
        recognizers=["dlib"],
        quick=True,
        quick_identities=6,
        quick_distractors=10,
        cache_dir=tmp_path / "cache",
        speed_images=3,
        pairs_limit=0,
        progress=False,
    )
    res = run(cfg)
    assert res["schema"] == "refacex-bench/1" and res["data"]["probe_images"] == 6
    assert res["recognizers"]["dlib"]["threshold"] < 0
    ref = res["reference"]["privacy"]["dlib"]
    assert ref["match_rate"] == 1.0  # an untouched face always matches itself
    for m in ("blur", "mask"):
        e = res["methods"][m]
        assert 0 <= e["privacy"]["dlib"]["match_rate"] <= 1
        assert e["utility"]["background_psnr_db"] == M.PSNR_IDENTICAL
        assert e["recovery"]["available"] is False
        assert e["speed"]["pipeline_images_per_s"] > 0
        assert 0 < e["speed"]["full_images_per_s"] < e["speed"]["pipeline_images_per_s"] * 1.5  # + seal + embed
        assert (
            e["speed"]["extract_faces_per_s"] > 0 and e["speed"]["extract_authenticated"] >= 1
        )  # payloads embedded in the speed run open again
        assert e["speed"]["full_watermark"] and e["speed"]["backend"] == "torch"
        assert 0 < e["speed"]["extract_images"] <= 3  # the reader timed on the marked images, at most EXTRACT_IMAGES
    blur_nme5 = res["methods"]["blur"]["utility"]["detector_nme5"]  # blurred faces are found again, landmarks near
    assert blur_nme5 is not None and 0 < blur_nme5 < 0.5 and "5-pt NME (detector)" in markdown(res)
    assert "timed once on the first" in markdown(res)
    assert res["methods"]["blur"]["speed"]["time_ratio_vs_blur"] == 1.0
    from refacex_plugin.bench.speed import SPEED_ROUNDS

    assert res["methods"]["blur"]["speed"]["full_vs_full_ratio_vs_blur"] == 1.0
    assert res["methods"]["mask"]["speed"]["rounds"] == SPEED_ROUNDS[True]
    import os

    assert res["methods"]["mask"]["speed"]["parallel"] is None  # a quick run times one image at a time, on one thread
    assert res["methods"]["mask"]["speed"]["torch_threads"] == int(os.environ.get("OMP_NUM_THREADS", "1"))
    assert res["methods"]["mask"]["privacy"]["dlib"]["mean_similarity"] < ref["mean_similarity"]
    json.dumps(res)  # serialisable
    assert "## Privacy" in markdown(res) and "## Speed" in markdown(res)
    assert [p.name for p in plots(res, tmp_path / "plots")] == ["privacy_vs_utility.png"]
    again = run(cfg)  # served from the originals cache
    assert again["reference"]["privacy"] == res["reference"]["privacy"]


def test_progress_reaches_a_log_file_as_it_goes(tmp_path):
    """Where stderr is a file (a CI log, ``2> bench.log``), progress is plain lines every few items
    with the time taken, each flushed as it is written: readable while the run goes on."""
    from refacex_plugin.bench.progress import progress

    log = tmp_path / "bench.log"
    with open(log, "w") as f:
        seen, during = [], None
        for i in progress(range(25), "robustness", stream=f, every=10):
            seen.append(i)
            if i == 12:
                during = log.read_text().splitlines()
    lines = log.read_text().splitlines()
    assert seen == list(range(25))
    assert during == ["robustness: 0/25 img", "robustness: 10/25 img in 0 s"]
    assert lines[-2].startswith("robustness: 20/25 img in ") and lines[-1].startswith("robustness: 25/25 img in ")
    assert "\r" not in log.read_text()
    with open(log, "w") as f:
        assert list(progress(iter("abc"), "x", stream=f, every=2)) == ["a", "b", "c"]
    assert log.read_text().splitlines()[1:] == ["x: 2 img in 0 s", "x: 3 img in 0 s"]


def test_robustness_marks_faces_of_the_default_method(monkeypatch, tmp_path):
    """The robustness section marks the faces users mark: anonymised by the default method
    (whatever it is), not the originals, nor the first reversible method measured."""
    import refacex_plugin.anonymisers as A
    import refacex_plugin.bench.robustness as R
    from refacex_plugin.bench.dataset import Split
    from refacex_plugin.bench.runner import BenchConfig, measure_robustness

    hosts = []
    monkeypatch.setattr(A, "default_method", lambda: "blur")
    monkeypatch.setattr(R, "evaluate_watermark", lambda name, files, host, *a, **k: hosts.append(host) or {})
    files = [tmp_path / f"p{i}" / "a.jpg" for i in range(4)]
    cfg = BenchConfig(data=tmp_path, methods=["mask", "refacex"], watermarks=["dct-qim-low"], robustness_faces=2, false_detect_images=2)
    measure_robustness(cfg, Split(gallery=files, gallery_labels=["a"] * 4))
    assert hosts == ["blur"]


@pytest.mark.slow
def test_robustness_reports_combined_distortions(example_image, capsys):
    """A shared photo is often shrunk or cropped and then saved as JPEG again: both combinations
    are rows of the robustness report, and a face marked on its anonymised host opens after the
    crop and JPEG Q75. The section reports its progress on stderr (not a terminal here)."""
    from refacex_plugin.bench.report import robustness_markdown
    from refacex_plugin.bench.robustness import evaluate_watermark

    out = evaluate_watermark("dct-qim-low", [example_image], "pixelate", payload="vault-ref")
    assert out["faces"] == 1 and out["host"] == "pixelate"
    rows = robustness_markdown({"dct-qim-low": out})
    for row in ("resize_0.5+jpeg_q75", "crop_10+jpeg_q75"):
        assert row in out["exact_decode_rate"]
        assert any(line.startswith(f"| {row} | ") for line in rows)
    assert out["exact_decode_rate"]["crop_10+jpeg_q75"] == 1.0 and out["exact_decode_rate"]["none"] == 1.0
    err = capsys.readouterr().err
    assert "robustness dct-qim-low" in err and "1/1 img in " in err


def _result(**extra) -> dict:
    """The smallest result dictionary the report renders: a run's header fields plus ``extra``."""
    res = {
        "schema": "refacex-bench/1",
        "refacex_version": "test",
        "git_commit": None,
        "created": "2026-01-01T00:00:00+00:00",
        "command": "refacex bench",
        "mode": "quick",
        "seed": 0,
        "device": "cpu",
        "sections": [],
        "data": {
            "path": "lfw",
            "gallery_images": 1,
            "gallery_identities": 1,
            "probe_images": 0,
            "probe_identities": 0,
            "probes_per_person": 1,
        },
        "detector": "centerface",
        "recognizers": {},
        "methods": {},
    }
    res.update(extra)
    return res


def test_naturalness_runs_at_64_and_128_px_and_reports_both(example_image, example_rgb):
    """The naturalness section trains its classifier on the same faces at 64 px (``accuracy``, as
    ever) and at 128 px (``accuracy_128``, one more strided block); the report shows both."""
    import torch

    from refacex_plugin.bench.naturalness import PATCHES, RealOrAnonymised, face_patches, held_out, measure_naturalness
    from refacex_plugin.bench.originals import central_face
    from refacex_plugin.bench.report import markdown
    from refacex_plugin.detection import load_detector

    assert PATCHES == (64, 128)
    assert len(RealOrAnonymised().blocks) == 4 and len(RealOrAnonymised(size=128).blocks) == 5  # 64 px: today's network
    assert RealOrAnonymised(size=128)(torch.zeros(2, 3, 128, 128)).shape == (2,)
    with pytest.raises(ValueError):
        RealOrAnonymised(size=96)
    det = load_detector()(example_rgb)
    c = central_face(det, *example_rgb.shape[:2])
    patches = face_patches(example_rgb, det.landmarks[c])
    assert {s: p.shape for s, p in patches.items()} == {64: (64, 64, 3), 128: (128, 128, 3)}

    labels = [f"person {i}" for i in range(10)]
    assert any(map(held_out, labels)) and not all(map(held_out, labels))  # some train people, some test people
    out = measure_naturalness(["blur"], [example_image] * 10, labels, [(det, c)] * 10, steps=3, progress=False)
    n = out["blur"]
    assert list(n) == ["accuracy", "train_faces", "test_faces", "steps", "accuracy_128"]
    assert 0 <= n["accuracy"] <= 1 and 0 <= n["accuracy_128"] <= 1 and n["steps"] == 3
    assert n["train_faces"] + n["test_faces"] == 10 and n["test_faces"] > 0

    text = markdown(_result(naturalness={"blur": {**n, "accuracy": 0.625, "accuracy_128": 0.875}, "mask": {**n, "accuracy_128": None}}))
    assert "| method | test accuracy 64 px | test accuracy 128 px | train / test faces | steps |" in text
    assert f"| blur | 0.625 | 0.875 | {n['train_faces']} / {n['test_faces']} | 3 |" in text
    old = {k: v for k, v in n.items() if k != "accuracy_128"}  # a run before the 128-px classifier still renders
    assert f"| blur | {n['accuracy']:.3f} | – |" in markdown(_result(naturalness={"blur": old}))


def test_merge_bench_carries_attributes_and_the_128_px_naturalness(tmp_path):
    """research/merge_bench.py: one run's naturalness (both sizes) and another's attributes (the
    shared top-level block and the per-method one) reach the merged JSON and report; attributes
    measured on different samples are refused."""
    import importlib.util
    from pathlib import Path

    from refacex_plugin.bench.attributes import REFERENCE, group_masks, summarise

    spec = importlib.util.spec_from_file_location("merge_bench", Path(__file__).parents[1] / "research" / "merge_bench.py")
    merge_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_bench)

    rng = np.random.default_rng(0)
    orig = np.column_stack([rng.random(20), rng.uniform(15, 70, 20), rng.uniform(30, 80, 20), np.zeros(20)])
    anon = orig + [0, 3, 2, 0]
    shared = {
        "faces": 20,
        "original_groups": {g: int(m.sum()) for g, m in group_masks(orig).items()},
        "original_skin_unmeasured": 0,
        "reference": {"what": REFERENCE, "groups": summarise(orig, orig)},
        "images_sampled": 21,
        "images_without_central_face": 1,
    }
    natural = {"accuracy": 0.7, "train_faces": 14, "test_faces": 6, "steps": 5, "accuracy_128": 0.8}
    a = _result(command="a", sections=["naturalness"], naturalness={"blur": natural})
    b = _result(
        command="b",
        sections=["attributes"],
        attributes=shared,
        methods={"blur": {"attributes": {"faces": 20, "fallback_faces": 0, "groups": summarise(orig, anon)}}},
    )
    out = merge_bench.merge([a, b])
    assert out["sections"] == ["naturalness", "attributes"] and out["command"] == "a ; b"
    assert out["naturalness"]["blur"]["accuracy_128"] == 0.8 and out["attributes"] == shared
    assert out["methods"]["blur"]["attributes"]["groups"]["all"]["faces"] == 20
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p, r in zip(paths, (a, b)):
        p.write_text(json.dumps(r))
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, spec.origin, *map(str, paths), "--json", str(tmp_path / "m.json"), "--report", str(tmp_path / "m.md")], check=True
    )
    text = (tmp_path / "m.md").read_text()
    assert "| blur | 0.700 | 0.800 | 14 / 6 | 5 |" in text
    assert "## Attributes kept" in text and "### blur" in text and "### Reference:" in text
    assert json.loads((tmp_path / "m.json").read_text())["attributes"] == shared
    other = _result(command="c", sections=["attributes"], attributes={**shared, "faces": 19}, methods={})
    with pytest.raises(AssertionError, match="different samples"):
        merge_bench.merge([b, other])
