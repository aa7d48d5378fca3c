"""Training plumbing shared by the trainers: crop packs (training where the dataset is not) and time budgets."""

import json

import numpy as np
import pytest
import torch

from refacex_plugin.training.common import Budget
from refacex_plugin.training.data import prepare_crops, read_crop_pack, write_crop_pack


@pytest.fixture(scope="module")
def crops(lfw, tmp_path_factory):
    """Real aligned 128-px LFW crops of both identity splits (detected and aligned, cached under tmp)."""
    cache = tmp_path_factory.mktemp("crops")
    return {split: prepare_crops(lfw, split, n, 128, 0, cache_dir=cache, progress=False) for split, n in (("train", 10), ("val", 4))}


def test_a_crop_pack_reads_back_the_crops_it_was_written_from(crops, tmp_path):
    path = tmp_path / "pack.npz"
    size = write_crop_pack(path, crops, quality=90, source="lfw")
    assert size == path.stat().st_size and size < sum(c.numel() for c in crops.values()) / 4  # JPEG: well under raw
    for split, c in crops.items():
        back = read_crop_pack(path, split, 100, 128)
        assert back.shape == c.shape and back.dtype == torch.uint8
        assert (back.float() - c.float()).abs().mean() < 3.0  # JPEG at 90: a grey level or two
    assert read_crop_pack(path, "train", 3, 128).shape[0] == 3
    # the trainers' loader takes a pack where it takes a folder
    assert torch.equal(prepare_crops(path, "val", 2, 128), read_crop_pack(path, "val", 2, 128))
    (tmp_path / "face.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="expected an identity-labelled folder or a .npz crop pack"):
        prepare_crops(tmp_path / "face.jpg", "train", 3, 128)
    with pytest.raises(ValueError, match="128-px crops, not 256"):
        read_crop_pack(path, "train", 3, 256)
    write_crop_pack(path, {"train": crops["train"]})
    with pytest.raises(ValueError, match="no 'val' crops"):
        read_crop_pack(path, "val", 3, 128)


def test_budget_progress_follows_steps_or_time_whichever_is_further(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("refacex_plugin.training.common.time.monotonic", lambda: now[0])
    unlimited, budget = Budget(None), Budget(2.0)  # 2 minutes
    assert unlimited.progress(5, 10) == 0.5 and not unlimited.spent()
    now[0] += 90  # 75 % of the time
    assert budget.progress(5, 10) == pytest.approx(0.75) and budget.progress(9, 10) == pytest.approx(0.9)
    assert not budget.spent() and unlimited.progress(5, 10) == 0.5
    now[0] += 60
    assert budget.spent() and budget.progress(1, 10) == 1.0


@pytest.mark.parametrize("trainer", ["anonymiser", "watermark"])
def test_a_spent_budget_stops_training_with_its_weights_and_log_written(trainer, crops, tmp_path, monkeypatch):
    """``minutes``: the run ends after the step that spent it, logged and checkpointed, from a pack."""
    import importlib

    module = importlib.import_module(f"refacex_plugin.training.{trainer}")
    pack = tmp_path / "pack.npz"
    write_crop_pack(pack, crops)
    if trainer == "anonymiser":
        cfg = module.AnonymiserTrainConfig(steps=50, batch=2, width=8, train_images=10, val_images=4, donors=8, log_every=25, ckpt_every=25)
    else:
        cfg = module.WatermarkTrainConfig(steps=50, batch=2, width=4, train_images=10, val_images=4, log_every=25, ckpt_every=25)
    out = tmp_path / "run"
    path = module.train(cfg, pack, out, log=lambda m: None, minutes=0.0)
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert path.is_file() and [r["step"] for r in recs] == [1]
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 1
    assert np.isclose(recs[0]["lr"], 0.0, atol=1e-12)  # the time-annealed cosine is at its end


@pytest.mark.parametrize("trainer", ["anonymiser", "watermark"])
def test_init_from_weights_of_another_width_is_refused_in_one_line(trainer, crops, tmp_path):
    import importlib

    module = importlib.import_module(f"refacex_plugin.training.{trainer}")
    pack, init = tmp_path / "pack.npz", tmp_path / "w48.pt"
    write_crop_pack(pack, crops)
    torch.save({"model": {}, "width": 48}, init)
    cfg = (
        module.AnonymiserTrainConfig(steps=1, batch=2, width=8, train_images=10, val_images=4, donors=8)
        if trainer == "anonymiser"
        else module.WatermarkTrainConfig(steps=1, batch=2, width=8, train_images=10, val_images=4)
    )
    with pytest.raises(SystemExit, match="width-48 networks and this config trains width 8"):
        module.train(cfg, pack, tmp_path / "run", log=lambda m: None, init=init)


@pytest.mark.parametrize("max_level", [1.0, 0.6])
def test_watermark_distortion_ramp_stops_at_the_configs_max_level(max_level):
    from refacex_plugin.training.watermark import WatermarkTrainConfig, _schedule

    cfg = WatermarkTrainConfig(rms_start=0.03, rms=0.01, warmup_steps=100, ramp_steps=1100, max_level=max_level)
    assert _schedule(cfg, 50) == (pytest.approx(0.03 * (1 / 3) ** (50 / 1100)), 0.0)  # warm-up: no distortion yet
    assert _schedule(cfg, 600)[1] == pytest.approx(0.5 * max_level)
    rms, level = _schedule(cfg, 10_000)
    assert rms == pytest.approx(0.01) and level == pytest.approx(max_level)
