import numpy as np
import pytest

from refacex_plugin.detection import Detections, DetectorConfig, landmarks_68_to_5, load_detector, order_landmarks
from refacex_plugin.image_io import read_image


@pytest.mark.parametrize("name", ["centerface", "dlib"])
def test_finds_the_face_in_real_lfw_images(name, lfw_sample):
    det = load_detector(name)
    found = 0
    for path in lfw_sample:
        rgb = read_image(path).rgb
        d = det(rgb)
        h, w = rgb.shape[:2]
        # LFW centres the labelled face: the best detection that covers the centre counts.
        central = [i for i, b in enumerate(d.boxes) if b[0] < w / 2 < b[2] and b[1] < h / 2 < b[3]]
        if central:
            found += 1
            lm = d.landmarks[central[0]]
            box = d.boxes[central[0]]
            assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # ordered pairs
            assert lm[:2, 1].mean() < lm[2, 1] < lm[3:, 1].mean()  # eyes above nose above mouth
            pad = 0.25 * (box[2] - box[0])
            assert (lm[:, 0] > box[0] - pad).all() and (lm[:, 0] < box[2] + pad).all()
    assert found >= 0.97 * len(lfw_sample), f"{name} found {found}/{len(lfw_sample)}"


def test_many_faces_in_one_image(group_rgb):
    d = load_detector("centerface")(group_rgb)
    assert len(d) == 6
    assert (np.diff(d.scores) <= 0).all()  # sorted by score
    # One face per tile.
    tiles = {(int((b[1] + b[3]) / 2 // 250), int((b[0] + b[2]) / 2 // 250)) for b in d.boxes}
    assert len(tiles) == 6


def test_no_face_in_a_flat_or_noise_image():
    det = load_detector("centerface")
    assert len(det(np.full((300, 400, 3), 128, np.uint8))) == 0
    rng = np.random.default_rng(0)
    assert len(det(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))) == 0


def test_min_size_and_threshold_filter(example_rgb):
    assert len(load_detector("centerface", DetectorConfig(min_size=20))(example_rgb)) == 1
    assert len(load_detector("centerface", DetectorConfig(min_size=400))(example_rgb)) == 0
    assert len(load_detector("centerface", DetectorConfig(threshold=0.999))(example_rgb)) == 0


def test_large_image_is_downscaled_for_detection_but_coordinates_are_native(example_rgb):
    big = np.kron(example_rgb, np.ones((8, 8, 1), np.uint8))  # 2000x2000
    small = load_detector("centerface")(example_rgb)
    large = load_detector("centerface", DetectorConfig(max_side=1024))(big)
    assert len(large) == 1
    np.testing.assert_allclose(large.landmarks[0] / 8, small.landmarks[0], atol=5.0)


def test_landmark_helpers():
    pts = np.zeros((68, 2), np.float32)
    pts[36:42] = [10, 20]
    pts[42:48] = [30, 20]
    pts[30], pts[48], pts[54] = [20, 30], [12, 40], [28, 40]
    np.testing.assert_allclose(landmarks_68_to_5(pts), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    swapped = np.array([[[30, 20], [10, 20], [20, 30], [28, 40], [12, 40]]], np.float32)
    np.testing.assert_allclose(order_landmarks(swapped)[0], [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    assert len(Detections()) == 0


def test_centerface_runtimes_agree(lfw_sample, group_rgb):
    """onnxruntime (default when installed) and OpenCV's DNN read the same weights: same faces,
    landmarks within a thousandth of a pixel, on any input size."""
    from refacex_plugin.detection import CenterFaceDetector

    pytest.importorskip("onnxruntime")
    ort, cv = CenterFaceDetector(runtime="onnxruntime"), CenterFaceDetector(runtime="opencv")
    assert CenterFaceDetector().runtime == "onnxruntime"
    images = [read_image(p).rgb for p in lfw_sample[:10]] + [group_rgb, group_rgb[:301, :517]]
    for rgb in images:
        a, b = ort(rgb), cv(rgb)
        assert len(a) == len(b)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


@pytest.mark.parametrize("runtime", ["onnxruntime", "opencv"])
def test_detectors_shared_by_threads_find_what_they_find_alone(lfw_sample, group_rgb, runtime):
    """A folder run's workers share one detector; OpenCV's net holds its input between calls."""
    from concurrent.futures import ThreadPoolExecutor

    from refacex_plugin.detection import CenterFaceDetector

    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
    det = CenterFaceDetector(runtime=runtime)
    images = ([read_image(p).rgb for p in lfw_sample[:6]] + [group_rgb, group_rgb[:301, :517]]) * 3
    alone = [det(rgb) for rgb in images]
    with ThreadPoolExecutor(4) as pool:
        shared = list(pool.map(det, images))
    for a, b in zip(alone, shared):
        assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.scores, b.scores)


def test_payload_readers_take_weaker_candidates_with_the_same_network():
    from refacex_plugin.detection import READER_THRESHOLD, reader_config
    from refacex_plugin.reader import make_reader
    from refacex_plugin.writer import make_writer

    assert reader_config(DetectorConfig(threshold=0.5)).threshold == READER_THRESHOLD < 0.5
    assert reader_config(DetectorConfig(threshold=0.1)).threshold == 0.1  # never raised
    writer, reader = make_writer("blur", key=bytes(32)), make_reader(bytes(32))
    from refacex_plugin.writer import CONFIRM_FROM

    # the writer looks down to CONFIRM_FROM, keeping what scores under 0.5 only where the landmarks confirm a face
    assert reader.detector.cfg.threshold == READER_THRESHOLD and writer.detector.cfg.threshold == CONFIRM_FROM and writer.confident == 0.5
    assert writer.embedder.reader is reader.detector  # payloads are embedded for the reader's detector
    assert reader.detector._run is writer.detector._run  # one network, two thresholds
