import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from refacex_plugin import payload as P
from refacex_plugin.channel import match_faces
from refacex_plugin.detection import Detections
from refacex_plugin.errors import ModelNotAvailableError
from refacex_plugin.geometry import AlignConfig, alignment_matrices, extract_crops, face_mask
from refacex_plugin.training import augment as A
from refacex_plugin.watermark import available_watermarks, load_watermark
from refacex_plugin.watermark.classical import DctQimWatermark, dct_matrix
from refacex_plugin.watermark.learned import LearnedWatermark, normalise_residual
from refacex_plugin.zoo import manifest


@pytest.fixture(scope="module")
def face_crops(group_rgb):
    from refacex_plugin.detection import load_detector

    cfg = AlignConfig()
    det = load_detector()(group_rgb)
    return extract_crops(group_rgb, alignment_matrices(det.landmarks, cfg), cfg)


def test_dct_matrix_is_orthonormal():
    d = dct_matrix(8, torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64))


@pytest.mark.parametrize("name", ["dct-qim", "dct-qim-low"])
def test_classical_round_trip_in_the_crop_and_locality(face_crops, name):
    wm = load_watermark(name)
    assert wm.name == name
    bits = torch.randint(0, 2, (len(face_crops), P.CHANNEL_BITS), generator=torch.Generator().manual_seed(0))
    marked = wm.embed(face_crops, bits)
    assert torch.equal((wm.extract(marked) > 0).long(), bits)
    quantised = (marked * 255).round() / 255  # 8-bit storage alone does not break it
    assert torch.equal((wm.extract(quantised) > 0).long(), bits)
    outside = face_mask(AlignConfig())[0, 0] == 0
    assert (marked - face_crops)[:, :, outside].abs().max() == 0
    mse = ((marked - face_crops) ** 2).mean()
    assert 10 * torch.log10(1 / mse) > 40


@pytest.mark.parametrize("name", ["dct-qim", "dct-qim-low"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dct_qim_reads_every_shift_at_once(face_crops, dtype, name):
    """``extract_shifted`` at shift 0 is ``extract``; a mark moved by (dx, dy) reads back exactly,
    and most confidently, at that shift; a gain of the whole crop is undone by the same gain."""
    wm = load_watermark(name)
    crops = face_crops.to(dtype)
    bits = torch.randint(0, 2, (len(crops), P.CHANNEL_BITS), generator=torch.Generator().manual_seed(1))
    marked = wm.embed(crops, bits)
    r = torch.arange(-3, 4)
    shifts = torch.stack(torch.meshgrid(r, r, indexing="xy"), -1).reshape(-1, 2)
    zero = int(((shifts[:, 0] == 0) & (shifts[:, 1] == 0)).nonzero())
    torch.testing.assert_close(wm.extract_shifted(marked, shifts)[:, zero], wm.extract(marked), atol=1e-4, rtol=0)
    moved = torch.roll(marked, shifts=(1, 2), dims=(2, 3))  # content moves +2 in x, +1 in y
    logits = wm.extract_shifted(moved, shifts)
    best = logits.abs().mean(-1).argmax(1)
    assert shifts[best].tolist() == [[2, 1]] * len(crops)
    assert torch.equal((logits[torch.arange(len(crops)), best] > 0).long(), bits)
    darker = marked * 0.8  # brightness -20 %: every coefficient scales with it
    assert ((wm.extract(darker) > 0).long() != bits).float().mean() > 0.05
    assert torch.equal((wm.extract_shifted(darker, shifts[zero : zero + 1], gain=0.8)[:, 0] > 0).long(), bits)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=x.shape[1])
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=x.shape[1])


