import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_image_io import METADATA_MARKERS, jpeg_with_all_metadata

from refacex_plugin.batch import iter_jobs
from refacex_plugin.cli import main
from refacex_plugin.image_io import read_image


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def tree(tmp_path, lfw_sample):
    """A small nested folder of real LFW images."""
    src = tmp_path / "in"
    for i, p in enumerate(lfw_sample[:4]):
        d = src / ("a" if i < 2 else "a/b")
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / p.name)
    (src / "notes.txt").write_text("not an image, not picked up from a folder")
    return src


def test_help_reads_well():
    code, out = run("--help")
    assert code == 0
    for cmd in ("anonymise", "keygen", "extract", "recover", "info"):
        assert cmd in out


@pytest.mark.parametrize("argv", [["--help"], ["anonymise", "--help"], ["bench", "--help"]])
def test_help_loads_no_model_and_no_torch(argv):
    # Help is what a new user runs first: it must answer at once, whatever models are installed.
    probe = textwrap.dedent(f"""
        import sys
        from refacex_plugin.cli import main
        try:
            main({argv!r})
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print(sorted(m for m in ("torch", "dlib", "onnxruntime") if m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_the_method_names_help_offers_are_the_registry_s():
    from refacex_plugin import anonymisers
    from refacex_plugin.cli import METHOD_NAMES

    assert METHOD_NAMES == anonymisers.PREFERENCE


def test_anonymise_mirrors_the_tree(tree, tmp_path):
    out = tmp_path / "out"
    code, text = run("anonymise", tree, "-o", out, "--method", "blur", "--recursive")
    assert code == 0, text
    srcs = sorted(p.relative_to(tree) for p in tree.rglob("*.jpg"))
    outs = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert srcs == outs and len(outs) == 4
    assert "4 image(s) anonymised" in text and "0 failed" in text
    for rel in srcs:
        a, b = read_image(tree / rel).rgb, read_image(out / rel).rgb
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 1


def test_folder_without_recursive_takes_top_level_only(tree, tmp_path):
    code, text = run("anonymise", tree / "a", "-o", tmp_path / "o", "--method", "mask")
    assert code == 0 and "2 image(s)" in text


def test_bad_files_are_reported_and_the_run_goes_on(tree, tmp_path):
    good = next(tree.rglob("*.jpg"))
    (tree / "corrupt.jpg").write_bytes(good.read_bytes()[:1500])
    (tree / "empty.png").write_bytes(b"")
    (tree / "fake.jpg").write_text("hello")
    out = tmp_path / "out"
    code, text = run("anonymise", tree, tmp_path / "missing.jpg", "-o", out, "--method", "pixelate", "-r")
    assert code == 1
    for name in ("corrupt.jpg: corrupt image", "empty.png: empty file", "fake.jpg: not an image", "missing.jpg: no such file"):
        assert name in text, text
    assert len(list(out.rglob("*.jpg"))) == 4
    assert "4 failed" in text


def test_image_without_face_is_written_and_counted(tmp_path):
    p = tmp_path / "flat.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(p)
    code, text = run("anonymise", p, "-o", tmp_path / "o", "--method", "blur")
    assert code == 0 and "1 without a face" in text
    assert np.array_equal(read_image(tmp_path / "o" / "flat.png").rgb, read_image(p).rgb)


def test_output_strips_metadata_and_keeps_format(tmp_path, example_rgb):
    p = tmp_path / "meta.jpg"
    p.write_bytes(jpeg_with_all_metadata(example_rgb))
    code, text = run("anonymise", p, "-o", tmp_path / "o", "--method", "blur", "--records", tmp_path / "r.jsonl")
    assert code == 0, text
    data = (tmp_path / "o" / "meta.jpg").read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and data.count(b"\xff\xd8\xff") == 1
    for marker in METADATA_MARKERS.values():
        assert marker not in data
    rec = json.loads((tmp_path / "r.jsonl").read_text())
    assert len(rec["faces"]) == 1 and rec["faces"][0]["method"] == "blur"


def test_format_option_and_alpha(tmp_path, example_rgb):
    rgba = np.dstack([example_rgb, np.full((250, 250), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    code, _ = run("anonymise", tmp_path / "x.png", "-o", tmp_path / "o", "--method", "blur")
    assert code == 0
    with Image.open(tmp_path / "o" / "x.png") as im:
        assert im.mode == "RGBA" and im.getpixel((0, 0))[3] == 128
    code, _ = run("anonymise", tmp_path / "x.png", "-o", tmp_path / "w", "--method", "blur", "--format", "webp")
    assert code == 0 and (tmp_path / "w" / "x.webp").is_file()


def test_refuses_to_overwrite_input_without_in_place(tree):
    before = {p: p.read_bytes() for p in tree.rglob("*.jpg")}
    code, text = run("anonymise", tree, "-o", tree, "--method", "blur", "-r")
    assert code == 1 and "use --in-place" in text
    assert all(p.read_bytes() == b for p, b in before.items())


def test_usage_errors():
    assert run("anonymise", "x.jpg")[0] == 2
    assert run("anonymise", "x.jpg", "-o", "o", "--in-place")[0] == 2


def test_in_place_replaces_atomically(tmp_path, example_rgb):
    p = tmp_path / "face.jpg"
    p.write_bytes(jpeg_with_all_metadata(example_rgb))
    code, text = run("anonymise", p, "--in-place", "--method", "pixelate")
    assert code == 0, text
    assert [q.name for q in tmp_path.iterdir()] == ["face.jpg"]
    data = p.read_bytes()
    assert b"Exif\x00\x00" not in data
    assert np.abs(read_image(p).rgb.astype(int) - example_rgb.astype(int)).mean() > 1


def test_crash_mid_write_leaves_the_original_intact(tmp_path, example_image):
    """SIGKILL the real CLI process while it writes the replacement: the original must survive."""
    p = tmp_path / "face.jpg"
    shutil.copy(example_image, p)
    original = p.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        def crash(fd):  # the replacement's bytes are written, not yet renamed over the original
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = crash
        from refacex_plugin.cli import main
        main(["anonymise", {str(p)!r}, "--in-place", "--method", "blur"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert p.read_bytes() == original
    leftovers = [q for q in tmp_path.iterdir() if q.name != "face.jpg"]
    assert all(q.name.startswith(".face.jpg.") and q.name.endswith(".refacex-tmp") for q in leftovers)


def test_key_file_without_a_vault_is_refused_as_in_every_front_end(tmp_path, example_image):
    """The default method is irreversible: a key without a vault is refused with the use-case
    layer's message (FiftyOne's and Label Studio's tests check theirs say the same)."""
    from refacex_plugin.anonymisers import default_method
    from refacex_plugin.api import irreversible_message

    key = tmp_path / "k.key"
    assert run("keygen", "-o", key)[0] == 0
    code, text = run("anonymise", example_image, "-o", tmp_path / "o", "--key-file", key)
    assert code == 2 and f"error: {irreversible_message(default_method())}\n" in text, text
    assert not (tmp_path / "o").exists()


def test_keygen_permissions_and_no_overwrite(tmp_path):
    key = tmp_path / "admin.key"
    code, text = run("keygen", "-o", key)
    assert code == 0 and "key id" in text
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = key.read_text().split()[1]
    assert secret not in text
    before = key.read_bytes()
    code, text = run("keygen", "-o", key)
    assert code == 2 and "refusing to overwrite" in text
    assert key.read_bytes() == before
    os.chmod(key, 0o644)
    code, text = run("anonymise", key, "-o", tmp_path / "o", "--key-file", key, "--vault", tmp_path / "v.db")
    assert code == 2 and "readable by others" in text


def test_recover_without_vault_uses_payloads_and_refuses_what_carries_none(tmp_path, example_image, monkeypatch):
    key = tmp_path / "k.key"
    run("keygen", "-o", key)
    code, text = run("recover", example_image, "--key-file", key, "-o", tmp_path / "o", "--approximate")
    assert code == 1 and "not restored: no payload" in text  # an original carries no recovery code
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    from refacex_plugin import anonymisers

    monkeypatch.setenv("REFACEX_MODELS", str(tmp_path / "no-models"))
    anonymisers.reset_learned()
    try:
        code, text = run("recover", example_image, "--key-file", key, "-o", tmp_path / "o2", "--approximate")
        assert code == 2 and "not available" in text  # no recovery network: said up front
    finally:
        monkeypatch.delenv("REFACEX_MODELS")
        anonymisers.reset_learned()
    code, text = run("anonymise", example_image, "-o", tmp_path / "o", "--vault", tmp_path / "v.db")
    assert code == 2 and "a vault needs a key" in text


def test_info_lists_models():
    code, text = run("info")
    assert code == 0
    assert "centerface weights" in text and "blur" in text and "torch" in text


def test_keygen_from_passphrase_recreates_the_same_key(tmp_path):
    from click.testing import CliRunner

    from refacex_plugin.cli import main
    from refacex_plugin.keys import read_key_file

    phrase = "correct horse battery staple\ncorrect horse battery staple\n"
    a = CliRunner().invoke(main, ["keygen", "-o", str(tmp_path / "a.key"), "--from-passphrase"], input=phrase)
    b = CliRunner().invoke(main, ["keygen", "-o", str(tmp_path / "b.key"), "--from-passphrase"], input=phrase)
    assert a.exit_code == 0 and b.exit_code == 0
    assert read_key_file(tmp_path / "a.key") == read_key_file(tmp_path / "b.key")
    assert "correct horse" not in a.output
    short = CliRunner().invoke(main, ["keygen", "-o", str(tmp_path / "c.key"), "--from-passphrase"], input="short\nshort\n")
    assert short.exit_code == 2 and "too short" in short.output and not (tmp_path / "c.key").exists()


def test_anonymiser_training_keeps_its_view_when_resumed(lfw, tmp_path):
    """A run's G is trained on one view: its checkpoint records it, and resuming it with another
    ``--view-blur`` is refused rather than silently training G on a view it was not made for."""
    import torch

    from refacex_plugin.training.anonymiser import main as train_main

    out = tmp_path / "run"
    train_main(["--data", str(lfw), "--config", "tiny", "--out", str(out), "--view-blur", "2.5", "--steps", "3"])
    assert torch.load(out / "refacex-anonymiser.pt", weights_only=True)["view_blur"] == 2.5
    with pytest.raises(SystemExit, match="view_blur 2.5, not 3.0"):
        train_main(["--data", str(lfw), "--config", "tiny", "--out", str(out), "--view-blur", "3", "--steps", "6"])


@pytest.mark.parametrize(
    "command, extra, expected",
    [
        ("watermark", ["--init", "zoo", "--steps", "5"], ["--steps", "5", "--init", "zoo"]),
        (
            "anonymiser",
            ["--init", "zoo", "--recovery-only", "--lr", "0.0002", "--no-detach", "--view-blur", "3"],
            ["--no-detach", "--init", "zoo", "--recovery-only", "--lr", "0.0002", "--view-blur", "3.0"],
        ),
    ],
)
def test_train_commands_forward_their_options(command, extra, expected, lfw, monkeypatch):
    """``refacex train`` hands its options to the training module's own parser, flags bare."""
    import importlib

    module = importlib.import_module(f"refacex_plugin.training.{command}")
    seen = []
    monkeypatch.setattr(module, "main", seen.append)
    res = CliRunner().invoke(main, ["train", command, "--data", str(lfw), "--config", "tiny", "--out", "runs/x", *extra])
    assert res.exit_code == 0, res.output
    assert seen == [["--data", str(lfw), "--config", "tiny", "--out", "runs/x", "--device", "cpu", *expected]]


def test_train_refuses_data_that_is_neither_a_folder_nor_a_crop_pack(tmp_path):
    (tmp_path / "faces.zip").write_bytes(b"PK")
    res = CliRunner().invoke(
        main, ["train", "anonymiser", "--data", str(tmp_path / "faces.zip"), "--config", "tiny", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "identity-labelled folder or a .npz crop pack" in res.output
    assert "Traceback" not in res.output


def test_models_add_records_the_architecture_saved_with_the_weights(tmp_path, monkeypatch):
    """``refacex models add`` copies a training checkpoint's width / code_bits / view_blur into the
    manifest (the loader needs them to rebuild the networks) and --half halves the stored tensors."""
    import torch

    from refacex_plugin.zoo import manifest

    monkeypatch.setenv("REFACEX_MODELS", str(tmp_path / "zoo"))
    weights = tmp_path / "w.pt"
    torch.save({"model": {"a": torch.ones(4, dtype=torch.float32)}, "width": 8, "code_bits": 96, "view_blur": 2.0}, weights)
    code, text = run("models", "add", "my-net", weights, "--command", "train it", "--data", "none", "--half", "--set", "width=16")
    assert code == 0, text
    entry = manifest()["my-net"]
    assert (entry["width"], entry["code_bits"], entry["view_blur"]) == (16, 96, 2.0)  # --set wins
    stored = torch.load(tmp_path / "zoo" / entry["file"], weights_only=True)
    assert stored["model"]["a"].dtype == torch.float16 and stored["view_blur"] == 2.0
    np.save(tmp_path / "bank.npy", np.zeros((2, 128), np.float32))
    code, text = run("models", "add", "my-bank", tmp_path / "bank.npy", "--command", "c", "--data", "d", "--half")
    assert code == 2 and "--half applies to PyTorch .pt weights only" in text and "my-bank" not in manifest()


def test_workers_write_the_same_files_and_records_in_input_order(tree, tmp_path):
    """Files worked on by several threads come out as one thread makes them, reported in input order."""
    outs = {}
    for workers in (1, 3):
        out, records = tmp_path / f"o{workers}", tmp_path / f"r{workers}.jsonl"
        code, text = run("anonymise", tree, "-o", out, "-r", "--method", "blur", "--workers", workers, "--records", records)
        assert code == 0 and "4 image(s) anonymised" in text, text
        outs[workers] = (
            {p.relative_to(out): read_image(p).rgb for p in out.rglob("*.jpg")},
            [json.loads(line)["input"] for line in records.read_text().splitlines()],
        )
    (files1, order1), (files3, order3) = outs[1], outs[3]
    assert sorted(files1) == sorted(files3) and len(files1) == 4
    for rel in files1:
        assert np.array_equal(files1[rel], files3[rel])
    assert order1 == order3 == [str(job.src) for job in iter_jobs([tree], None, recursive=True)]
