"""Originals kept byte-exact in the vault, JPEGs edited only in the faces' blocks, 16-bit inputs
reported, read-only files refused in place - through the real CLI, detector, watermark and libjpeg."""

import hashlib
import io
import os
import shutil
import sqlite3
import stat

import cv2
import jpeglib
import numpy as np
import piexif
import pytest
from click.testing import CliRunner
from PIL import Image

from refacex_plugin.cli import main
from refacex_plugin.image_io import read_image
from refacex_plugin.jpeg_blocks import rewrite_changed_blocks
from refacex_plugin.keys import write_key_file
from refacex_plugin.writer import make_writer

EXIF = piexif.dump({"0th": {piexif.ImageIFD.Make: b"SecretCam", piexif.ImageIFD.Artist: b"Jane Original"}})


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.output


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decode(path_or_bytes):
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "admin.key"
    write_key_file(path)
    return path


@pytest.fixture
def three_formats(tmp_path, example_image):
    """A folder of real faces as JPEG (with EXIF and a comment), PNG (with EXIF) and WebP."""
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    shutil.copy(example_image, d / "serena.jpg")
    with Image.open(example_image.parent / "Aaron_Eckhart_0001.jpg") as im:
        im.save(d / "aaron.jpg", quality=80, exif=EXIF, comment=b"taken at home")
        im.save(d / "sub" / "aaron.png", exif=EXIF)
    with Image.open(example_image.parent / "George_W_Bush_0001.jpg") as im:
        im.save(d / "sub" / "bush.webp", quality=90, exif=EXIF)
    return d