def test_dct_qim_per_carrier_gains_undo_a_low_pass(face_crops):
    """A blur scales the higher-frequency carriers more than the lower ones: no single gain reads
    such a mark back, gains falling off with each carrier's frequency (``carrier_gains``) read it
    with a fraction of the wrong bits; ``(P, C)`` gains give P readings at once."""
    wm = DctQimWatermark()
    host = _gaussian_blur(face_crops, 4.0)  # smooth faces, as anonymised ones are
    bits = torch.randint(0, 2, (len(host), P.CHANNEL_BITS), generator=torch.Generator().manual_seed(2))
    blurred = _gaussian_blur(wm.embed(host, bits), 1.5)
    zero = torch.zeros(1, 2, dtype=torch.long)
    one_gain = torch.stack([((wm.extract_shifted(blurred, zero, g)[:, 0] > 0).long() != bits).sum(1) for g in (0.8, 0.9, 1.0)])
    falloffs = torch.linspace(0.5, 1.0, 26)
    gains = torch.stack([wm.carrier_gains(1.0, f) for f in falloffs])  # (P, C)
    assert gains.shape == (len(falloffs), len(wm.coeffs)) and torch.equal(gains[-1], torch.ones(len(wm.coeffs)))
    logits = wm.extract_shifted(blurred, zero, gains)[:, 0]  # (B, P, bits)
    assert logits.shape == (len(host), len(falloffs), P.CHANNEL_BITS)
    torch.testing.assert_close(logits[:, 3], wm.extract_shifted(blurred, zero, gains[3])[:, 0])
    best = logits.abs().mean(-1).argmax(1)  # the most confident falloff, as the reader picks it
    fitted = ((logits[torch.arange(len(host)), best] > 0).long() != bits).sum(1)
    assert (one_gain.min(0).values >= 10).all()
    assert (fitted < one_gain.min(0).values).all() and fitted.sum() * 2 <= one_gain.min(0).values.sum()
    assert (falloffs[best] < 1.0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dct_qim_shifted_reads_by_convolution_and_by_gathering_agree(face_crops, dtype):
    """The two ways ``extract_shifted`` reads block coefficients (one correlation over the crop for
    many shifts, gathered blocks for few) give the same coefficients, shifts clamped at the edge."""
    wm = DctQimWatermark()
    y = (face_crops.to(dtype) * 255.0).mean(1)
    shifts = torch.tensor([[0, 0], [3, -2], [-8, 8], [200, -200]])
    by_conv = wm._shifted_slots(y, shifts, gather=False)
    by_gather = wm._shifted_slots(y, shifts, gather=True)
    assert by_conv.shape == (len(y), len(shifts), len(wm.slot_bit))
    torch.testing.assert_close(by_gather, by_conv, atol=1e-3 if dtype == torch.float32 else 1e-9, rtol=0)


def test_perturb_about_the_crop_centre():
    from refacex_plugin.geometry import perturb_about

    m = torch.tensor([[[1.2, 0.1, -30.0], [-0.1, 1.2, -40.0]]], dtype=torch.float64)
    torch.testing.assert_close(perturb_about(m, 1.0, 0.0, 128), m)
    p = perturb_about(m, 1.05, 3.0, 128)
    x = torch.tensor([50.0, 60.0], dtype=torch.float64)  # image point
    c = torch.tensor([128.0, 128.0], dtype=torch.float64)
    a = torch.deg2rad(torch.tensor(3.0, dtype=torch.float64))
    rot = 1.05 * torch.stack([torch.stack([a.cos(), -a.sin()]), torch.stack([a.sin(), a.cos()])])
    want = rot @ (m[0, :, :2] @ x + m[0, :, 2] - c) + c
    torch.testing.assert_close(p[0, :, :2] @ x + p[0, :, 2], want)


def test_dct_qim_refuses_another_strength_and_so_does_a_keyed_pipeline(face_crops):
    """The QIM reader quantises with the shipped step: another strength is refused up front."""
    from refacex_plugin.errors import RefacexError
    from refacex_plugin.writer import make_writer

    bits = torch.zeros(len(face_crops), P.CHANNEL_BITS)
    with pytest.raises(ValueError, match="fixed strength"):
        DctQimWatermark().embed(face_crops, bits, strength=2.0)
    with pytest.raises(RefacexError, match="fixed strength"):
        make_writer("blur", key=bytes(32), watermark="dct-qim", watermark_strength=2.0)
    make_writer("blur", key=bytes(32), watermark="dct-qim")  # strength 1 is fine


def test_registry_knows_both_and_the_learned_needs_weights(tmp_path, monkeypatch):
    import refacex_plugin.watermark as W

    monkeypatch.setattr(W, "WATERMARKS", W._registry())  # nothing loaded yet
    monkeypatch.setenv("REFACEX_MODELS", str(tmp_path))
    assert "dct-qim" in available_watermarks()
    with pytest.raises(ModelNotAvailableError, match="no entry"):
        load_watermark("learned")
    with pytest.raises(ModelNotAvailableError, match="unknown watermark"):
        load_watermark("nope")


@pytest.mark.skipif(manifest().get("watermark-learned", {}).get("default", True), reason="the learned watermark is the shipped default")
def test_experimental_learned_watermark_loads_by_name_only_and_warns(monkeypatch, example_image):
    from click.testing import CliRunner

    import refacex_plugin.watermark as W
    from refacex_plugin.cli import main

    monkeypatch.setattr(W, "WATERMARKS", W._registry())
    wm = load_watermark("learned")
    assert wm.name == "learned" and W.is_experimental(wm)
    assert load_watermark().name != "learned" and not W.is_experimental(load_watermark())
    assert "learned" not in available_watermarks() and "learned" in available_watermarks(experimental=True)
    named = CliRunner().invoke(main, ["extract", "--watermark", "learned", str(example_image)])
    default = CliRunner().invoke(main, ["extract", str(example_image)])
    assert "watermark 'learned' is experimental" in named.output
    assert "experimental" not in default.output


def test_zoo_refuses_a_hash_mismatch(tmp_path, monkeypatch):
    from refacex_plugin.zoo import weights_path

    monkeypatch.setenv("REFACEX_MODELS", str(tmp_path))
    (tmp_path / "w.pt").write_bytes(b"weights")
    (tmp_path / "manifest.json").write_text(json.dumps({"m": {"file": "w.pt", "sha256": "0" * 64}}))
    with pytest.raises(ModelNotAvailableError, match="does not match"):
        weights_path("m")


@pytest.mark.parametrize("size", [128, 256])
def test_learned_watermark_shapes_and_strength(size):
    torch.manual_seed(0)
    wm = LearnedWatermark(width=8).eval()
    x = torch.rand(2, 3, size, size)
    bits = torch.randint(0, 2, (2, wm.bits)).float()
    with torch.no_grad():
        y = wm.embed(x, bits)
        assert y.shape == x.shape and wm.extract(y).shape == (2, wm.bits)
        r = normalise_residual(torch.randn(2, 3, 16, 16), torch.ones(2, 1, 16, 16), 0.01)
        assert r.pow(2).mean((1, 2, 3)).sqrt().sub(0.01).abs().max() < 1e-6


def test_match_faces():
    lm = np.array([[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]], np.float32)
    found = Detections(np.zeros((2, 4), np.float32), np.ones(2, np.float32), np.stack([lm[0] + 100, lm[0] + 1]))
    assert match_faces(lm, found) == [1]
    assert match_faces(lm + 500, found) == [None]
    assert match_faces(lm, Detections()) == [None]


def test_differentiable_jpeg_tracks_a_real_encoder(example_rgb):
    x = torch.from_numpy(example_rgb[:240, :240].copy()).permute(2, 0, 1)[None].float() / 255
    for q in (90, 50):
        buf = io.BytesIO()
        Image.fromarray(example_rgb[:240, :240]).save(buf, "JPEG", quality=q)
        ref = torch.from_numpy(np.asarray(Image.open(buf)).copy()).permute(2, 0, 1)[None].float() / 255
        assert (A.jpeg(x, torch.tensor([float(q)])) - ref).abs().mean() * 255 < 3.0
    x.requires_grad_(True)
    A.jpeg(x, torch.tensor([50.0])).sum().backward()
    assert x.grad.abs().sum() > 0


def test_augment_shapes_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    torch.testing.assert_close(A.jitter(x, 0, 0, 0, g), x, atol=1e-4, rtol=0)
    for y in (A.resample(x, 0.5), A.colour(x, g), A.noise(x, 0.02, g), A.random_distortion(x, g, 1.0)):
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_watermark_training_runs_and_resumes(lfw, tmp_path, monkeypatch):
    from refacex_plugin.training.watermark import WatermarkTrainConfig, train

    monkeypatch.setenv("HOME", str(tmp_path))  # crop cache under tmp
    cfg = WatermarkTrainConfig(
        steps=4,
        batch=4,
        width=4,
        train_images=12,
        val_images=6,
        warmup_steps=2,
        ramp_steps=3,
        log_every=2,
        ckpt_every=2,
        start_bits=8,
        bits_threshold=0.0,
    )  # grow the message every step
    out = tmp_path / "run"
    path = train(cfg, lfw, out, log=lambda m: None)
    assert path.is_file() and (out / "samples.png").is_file()
    lines = (out / "log.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["step"] for r in recs] == [2, 4]
    assert recs[0]["active_bits"] == 8 + 2 * 32 and recs[1]["active_bits"] == 8 + 4 * 32  # the curriculum grows
    cfg2 = WatermarkTrainConfig(**{**cfg.__dict__, "steps": 6})
    msgs = []
    train(cfg2, lfw, out, log=msgs.append)
    assert any("resumed" in m and "step 4" in m and "136 active bits" in m for m in msgs)
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == 6


def test_the_two_dct_qim_layouts_do_not_read_each_other(face_crops):
    """``dct-qim-low`` is another layout (carriers and step), not a setting of ``dct-qim``: each
    reads its own marks exactly and the other's as noise."""
    a, b = load_watermark("dct-qim"), load_watermark("dct-qim-low")
    assert {"dct-qim", "dct-qim-low"} <= set(available_watermarks())
    bits = torch.randint(0, 2, (len(face_crops), P.CHANNEL_BITS), generator=torch.Generator().manual_seed(3))
    for writer, reader in ((a, b), (b, a)):
        marked = writer.embed(face_crops, bits)
        assert torch.equal((writer.extract(marked) > 0).long(), bits)
        assert ((reader.extract(marked) > 0).long() != bits).float().mean() > 0.3
