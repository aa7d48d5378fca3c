import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from refacex_plugin.cli import main
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import generate_key, write_key_file
from refacex_plugin.vault import FaceRegion, Vault, VaultError, restore


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.output


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "admin.key"
    write_key_file(path)
    return path


@pytest.fixture
def png_tree(tmp_path, lfw_sample):
    """Real LFW faces as PNG (lossless, so whole-image recovery can be bit-exact)."""
    src = tmp_path / "png"
    for i, p in enumerate(lfw_sample[:8]):
        d = src / ("x" if i % 2 else "y")
        d.mkdir(parents=True, exist_ok=True)
        Image.open(p).save(d / (p.stem + ".png"))
    return src


def test_vault_round_trip_and_authentication(tmp_path):
    rng = np.random.default_rng(0)
    key = generate_key()
    regions = [
        FaceRegion((3, 4, 13, 24), rng.integers(0, 256, (20, 10, 3), dtype=np.uint8)),
        FaceRegion((0, 0, 5, 5), rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)),
    ]
    with Vault(tmp_path / "v.db", key) as v:
        ids = v.put("h1", regions)
        assert len(v) == 2 and len(ids[0]) == 8
        back = v.get("h1")
        assert [r.box for r in back] == [r.box for r in regions]
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(back, regions))
        assert np.array_equal(v.get_record(ids[1]).pixels, regions[1].pixels)
        assert v.get("other") == []
    assert oct((tmp_path / "v.db").stat().st_mode & 0o777) == "0o600"
    with Vault(tmp_path / "v.db", generate_key(), create=False) as v, pytest.raises(VaultError, match="wrong key or tampered"):
        v.get("h1")
    db = sqlite3.connect(tmp_path / "v.db")
    db.execute("UPDATE faces SET box = '3,4,13,25' WHERE face_index = 0")  # move a record
    db.commit()
    db.close()
    with Vault(tmp_path / "v.db", key, create=False) as v, pytest.raises(VaultError):
        v.get("h1")
    with pytest.raises(VaultError, match="no such vault"):
        Vault(tmp_path / "missing.db", key, create=False)
    img = np.zeros((30, 30, 3), np.uint8)
    assert np.array_equal(restore(img, regions[:1])[4:24, 3:13], regions[0].pixels)


@pytest.mark.parametrize("workers", [1, 3])
def test_anonymise_with_vault_then_recover_bit_exact(png_tree, tmp_path, key_file, workers):
    """One file at a time, or three threads sharing the pipeline and the vault."""
    anon, back, vault = tmp_path / "anon", tmp_path / "back", tmp_path / "faces.vault"
    code, text = run(
        "anonymise", png_tree, "-o", anon, "-r", "--method", "pixelate", "--key-file", key_file, "--vault", vault, "--workers", workers
    )
    assert code == 0, text
    assert "originals in vault" in text and "8 image(s) anonymised" in text
    read_back, faces = map(int, re.search(r"\((\d+) of (\d+) faces read back", text).groups())
    assert faces == int(re.search(r"(\d+) face\(s\)", text).group(1)) and 0 < read_back <= faces
    code, text = run("recover", anon, "-o", back, "-r", "--key-file", key_file, "--vault", vault, "--workers", workers)
    assert code == 0, text
    for src in png_tree.rglob("*.png"):
        rel = src.relative_to(png_tree)
        a, b = read_image(src).rgb, read_image(anon / rel).rgb
        assert not np.array_equal(a, b)
        assert np.array_equal(read_image(back / rel).rgb, a), rel  # whole image, bit for bit
    secret = key_file.read_text().split()[1].encode()
    assert secret not in vault.read_bytes()