def test_in_place_round_trip_gives_back_the_very_files(three_formats, tmp_path, key_file):
    """anonymise --in-place then recover --in-place: every file's sha256 is the original's."""
    before = {p: sha(p) for p in three_formats.rglob("*.*")}
    vault = tmp_path / "faces.vault"
    code, text = run("anonymise", three_formats, "-r", "--in-place", "--method", "pixelate", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    for p in before:
        assert sha(p) != before[p], p
        data = p.read_bytes()
        assert b"SecretCam" not in data and b"taken at home" not in data, p  # the anonymised file leaks no metadata
    assert b"SecretCam" not in vault.read_bytes()  # the original is sealed, not stored in the clear
    code, text = run("recover", three_formats, "-r", "--in-place", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    assert {p: sha(p) for p in before} == before

    # -o gives back the same bytes; a vault without originals (written before they were kept)
    # still restores the faces' pixels.
    code, text = run(
        "anonymise", three_formats, "-r", "-o", tmp_path / "anon", "--method", "pixelate", "--key-file", key_file, "--vault", vault
    )
    assert code == 0, text
    code, text = run("recover", tmp_path / "anon", "-r", "-o", tmp_path / "back", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    for p in before:
        assert sha(tmp_path / "back" / p.relative_to(three_formats)) == before[p], p
    with sqlite3.connect(vault) as db:
        db.execute("DROP TABLE originals")
    png = three_formats / "sub" / "aaron.png"
    code, text = run("recover", tmp_path / "anon" / "sub" / "aaron.png", "-o", tmp_path / "old", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    assert np.array_equal(read_image(tmp_path / "old" / "aaron.png").rgb, read_image(png).rgb)


def _face_blocks(src, regions, reach=1):
    """The pixels the promise allows to change: every MCU a face's changed rectangle touches,
    and the ring of ``reach`` pixels a decoder's chroma upsampling can carry past its edge."""
    jpeg = jpeglib.read_dct(str(src))
    mh, mw = 8 * int(np.max(jpeg.samp_factor[:, 0])), 8 * int(np.max(jpeg.samp_factor[:, 1]))
    h, w = jpeg.height, jpeg.width
    allowed = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in (r for r in regions if r is not None):
        bx0, by0 = x0 // mw * mw, y0 // mh * mh
        bx1, by1 = -(-x1 // mw) * mw, -(-y1 // mh) * mh
        allowed[max(by0 - reach, 0) : by1 + reach, max(bx0 - reach, 0) : bx1 + reach] = True
    return allowed


def test_jpeg_changes_only_in_the_face_blocks(example_image, tmp_path):
    """The first example, JPEG in, JPEG out: pixels outside the face's MCUs are the input's, as
    PIL decodes them, and the file grows by at most 5 %."""
    out = tmp_path / "out"
    code, text = run("anonymise", example_image, "-o", out)
    assert code == 0 and "1 face(s)" in text, text
    written = out / example_image.name
    regions = make_writer().anonymise_image(read_image(example_image).rgb).regions  # where the face may change
    changed = np.any(decode(example_image) != decode(written), axis=-1)
    allowed = _face_blocks(example_image, regions)
    assert changed.any()
    assert not (changed & ~allowed).any(), f"{(changed & ~allowed).sum()} pixels changed outside the face's blocks"
    assert not allowed[0, 0] and not allowed[-1, -1] and changed.mean() < 0.3  # main: 37,450 of 62,500 pixels, corners included
    assert written.stat().st_size <= 1.05 * example_image.stat().st_size


def test_watermark_survives_the_dct_path_and_no_metadata_leaks(example_image, tmp_path, key_file):
    """A JPEG with EXIF and a comment, edited block-wise with the file's own tables, still
    carries an authenticated payload per face, and neither marker reaches the output."""
    src = tmp_path / "tagged.jpg"
    with Image.open(example_image) as im:
        im.save(src, quality=85, exif=EXIF, comment=b"taken at home")
    out = tmp_path / "out"
    code, text = run("anonymise", src, "-o", out, "--method", "pixelate", "--key-file", key_file, "--vault", tmp_path / "v.db")
    assert code == 0, text
    assert "re-encoded whole" not in text  # the block-wise path was taken
    written = out / src.name
    data = written.read_bytes()
    assert b"Exif" not in data and b"SecretCam" not in data and b"taken at home" not in data
    changed = np.any(decode(src) != decode(written), axis=-1)
    assert changed.any() and changed.mean() < 0.5
    assert not (changed[:16, :16].any() or changed[:16, -16:].any() or changed[-16:, :16].any() or changed[-16:, -16:].any())
    assert written.stat().st_size <= 1.05 * src.stat().st_size
    code, text = run("extract", written, "--key-file", key_file)
    assert code == 0 and "face 0: authenticated" in text, text


@pytest.mark.parametrize("sampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
@pytest.mark.parametrize("progressive", [False, True])
def test_block_rewrite_is_exact_for_every_chroma_layout(example_image, sampling, progressive):
    """Only the rewritten MCUs (and the one-pixel ring subsampled chroma reaches) change; the
    changed area itself holds the wanted pixels up to quantisation."""
    buf = io.BytesIO()
    with Image.open(example_image) as im:
        im.crop((0, 0, 237, 229)).save(buf, "JPEG", quality=80, subsampling=sampling, progressive=progressive)
    raw = buf.getvalue()
    before = decode(raw).astype(np.uint8)
    after = before.copy()
    after[100:140, 90:150] = 255 - after[100:140, 90:150]
    after[-3:, -5:] = 0  # a partial MCU at the image's corner
    edit = rewrite_changed_blocks(raw, before, after)
    got = decode(edit.data)
    changed = np.any(got != before, axis=-1)
    assert edit.reach == (0 if sampling == 0 else 1)
    assert changed[100:140, 90:150].all() and not (changed & ~edit.affected()).any()
    assert changed.sum() < 0.15 * changed.size
    assert np.abs(got[100:140, 90:150] - after[100:140, 90:150]).mean() < 6
    assert len(edit.data) < 1.05 * len(raw)


def test_block_rewrite_is_safe_from_many_threads(example_image):
    """The CLI's workers rewrite JPEGs side by side: every thread gets the same bytes as one alone."""
    from concurrent.futures import ThreadPoolExecutor

    buf = io.BytesIO()
    with Image.open(example_image) as im:
        im.save(buf, "JPEG", quality=75)
    raw = buf.getvalue()
    before = decode(raw).astype(np.uint8)
    after = before.copy()
    after[60:120, 60:140] = 255 - after[60:120, 60:140]
    alone = rewrite_changed_blocks(raw, before, after).data
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: rewrite_changed_blocks(raw, before, after).data, range(64)))
    assert all(r == alone for r in results)


def test_in_place_refuses_a_read_only_file(tmp_path, key_file, example_image):
    """0444: refused with one line, bytes, mode and vault untouched; recover --in-place too."""
    src = tmp_path / "ro" / "serena.jpg"
    src.parent.mkdir()
    shutil.copy(example_image, src)
    os.chmod(src, 0o444)
    before = src.read_bytes()
    vault = tmp_path / "v.db"
    code, text = run("anonymise", src, "--in-place", "--method", "pixelate", "--key-file", key_file, "--vault", vault)
    assert code == 1
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {src}: read-only file (mode 444); left unchanged"], text
    assert src.read_bytes() == before and stat.S_IMODE(src.stat().st_mode) == 0o444
    with sqlite3.connect(vault) as db:
        assert db.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 0
    code, text = run("recover", src, "--in-place", "--key-file", key_file, "--vault", vault)
    assert code == 1 and f"{src}: read-only file (mode 444); left unchanged" in text, text
    assert src.read_bytes() == before


def test_16_bit_png_downgrade_is_reported_and_the_original_comes_back(tmp_path, key_file, example_image):
    """A 16-bit PNG is written with 8 bits: the CLI says so for that file; the vault gives the
    16-bit file back byte for byte."""
    rgb = read_image(example_image).rgb.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 257, (250, 250, 3)).astype(np.uint16)
    src = tmp_path / "in" / "deep.png"
    src.parent.mkdir()
    cv2.imwrite(str(src), np.ascontiguousarray(rgb[..., ::-1]))
    vault = tmp_path / "v.db"
    code, text = run("anonymise", src, "-o", tmp_path / "out", "--method", "pixelate", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    assert f"warning: {src}: 16-bit PNG written with 8 bits per channel" in text
    code, text = run("recover", tmp_path / "out" / "deep.png", "-o", tmp_path / "back", "--key-file", key_file, "--vault", vault)
    assert code == 0, text
    assert sha(tmp_path / "back" / "deep.png") == sha(src)
    assert cv2.imread(str(tmp_path / "back" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
