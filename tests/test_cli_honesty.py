"""The CLI says what it did: no approximation passed off as a recovery, no silent no-op, and
summaries that count what was printed."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from refacex_plugin.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "k.key"
    assert run("keygen", "-o", path).exit_code == 0
    return path


def test_recover_without_a_vault_refuses_unless_asked_for_an_approximation_and_then_says_so(tmp_path, key, example_image):
    anon = tmp_path / "anon"
    res = run("anonymise", example_image, "-o", anon, "--method", "generator", "--key-file", key)
    assert res.exit_code == 0, res.output

    out = tmp_path / "restored"
    res = run("recover", anon, "--key-file", key, "-o", out)
    assert res.exit_code == 2 and "--vault" in res.output and "--approximate" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()
    res = run("recover", anon, "--key-file", key, "-o", out, "--vault", tmp_path / "v.db", "--approximate")
    assert res.exit_code == 2 and "not both" in res.output and not out.exists()

    res = run("recover", anon, "--key-file", key, "-o", out, "--approximate", "--json")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert rows == [
        {"input": str(anon / example_image.name), "output": str(out / example_image.name), "faces_restored": 1, "recovery": "approximate"}
    ]
    assert (out / example_image.name).is_file()
    assert "1 image(s) restored approximately" in res.stderr


@pytest.mark.parametrize("command", ["anonymise", "extract", "recover"])
def test_a_folder_with_images_only_in_sub_folders_needs_r(command, tmp_path, key, example_image):
    from refacex_plugin.keys import read_key_file
    from refacex_plugin.vault import Vault

    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    shutil.copy(example_image, photos / "2024" / example_image.name)
    (photos / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    Vault(tmp_path / "v.db", read_key_file(key)).close()
    out = tmp_path / "out"
    options = {
        "anonymise": ["-o", out, "--method", "blur"],
        "extract": [],
        "recover": ["-o", out, "--key-file", key, "--vault", tmp_path / "v.db"],
    }[command]

    res = run(command, photos, *options)
    assert res.exit_code == 1, res.output
    assert f"{photos}: no images at its top level, only in sub-folders; add -r" in res.output
    assert "1 failed" in res.output
    assert not out.exists() or not any(out.rglob("*"))
    res = run(command, tmp_path / "empty", "-r", *options)
    assert res.exit_code == 1 and "no images in this folder or its sub-folders" in res.output, res.output

    res = run(command, photos, "-r", *options)
    assert "add -r" not in res.output
    if command != "recover":  # the vault has no record of the original: recover has nothing to restore
        assert res.exit_code == 0 and "1 image(s)" in res.output, res.output


def test_extract_summary_counts_the_no_face_and_no_payload_it_printed(tmp_path, example_image):
    flat = tmp_path / "flat.png"
    Image.new("RGB", (96, 96), (120, 140, 160)).save(flat)
    for json_out in ([], ["--json"]):
        res = run("extract", flat, example_image, *json_out)
        assert res.exit_code == 0, res.output
        if not json_out:
            assert f"{flat}: no face" in res.stdout and f"{example_image}: face 0: no payload" in res.stdout
        assert "2 image(s) read, 1 face(s) (1 without a payload), 1 without a face, 0 failed" in res.stderr


def test_a_file_that_is_not_a_key_is_called_that_before_its_permissions_are_judged(tmp_path, example_image):
    image = tmp_path / "photo.jpg"
    shutil.copy(example_image, image)
    note = tmp_path / "note.txt"
    note.write_text("hello\n")
    for path in (image, note):
        os.chmod(path, 0o644)
        res = run("extract", example_image, "--key-file", path)
        assert res.exit_code == 2 and f"{path}: not a refacex key file" in res.output, res.output
        assert "chmod" not in res.output