def test_recover_refuses_wrong_key_and_unknown_images(png_tree, tmp_path, key_file, example_image):
    anon, vault = tmp_path / "anon", tmp_path / "v.db"
    assert run("anonymise", png_tree, "-o", anon, "-r", "--method", "blur", "--key-file", key_file, "--vault", vault)[0] == 0
    other = tmp_path / "other.key"
    write_key_file(other)
    code, text = run("recover", anon, "-o", tmp_path / "r1", "-r", "--key-file", other, "--vault", vault)
    assert code == 1 and "wrong key or tampered" in text
    assert not list((tmp_path / "r1").rglob("*.png")) if (tmp_path / "r1").exists() else True
    code, text = run("recover", example_image, "-o", tmp_path / "r2", "--key-file", key_file, "--vault", vault)
    assert code == 1 and "not restored: no payload found" in text  # never anonymised: nothing to find
    assert not (tmp_path / "r2").exists() or not any((tmp_path / "r2").iterdir())
    # A re-encoded image no longer matches its pixel hash: it is restored through its payload or
    # refused with the reason, never guessed (payload recovery itself: tests/test_channel.py).
    one = next(anon.rglob("*.png"))
    Image.open(one).save(tmp_path / "reencoded.jpg", quality=90)
    code, text = run("recover", tmp_path / "reencoded.jpg", "-o", tmp_path / "r4", "--key-file", other, "--vault", vault)
    assert code == 1 and "not restored: " in text
    assert not (tmp_path / "r4").exists() or not any((tmp_path / "r4").iterdir())


def _snapshot(tree):
    return {p: (p.read_bytes(), read_image(p).rgb) for p in sorted(tree.rglob("*.png"))}


@pytest.mark.parametrize("how", ["kill-at-third-write", "kill-after-delay"])
def test_killed_in_place_run_loses_nothing(png_tree, tmp_path, key_file, how):
    """SIGKILL a real in-place run with a vault: every image is untouched, or anonymised with a
    committed vault record that restores it exactly; a re-run then finishes the job."""
    before = _snapshot(png_tree)
    vault = tmp_path / "v.db"
    hook = ""
    if how == "kill-at-third-write":
        hook = textwrap.dedent("""
            import os, signal
            calls = [0]
            real = os.fsync
            def fsync(fd):
                import stat
                calls[0] += stat.S_ISREG(os.fstat(fd).st_mode)  # count file writes, not folder syncs
                if calls[0] == 3:  # third replacement written, vault already committed, not yet renamed
                    os.kill(os.getpid(), signal.SIGKILL)
                real(fd)
            os.fsync = fsync
        """)
    script = hook + textwrap.dedent(f"""
        from refacex_plugin.cli import main
        main(["anonymise", {str(png_tree)!r}, "-r", "--in-place", "--method", "pixelate",
              "--key-file", {str(key_file)!r}, "--vault", {str(vault)!r}])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if how == "kill-after-delay":
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if vault.exists() and _count(vault) >= 3:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    proc.wait(timeout=120)
    assert proc.returncode == -9

    changed = [p for p, (data, _) in before.items() if p.read_bytes() != data]
    assert 1 <= len(changed) < len(before)
    out = tmp_path / "restored"
    if changed:
        code, text = run("recover", *changed, "-o", out, "--key-file", key_file, "--vault", vault)
        assert code == 0, text
        for p in changed:
            assert np.array_equal(read_image(out / p.name).rgb, before[p][1])
    # Re-run: finishes the rest; everything is then recoverable.
    code, text = run("anonymise", png_tree, "-r", "--in-place", "--method", "pixelate", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    assert f"{len(changed)} already done (skipped)" in text  # never anonymised twice
    code, text = run("recover", png_tree, "-r", "-o", tmp_path / "all", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    for p, (_, rgb) in before.items():
        assert np.array_equal(read_image(tmp_path / "all" / p.relative_to(png_tree)).rgb, rgb)


def _count(vault):
    try:
        with sqlite3.connect(f"file:{vault}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(DISTINCT image_hash) FROM faces").fetchone()[0]
    except sqlite3.Error:
        return 0
