"""What cannot be done as asked is refused or said in one line; nothing is quietly substituted."""

import shutil

import pytest
from click.testing import CliRunner

from refacex_plugin.cli import main


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def test_a_missing_donor_bank_is_an_error_not_a_mosaic(tmp_path, monkeypatch, example_image):
    from refacex_plugin import anonymisers

    models = tmp_path / "models"
    shutil.copytree(anonymisers.__file__.rsplit("/", 2)[0] + "/models", models, ignore=shutil.ignore_patterns("*.pt", "*.npy"))
    (models / "refacex-donor-bank.npz").write_bytes(b"truncated")
    monkeypatch.setenv("REFACEX_MODELS", str(models))
    anonymisers.reset_learned()
    try:
        code, text = run("anonymise", example_image, "-o", tmp_path / "o")
        assert code != 0 and "refacex" in text and "refacex-donor-bank" in text and "manifest sha256" in text
        assert "method: pixelate" not in text and not (tmp_path / "o" / example_image.name).exists()
        code, _ = run("anonymise", example_image, "-o", tmp_path / "o2", "--method", "pixelate")
        assert code == 0  # a baseline, asked for by name, still works
    finally:
        monkeypatch.delenv("REFACEX_MODELS")
        anonymisers.reset_learned()


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--keep-landmarks"], "--keep-landmarks"),
        (["--strength", "1.5"], "above 1 has no further effect"),
        (["--backend", "onnx"], "--backend onnx"),
    ],
)
def test_an_option_that_does_not_apply_to_the_default_is_refused(tmp_path, example_image, extra, said):
    code, text = run("anonymise", example_image, "-o", tmp_path / "o", *extra)
    assert code == 2 and said in text and len(text.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_records_into_a_new_folder_and_a_vault_in_a_missing_one(tmp_path, example_image):
    code, text = run("anonymise", example_image, "-o", tmp_path / "o", "--records", tmp_path / "new" / "faces.jsonl")
    assert code == 0, text
    assert (tmp_path / "new" / "faces.jsonl").read_text().count("\n") == 1
    key = tmp_path / "k.key"
    run("keygen", "-o", key)
    code, text = run("anonymise", example_image, "-o", tmp_path / "o2", "--key-file", key, "--vault", tmp_path / "nowhere" / "v.vault")
    assert code != 0 and "does not exist" in text and "Traceback" not in text


def test_donors_build_counts_what_it_left_out(tmp_path, lfw_sample):
    donors = tmp_path / "donors"
    donors.mkdir()
    for p in lfw_sample[:4]:
        shutil.copy(p, donors / p.name)
    (donors / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    code, text = run("donors", "build", donors, "-o", tmp_path / "b.npz", "--no-screen")
    assert code == 0, text
    assert "1 unreadable" in text
