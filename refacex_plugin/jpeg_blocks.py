"""Rewrite a JPEG in the DCT domain: only the MCUs whose pixels changed are re-encoded.

A JPEG's pixels are a function of its quantised DCT coefficients, block by block. Copying every
untouched block's coefficients and re-quantising only the changed MCUs with the file's own
quantisation tables and chroma sampling leaves every other pixel bit-identical and the file's size
about where it was, where a full re-encode changes every pixel and usually grows the file.

What "the changed blocks" means for a decoder (PIL, i.e. libjpeg-turbo): an MCU is
``8 * max(h)`` x ``8 * max(v)`` pixels (16 x 16 for 4:2:0, 16 x 8 for 4:2:2, 8 x 8 for 4:4:4).
With subsampled chroma the decoder's "fancy" (triangle-filter) upsampling reads the chroma samples
on both sides of an MCU edge, so a changed MCU can also change the one pixel ring around it.
:attr:`BlockEdit.reach` is that ring's width (1 with subsampled chroma, 0 without) and
:meth:`BlockEdit.affected` the exact set of pixels that may differ from the input.

Coefficients come from and go to libjpeg through ``jpeglib``; no metadata marker (EXIF, XMP, ICC,
IPTC, comments) of the input is written.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# jpeglib's C side keeps marker state in process-wide globals (gmarker_*, gpos) and binds its
# library lazily: two threads inside it at once can abort the interpreter, so calls take turns.
_LIBJPEG = threading.Lock()


@dataclass
class BlockEdit:
    """A rewritten JPEG.

    ``data``: the new file's bytes. ``mcus``: per rewritten MCU, its pixel box ``(x0, y0, x1, y1)``
    clipped to the image. ``reach``: pixels around a rewritten MCU a decoder may also change.
    ``mcu_size``: ``(height, width)`` of an MCU in pixels. ``size``: ``(height, width)`` of the image.
    """

    data: bytes
    mcus: list[tuple[int, int, int, int]] = field(default_factory=list)
    reach: int = 0
    mcu_size: tuple[int, int] = (8, 8)
    size: tuple[int, int] = (0, 0)

    def affected(self) -> np.ndarray:
        """``(H, W) bool``: the pixels that may differ from the input (rewritten MCUs + reach)."""
        h, w = self.size
        out = np.zeros((h, w), bool)
        r = self.reach
        for x0, y0, x1, y1 in self.mcus:
            out[max(y0 - r, 0) : min(y1 + r, h), max(x0 - r, 0) : min(x1 + r, w)] = True
        return out


def _mcu_geometry(jpeg) -> tuple[int, int, list[tuple[int, int]]]:
    """MCU height, width in pixels and each component's (v, h) sampling factors."""
    samp = [(int(v), int(h)) for v, h in np.asarray(jpeg.samp_factor).reshape(-1, 2)[: jpeg.num_components]]
    vmax, hmax = max(s[0] for s in samp), max(s[1] for s in samp)
    return 8 * vmax, 8 * hmax, samp


def changed_mcus(before: np.ndarray, after: np.ndarray, mcu_h: int, mcu_w: int) -> np.ndarray:
    """``(rows, cols) bool``: the MCUs in which any pixel of ``before`` and ``after`` differs.

    Args:
        before, after: ``(H, W, C)`` images of the same shape.
        mcu_h, mcu_w: MCU size in pixels.
    """
    diff = np.any(before != after, axis=-1) if before.ndim == 3 else before != after
    h, w = diff.shape
    rows, cols = -(-h // mcu_h), -(-w // mcu_w)
    padded = np.zeros((rows * mcu_h, cols * mcu_w), bool)
    padded[:h, :w] = diff
    return padded.reshape(rows, mcu_h, cols, mcu_w).any(axis=(1, 3))


def rewrite_changed_blocks(jpeg_bytes: bytes, before: np.ndarray, after: np.ndarray) -> BlockEdit | None:
    """Re-encode only the MCUs in which ``after`` differs from ``before``; copy all other coefficients.

    Args:
        jpeg_bytes: the input JPEG file.
        before: ``(H, W, 3) uint8`` RGB, the input as PIL decodes it (no orientation or colour
            conversion applied: the block grid must be the file's).
        after: ``(H, W, 3) uint8`` RGB, the wanted image.

    Returns:
        The rewritten file, or None when the file is not a 3-component YCbCr JPEG (grayscale, CMYK,
        ...) and cannot carry ``after`` this way: the caller re-encodes instead.
    """
    import jpeglib

    if before.shape != after.shape or before.ndim != 3 or before.shape[2] != 3:
        raise ValueError(f"before {before.shape} and after {after.shape} must be the same (H, W, 3) image")
    with _LIBJPEG, tempfile.TemporaryDirectory(prefix="refacex-jpeg-") as tmp:
        src, crop_path, out = Path(tmp) / "in.jpg", Path(tmp) / "crop.jpg", Path(tmp) / "out.jpg"
        src.write_bytes(jpeg_bytes)
        jpeg = jpeglib.read_dct(str(src))
        if jpeg.num_components != 3 or jpeg.jpeg_color_space != jpeglib.JCS_YCbCr:
            return None
        if (jpeg.height, jpeg.width) != before.shape[:2]:
            raise ValueError(f"image {before.shape[:2]} does not match the JPEG's {jpeg.height}x{jpeg.width}")
        mh, mw, samp = _mcu_geometry(jpeg)
        todo = changed_mcus(before, after, mh, mw)
        h, w = before.shape[:2]
        mcus = []
        if todo.any():
            rows, cols = np.nonzero(todo)
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            # An MCU-aligned crop has the file's block grid, so its blocks drop in place. Encoding it
            # with the file's tables and sampling is libjpeg's own forward path (colour conversion,
            # downsampling, DCT, quantisation).
            crop = np.ascontiguousarray(after[r0 * mh : min(r1 * mh, h), c0 * mw : min(c1 * mw, w)])
            enc = jpeglib.from_spatial(crop)
            enc.samp_factor = np.asarray(jpeg.samp_factor)
            enc.write_spatial(str(crop_path), qt=np.asarray(jpeg.qt), quant_tbl_no=np.asarray(jpeg.quant_tbl_no))
            new = jpeglib.read_dct(str(crop_path))
            if not np.array_equal(np.asarray(new.qt), np.asarray(jpeg.qt)):
                raise RuntimeError("libjpeg did not keep the file's quantisation tables")
            comps = [(jpeg.Y, new.Y), (jpeg.Cb, new.Cb), (jpeg.Cr, new.Cr)]
            for r, c in zip(rows, cols):
                for (dst, part), (v, hh) in zip(comps, samp):
                    by, bx = r * v, c * hh  # this MCU's first block in the component
                    cy, cx = (r - r0) * v, (c - c0) * hh  # ... and in the crop's
                    ny = min(v, dst.shape[0] - by, part.shape[0] - cy)
                    nx = min(hh, dst.shape[1] - bx, part.shape[1] - cx)
                    if ny > 0 and nx > 0:
                        dst[by : by + ny, bx : bx + nx] = part[cy : cy + ny, cx : cx + nx]
                mcus.append((int(c * mw), int(r * mh), int(min((c + 1) * mw, w)), int(min((r + 1) * mh, h))))
        jpeg.markers = []  # the input's APPn/COM markers (EXIF, XMP, ICC, ...) never reach the output
        jpeg.write_dct(str(out), flags=["+OPTIMIZE_CODING"])
        data = out.read_bytes()
    subsampled = any(s != samp[0] for s in samp)
    return BlockEdit(data, mcus, 1 if subsampled else 0, (mh, mw), (h, w))
