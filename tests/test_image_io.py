import io
import struct

import numpy as np
import piexif
import pytest
from PIL import Image

from refacex_plugin.errors import ImageReadError, ImageWriteError
from refacex_plugin.image_io import atomic_write_bytes, encode_image, output_format, output_path, read_image

METADATA_MARKERS = {
    "EXIF": b"Exif\x00\x00",
    "XMP": b"http://ns.adobe.com/xap/1.0/",
    "IPTC": b"Photoshop 3.0\x008BIM",
    "GPS/camera text": b"SecretCam",
}


def jpeg_with_all_metadata(rgb: np.ndarray) -> bytes:
    """A real JPEG carrying EXIF (camera, GPS, an embedded thumbnail), XMP and IPTC."""
    thumb = io.BytesIO()
    Image.fromarray(rgb).resize((64, 64)).save(thumb, "JPEG", quality=80)
    exif = piexif.dump(
        {
            "0th": {piexif.ImageIFD.Make: b"SecretCam", piexif.ImageIFD.Orientation: 1},
            "Exif": {piexif.ExifIFD.UserComment: b"ASCII\x00\x00\x00original person"},
            "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((52, 1), (31, 1), (0, 1))},
            "1st": {piexif.ImageIFD.JPEGInterchangeFormat: 0, piexif.ImageIFD.JPEGInterchangeFormatLength: 0},
            "thumbnail": thumb.getvalue(),
        }
    )
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92, exif=exif)
    data = buf.getvalue()
    xmp_seg = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
    iptc_payload = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + struct.pack(">I", 12) + b"\x1c\x02\x78\x00\x07caption\x00"
    segs = b"".join(b"\xff" + m + struct.pack(">H", len(p) + 2) + p for m, p in ((b"\xe1", xmp_seg), (b"\xed", iptc_payload)))
    return data[:2] + segs + data[2:]


def test_metadata_fixture_really_has_metadata(example_rgb):
    data = jpeg_with_all_metadata(example_rgb)
    for marker in METADATA_MARKERS.values():
        assert marker in data
    assert data.count(b"\xff\xd8\xff") == 2  # the image and its EXIF thumbnail
    assert piexif.load(data)["thumbnail"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_written_images_carry_no_metadata(tmp_path, example_rgb, fmt):
    src = tmp_path / "in.jpg"
    src.write_bytes(jpeg_with_all_metadata(example_rgb))
    img = read_image(src)
    out = tmp_path / f"out.{fmt.lower()}"
    out.write_bytes(encode_image(img.rgb, fmt))
    data = out.read_bytes()
    for name, marker in METADATA_MARKERS.items():
        assert marker not in data, name
    assert data.count(b"\xff\xd8\xff") <= 1
    with Image.open(out) as im:
        assert not im.getexif()
        assert "icc_profile" not in im.info and "xmp" not in im.info


def test_exif_orientation_is_applied(tmp_path, example_rgb):
    rgb = example_rgb[:, :200]  # 250 x 200, not square
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rot.jpg"
    Image.fromarray(rgb).save(path, "JPEG", exif=exif, quality=95)
    img = read_image(path)
    assert img.rgb.shape == (200, 250, 3)
    expected = np.rot90(rgb, k=-1)
    assert np.abs(img.rgb.astype(int) - expected.astype(int)).mean() < 4


def test_cmyk_jpeg(tmp_path, example_rgb):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(example_rgb).convert("CMYK").save(path, "JPEG", quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    img = read_image(path)
    assert img.rgb.shape == example_rgb.shape and img.rgb.dtype == np.uint8
    assert np.abs(img.rgb.astype(int) - example_rgb.astype(int)).mean() < 12


def test_16_bit_png_gray_and_rgb(tmp_path, example_rgb):
    import cv2

    gray16 = (example_rgb.mean(-1) * 257).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(gray16).save(p)
    img = read_image(p)
    assert img.rgb.shape == (250, 250, 3)
    np.testing.assert_allclose(img.rgb[..., 0], np.round(gray16 / 257), atol=1)

    rgb16 = example_rgb.astype(np.uint16) * 257
    p = tmp_path / "c16.png"
    cv2.imwrite(str(p), rgb16[..., ::-1])
    img = read_image(p)
    assert np.abs(img.rgb.astype(int) - example_rgb.astype(int)).max() <= 1


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_other_modes(tmp_path, example_rgb, mode):
    im = Image.fromarray(example_rgb)
    if mode in ("RGBA", "LA"):
        im = im.convert(mode)
        a = np.full((250, 250), 255, np.uint8)
        a[:20] = 0
        im.putalpha(Image.fromarray(a))
    else:
        im = im.convert(mode)
    p = tmp_path / "x.png"
    im.save(p)
    img = read_image(p)
    assert img.rgb.shape == (250, 250, 3) and img.rgb.dtype == np.uint8
    if mode in ("RGBA", "LA"):
        assert img.alpha is not None and img.alpha[0, 0] == 0 and img.alpha[100, 100] == 255
        data = encode_image(img.rgb, "PNG", alpha=img.alpha)
        with Image.open(io.BytesIO(data)) as back:
            assert back.mode == "RGBA"
    else:
        assert img.alpha is None


def test_bad_files_give_one_line_errors(tmp_path, lfw_sample):
    real = lfw_sample[0].read_bytes()
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n" * 10,
        "truncated.jpg": real[: len(real) // 2],
        "badheader.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 300,
        "badpng.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 50,
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ImageReadError) as info:
            read_image(p)
        msg = str(info.value)
        assert "\n" not in msg and str(p) in msg, msg
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_too_large_image_is_refused(tmp_path, example_rgb):
    p = tmp_path / "x.png"
    Image.fromarray(example_rgb).save(p)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(p, max_pixels=1000)


def test_output_format_and_path(tmp_path):
    assert output_format("JPEG") == "JPEG"
    assert output_format("BMP") == "PNG"
    assert output_format("PNG", "jpg") == "JPEG"
    with pytest.raises(ValueError):
        output_format("PNG", "gif")
    assert output_path(tmp_path / "a.JPG", "JPEG").name == "a.JPG"
    assert output_path(tmp_path / "a.bmp", "PNG").name == "a.png"


def test_atomic_write_leaves_original_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    p.write_bytes(b"original")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("refacex_plugin.image_io.os.replace", boom)
    with pytest.raises(ImageWriteError, match="No space"):
        atomic_write_bytes(p, b"new contents")
    assert p.read_bytes() == b"original"
    assert [q.name for q in tmp_path.iterdir()] == ["f.bin"]  # temp file cleaned up
    monkeypatch.undo()
    atomic_write_bytes(p, b"new contents")
    assert p.read_bytes() == b"new contents"
