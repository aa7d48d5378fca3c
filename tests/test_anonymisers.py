import numpy as np
import pytest
import torch
from conftest import DEVICES

from refacex_plugin import operators
from refacex_plugin.anonymisers import BASELINES, available_methods, default_method, get_anonymiser
from refacex_plugin.baselines import blur_faces, mask_faces, pixelate_faces
from refacex_plugin.errors import ModelNotAvailableError
from refacex_plugin.geometry import AlignConfig, alignment_matrices, extract_crops, face_mask
from refacex_plugin.writer import make_writer


@pytest.fixture(scope="module")
def crops(group_rgb):
    from refacex_plugin.detection import load_detector

    cfg = AlignConfig(size=128)
    det = load_detector("centerface")(group_rgb)
    return extract_crops(group_rgb, alignment_matrices(det.landmarks, cfg), cfg)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [blur_faces, pixelate_faces, mask_faces])
def test_baselines_keep_shape_dtype_device_and_range(fn, dtype, device, crops):
    x = crops.to(device=device, dtype=dtype)
    y = fn(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device.type == device
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 0.02  # it changed the face


@pytest.mark.parametrize("fn", [blur_faces, pixelate_faces])
def test_strength_is_monotonic(fn, crops):
    errs = [(fn(crops, s) - crops).abs().mean().item() for s in (0.25, 1.0, 2.0)]
    assert errs[0] < errs[1] < errs[2]


def test_pixelate_is_blockwise_constant(crops):
    y = pixelate_faces(crops, 1.0)  # 16 blocks of 8 px on a 128 crop
    block = y[:, :, :8, :8]
    assert torch.allclose(block, block[:, :, :1, :1].expand_as(block))


def test_mask_is_flat_in_mean_colour(crops):
    m = face_mask(AlignConfig(size=128), crops.shape[0])
    y = mask_faces(crops, 1.0, m)
    assert y.flatten(2).std(-1).max() < 1e-6
    expected = (crops * m).sum((2, 3)) / m.sum((2, 3))
    torch.testing.assert_close(y[:, :, 0, 0], expected)


def test_registry_and_operators(crops):
    assert set(BASELINES) <= set(available_methods())
    assert default_method() in available_methods()
    out = operators.anonymise(crops, method="blur")
    assert out.shape == crops.shape
    with pytest.raises(ModelNotAvailableError, match="unknown method"):
        get_anonymiser("nope")
    full = torch.nn.functional.interpolate(crops, size=(256, 256), mode="bilinear")  # the pipeline's crop size
    bits = torch.randint(0, 2, (len(full), operators_channel_bits()))
    marked = operators.embed(full, bits)
    assert marked.shape == full.shape and ((operators.extract(marked) > 0).long() == bits).float().mean() > 0.99


@pytest.mark.parametrize("method", BASELINES)
def test_pipeline_changes_faces_only(method, group_rgb):
    from refacex_plugin.geometry import warp_mask_to_image

    pipe = make_writer(method)
    res = pipe.anonymise_image(group_rgb)
    assert len(res.faces) == 6
    assert res.image.shape == group_rgb.shape and res.image.dtype == np.uint8
    m = alignment_matrices(np.array([f.landmarks for f in res.faces]), pipe.align)
    mask = warp_mask_to_image(m, pipe.align, *group_rgb.shape[:2])
    diff = np.abs(res.image.astype(int) - group_rgb.astype(int)).max(-1)
    assert diff[mask == 0].max() == 0
    assert diff[mask > 0.9].mean() > 5
    rec = res.faces[0].to_dict()
    assert rec["method"] == method and len(rec["landmarks"]) == 5 and rec["payload"] == "none"


def test_pipeline_with_no_face_returns_copy():
    img = np.full((100, 120, 3), 200, np.uint8)
    res = make_writer("blur").anonymise_image(img)
    assert res.faces == [] and np.array_equal(res.image, img) and res.image is not img


def test_pipeline_refuses_a_key_without_any_watermark(monkeypatch):
    import refacex_plugin.watermark as W
    from refacex_plugin.registry import Registry

    only_learned = Registry("watermark", ("learned",))
    only_learned.register("learned", W._learned)
    monkeypatch.setattr(W, "WATERMARKS", only_learned)
    monkeypatch.setenv("REFACEX_MODELS", "/nonexistent")
    with pytest.raises(ModelNotAvailableError, match="no entry"):
        make_writer("blur", key=b"k" * 32)


def operators_channel_bits():
    from refacex_plugin.payload import CHANNEL_BITS

    return CHANNEL_BITS


def test_writer_and_reader_reprs_hide_the_key():
    from refacex_plugin.reader import make_reader

    key = bytes(range(7, 39))
    for shown in (repr(make_writer("blur", key=key)), repr(make_writer("blur", key=key).embedder), repr(make_reader(key))):
        assert key.hex() not in shown and repr(key) not in shown and str(list(key)) not in shown


def test_a_seeded_donor_draw_repeats_and_an_unseeded_one_differs(example_rgb):
    """The benchmarks seed the pipeline's donor draw so that a run repeats exactly."""
    from refacex_plugin.generator.donors import DonorAssigner, DonorBank

    if "refacex" not in available_methods():
        pytest.skip("refacex weights not shipped")
    runs = [make_writer("refacex", donor_seed=3).anonymise_image(example_rgb).image for _ in range(2)]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], example_rgb)
    bank = DonorBank(np.random.default_rng(0).normal(size=(64, 128)).astype(np.float32), "synthetic")
    emb = np.zeros((20, 128), np.float32)
    draws = [DonorAssigner(bank, "random", None).assign(emb).tolist() for _ in range(2)]
    assert draws[0] != draws[1]  # unseeded: equal with probability 64**-20
